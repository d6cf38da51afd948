package sinktest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tetherhq/tether"
)

// Storage is what a sink writes into and outlives the sink: the directory
// of the file sink, a JetStream stream, a Kafka topic.
type Storage struct {
	// Open returns a sink over the storage. The suite calls it again after
	// closing the previous sink, as a restarted server does.
	Open func(t *testing.T) tether.Sink
	// Read returns every record the storage holds, as Reader does.
	Read Reader
	// Expire, when the sink bounds what it keeps (age, total size), makes
	// it apply its limits now; nil skips the retention tests. The limits
	// must keep less than the ~300 KiB of records the test writes, and
	// more than the last ~10 KiB, and the sink may delete whole batches
	// only, oldest first.
	Expire func(t *testing.T, s tether.Sink)
}

// RunStorage runs the tests of what a sink keeps across its lifetimes:
// reopening the storage, and retention. newStorage returns a new, empty
// storage for each test.
func RunStorage(t *testing.T, newStorage func(t *testing.T) Storage) {
	tests := []struct {
		name      string
		retention bool
		fn        func(t *testing.T, st Storage)
	}{
		{"Reopen", false, testReopen},
		{"RetentionKeepsNewest", true, testRetentionKeepsNewest},
		{"RetentionThenReopen", true, testRetentionThenReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStorage(t)
			if tt.retention && st.Expire == nil {
				t.Skip("the sink keeps everything")
			}
			tt.fn(t, st)
		})
	}
}

// open opens a sink of st that the test's cleanup closes, and a function
// that closes it earlier.
func (st Storage) open(t *testing.T) (tether.Sink, func()) {
	t.Helper()
	s := st.Open(t)
	closed := false
	closeSink := func() {
		t.Helper()
		if !closed {
			closed = true
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}
	t.Cleanup(closeSink)
	return s, closeSink
}

func testReopen(t *testing.T, st Storage) {
	var batches []*tether.Batch
	for round := range 3 {
		s, closeSink := st.open(t)
		for i := range uint64(5) {
			b := NewBatch("agent-1", uint64(round)*5+i+1, 2)
			write(t, s, b)
			batches = append(batches, b)
		}
		closeSink()
	}
	checkAll(t, st.Read(t), batches)
	// A sink opened and closed without writing changes nothing.
	_, closeSink := st.open(t)
	closeSink()
	checkAll(t, st.Read(t), batches)
}

// writeMany writes 200 batches of about 1.5 KiB, alternating between two
// agents, and returns them.
func writeMany(t *testing.T, s tether.Sink, from uint64) []*tether.Batch {
	var batches []*tether.Batch
	for i := range uint64(200) {
		agent := fmt.Sprintf("agent-%d", i%2)
		b := NewBatch(agent, from+i/2, 8)
		write(t, s, b)
		batches = append(batches, b)
	}
	return batches
}

func testRetentionKeepsNewest(t *testing.T, st Storage) {
	s, _ := st.open(t)
	batches := writeMany(t, s, 1)
	st.Expire(t, s)
	recs := st.Read(t)
	checkSuffix(t, recs, batches)
	if total := countEvents(batches); len(recs) >= total {
		t.Fatalf("retention kept all %d records", total)
	}
	// The sink goes on.
	b := NewBatch("agent-0", 1000, 1)
	write(t, s, b)
	recs = st.Read(t)
	checkSuffix(t, recs, append(batches, b))
}

func testRetentionThenReopen(t *testing.T, st Storage) {
	s, closeSink := st.open(t)
	batches := writeMany(t, s, 1)
	closeSink()
	s, _ = st.open(t)
	batches = append(batches, writeMany(t, s, 101)...)
	st.Expire(t, s)
	checkSuffix(t, st.Read(t), batches)
}

func countEvents(batches []*tether.Batch) int {
	n := 0
	for _, b := range batches {
		n += len(b.Events)
	}
	return n
}

// checkSuffix checks what retention left: for each agent, the records are
// the events of its last batches, whole, in write order, and its last
// batch is among them.
func checkSuffix(t *testing.T, recs []map[string]any, batches []*tether.Batch) {
	t.Helper()
	byAgent := map[string][]*tether.Batch{}
	for _, b := range batches {
		byAgent[b.AgentID] = append(byAgent[b.AgentID], b)
	}
	got := map[string][]map[string]any{}
	for _, r := range recs {
		agent, _ := r["agent_id"].(string)
		if _, ok := byAgent[agent]; !ok {
			t.Fatalf("unexpected record %v", r)
		}
		got[agent] = append(got[agent], r)
	}
	for agent, bs := range byAgent {
		rs := got[agent]
		// Walk back from the last batch, matching whole batches.
		i := len(rs)
		kept := 0
		for j := len(bs) - 1; j >= 0 && i > 0; j-- {
			b := bs[j]
			n := len(b.Events)
			if i < n {
				t.Fatalf("agent %s: %d records left before batch %d of %d events: a batch was cut", agent, i, b.Sequence, n)
			}
			for k := range n {
				checkRecord(t, rs[i-n+k], b, k)
			}
			i -= n
			kept++
		}
		if i != 0 {
			var ids []string
			for _, r := range rs[:i] {
				ids = append(ids, fmt.Sprint(r["event_id"]))
			}
			t.Errorf("agent %s: records before its kept batches: %s", agent, strings.Join(ids, " "))
		}
		if kept == 0 {
			t.Errorf("agent %s: retention deleted its last batch", agent)
		}
	}
}
