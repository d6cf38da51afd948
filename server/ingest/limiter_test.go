package ingest_test

import (
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/ingest"
)

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func admit(l *ingest.Limiter, agent string, events int, size int64) (func(), error) {
	return l.Admit(agent, events, size)
}

// wantRefused checks that err is EEXHAUSTED with a retry delay in [min, max].
func wantRefused(t *testing.T, err error, min, max time.Duration) {
	t.Helper()
	e, ok := err.(*tether.Error)
	if !ok || e.Code != tether.EEXHAUSTED {
		t.Fatalf("error %v, want an EEXHAUSTED *tether.Error", err)
	}
	if e.RetryAfter < min || e.RetryAfter > max {
		t.Fatalf("RetryAfter = %s, want between %s and %s (%s)", e.RetryAfter, min, max, e.Message)
	}
}

func mustAdmit(t *testing.T, l *ingest.Limiter, agent string, events int, size int64) func() {
	t.Helper()
	release, err := admit(l, agent, events, size)
	if err != nil {
		t.Fatalf("Admit(%s, %d, %d): %v", agent, events, size, err)
	}
	return release
}

func TestAgentEventRate(t *testing.T) {
	c := newClock()
	l := ingest.NewLimiter(ingest.Limits{AgentEventsPerSec: 1000}, c.now, nil) // burst 2000
	mustAdmit(t, l, "a", 1500, 0)()
	mustAdmit(t, l, "a", 1500, 0)() // the bucket is not in debt yet: passes, and owes 1000
	_, err := admit(l, "a", 1, 0)
	wantRefused(t, err, time.Second, time.Second) // 1000 events at 1000/s
	mustAdmit(t, l, "b", 1000, 0)()               // another agent has its own bucket

	c.add(500 * time.Millisecond)
	_, err = admit(l, "a", 1, 0)
	wantRefused(t, err, 500*time.Millisecond, 500*time.Millisecond)
	c.add(500 * time.Millisecond)
	mustAdmit(t, l, "a", 10_000, 0)() // a batch larger than the burst passes when not in debt…
	_, err = admit(l, "a", 1, 0)
	wantRefused(t, err, 10*time.Second, 10*time.Second) // …and is paid for

	// Over a long run an agent gets its rate, whatever its batch size.
	c.add(time.Hour)
	accepted := 0
	for range 10_000 { // 100 s in steps of 10 ms
		if release, err := admit(l, "a", 300, 0); err == nil {
			accepted += 300
			release()
		}
		c.add(10 * time.Millisecond)
	}
	if rate := float64(accepted) / 100; rate < 990 || rate > 1030 {
		t.Errorf("accepted %d events in 100 s (%.0f/s), want about 1000/s", accepted, rate)
	}
}

func TestAgentByteRate(t *testing.T) {
	c := newClock()
	l := ingest.NewLimiter(ingest.Limits{AgentBytesPerSec: 1 << 20, AgentBytesBurst: 1 << 20}, c.now, nil)
	mustAdmit(t, l, "a", 1, 3<<20)()
	_, err := admit(l, "a", 1, 1)
	wantRefused(t, err, 2*time.Second, 2*time.Second)
	c.add(2 * time.Second)
	mustAdmit(t, l, "a", 1_000_000, 1)() // no event limit
}

func TestRefusalCostsNothing(t *testing.T) {
	c := newClock()
	l := ingest.NewLimiter(ingest.Limits{AgentEventsPerSec: 100, MaxInflightRequests: 1}, c.now, nil)
	release := mustAdmit(t, l, "a", 10, 0)
	for range 100 {
		_, err := admit(l, "b", 100, 0) // the budget is full: b is refused…
		wantRefused(t, err, time.Second, 2*time.Second)
	}
	release()
	mustAdmit(t, l, "b", 200, 0)() // …and its bucket is still full
}

func TestInflightBudget(t *testing.T) {
	c := newClock()
	l := ingest.NewLimiter(ingest.Limits{MaxInflightRequests: 2, MaxInflightBytes: 1000, BusyRetryDelay: 100 * time.Millisecond}, c.now, nil)
	r1 := mustAdmit(t, l, "a", 1, 600)
	_, err := admit(l, "b", 1, 500) // 1100 bytes > 1000
	wantRefused(t, err, 100*time.Millisecond, 200*time.Millisecond)
	r2 := mustAdmit(t, l, "b", 1, 400)
	_, err = admit(l, "c", 1, 0) // 3 requests > 2
	wantRefused(t, err, 100*time.Millisecond, 200*time.Millisecond)
	r1()
	r1() // releasing twice releases once
	_, err = admit(l, "c", 1, 700)
	wantRefused(t, err, 100*time.Millisecond, 200*time.Millisecond)
	r3 := mustAdmit(t, l, "c", 1, 600)
	r2()
	r3()
	// Alone in flight, a batch over the byte budget passes.
	mustAdmit(t, l, "d", 1, 5000)()
}

func TestNoLimits(t *testing.T) {
	l := ingest.NewLimiter(ingest.Limits{}, nil, nil)
	var releases []func()
	for range 1000 {
		releases = append(releases, mustAdmit(t, l, "a", 10_000, 8<<20))
	}
	for _, r := range releases {
		r()
	}
}

func TestIdleBucketsForgotten(t *testing.T) {
	c := newClock()
	l := ingest.NewLimiter(ingest.Limits{AgentEventsPerSec: 10}, c.now, nil) // burst 20
	mustAdmit(t, l, "a", 25, 0)()
	c.add(59 * time.Second)
	mustAdmit(t, l, "b", 25, 0)() // owes 5 events: 0.5 s
	if n := ingest.Buckets(l); n != 2 {
		t.Fatalf("%d buckets, want 2", n)
	}
	c.add(1100 * time.Millisecond) // a minute after the start: a sweep
	mustAdmit(t, l, "c", 25, 0)()
	if n := ingest.Buckets(l); n != 2 {
		t.Fatalf("%d buckets after a sweep, want 2 (b, c: a is full again)", n)
	}
	_, err := admit(l, "c", 1, 0)
	wantRefused(t, err, 500*time.Millisecond, 500*time.Millisecond)
}
