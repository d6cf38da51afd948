package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func testExpireOrders(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	_, pending := createCommand(t, s, t0, time.Minute, a)           // window ends at t0+1m
	_, sent := createCommand(t, s, at(time.Second), time.Minute, b) // at t0+1m1s
	_, later := createCommand(t, s, t0, 2*time.Hour, a)
	_, done := createCommand(t, s, t0, time.Minute, a)
	_, err := s.FinishOrder(ctx(t), a.ID, done[0].ID, tether.OrderSuccess, tether.Result{Message: "ok"}, at(2*time.Second))
	must(t, err)
	got, err := deliver(t, s, b.ID, nil, 10, at(2*time.Second))
	must(t, err)
	checkStrings(t, "delivered", ids(got), ids(sent))

	n, err := s.ExpireOrders(ctx(t), at(30*time.Second))
	must(t, err)
	if n != 0 {
		t.Errorf("ExpireOrders before any window ended = %d, want 0", n)
	}

	now := at(time.Minute) // the window of pending ends now, that of sent a second later
	n, err = s.ExpireOrders(ctx(t), now)
	must(t, err)
	if n != 1 {
		t.Errorf("ExpireOrders(t0+1m) = %d, want 1", n)
	}
	now = at(time.Minute + time.Second)
	n, err = s.ExpireOrders(ctx(t), now)
	must(t, err)
	if n != 1 {
		t.Errorf("ExpireOrders(t0+1m1s) = %d, want 1", n)
	}
	for i, o := range []*tether.Order{pending[0], sent[0]} {
		got := getOrder(t, s, o.ID)
		if got.Status != tether.OrderFailure || got.Result.Message != "timed out" {
			t.Errorf("expired order: status %s, message %q, want failure and \"timed out\"", got.Status, got.Result.Message)
		}
		checkTime(t, "FinishedAt", got.FinishedAt, at(time.Minute+time.Duration(i)*time.Second))
	}
	if got := getOrder(t, s, done[0].ID); got.Status != tether.OrderSuccess || got.Result.Message != "ok" {
		t.Errorf("finished order: status %s, message %q, want success and ok", got.Status, got.Result.Message)
	}
	if got := getOrder(t, s, later[0].ID); got.Status != tether.OrderPending {
		t.Errorf("order in its window: status %s, want pending", got.Status)
	}

	n, err = s.ExpireOrders(ctx(t), now)
	must(t, err)
	if n != 0 {
		t.Errorf("second ExpireOrders = %d, want 0", n)
	}
	n, err = s.ExpireOrders(ctx(t), at(3*time.Hour))
	must(t, err)
	if n != 1 {
		t.Errorf("ExpireOrders(t0+3h) = %d, want 1", n)
	}

	// An expired report is not overwritten by a late result.
	o, err := s.FinishOrder(ctx(t), b.ID, sent[0].ID, tether.OrderSuccess, tether.Result{Message: "late"}, at(4*time.Hour))
	must(t, err)
	if o.Status != tether.OrderFailure || o.Result.Message != "timed out" {
		t.Errorf("late report: status %s, message %q, want failure and \"timed out\"", o.Status, o.Result.Message)
	}
}

func testExpireOrdersConcurrent(t *testing.T, s tether.Store) {
	var agents []*tether.Agent
	for i := range 10 {
		agents = append(agents, register(t, s, fmt.Sprintf("a%d", i)))
	}
	for round := range 3 {
		total := 0
		for i := range 5 {
			createCommand(t, s, at(time.Duration(round*10+i)*time.Second), time.Minute, agents...)
			total += len(agents)
		}
		now := at(time.Duration(round*10+10) * time.Minute)
		const sweepers = 4
		counts := make([]int, sweepers)
		var wg sync.WaitGroup
		for i := range sweepers {
			wg.Go(func() {
				n, err := s.ExpireOrders(ctx(t), now)
				if err != nil {
					t.Errorf("ExpireOrders: %v", err)
				}
				counts[i] = n
			})
		}
		wg.Wait()
		sum := 0
		for _, n := range counts {
			sum += n
		}
		if sum != total {
			t.Errorf("round %d: concurrent sweepers expired %v = %d orders, want %d", round, counts, sum, total)
		}
	}
}

func checkState(t *testing.T, got []*tether.StateEntry, want ...*tether.StateEntry) {
	t.Helper()
	if len(got) != len(want) {
		var keys []string
		for _, e := range got {
			keys = append(keys, e.Module+"/"+e.Key)
		}
		t.Errorf("state has %d entries %q, want %d", len(got), keys, len(want))
		return
	}
	for i, w := range want {
		g := got[i]
		if g.AgentID != w.AgentID || g.Module != w.Module || g.Key != w.Key || g.Sequence != w.Sequence {
			t.Errorf("state entry %d = %s %s/%s seq %d, want %s %s/%s seq %d", i,
				g.AgentID, g.Module, g.Key, g.Sequence, w.AgentID, w.Module, w.Key, w.Sequence)
		}
		checkJSON(t, "state Doc of "+w.Module+"/"+w.Key, g.Doc, w.Doc)
		checkTime(t, "state UpdatedAt of "+w.Module+"/"+w.Key, g.UpdatedAt, w.UpdatedAt)
	}
}

func upsert(module, key, doc string) tether.Event {
	return tether.Event{ID: newID(), Module: module, Type: "state", Key: key, Op: tether.StateUpsert,
		Payload: []byte(doc), Encoding: tether.EncodingJSON, CollectedAt: t0}
}

func del(module, key string) tether.Event {
	return tether.Event{ID: newID(), Module: module, Type: "state", Key: key, Op: tether.StateDelete, CollectedAt: t0}
}

func getState(t *testing.T, s tether.Store, agentID, module string) []*tether.StateEntry {
	t.Helper()
	st, err := s.State(ctx(t), agentID, module)
	must(t, err)
	return st
}

func testApplyState(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	t1, t2 := at(time.Minute), at(2*time.Minute)
	must(t, s.ApplyState(ctx(t), a.ID, 1, []tether.Event{
		upsert("inventory", "pkg:bash", `{"version": "5.2"}`),
		upsert("inventory", "os", `{"name": "debian", "version": 12}`),
		{ID: newID(), Module: "logs", Type: "line", Payload: []byte(`{"msg": "stateless"}`)},
		upsert("health", "cpu", `{"load": 0.5}`),
		del("inventory", "never-there"),
		upsert("health", "mem", `{"free": 1}`),
		upsert("health", "mem", `{"free": 2}`), // last one wins
		upsert("health", "disk", `{"free": 3}`),
		del("health", "disk"), // then gone
	}, t1))
	must(t, s.ApplyState(ctx(t), b.ID, 1, []tether.Event{upsert("inventory", "os", `{"name": "alpine"}`)}, t1))

	entry := func(module, key, doc string, seq uint64, at time.Time) *tether.StateEntry {
		return &tether.StateEntry{AgentID: a.ID, Module: module, Key: key, Doc: []byte(doc), Sequence: seq, UpdatedAt: at}
	}
	cpu := entry("health", "cpu", `{"load": 0.5}`, 1, t1)
	mem := entry("health", "mem", `{"free": 2}`, 1, t1)
	os1 := entry("inventory", "os", `{"name": "debian", "version": 12}`, 1, t1)
	bash := entry("inventory", "pkg:bash", `{"version": "5.2"}`, 1, t1)
	checkState(t, getState(t, s, a.ID, ""), cpu, mem, os1, bash)
	checkState(t, getState(t, s, a.ID, "inventory"), os1, bash)
	checkState(t, getState(t, s, a.ID, "nothing"))

	must(t, s.ApplyState(ctx(t), a.ID, 2, []tether.Event{
		upsert("inventory", "os", `{"name": "debian", "version": 13}`),
		del("inventory", "pkg:bash"),
	}, t2))
	os2 := entry("inventory", "os", `{"name": "debian", "version": 13}`, 2, t2)
	checkState(t, getState(t, s, a.ID, ""), cpu, mem, os2)
	checkState(t, getState(t, s, b.ID, ""), &tether.StateEntry{AgentID: b.ID, Module: "inventory", Key: "os",
		Doc: []byte(`{"name": "alpine"}`), Sequence: 1, UpdatedAt: t1})

	must(t, s.ApplyState(ctx(t), a.ID, 3, nil, t2))
	wantCode(t, s.ApplyState(ctx(t), newID(), 1, []tether.Event{upsert("m", "k", `{}`)}, t1), tether.ENOTFOUND)
}

func testApplyStateSequence(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	entry := func(doc string, seq uint64, at time.Time) *tether.StateEntry {
		return &tether.StateEntry{AgentID: a.ID, Module: "m", Key: "k", Doc: []byte(doc), Sequence: seq, UpdatedAt: at}
	}
	apply := func(seq uint64, at time.Time, events ...tether.Event) {
		t.Helper()
		must(t, s.ApplyState(ctx(t), a.ID, seq, events, at))
	}
	apply(5, at(5*time.Second), upsert("m", "k", `{"v": 5}`))
	v5 := entry(`{"v": 5}`, 5, at(5*time.Second))

	// A late retry of an older batch changes nothing.
	apply(4, at(6*time.Second), upsert("m", "k", `{"v": 4}`))
	checkState(t, getState(t, s, a.ID, "m"), v5)
	apply(3, at(6*time.Second), del("m", "k"))
	checkState(t, getState(t, s, a.ID, "m"), v5)

	// A retry of the same batch applies again, to the same result.
	apply(5, at(5*time.Second), upsert("m", "k", `{"v": 5}`))
	checkState(t, getState(t, s, a.ID, "m"), v5)

	// A newer delete removes the key; an older upsert does not bring it back.
	apply(6, at(7*time.Second), del("m", "k"))
	checkState(t, getState(t, s, a.ID, "m"))
	apply(5, at(8*time.Second), upsert("m", "k", `{"v": 5}`))
	checkState(t, getState(t, s, a.ID, "m"))

	// A newer upsert does.
	apply(7, at(9*time.Second), upsert("m", "k", `{"v": 7}`))
	checkState(t, getState(t, s, a.ID, "m"), entry(`{"v": 7}`, 7, at(9*time.Second)))
}
