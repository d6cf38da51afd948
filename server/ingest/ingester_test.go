package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/ingest"
	"github.com/tetherhq/tether/server/sinktest"
	"github.com/tetherhq/tether/server/sqlite"
)

// memSink keeps batches in memory, fails its writes while fail is set
// (after storing the first failAfter events, as a crash in the middle of a
// write would), and tells which events it holds when held is set.
type memSink struct {
	mu        sync.Mutex
	events    []string // "agent/seq/event id", in write order
	writes    int
	fail      bool
	failAfter int
	heldCalls int
}

func (m *memSink) Write(ctx context.Context, b *tether.Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	for i, e := range b.Events {
		if m.fail && i == m.failAfter {
			return errors.New("disk full")
		}
		m.events = append(m.events, fmt.Sprintf("%s/%s", b.ID(), e.ID))
	}
	if m.fail {
		return errors.New("disk full")
	}
	return nil
}

func (m *memSink) Close() error { return nil }

func (m *memSink) stored() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.events...)
}

// heldSink is a memSink that is a tether.HeldSink.
type heldSink struct{ memSink }

func (h *heldSink) Held(ctx context.Context, agentID string, seq uint64, since time.Time) (map[string]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.heldCalls++
	held := map[string]bool{}
	prefix := fmt.Sprintf("%s/%d/", agentID, seq)
	for _, e := range h.events {
		if id, ok := strings.CutPrefix(e, prefix); ok {
			held[id] = true
		}
	}
	return held, nil
}

type env struct {
	db    *sqlite.DB
	agent string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	id := uuid.NewString()
	if err := db.RegisterAgent(context.Background(), &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	return &env{db: db, agent: id}
}

func (e *env) batch(seq uint64, n int) *tether.Batch {
	b := sinktest.NewBatch(e.agent, seq, n)
	b.ReceivedAt = time.Now().UTC()
	return b
}

func ingestOK(t *testing.T, in *ingest.Ingester, b *tether.Batch, want ingest.Result) {
	t.Helper()
	got, err := in.Ingest(context.Background(), b)
	if err != nil {
		t.Fatalf("Ingest(%s): %v", b.ID(), err)
	}
	if got != want {
		t.Fatalf("Ingest(%s) = %v, want %v", b.ID(), got, want)
	}
}

func checkStored(t *testing.T, got []string, batches ...*tether.Batch) {
	t.Helper()
	var want []string
	for _, b := range batches {
		for _, e := range b.Events {
			want = append(want, fmt.Sprintf("%s/%s", b.ID(), e.ID))
		}
	}
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Errorf("event %s stored %d times, want once", w, seen[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d events stored, want %d", len(got), len(want))
	}
}

func TestIngestOnce(t *testing.T) {
	e := newEnv(t)
	a, b := &memSink{}, &heldSink{}
	in := ingest.New(ingest.Options{Store: e.db, Sinks: []tether.Sink{a, b}})
	b1, b2 := e.batch(1, 3), e.batch(2, 2)
	ingestOK(t, in, b1, ingest.Stored)
	ingestOK(t, in, b1, ingest.Duplicate)
	ingestOK(t, in, b2, ingest.Stored)
	ingestOK(t, in, b1, ingest.Duplicate) // late
	ingestOK(t, in, b2, ingest.Duplicate)
	for _, s := range []*memSink{a, &b.memSink} {
		checkStored(t, s.stored(), b1, b2)
	}
	if b.heldCalls != 0 {
		t.Errorf("Held called %d times for batches never pending", b.heldCalls)
	}
}

// TestIngestSinkFailure fails the second sink in the middle of a batch:
// the push fails, the batch stays pending, and the retry gives each sink
// what it lacks: a HeldSink gets only the missing events, another sink the
// whole batch again (it must de-duplicate by Batch.ID on its own).
func TestIngestSinkFailure(t *testing.T) {
	e := newEnv(t)
	first, held, plain := &heldSink{}, &heldSink{}, &memSink{}
	in := ingest.New(ingest.Options{Store: e.db, Sinks: []tether.Sink{first, held, plain}})
	b1 := e.batch(1, 5)
	held.fail, held.failAfter = true, 2
	_, err := in.Ingest(context.Background(), b1)
	if tether.ErrorCode(err) != tether.EUNAVAILABLE {
		t.Fatalf("Ingest with a failing sink: %v, want EUNAVAILABLE", err)
	}
	var te *tether.Error
	if !errors.As(err, &te) || te.RetryAfter <= 0 {
		t.Errorf("sink failure without a retry delay: %#v", err)
	}
	if n := len(plain.stored()); n != 0 {
		t.Fatalf("sink after the failing one got %d events", n)
	}
	held.fail = false
	ingestOK(t, in, b1, ingest.Completed)
	checkStored(t, first.stored(), b1)
	checkStored(t, held.stored(), b1)
	checkStored(t, plain.stored(), b1)
	if first.writes != 1 {
		t.Errorf("a HeldSink that held the whole batch was written %d times, want 1", first.writes)
	}
	ingestOK(t, in, b1, ingest.Duplicate)
	ingestOK(t, in, e.batch(2, 1), ingest.Stored)
}

// TestIngestConcurrentRetries sends the same batch many times at once (an
// agent whose first attempt timed out on its side): it is written once.
func TestIngestConcurrentRetries(t *testing.T) {
	e := newEnv(t)
	s := &memSink{}
	in := ingest.New(ingest.Options{Store: e.db, Sinks: []tether.Sink{s}})
	b1 := e.batch(1, 10)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results = map[ingest.Result]int{}
	)
	for range 8 {
		wg.Go(func() {
			r, err := in.Ingest(context.Background(), b1)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			results[r]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if results[ingest.Stored] != 1 || results[ingest.Duplicate] != 7 {
		t.Errorf("results %v, want 1 stored and 7 duplicates", results)
	}
	checkStored(t, s.stored(), b1)
}

func TestIngestStateful(t *testing.T) {
	e := newEnv(t)
	in := ingest.New(ingest.Options{Store: e.db, Sinks: []tether.Sink{&memSink{}}})
	state := func(seq uint64, doc string) *tether.Batch {
		b := e.batch(seq, 1)
		b.Stateful = true
		b.Events[0].Module, b.Events[0].Key, b.Events[0].Op, b.Events[0].Payload = "inventory", "host", tether.StateUpsert, []byte(doc)
		return b
	}
	ingestOK(t, in, state(2, `{"v":2}`), ingest.Stored)
	ingestOK(t, in, state(1, `{"v":1}`), ingest.Duplicate) // late: does not overwrite
	ingestOK(t, in, state(2, `{"v":"again"}`), ingest.Duplicate)
	got, err := e.db.State(context.Background(), e.agent, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Doc) != `{"v":2}` || got[0].Sequence != 2 {
		t.Fatalf("state %+v, want host = {\"v\":2} from batch 2", got)
	}
}

func TestIngestUnknownAgent(t *testing.T) {
	e := newEnv(t)
	in := ingest.New(ingest.Options{Store: e.db, Sinks: []tether.Sink{&memSink{}}})
	b := e.batch(1, 1)
	b.AgentID = uuid.NewString()
	if _, err := in.Ingest(context.Background(), b); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Fatalf("Ingest of an unknown agent: %v, want ENOTFOUND", err)
	}
}
