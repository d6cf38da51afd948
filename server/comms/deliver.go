package comms

import (
	"context"
	"sync"
	"time"

	"github.com/tetherhq/tether"
)

// maxGroupCommit is the most calls served by one transaction of a group
// commit (polls by DeliverOrders, results by FinishOrders).
const maxGroupCommit = 1000

// groupCommitTimeout bounds one transaction of a group commit. It runs
// apart from the calls' own contexts: a call that gives up does not abort
// the others.
const groupCommitTimeout = 30 * time.Second

// groupCommit serves calls of one kind by group commit: the calls that
// arrive while a transaction runs wait for it and are served together by
// the next one. A lone call is served at once; a fan-out that wakes 10,000
// polls, and then has their 10,000 results reported, costs a few
// transactions rather than 10,000 each.
type groupCommit[Req, Resp any] struct {
	mu      sync.Mutex
	queue   []*groupCall[Req, Resp]
	running bool
}

type groupCall[Req, Resp any] struct {
	req  Req
	done chan struct{}
	resp Resp
	err  error
}

// do serves req with the others waiting at the same time; run serves a
// batch in one transaction and returns the answer of each request at the
// same index.
func (g *groupCommit[Req, Resp]) do(ctx context.Context, req Req, run func(context.Context, []Req) ([]Resp, error)) (Resp, error) {
	c := &groupCall[Req, Resp]{req: req, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if !g.running {
		g.running = true
		go g.drain(run)
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.resp, c.err
	case <-ctx.Done():
		var zero Resp
		return zero, ctx.Err()
	}
}

// drain serves the queue batch by batch until it is empty.
func (g *groupCommit[Req, Resp]) drain(run func(context.Context, []Req) ([]Resp, error)) {
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroupCommit)
		if n == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		batch := g.queue[:n:n]
		if n == len(g.queue) {
			g.queue = nil // let the array go
		} else {
			g.queue = g.queue[n:]
		}
		g.mu.Unlock()
		reqs := make([]Req, len(batch))
		for i, c := range batch {
			reqs[i] = c.req
		}
		ctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
		got, err := run(ctx, reqs)
		cancel()
		for i, c := range batch {
			if err != nil {
				c.err = err
			} else {
				c.resp = got[i]
			}
			close(c.done)
		}
	}
}

// deliverer serves the polls of this node by group commit (DeliverOrders).
//
// An order marked sent for a poll that gave up meanwhile is not lost: it was
// not received, so the agent's next poll gets it again.
type deliverer struct {
	store tether.CommandStore
	now   func() time.Time
	groupCommit[tether.Delivery, []*tether.Order]
}

// deliver serves one poll, with the others waiting at the same time.
func (d *deliverer) deliver(ctx context.Context, agentID string, received []string, limit int) ([]*tether.Order, error) {
	return d.do(ctx, tether.Delivery{AgentID: agentID, Received: received, Limit: limit},
		func(ctx context.Context, ds []tether.Delivery) ([][]*tether.Order, error) {
			return d.store.DeliverOrders(ctx, ds, d.now().UTC())
		})
}

// finisher applies the results agents report on this node by group commit
// (FinishOrders): the results of every report made meanwhile go in one
// transaction.
type finisher struct {
	store tether.CommandStore
	now   func() time.Time
	groupCommit[[]tether.Finish, []tether.FinishOutcome]
}

// finish applies the results of one report, and returns the outcome of
// each at the same index.
func (f *finisher) finish(ctx context.Context, fs []tether.Finish) ([]tether.FinishOutcome, error) {
	if err := tether.CheckFinishes(fs); err != nil {
		return nil, err // not to fail the other reports' results
	}
	return f.do(ctx, fs, func(ctx context.Context, reports [][]tether.Finish) ([][]tether.FinishOutcome, error) {
		var all []tether.Finish
		for _, r := range reports {
			all = append(all, r...)
		}
		outs, err := f.store.FinishOrders(ctx, all, f.now().UTC())
		if err != nil {
			return nil, err
		}
		split := make([][]tether.FinishOutcome, len(reports))
		for i, r := range reports {
			split[i], outs = outs[:len(r):len(r)], outs[len(r):]
		}
		return split, nil
	})
}
