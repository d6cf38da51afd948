package comms

import (
	"context"
	"time"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// PollCommands implements the AgentService RPC: a long-poll that answers as
// soon as orders exist for the agent, or empty when the wait is over.
func (s *Service) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	const method = "PollCommands"
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, s.fail(method, err)
	}
	wait, limit, received, err := s.pollArgs(req.Msg)
	if err != nil {
		return nil, s.fail(method, err)
	}
	// Subscribe before the first query, so an order created between the
	// query and the wait still wakes this poll.
	wake, release := s.o.Notifier.Subscribe(a.ID)
	defer release()
	// Seen at the end too: the agent was connected for the whole wait.
	defer func() { s.o.Presence.Seen(a.ID, time.Now().UTC()) }()

	orders, err := s.deliver.deliver(ctx, a.ID, received, limit)
	if err != nil {
		return nil, s.fail(method, err)
	}
	if len(orders) == 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil, s.fail(method, ctx.Err())
			case <-timer.C:
				break wait
			case <-s.o.Closing:
				break wait
			case <-wake:
				// A wake-up is also how a deletion reaches waiting polls:
				// deleting through this node drops the cached record
				// (Forget), so this reads the store only then, or once the
				// cache entry is older than agentCacheTTL.
				if _, err := s.agent(ctx, a.ID); err != nil {
					return nil, s.fail(method, err)
				}
				orders, err = s.deliver.deliver(ctx, a.ID, nil, limit)
				if err != nil {
					return nil, s.fail(method, err)
				}
				if len(orders) > 0 {
					break wait
				}
			}
		}
	}
	resp := &commsv1.PollCommandsResponse{Orders: make([]*commsv1.Order, 0, len(orders))}
	now := s.o.Now()
	for _, o := range orders {
		if o.Attempts == 1 {
			s.o.Metrics.OrderDelivered(o.CreatedAt, now)
		}
		po, err := orderToProto(o)
		if err != nil {
			return nil, s.fail(method, err)
		}
		resp.Orders = append(resp.Orders, po)
	}
	return connect.NewResponse(resp), nil
}

func (s *Service) pollArgs(m *commsv1.PollCommandsRequest) (time.Duration, int, []string, error) {
	wait := s.o.PollWait
	if d := m.GetWait(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 {
			return 0, 0, nil, tether.FieldError("wait", "not a valid non-negative duration")
		}
		if v := d.AsDuration(); v > 0 {
			wait = min(v, s.o.MaxPollWait)
		}
	}
	limit := int(m.MaxOrders)
	if limit <= 0 || limit > DefaultMaxOrders {
		limit = DefaultMaxOrders
	}
	if len(m.ReceivedOrderIds) > maxReceivedIDs {
		return 0, 0, nil, tether.FieldError("received_order_ids", "at most %d ids per poll", maxReceivedIDs)
	}
	for _, id := range m.ReceivedOrderIds {
		if !tether.ValidID(id) {
			return 0, 0, nil, tether.FieldError("received_order_ids", "%q is not an order id", id)
		}
	}
	return wait, limit, m.ReceivedOrderIds, nil
}

// ReportResults implements the AgentService RPC.
func (s *Service) ReportResults(ctx context.Context, req *connect.Request[commsv1.ReportResultsRequest]) (*connect.Response[commsv1.ReportResultsResponse], error) {
	const method = "ReportResults"
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, s.fail(method, err)
	}
	if n := len(req.Msg.Results); n > maxResultsPerCall {
		return nil, s.fail(method, tether.FieldError("results", "%d results: at most %d per call", n, maxResultsPerCall))
	}
	type parsed struct {
		id  string
		st  tether.OrderStatus
		res tether.Result
	}
	list := make([]parsed, 0, len(req.Msg.Results))
	for i, r := range req.Msg.Results {
		id, st, res, err := resultFromProto(r)
		if err != nil {
			return nil, s.fail(method, under(fieldIndex("results", i), err))
		}
		list = append(list, parsed{id, st, res})
	}
	now := s.o.Now().UTC()
	resp := &commsv1.ReportResultsResponse{}
	for _, p := range list {
		o, err := s.o.Store.FinishOrder(ctx, a.ID, p.id, p.st, p.res, now)
		switch {
		case err == nil:
			if o.FinishedAt.Equal(now) { // this report finished it
				s.o.Metrics.OrderFinished(o.Action.Name, string(o.Status), o.CreatedAt, now)
			}
			resp.AcknowledgedOrderIds = append(resp.AcknowledgedOrderIds, p.id)
		case tether.ErrorCode(err) == tether.ENOTFOUND:
			s.o.Log.Info("result for an unknown order", "agent", a.ID, "order", p.id)
		default:
			return nil, s.fail(method, err)
		}
	}
	return connect.NewResponse(resp), nil
}
