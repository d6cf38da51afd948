package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"reflect"
	"sync"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/metrics"
)

// Options configure an Ingester.
type Options struct {
	Store tether.BatchStore
	// Sinks receive every batch; a push is acknowledged only once all of
	// them accepted it.
	Sinks   []tether.Sink
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Now returns the current time (time.Now when nil).
	Now func() time.Time
}

// Ingester delivers batches into the sinks exactly once per (agent,
// sequence). It is safe for concurrent use.
type Ingester struct {
	o     Options
	names []string // of the sinks, for metrics and logs
	locks agentLocks
}

// New returns an Ingester.
func New(o Options) *Ingester {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	in := &Ingester{o: o, locks: agentLocks{m: map[string]*agentLock{}}}
	for _, s := range o.Sinks {
		in.names = append(in.names, SinkName(s))
	}
	return in
}

// SinkName names a sink by its package: "file", "stdout"…
func SinkName(s tether.Sink) string {
	t := reflect.TypeOf(s)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if p := t.PkgPath(); p != "" {
		return path.Base(p)
	}
	return t.String()
}

// Result says what Ingest did with a batch.
type Result int

// Results of Ingest.
const (
	// Stored: the batch was new and is now in every sink.
	Stored Result = iota + 1
	// Completed: the batch had been accepted before but its delivery was
	// cut short; every sink now holds it.
	Completed
	// Duplicate: the batch had been delivered before; nothing was written.
	Duplicate
)

func (r Result) String() string {
	switch r {
	case Stored:
		return "stored"
	case Completed:
		return "completed"
	case Duplicate:
		return "duplicate"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Ingest delivers b (b.AgentID, b.Sequence and b.ReceivedAt set, events
// validated) into every sink, and applies its stateful events to the state
// store, exactly once. It returns when the batch is durably held by every
// sink; an error leaves it pending, for a retry of the same sequence to
// complete.
func (in *Ingester) Ingest(ctx context.Context, b *tether.Batch) (Result, error) {
	unlock, err := in.locks.lock(ctx, b.AgentID)
	if err != nil {
		return 0, err
	}
	defer unlock()

	var state []tether.Event
	if b.Stateful {
		state = b.Events
	}
	status, since, err := in.o.Store.BeginBatch(ctx, b.AgentID, b.Sequence, state, b.ReceivedAt)
	if err != nil {
		return 0, err
	}
	var result Result
	switch status {
	case tether.BatchDone:
		in.o.Metrics.BatchIngested(Duplicate.String())
		return Duplicate, nil
	case tether.BatchNew:
		result = Stored
	case tether.BatchPending:
		result = Completed
	default:
		return 0, fmt.Errorf("begin batch %s: unknown status %d", b.ID(), status)
	}
	crashPoint("accepted")

	for i, sink := range in.o.Sinks {
		if err := in.write(ctx, i, sink, b, status == tether.BatchPending, since); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err() // the caller went away; the batch stays pending
			}
			in.o.Log.Error("event sink failed; the batch stays pending until the agent sends it again", "err", err)
			return 0, &tether.Error{Code: tether.EUNAVAILABLE, RetryAfter: time.Second,
				Message: "event sink unavailable: retry later", Err: err}
		}
	}
	crashPoint("written")

	if err := in.o.Store.FinishBatch(ctx, b.AgentID, b.Sequence); err != nil {
		return 0, err
	}
	crashPoint("finished")

	// Counted once, when the batch's delivery succeeds: a first attempt
	// that failed or crashed counted nothing.
	in.o.Metrics.BatchIngested(result.String())
	countEvents(in.o.Metrics, b.Events)
	return result, nil
}

// write writes b to the sink i. For a pending batch, a HeldSink is given
// only the events it does not hold yet.
func (in *Ingester) write(ctx context.Context, i int, sink tether.Sink, b *tether.Batch, pending bool, since time.Time) error {
	start := time.Now()
	if pending {
		if hs, ok := sink.(tether.HeldSink); ok {
			held, err := hs.Held(ctx, b.AgentID, b.Sequence, since)
			if err != nil {
				return fmt.Errorf("sink %s: batch %s: %w", in.names[i], b.ID(), err)
			}
			rest := *b
			rest.Events = make([]tether.Event, 0, len(b.Events))
			for _, e := range b.Events {
				if !held[e.ID] {
					rest.Events = append(rest.Events, e)
				}
			}
			in.o.Log.Info("completing a batch cut short", "batch", b.ID(), "sink", in.names[i],
				"events", len(b.Events), "held", len(b.Events)-len(rest.Events))
			if len(rest.Events) == 0 {
				return nil
			}
			b = &rest
		}
	}
	err := sink.Write(ctx, b)
	in.o.Metrics.SinkWrite(in.names[i], time.Since(start), err)
	if err != nil {
		return fmt.Errorf("sink %s: batch %s: %w", in.names[i], b.ID(), err)
	}
	return nil
}

// countEvents counts events and payload bytes by module, with one counter
// update per run of events of one module, not per event.
func countEvents(m *metrics.Metrics, events []tether.Event) {
	if m == nil {
		return
	}
	for i := 0; i < len(events); {
		module, n, size := events[i].Module, 0, 0
		for ; i < len(events) && events[i].Module == module; i++ {
			n, size = n+1, size+len(events[i].Payload)
		}
		m.EventsReceived(module, n, size)
	}
}

// agentLocks serializes the batches of each agent on this node.
type agentLocks struct {
	mu sync.Mutex
	m  map[string]*agentLock
}

type agentLock struct {
	ch   chan struct{} // holds a value while locked
	refs int           // holders and waiters
}

// lock waits until no other batch of the agent is being ingested, or ctx
// ends, and returns the function that unlocks.
func (l *agentLocks) lock(ctx context.Context, id string) (func(), error) {
	l.mu.Lock()
	e := l.m[id]
	if e == nil {
		e = &agentLock{ch: make(chan struct{}, 1)}
		l.m[id] = e
	}
	e.refs++
	l.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; l.release(id, e) }, nil
	case <-ctx.Done():
		l.release(id, e)
		return nil, ctx.Err()
	}
}

func (l *agentLocks) release(id string, e *agentLock) {
	l.mu.Lock()
	if e.refs--; e.refs == 0 {
		delete(l.m, id)
	}
	l.mu.Unlock()
}
