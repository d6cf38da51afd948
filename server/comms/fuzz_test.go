package comms

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// moduleSyntax is the documented syntax of module names, checked apart
// from the validation under test.
var moduleSyntax = regexp.MustCompile(`^[a-z0-9_.-]{1,64}$`)

func seedBytes(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
}

// FuzzPushStateless feeds arbitrary bytes through the same decoding and
// validation a PushStateless request goes through: it must never panic, and
// a batch it accepts must satisfy every documented limit.
func FuzzPushStateless(f *testing.F) {
	seedBytes(f, &commsv1.PushStatelessRequest{Sequence: 1, Events: []*commsv1.Event{{
		Id: "e1", Module: "logcollector", Type: "line", CollectedAt: timestamppb.Now(), Payload: []byte(`{"a":1}`),
	}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req commsv1.PushStatelessRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		events, err := convertBatch(req.Sequence, req.Events, eventFromProto)
		if err != nil {
			if tether.ErrorCode(err) != tether.EINVALID && tether.ErrorCode(err) != tether.ETOOLARGE {
				t.Fatalf("validation error with code %s: %v", tether.ErrorCode(err), err)
			}
			return
		}
		for _, e := range events {
			if e.ID == "" || !moduleSyntax.MatchString(e.Module) || e.Type == "" || len(e.Payload) > maxPayloadBytes {
				t.Fatalf("accepted an invalid event: %+v", e)
			}
		}
	})
}

// FuzzPushStateful does the same for stateful batches.
func FuzzPushStateful(f *testing.F) {
	seedBytes(f, &commsv1.PushStatefulRequest{Sequence: 2, Events: []*commsv1.StatefulEvent{{
		Key: "host", Op: commsv1.StateOp_STATE_OP_UPSERT,
		Event: &commsv1.Event{Id: "e2", Module: "inventory", Type: "host", CollectedAt: timestamppb.Now(), Payload: []byte(`{}`)},
	}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req commsv1.PushStatefulRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		events, err := convertBatch(req.Sequence, req.Events, statefulFromProto)
		if err != nil {
			return
		}
		for _, e := range events {
			if e.Key == "" || (e.Op != tether.StateUpsert && e.Op != tether.StateDelete) {
				t.Fatalf("accepted an invalid state change: %+v", e)
			}
		}
	})
}

// FuzzReportResults covers results and poll arguments.
func FuzzReportResults(f *testing.F) {
	data, _ := structpb.NewValue(map[string]any{"x": 1})
	seedBytes(f,
		&commsv1.ReportResultsRequest{Results: []*commsv1.OrderResult{{
			OrderId: "0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a", Status: commsv1.OrderStatus_ORDER_STATUS_SUCCESS, Data: data,
		}}},
		&commsv1.PollCommandsRequest{Wait: durationpb.New(time.Second), ReceivedOrderIds: []string{"0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a"}},
		&commsv1.PollCommandsRequest{QueuedOrderIds: []string{"0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a", "x"}, ConfigVersion: "0123456789abcdef"},
	)
	s := New(Options{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req commsv1.ReportResultsRequest
		if proto.Unmarshal(data, &req) == nil {
			for _, r := range req.Results {
				id, st, _, err := resultFromProto(r)
				if err == nil && (!tether.ValidID(id) || !st.Finished()) {
					t.Fatalf("accepted result %v", r)
				}
			}
		}
		var req2 commsv1.PollCommandsRequest
		if proto.Unmarshal(data, &req2) == nil {
			p, err := s.pollArgs(&req2)
			if err != nil {
				return
			}
			if p.wait <= 0 || p.wait > DefaultMaxPollWait || p.limit <= 0 || p.limit > DefaultMaxOrders {
				t.Fatalf("poll args out of range: %s %d", p.wait, p.limit)
			}
			if len(p.received) > maxReceivedIDs || len(p.queued) > maxReceivedIDs || len(p.configVersion) > 64 {
				t.Fatalf("poll args too long: %d received, %d queued, version %d bytes", len(p.received), len(p.queued), len(p.configVersion))
			}
			for _, id := range append(slices.Clone(p.received), p.queued...) {
				if !tether.ValidID(id) {
					t.Fatalf("accepted order id %q", id)
				}
			}
		}
	})
}

func TestEveryCodeMapsToConnect(t *testing.T) {
	for _, c := range []tether.Code{tether.ECONFLICT, tether.EINTERNAL, tether.EINVALID, tether.ENOTFOUND,
		tether.EUNAUTHORIZED, tether.EFORBIDDEN, tether.EEXHAUSTED, tether.EUNAVAILABLE, tether.ETOOLARGE,
		tether.EEXPIRED, tether.EGONE, tether.ECANCELED, tether.EDEADLINE, tether.ENOTSUPPORTED} {
		if _, ok := codes[c]; !ok {
			t.Errorf("code %s has no Connect code", c)
		}
	}
}

func TestErrorsNameTheElementAtFault(t *testing.T) {
	good := &commsv1.Event{Id: "e", Module: "m", Type: "t", CollectedAt: timestamppb.Now()}
	bad := &commsv1.Event{Id: "e", Module: "Bad", Type: "t", CollectedAt: timestamppb.Now()}
	_, err := convertBatch(1, []*commsv1.StatefulEvent{
		{Event: good, Key: "k", Op: commsv1.StateOp_STATE_OP_DELETE},
		{Event: bad, Key: "k", Op: commsv1.StateOp_STATE_OP_DELETE},
	}, statefulFromProto)
	e, ok := err.(*tether.Error)
	if !ok || e.Field != "events[1].event.module" || !strings.HasPrefix(e.Message, "events[1].event.module: want") {
		t.Fatalf("nested error: %#v", err)
	}
	_, err = convertBatch(1, []*commsv1.Event{good, nil}, eventFromProto)
	if e, ok := err.(*tether.Error); !ok || e.Field != "events[1]" || e.Message != "events[1]: missing event" {
		t.Fatalf("missing element: %#v", err)
	}
	_, err = convertBatch(1, []*commsv1.Event{{Id: "e", Module: "m", Type: "t", CollectedAt: timestamppb.Now(), Payload: make([]byte, maxPayloadBytes+1), Encoding: commsv1.PayloadEncoding_PAYLOAD_ENCODING_PROTOBUF}}, eventFromProto)
	if e, ok := err.(*tether.Error); !ok || e.Code != tether.ETOOLARGE || e.Field != "events[0].payload" {
		t.Fatalf("large payload: %#v", err)
	}
}
