package comms

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/ingest"
)

// PushStateless implements the AgentService RPC.
func (s *Service) PushStateless(ctx context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	const method = "PushStateless"
	size := 0
	for _, e := range req.Msg.Events {
		size += eventSize(e)
	}
	n, dup, err := s.push(ctx, method, req.Header(), req.Msg.Sequence, len(req.Msg.Events), size, false, func() ([]tether.Event, error) {
		return convertBatch(req.Msg.Sequence, req.Msg.Events, eventFromProto)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&commsv1.PushStatelessResponse{Accepted: uint32(n), Duplicate: dup}), nil
}

// PushStateful implements the AgentService RPC.
func (s *Service) PushStateful(ctx context.Context, req *connect.Request[commsv1.PushStatefulRequest]) (*connect.Response[commsv1.PushStatefulResponse], error) {
	const method = "PushStateful"
	size := 0
	for _, e := range req.Msg.Events {
		size += len(e.GetKey()) + eventSize(e.GetEvent())
	}
	n, dup, err := s.push(ctx, method, req.Header(), req.Msg.Sequence, len(req.Msg.Events), size, true, func() ([]tether.Event, error) {
		return convertBatch(req.Msg.Sequence, req.Msg.Events, statefulFromProto)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&commsv1.PushStatefulResponse{Accepted: uint32(n), Duplicate: dup}), nil
}

// eventSize is what an event costs against the byte limits: its payload
// and its strings.
func eventSize(e *commsv1.Event) int {
	return len(e.GetPayload()) + len(e.GetId()) + len(e.GetModule()) + len(e.GetType())
}

// push runs a push through the pipeline: authenticate, the agent's rate
// and the node's in-flight budget, validation (convert), then delivery
// into the state store and every sink, exactly once. It returns the number
// of events acknowledged and whether the batch had been accepted before.
func (s *Service) push(ctx context.Context, method string, h http.Header, seq uint64, events, size int, stateful bool,
	convert func() ([]tether.Event, error)) (int, bool, error) {
	a, err := s.authenticate(ctx, h)
	if err != nil {
		return 0, false, s.fail(method, err)
	}
	release, err := s.limiter.Admit(a.ID, events, int64(size))
	if err != nil {
		return 0, false, s.fail(method, err)
	}
	defer release()
	evs, err := convert()
	if err != nil {
		return 0, false, s.fail(method, err)
	}
	res, err := s.ingester.Ingest(ctx, &tether.Batch{
		AgentID: a.ID, AgentName: a.Name, Groups: a.Groups, Sequence: seq,
		Stateful: stateful, ReceivedAt: s.o.Now().UTC(), Events: evs,
	})
	if err != nil {
		return 0, false, s.fail(method, err)
	}
	return len(evs), res != ingest.Stored, nil
}

func convertBatch[T any](seq uint64, in []T, conv func(T) (tether.Event, error)) ([]tether.Event, error) {
	switch {
	case seq == 0:
		return nil, tether.FieldError("sequence", "required: the batch sequence number, from 1")
	case seq > maxSequence:
		return nil, tether.FieldError("sequence", "at most %d", uint64(maxSequence))
	case len(in) == 0:
		return nil, tether.FieldError("events", "empty batch")
	case len(in) > maxEventsPerBatch:
		return nil, tether.FieldError("events", "%d events: at most %d per batch", len(in), maxEventsPerBatch)
	}
	out := make([]tether.Event, len(in))
	for i, e := range in {
		ev, err := conv(e)
		if err != nil {
			return nil, under(fieldIndex("events", i), err)
		}
		out[i] = ev
	}
	return out, nil
}
