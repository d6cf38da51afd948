// Package live is the in-process fan-out of the event batches a server
// node accepted, to the people following them (`tetherctl events tail`,
// GET /api/v1/events/stream).
//
// A Hub is a tether.Sink placed after the durable sinks: its Write hands
// the batch to every subscriber whose filter matches and returns at once;
// it never blocks ingest and never fails. Each subscriber has a bounded
// queue (in events and payload bytes); when a subscriber reads too slowly
// and its queue is full, the batches that follow are skipped until it
// reads again, and it is told how many events it missed, after the
// batches it did get. Nothing is stored: a subscriber sees the batches
// accepted while it is subscribed, on this node only (in a cluster each
// node sees its own ingest), and a batch written again after a failure
// (an agent's retry) may be seen twice.
package live

import (
	"context"
	"errors"
	"sync"

	"github.com/tetherhq/tether"
)

// Defaults of Options.
const (
	DefaultMaxSubscribers = 32
	DefaultQueueEvents    = 10_000
	DefaultQueueBytes     = 4 << 20
)

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("live: closed")

// ErrTooMany is returned by Subscribe when MaxSubscribers are subscribed.
var ErrTooMany = errors.New("live: too many subscribers")

// Options configure a Hub. Zero values take the defaults.
type Options struct {
	// MaxSubscribers bounds the subscriptions open at once.
	MaxSubscribers int
	// QueueEvents and QueueBytes bound what a subscriber may have waiting:
	// events, and bytes of their payloads. A batch that does not fit is
	// skipped, and so is every batch after it until the subscriber takes
	// what waits (a batch larger than the bounds fits an empty queue).
	QueueEvents int
	QueueBytes  int
}

// Filter selects the events of a subscription; empty fields match all.
type Filter struct {
	AgentID string
	Module  string
}

// Hub fans accepted batches out to subscribers. It is safe for concurrent
// use.
type Hub struct {
	opts Options

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

var _ tether.Sink = (*Hub)(nil)

// New returns a Hub.
func New(opts Options) *Hub {
	if opts.MaxSubscribers <= 0 {
		opts.MaxSubscribers = DefaultMaxSubscribers
	}
	if opts.QueueEvents <= 0 {
		opts.QueueEvents = DefaultQueueEvents
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	return &Hub{opts: opts, subs: map[*Subscription]struct{}{}}
}

// Subscribe starts a subscription to the batches written from now on that
// match f. Release it with Close.
func (h *Hub) Subscribe(f Filter) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if len(h.subs) >= h.opts.MaxSubscribers {
		return nil, ErrTooMany
	}
	s := &Subscription{hub: h, filter: f, ready: make(chan struct{}, 1), done: make(chan struct{})}
	h.subs[s] = struct{}{}
	return s, nil
}

// Subscribers returns the number of open subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Write hands b to the subscribers whose filter matches some of its
// events. It does not wait for them and always returns nil: following
// events live is best effort, and never holds ingest back.
func (h *Hub) Write(_ context.Context, b *tether.Batch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if fb := s.filter.apply(b); fb != nil {
			s.push(fb, h.opts)
		}
	}
	return nil
}

// Close ends every subscription (their Done channels close) and makes
// later Subscribes fail. Writes after Close do nothing.
func (h *Hub) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	for s := range h.subs {
		close(s.done)
		delete(h.subs, s)
	}
	return nil
}

// apply returns b, or a copy of b with only the events f matches, or nil
// when it matches none.
func (f Filter) apply(b *tether.Batch) *tether.Batch {
	if f.AgentID != "" && f.AgentID != b.AgentID {
		return nil
	}
	if f.Module == "" {
		return b
	}
	var events []tether.Event
	for i := range b.Events {
		if b.Events[i].Module == f.Module {
			events = append(events, b.Events[i])
		}
	}
	switch len(events) {
	case 0:
		return nil
	case len(b.Events):
		return b
	}
	cp := *b
	cp.Events = events
	return &cp
}

// Subscription receives the matching batches of a Hub.
type Subscription struct {
	hub    *Hub
	filter Filter
	ready  chan struct{} // a value when batches or a skip count wait
	done   chan struct{} // closed when the hub closed

	// Guarded by hub.mu.
	queue   []*tether.Batch
	events  int // in queue
	bytes   int // of payloads in queue
	skipped int // events skipped since the last Take
}

// push queues b, or counts its events as skipped when the queue is full or
// skipping already started. Callers hold hub.mu.
func (s *Subscription) push(b *tether.Batch, o Options) {
	size := 0
	for i := range b.Events {
		size += len(b.Events[i].Payload)
	}
	full := len(s.queue) > 0 && (s.events+len(b.Events) > o.QueueEvents || s.bytes+size > o.QueueBytes)
	if s.skipped > 0 || full {
		s.skipped += len(b.Events)
	} else {
		s.queue = append(s.queue, b)
		s.events += len(b.Events)
		s.bytes += size
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready receives a value when batches (or a count of skipped events) are
// waiting: call Take.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Done is closed when the hub closed (the node is shutting down).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Take returns the batches waiting, oldest first, each with only the
// events the filter matches, and how many matching events were skipped
// after them because the queue was full. The batches are shared with the
// sinks: do not change them.
func (s *Subscription) Take() (batches []*tether.Batch, skipped int) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	batches, skipped = s.queue, s.skipped
	s.queue, s.events, s.bytes, s.skipped = nil, 0, 0, 0
	return batches, skipped
}

// Close ends the subscription. Closing again does nothing.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	if _, ok := s.hub.subs[s]; ok {
		delete(s.hub.subs, s)
		close(s.done)
	}
	s.queue = nil
}
