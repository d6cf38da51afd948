package comms

import (
	"context"
	"time"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// PollCommands implements the AgentService RPC: a long-poll that answers as
// soon as there is something to say — orders to run, orders the agent holds
// that were cancelled, a new configuration version — or empty when the wait
// is over.
//
// Its frame is the one a waiting poll's goroutine parks in, thousands at
// once, so it holds only the wait: the rest is done by functions of their
// own, and the poll's state is on the heap. The garbage collector halves
// a parked goroutine's stack while it uses less than a quarter of it;
// net/http and connect take some 2.5 KiB below this frame, so a small
// frame keeps a waiting poll to 8 KiB of stack rather than 16.
func (s *Service) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	const method = "PollCommands"
	w, err := s.startPoll(ctx, req)
	if err != nil {
		return nil, s.fail(method, err)
	}
	defer s.endPoll(w)
	if !w.ready() {
		if err := s.beginWait(w); err != nil {
			return nil, s.fail(method, err)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil, s.fail(method, ctx.Err())
			case <-w.timer.C:
				w.timedOut = true
				break wait
			case <-s.o.Closing:
				break wait
			case <-w.wake:
				if err := s.lookAgain(ctx, w); err != nil {
					return nil, s.fail(method, err)
				}
				if w.ready() {
					break wait
				}
			}
		}
	}
	resp, err := s.pollAnswer(w)
	if err != nil {
		return nil, s.fail(method, err)
	}
	return resp, nil
}

// waitingPoll is the state of one PollCommands call.
type waitingPoll struct {
	id      string
	p       poll
	ans     answer
	wake    <-chan struct{}
	release func()
	// Set once the poll waits (beginWait).
	timer *time.Timer
	leave func()
	// gen and lookedAt are the notification generation and the time of
	// the latest look at the store (see quiet.go); timedOut says the wait
	// ended with nothing to answer.
	gen      uint64
	lookedAt int64
	timedOut bool
}

// ready reports whether the answer is worth returning before the wait
// ends.
func (w *waitingPoll) ready() bool { return w.ans.ready(&w.p) }

// startPoll authenticates the call, subscribes to the agent's wake-ups
// and takes the first look. Unless it fails, endPoll must follow.
//
//go:noinline
func (s *Service) startPoll(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*waitingPoll, error) {
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	w := &waitingPoll{id: a.ID}
	if w.p, err = s.pollArgs(req.Msg); err != nil {
		return nil, err
	}
	// Subscribe before the first look, so an order created between the
	// look and the wait still wakes this poll.
	w.wake, w.release = s.o.Notifier.Subscribe(w.id)
	if err = s.firstLook(ctx, a, w); err != nil {
		w.release()
		return nil, err
	}
	w.p.received = nil // acknowledged by the first look
	return w, nil
}

// beginWait counts the poll among the waiting ones, unless the node holds
// as many as it may, and starts its timer.
//
//go:noinline
func (s *Service) beginWait(w *waitingPoll) error {
	leave, err := s.enterWait()
	if err != nil {
		return err
	}
	w.leave, w.timer = leave, time.NewTimer(w.p.wait)
	return nil
}

// endPoll ends the wait and the subscription. The agent is seen at the
// end too: it was connected for the whole wait.
//
//go:noinline
func (s *Service) endPoll(w *waitingPoll) {
	if w.timer != nil {
		w.timer.Stop()
		w.leave()
	}
	w.release()
	s.o.Presence.Seen(w.id, time.Now().UTC())
	s.noteQuiet(w)
}

// lookAgain takes another look after a wake-up.
//
//go:noinline
func (s *Service) lookAgain(ctx context.Context, w *waitingPoll) error {
	// A wake-up is also how a deletion or a change of groups reaches
	// waiting polls: changing the agent through this node drops the
	// cached record (Forget), so this reads the store only then, or once
	// the cache entry is older than agentCacheTTL.
	a, err := s.agent(ctx, w.id)
	if err != nil {
		return err
	}
	return s.lookAt(ctx, a, w)
}

// pollAnswer converts the answer of a poll to its response.
//
//go:noinline
func (s *Service) pollAnswer(w *waitingPoll) (*connect.Response[commsv1.PollCommandsResponse], error) {
	resp := &commsv1.PollCommandsResponse{
		Orders:            make([]*commsv1.Order, 0, len(w.ans.orders)),
		ConfigVersion:     w.ans.configVersion,
		CancelledOrderIds: w.ans.cancelled,
	}
	now := s.o.Now()
	for _, o := range w.ans.orders {
		if o.Attempts == 1 {
			s.o.Metrics.OrderDelivered(o.CreatedAt, now)
		}
		po, err := orderToProto(o)
		if err != nil {
			return nil, err
		}
		resp.Orders = append(resp.Orders, po)
	}
	return connect.NewResponse(resp), nil
}

// poll is what a PollCommandsRequest asks, validated.
type poll struct {
	wait          time.Duration
	limit         int
	received      []string
	queued        []string
	configVersion string
}

// answer is what a poll could be told at one moment.
type answer struct {
	orders        []*tether.Order
	cancelled     []string
	configVersion string
}

// ready reports whether the answer is worth returning before the wait ends.
func (a *answer) ready(p *poll) bool {
	return len(a.orders) > 0 || len(a.cancelled) > 0 ||
		(p.configVersion != "" && a.configVersion != p.configVersion)
}

// look delivers the agent's waiting orders (acknowledging p.received) and
// finds which of its queued orders finished and its configuration version.
func (s *Service) look(ctx context.Context, a *tether.Agent, p poll) (answer, error) {
	var ans answer
	var err error
	if ans.orders, err = s.deliver.deliver(ctx, a.ID, p.received, p.limit); err != nil {
		return answer{}, err
	}
	if len(p.queued) > 0 {
		if ans.cancelled, err = s.o.Store.FinishedAmong(ctx, a.ID, p.queued); err != nil {
			return answer{}, err
		}
	}
	if ans.configVersion, err = s.configVersion(ctx, a.Groups); err != nil {
		return answer{}, err
	}
	return ans, nil
}

func (s *Service) pollArgs(m *commsv1.PollCommandsRequest) (poll, error) {
	p := poll{wait: s.o.PollWait, limit: int(m.MaxOrders), received: m.ReceivedOrderIds,
		queued: m.QueuedOrderIds, configVersion: m.ConfigVersion}
	if d := m.GetWait(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 {
			return poll{}, tether.FieldError("wait", "not a valid non-negative duration")
		}
		if v := d.AsDuration(); v > 0 {
			p.wait = min(v, s.o.MaxPollWait)
		}
	}
	if p.limit <= 0 || p.limit > DefaultMaxOrders {
		p.limit = DefaultMaxOrders
	}
	for field, ids := range map[string][]string{"received_order_ids": p.received, "queued_order_ids": p.queued} {
		if len(ids) > maxReceivedIDs {
			return poll{}, tether.FieldError(field, "at most %d ids per poll", maxReceivedIDs)
		}
		for _, id := range ids {
			if !tether.ValidID(id) {
				return poll{}, tether.FieldError(field, "%q is not an order id", id)
			}
		}
	}
	if len(p.configVersion) > 64 {
		return poll{}, tether.FieldError("config_version", "at most 64 bytes: send the version GetConfig returned")
	}
	return p, nil
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
	fs := make([]tether.Finish, len(req.Msg.Results))
	for i, r := range req.Msg.Results {
		id, st, res, err := resultFromProto(r)
		if err != nil {
			return nil, s.fail(method, under(fieldIndex("results", i), err))
		}
		fs[i] = tether.Finish{AgentID: a.ID, OrderID: id, Status: st, Result: res}
	}
	// Applied together with the results other agents report meanwhile.
	outs, err := s.finish.finish(ctx, fs)
	if err != nil {
		return nil, s.fail(method, err)
	}
	resp := &commsv1.ReportResultsResponse{}
	for i, out := range outs {
		switch {
		case out.Err == nil:
			if o := out.Order; out.Finished {
				s.o.Metrics.OrderFinished(o.Action.Name, string(o.Status), o.CreatedAt, o.FinishedAt)
			}
			resp.AcknowledgedOrderIds = append(resp.AcknowledgedOrderIds, fs[i].OrderID)
		case tether.ErrorCode(out.Err) == tether.ENOTFOUND:
			s.o.Log.Info("result for an unknown order", "agent", a.ID, "order", fs[i].OrderID)
		default:
			return nil, s.fail(method, out.Err)
		}
	}
	return connect.NewResponse(resp), nil
}
