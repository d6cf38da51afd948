package storetest

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func beginBatch(t *testing.T, s tether.Store, agentID string, seq uint64, at time.Time, state ...tether.Event) (tether.BatchStatus, time.Time) {
	t.Helper()
	st, pending, err := s.BeginBatch(ctx(t), agentID, seq, state, at)
	must(t, err)
	return st, pending
}

func testBeginBatch(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	steps := []struct {
		agent   *tether.Agent
		seq     uint64
		finish  bool // FinishBatch after BeginBatch
		want    tether.BatchStatus
		pending time.Time // for BatchNew and BatchPending
		last    uint64
	}{
		{a, 1, true, tether.BatchNew, at(1 * time.Second), 1},
		{a, 1, false, tether.BatchDone, time.Time{}, 1},            // a retry after the delivery
		{a, 2, false, tether.BatchNew, at(3 * time.Second), 2},     // a crash before FinishBatch…
		{a, 2, false, tether.BatchPending, at(3 * time.Second), 2}, // …leaves it pending for the retry,
		{a, 2, true, tether.BatchPending, at(3 * time.Second), 2},  // however often it is retried
		{a, 2, false, tether.BatchDone, time.Time{}, 2},            // until it is finished
		{b, 2, false, tether.BatchNew, at(7 * time.Second), 2},     // agents are independent
		{a, 10, false, tether.BatchNew, at(8 * time.Second), 10},   // a gap is allowed
		{a, 9, false, tether.BatchDone, time.Time{}, 10},
		{a, 11, true, tether.BatchNew, at(10 * time.Second), 11},    // 10 stays pending
		{a, 10, true, tether.BatchPending, at(8 * time.Second), 11}, // and is found again
		{a, 10, false, tether.BatchDone, time.Time{}, 11},
		{b, 2, true, tether.BatchPending, at(7 * time.Second), 2},
		{a, math.MaxInt64, true, tether.BatchNew, at(14 * time.Second), math.MaxInt64},
	}
	for i, step := range steps {
		now := at(time.Duration(i+1) * time.Second)
		st, pending := beginBatch(t, s, step.agent.ID, step.seq, now)
		if st != step.want {
			t.Fatalf("step %d: BeginBatch(%s, %d) = %v, want %v", i, step.agent.Name, step.seq, st, step.want)
		}
		if step.want != tether.BatchDone {
			checkTime(t, "pending time", pending, step.pending)
		}
		if got := getAgent(t, s, step.agent.ID).LastBatchSeq; got != step.last {
			t.Errorf("step %d: LastBatchSeq = %d, want %d", i, got, step.last)
		}
		if step.finish {
			must(t, s.FinishBatch(ctx(t), step.agent.ID, step.seq))
		}
	}
	// Finishing what is not pending is harmless.
	must(t, s.FinishBatch(ctx(t), a.ID, 1))
	must(t, s.FinishBatch(ctx(t), a.ID, 12345))
	must(t, s.FinishBatch(ctx(t), newID(), 1))

	_, _, err := s.BeginBatch(ctx(t), newID(), 1, nil, t0)
	wantCode(t, err, tether.ENOTFOUND)
	_, _, err = s.BeginBatch(ctx(t), a.ID, 0, nil, t0)
	wantCode(t, err, tether.EINVALID)
	_, _, err = s.BeginBatch(ctx(t), a.ID, math.MaxInt64+1, nil, t0)
	wantCode(t, err, tether.EINVALID)

	// A deleted agent's pending batches go with it: an agent enrolled
	// again with the same id starts its sequences afresh.
	beginBatch(t, s, b.ID, 3, t0)
	must(t, s.DeleteAgent(ctx(t), b.ID))
	again := newAgent("b")
	again.ID = b.ID
	must(t, s.RegisterAgent(ctx(t), again, "", at(time.Hour)))
	if st, _ := beginBatch(t, s, b.ID, 3, at(time.Hour)); st != tether.BatchNew {
		t.Errorf("BeginBatch(3) after re-enrollment = %v, want new", st)
	}
}

// testBeginBatchState checks that a batch's state changes are applied with
// its sequence, once, and that a refused batch changes nothing.
func testBeginBatchState(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	entry := func(doc string, seq uint64, at time.Time) *tether.StateEntry {
		return &tether.StateEntry{AgentID: a.ID, Module: "m", Key: "k", Doc: []byte(doc), Sequence: seq, UpdatedAt: at}
	}
	beginBatch(t, s, a.ID, 2, at(time.Second), upsert("m", "k", `{"v": 2}`), upsert("m", "gone", `{}`), del("m", "gone"))
	v2 := entry(`{"v": 2}`, 2, at(time.Second))
	checkState(t, getState(t, s, a.ID, "m"), v2)

	// A retry, pending or done, does not apply its state again, and an
	// older batch arriving late changes nothing.
	beginBatch(t, s, a.ID, 2, at(2*time.Second), upsert("m", "k", `{"v": "retry"}`))
	must(t, s.FinishBatch(ctx(t), a.ID, 2))
	beginBatch(t, s, a.ID, 2, at(3*time.Second), upsert("m", "k", `{"v": "retry"}`))
	beginBatch(t, s, a.ID, 1, at(4*time.Second), upsert("m", "k", `{"v": 1}`))
	checkState(t, getState(t, s, a.ID, "m"), v2)

	// A newer batch replaces and deletes.
	beginBatch(t, s, a.ID, 3, at(5*time.Second), del("m", "k"), upsert("m", "new", `{"v": 3}`))
	checkState(t, getState(t, s, a.ID, "m"), &tether.StateEntry{AgentID: a.ID, Module: "m", Key: "new",
		Doc: []byte(`{"v": 3}`), Sequence: 3, UpdatedAt: at(5 * time.Second)})

	// An unknown operation refuses the whole batch: no sequence, no state.
	_, _, err := s.BeginBatch(ctx(t), a.ID, 4, []tether.Event{upsert("m", "x", `{}`), {Module: "m", Key: "y", Op: "merge"}}, at(6*time.Second))
	wantCode(t, err, tether.EINVALID)
	if got := getAgent(t, s, a.ID).LastBatchSeq; got != 3 {
		t.Errorf("LastBatchSeq after a refused batch = %d, want 3", got)
	}
	if st, _ := beginBatch(t, s, a.ID, 4, at(7*time.Second)); st != tether.BatchNew {
		t.Errorf("BeginBatch(4) after a refused one = %v, want new", st)
	}
}

// testBeginBatchConcurrent begins the same batch from many goroutines (a
// retry racing the first attempt, on several nodes): exactly one is new.
func testBeginBatchConcurrent(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	const callers = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[tether.BatchStatus]int{}
	)
	for range callers {
		wg.Go(func() {
			st, _, err := s.BeginBatch(ctx(t), a.ID, 1, []tether.Event{upsert("m", "k", `{}`)}, t0)
			if err != nil {
				t.Errorf("BeginBatch: %v", err)
				return
			}
			mu.Lock()
			counts[st]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if counts[tether.BatchNew] != 1 || counts[tether.BatchPending] != callers-1 {
		t.Errorf("concurrent BeginBatch: %v, want 1 new and %d pending", counts, callers-1)
	}
}
