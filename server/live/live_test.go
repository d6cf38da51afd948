package live_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/live"
)

func batch(agent string, seq uint64, modules ...string) *tether.Batch {
	b := &tether.Batch{AgentID: agent, Sequence: seq, ReceivedAt: time.Now()}
	for i, m := range modules {
		b.Events = append(b.Events, tether.Event{ID: fmt.Sprintf("%s-%d-%d", agent, seq, i), Module: m, Payload: []byte(`{"n":1}`)})
	}
	return b
}

// ids lists the event ids of batches.
func ids(batches []*tether.Batch) string {
	var out []string
	for _, b := range batches {
		for _, e := range b.Events {
			out = append(out, e.ID)
		}
	}
	return fmt.Sprint(out)
}

func write(t *testing.T, h *live.Hub, b *tether.Batch) {
	t.Helper()
	if err := h.Write(context.Background(), b); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func TestFilters(t *testing.T) {
	h := live.New(live.Options{})
	defer h.Close()
	sub := func(f live.Filter) *live.Subscription {
		s, err := h.Subscribe(f)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	all, agentA, logs, agentALogs := sub(live.Filter{}), sub(live.Filter{AgentID: "a"}),
		sub(live.Filter{Module: "log"}), sub(live.Filter{AgentID: "a", Module: "log"})
	b1 := batch("a", 1, "log", "inventory", "log")
	write(t, h, b1)
	write(t, h, batch("b", 1, "log"))
	write(t, h, batch("b", 2, "health"))
	for _, tt := range []struct {
		name string
		s    *live.Subscription
		want string
	}{
		{"all", all, "[a-1-0 a-1-1 a-1-2 b-1-0 b-2-0]"},
		{"agent", agentA, "[a-1-0 a-1-1 a-1-2]"},
		{"module", logs, "[a-1-0 a-1-2 b-1-0]"},
		{"agent and module", agentALogs, "[a-1-0 a-1-2]"},
	} {
		select {
		case <-tt.s.Ready():
		default:
			t.Errorf("%s: not ready", tt.name)
		}
		got, skipped := tt.s.Take()
		if ids(got) != tt.want || skipped != 0 {
			t.Errorf("%s: took %s, skipped %d; want %s", tt.name, ids(got), skipped, tt.want)
		}
	}
	// The filtered copy leaves the batch the sinks hold alone.
	if len(b1.Events) != 3 {
		t.Errorf("the written batch changed: %d events", len(b1.Events))
	}
	// Nothing matches: no wake-up.
	write(t, h, batch("c", 1, "other"))
	select {
	case <-agentA.Ready():
		if got, _ := agentA.Take(); len(got) > 0 {
			t.Errorf("agent a received %s", ids(got))
		}
	default:
	}
}

func TestSlowSubscriberSkips(t *testing.T) {
	h := live.New(live.Options{QueueEvents: 5})
	defer h.Close()
	slow, _ := h.Subscribe(live.Filter{})
	fast, _ := h.Subscribe(live.Filter{})
	for seq := range uint64(6) {
		write(t, h, batch("a", seq+1, "log", "log"))
		if got, _ := fast.Take(); len(got) != 1 {
			t.Fatalf("fast subscriber took %d batches", len(got))
		}
	}
	got, skipped := slow.Take()
	// Two batches of two events fit; a third does not, nor any after it.
	if ids(got) != "[a-1-0 a-1-1 a-2-0 a-2-1]" || skipped != 8 {
		t.Errorf("slow took %s, skipped %d; want two batches and 8 skipped", ids(got), skipped)
	}
	write(t, h, batch("a", 7, "log"))
	if got, skipped := slow.Take(); ids(got) != "[a-7-0]" || skipped != 0 {
		t.Errorf("after catching up: %s, %d skipped", ids(got), skipped)
	}
	// A batch larger than the queue fits an empty one.
	write(t, h, batch("a", 8, "log", "log", "log", "log", "log", "log", "log"))
	if got, _ := slow.Take(); len(got) != 1 {
		t.Errorf("a large batch was skipped")
	}
}

func TestQueueBytes(t *testing.T) {
	h := live.New(live.Options{QueueBytes: 10})
	defer h.Close()
	s, _ := h.Subscribe(live.Filter{})
	write(t, h, batch("a", 1, "log")) // 7 bytes
	write(t, h, batch("a", 2, "log")) // 14: over
	if got, skipped := s.Take(); len(got) != 1 || skipped != 1 {
		t.Errorf("took %d batches, skipped %d; want 1 and 1", len(got), skipped)
	}
}

func TestWriteNeverBlocks(t *testing.T) {
	h := live.New(live.Options{QueueEvents: 1})
	defer h.Close()
	for range 3 {
		if _, err := h.Subscribe(live.Filter{}); err != nil { // never read
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := range uint64(10_000) {
			h.Write(context.Background(), batch("a", seq+1, "log"))
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Write blocked on subscribers that do not read")
	}
}

func TestLimitsAndClose(t *testing.T) {
	h := live.New(live.Options{MaxSubscribers: 2})
	a, _ := h.Subscribe(live.Filter{})
	b, _ := h.Subscribe(live.Filter{})
	if _, err := h.Subscribe(live.Filter{}); err != live.ErrTooMany {
		t.Errorf("third subscription: %v, want ErrTooMany", err)
	}
	a.Close()
	a.Close()
	if h.Subscribers() != 1 {
		t.Errorf("%d subscribers after a Close, want 1", h.Subscribers())
	}
	c, err := h.Subscribe(live.Filter{})
	if err != nil {
		t.Fatalf("subscribe after a Close: %v", err)
	}
	h.Close()
	for _, s := range []*live.Subscription{b, c} {
		select {
		case <-s.Done():
		default:
			t.Error("a subscription is not done after the hub closed")
		}
		s.Close()
	}
	if _, err := h.Subscribe(live.Filter{}); err != live.ErrClosed {
		t.Errorf("subscribe after Close: %v, want ErrClosed", err)
	}
	if err := h.Write(context.Background(), batch("a", 1, "log")); err != nil {
		t.Errorf("Write after Close: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	h := live.New(live.Options{})
	defer h.Close()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for seq := range uint64(200) {
				h.Write(context.Background(), batch(fmt.Sprint("agent-", w), seq+1, "log"))
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 50 {
				s, err := h.Subscribe(live.Filter{Module: "log"})
				if err != nil {
					t.Error(err)
					return
				}
				s.Take()
				s.Close()
			}
		})
	}
	wg.Wait()
	if n := h.Subscribers(); n != 0 {
		t.Errorf("%d subscribers left", n)
	}
}
