package comms

import (
	"context"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// PushStateless implements the AgentService RPC.
func (s *Service) PushStateless(ctx context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	const method = "PushStateless"
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, s.fail(method, err)
	}
	events, err := convertBatch(req.Msg.Sequence, req.Msg.Events, eventFromProto)
	if err != nil {
		return nil, s.fail(method, err)
	}
	n, dup, err := s.ingest(ctx, a, req.Msg.Sequence, false, events)
	if err != nil {
		return nil, s.fail(method, err)
	}
	return connect.NewResponse(&commsv1.PushStatelessResponse{Accepted: uint32(n), Duplicate: dup}), nil
}

// PushStateful implements the AgentService RPC.
func (s *Service) PushStateful(ctx context.Context, req *connect.Request[commsv1.PushStatefulRequest]) (*connect.Response[commsv1.PushStatefulResponse], error) {
	const method = "PushStateful"
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, s.fail(method, err)
	}
	events, err := convertBatch(req.Msg.Sequence, req.Msg.Events, statefulFromProto)
	if err != nil {
		return nil, s.fail(method, err)
	}
	n, dup, err := s.ingest(ctx, a, req.Msg.Sequence, true, events)
	if err != nil {
		return nil, s.fail(method, err)
	}
	return connect.NewResponse(&commsv1.PushStatefulResponse{Accepted: uint32(n), Duplicate: dup}), nil
}

func convertBatch[T any](seq uint64, in []T, conv func(T) (tether.Event, error)) ([]tether.Event, error) {
	switch {
	case seq == 0:
		return nil, tether.FieldError("sequence", "required: the batch sequence number, from 1")
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

// ingest stores an accepted batch: de-duplication by sequence, every sink,
// then the state store, then the sequence is recorded. It answers only once
// all of them succeeded.
func (s *Service) ingest(ctx context.Context, a *tether.Agent, seq uint64, stateful bool, events []tether.Event) (int, bool, error) {
	fresh, err := s.o.Store.Agent(ctx, a.ID)
	if err != nil {
		return 0, false, err
	}
	if seq <= fresh.LastBatchSeq {
		return len(events), true, nil
	}
	now := s.o.Now().UTC()
	b := &tether.Batch{
		AgentID: a.ID, AgentName: a.Name, Groups: a.Groups, Sequence: seq,
		Stateful: stateful, ReceivedAt: now, Events: events,
	}
	for _, sink := range s.o.Sinks {
		if err := sink.Write(ctx, b); err != nil {
			return 0, false, &tether.Error{Code: tether.EUNAVAILABLE, Message: "event sink unavailable: retry later", Err: err}
		}
	}
	if stateful {
		if err := s.o.Store.ApplyState(ctx, a.ID, seq, events, now); err != nil {
			return 0, false, err
		}
	}
	accepted, err := s.o.Store.AcceptBatch(ctx, a.ID, seq)
	if err != nil {
		return 0, false, err
	}
	if accepted && s.o.Metrics != nil {
		// One counter update per module, not per event.
		for i := 0; i < len(events); {
			module, n, size := events[i].Module, 0, 0
			for ; i < len(events) && events[i].Module == module; i++ {
				n, size = n+1, size+len(events[i].Payload)
			}
			s.o.Metrics.EventsReceived(module, n, size)
		}
	}
	return len(events), !accepted, nil
}
