package comms

import (
	"context"
	"sync"
	"time"

	"github.com/tetherhq/tether"
)

// maxDeliveryBatch is the most polls served by one DeliverOrders
// transaction.
const maxDeliveryBatch = 1000

// deliveryTimeout bounds one DeliverOrders transaction. It runs apart from
// the polls' own contexts: a poll that gives up does not abort the others.
const deliveryTimeout = 30 * time.Second

// deliverer serves the polls of this node by group commit: the polls that
// arrive while a transaction runs wait for it and are served together by the
// next one. A lone poll is served at once; a fan-out that wakes 10,000 polls
// costs a few transactions rather than 10,000.
//
// An order marked sent for a poll that gave up meanwhile is not lost: it was
// not received, so the agent's next poll gets it again.
type deliverer struct {
	store tether.CommandStore
	now   func() time.Time

	mu      sync.Mutex
	queue   []*delivery
	running bool
}

type delivery struct {
	tether.Delivery
	done   chan struct{}
	orders []*tether.Order
	err    error
}

// deliver serves one poll, with the others waiting at the same time.
func (d *deliverer) deliver(ctx context.Context, agentID string, received []string, limit int) ([]*tether.Order, error) {
	p := &delivery{Delivery: tether.Delivery{AgentID: agentID, Received: received, Limit: limit}, done: make(chan struct{})}
	d.mu.Lock()
	d.queue = append(d.queue, p)
	if !d.running {
		d.running = true
		go d.drain()
	}
	d.mu.Unlock()
	select {
	case <-p.done:
		return p.orders, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// drain serves the queue batch by batch until it is empty.
func (d *deliverer) drain() {
	for {
		d.mu.Lock()
		n := min(len(d.queue), maxDeliveryBatch)
		if n == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		batch := d.queue[:n:n]
		if n == len(d.queue) {
			d.queue = nil // let the array go
		} else {
			d.queue = d.queue[n:]
		}
		d.mu.Unlock()
		d.serve(batch)
	}
}

func (d *deliverer) serve(batch []*delivery) {
	ds := make([]tether.Delivery, len(batch))
	for i, p := range batch {
		ds[i] = p.Delivery
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	defer cancel()
	got, err := d.store.DeliverOrders(ctx, ds, d.now().UTC())
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.orders = got[i]
		}
		close(p.done)
	}
}
