package ingest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/metrics"
)

// Defaults of Limits.
const (
	DefaultAgentEventsPerSec   = 5_000
	DefaultAgentBytesPerSec    = 5 << 20
	DefaultMaxInflightRequests = 64
	DefaultMaxInflightBytes    = 256 << 20
	DefaultBusyRetryDelay      = time.Second
)

// Limits configure a Limiter. A zero rate or budget is no limit.
type Limits struct {
	// AgentEventsPerSec and AgentBytesPerSec are the rates at which one
	// agent's buckets refill: events, and bytes of events (payload, id,
	// module, type and key). AgentEventsBurst and AgentBytesBurst are the
	// buckets' sizes (default: two seconds of their rate). A batch passes
	// while neither bucket is in debt and takes its cost from both, which
	// may put them in debt: the next batch waits until they are not, so an
	// agent keeps to its rates over time whatever the size of its batches.
	AgentEventsPerSec float64
	AgentEventsBurst  float64
	AgentBytesPerSec  float64
	AgentBytesBurst   float64
	// MaxInflightRequests and MaxInflightBytes bound the batches this node
	// works on at once (being stored and written to the sinks), and the
	// bytes of their events. A batch past either waits for nothing: it is
	// refused with a retry delay. A batch alone in flight always passes,
	// however large.
	MaxInflightRequests int
	MaxInflightBytes    int64
	// BusyRetryDelay is the base retry delay of a batch refused by the
	// in-flight budget; the delay given is between it and twice it, at
	// random, so that refused agents do not come back all at once.
	BusyRetryDelay time.Duration
}

// sweepEvery is how often idle agents' buckets are forgotten.
const sweepEvery = time.Minute

// Limiter applies Limits. It is safe for concurrent use.
type Limiter struct {
	l       Limits
	now     func() time.Time
	metrics *metrics.Metrics

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
	requests  int
	bytes     int64
}

// bucket is one agent's pair of token buckets. Tokens may be negative: a
// debt that the refill pays before the next batch passes.
type bucket struct {
	events, bytes float64
	at            time.Time
}

// NewLimiter returns a Limiter; now is its clock (time.Now when nil). It
// registers the in-flight gauges with m (which may be nil).
func NewLimiter(l Limits, now func() time.Time, m *metrics.Metrics) *Limiter {
	if now == nil {
		now = time.Now
	}
	if l.AgentEventsBurst <= 0 {
		l.AgentEventsBurst = 2 * l.AgentEventsPerSec
	}
	if l.AgentBytesBurst <= 0 {
		l.AgentBytesBurst = 2 * l.AgentBytesPerSec
	}
	if l.BusyRetryDelay <= 0 {
		l.BusyRetryDelay = DefaultBusyRetryDelay
	}
	lim := &Limiter{l: l, now: now, metrics: m, buckets: map[string]*bucket{}, lastSweep: now()}
	m.Gauge("tether_ingest_inflight_requests", "Event batches this node is storing and writing to the sinks.", func() float64 {
		lim.mu.Lock()
		defer lim.mu.Unlock()
		return float64(lim.requests)
	})
	m.Gauge("tether_ingest_inflight_bytes", "Bytes of the events of the batches in flight on this node.", func() float64 {
		lim.mu.Lock()
		defer lim.mu.Unlock()
		return float64(lim.bytes)
	})
	return lim
}

// Admit lets a batch of the agent with events events of size bytes in,
// and returns the function to call once it is done; or it refuses it with
// an EEXHAUSTED *tether.Error whose RetryAfter says when to try again. A
// refused batch costs the agent nothing.
func (l *Limiter) Admit(agentID string, events int, size int64) (release func(), err error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	b := l.refill(agentID, now)
	if b.events < 0 {
		return nil, l.refuse("agent_events", time.Duration(-b.events/l.l.AgentEventsPerSec*float64(time.Second)),
			"this agent is over its rate of %g events/s", l.l.AgentEventsPerSec)
	}
	if b.bytes < 0 {
		return nil, l.refuse("agent_bytes", time.Duration(-b.bytes/l.l.AgentBytesPerSec*float64(time.Second)),
			"this agent is over its rate of %g bytes/s", l.l.AgentBytesPerSec)
	}
	if l.requests > 0 {
		switch {
		case l.l.MaxInflightRequests > 0 && l.requests >= l.l.MaxInflightRequests:
			return nil, l.refuse("inflight_requests", l.busyDelay(), "the server is busy (%d batches in flight)", l.requests)
		case l.l.MaxInflightBytes > 0 && l.bytes+size > l.l.MaxInflightBytes:
			return nil, l.refuse("inflight_bytes", l.busyDelay(), "the server is busy (%d bytes in flight)", l.bytes)
		}
	}
	if l.l.AgentEventsPerSec > 0 {
		b.events -= float64(events)
	}
	if l.l.AgentBytesPerSec > 0 {
		b.bytes -= float64(size)
	}
	l.requests++
	l.bytes += size
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.requests--
			l.bytes -= size
			l.mu.Unlock()
		})
	}, nil
}

// refill returns the agent's bucket, refilled up to now. Callers hold l.mu.
func (l *Limiter) refill(agentID string, now time.Time) *bucket {
	b := l.buckets[agentID]
	if b == nil {
		b = &bucket{events: l.l.AgentEventsBurst, bytes: l.l.AgentBytesBurst, at: now}
		l.buckets[agentID] = b
		return b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.events = math.Min(l.l.AgentEventsBurst, b.events+dt*l.l.AgentEventsPerSec)
		b.bytes = math.Min(l.l.AgentBytesBurst, b.bytes+dt*l.l.AgentBytesPerSec)
		b.at = now
	}
	return b
}

// sweep forgets the buckets that are full again: a new bucket starts
// full, so nothing changes for their agents. Callers hold l.mu.
func (l *Limiter) sweep(now time.Time) {
	for id := range l.buckets {
		if b := l.refill(id, now); b.events >= l.l.AgentEventsBurst && b.bytes >= l.l.AgentBytesBurst {
			delete(l.buckets, id)
		}
	}
	l.lastSweep = now
}

func (l *Limiter) busyDelay() time.Duration {
	return l.l.BusyRetryDelay + rand.N(l.l.BusyRetryDelay)
}

func (l *Limiter) refuse(limit string, delay time.Duration, format string, args ...any) error {
	l.metrics.Throttled(limit)
	delay = max(delay, time.Millisecond)
	return &tether.Error{
		Code:       tether.EEXHAUSTED,
		Message:    fmt.Sprintf(format, args...) + fmt.Sprintf(": retry in %s", delay.Round(time.Millisecond)),
		RetryAfter: delay,
	}
}
