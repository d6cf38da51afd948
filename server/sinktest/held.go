package sinktest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

// testHeld checks, for a sink that is a tether.HeldSink, that Held finds
// the events of a batch the sink holds, including a batch written in two
// parts (a delivery completed after a crash), and nothing else.
func testHeld(t *testing.T, s tether.Sink, _ Reader) {
	if c, ok := s.(*closer); ok {
		s = c.Sink
	}
	hs, ok := s.(tether.HeldSink)
	if !ok {
		t.Skip("not a tether.HeldSink")
	}
	since := time.Now()
	a1, a2, b1 := NewBatch("agent-a", 1, 5), NewBatch("agent-a", 2, 3), NewBatch("agent-b", 1, 2)
	for _, b := range []*tether.Batch{a1, a2, b1} {
		write(t, s, b)
	}
	// Batch a/3 in two parts: its first three events, then the others.
	a3 := NewBatch("agent-a", 3, 5)
	first, rest := *a3, *a3
	first.Events, rest.Events = a3.Events[:3], a3.Events[3:]
	write(t, s, &first)
	check := func(agent string, seq uint64, want *tether.Batch, n int) {
		t.Helper()
		held, err := hs.Held(context.Background(), agent, seq, since)
		if err != nil {
			t.Fatalf("Held(%s, %d): %v", agent, seq, err)
		}
		var got, wantIDs []string
		for id := range held {
			got = append(got, id)
		}
		if want != nil {
			for _, e := range want.Events[:n] {
				wantIDs = append(wantIDs, e.ID)
			}
		}
		slices.Sort(got)
		slices.Sort(wantIDs)
		if !slices.Equal(got, wantIDs) {
			t.Errorf("Held(%s, %d) = %v, want %v", agent, seq, got, wantIDs)
		}
	}
	check("agent-a", 1, a1, 5)
	check("agent-a", 2, a2, 3)
	check("agent-b", 1, b1, 2)
	check("agent-a", 3, a3, 3)
	write(t, s, &rest)
	check("agent-a", 3, a3, 5)
	check("agent-a", 4, nil, 0)
	check("agent-c", 1, nil, 0)
}
