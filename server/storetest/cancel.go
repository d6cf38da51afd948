package storetest

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func testCancelOrders(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	c := register(t, s, "c")
	r, orders := createCommand(t, s, t0, time.Hour, a, b, c)
	oa, ob, oc := orders[0], orders[1], orders[2]
	_, err := deliver(t, s, b.ID, nil, 10, at(time.Second))
	must(t, err)
	res := tether.Result{Message: "done"}
	_, err = s.FinishOrder(ctx(t), c.ID, oc.ID, tether.OrderSuccess, res, at(2*time.Second))
	must(t, err)

	// Pending and sent orders fail; finished ones stay. Only b had been
	// sent its order: it is the agent to tell.
	n, sentTo, err := s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r.ID}, at(time.Minute))
	must(t, err)
	if n != 2 {
		t.Errorf("CancelOrders = %d, want 2", n)
	}
	checkStrings(t, "agents sent a cancelled order", sentTo, []string{b.ID})
	cancelled := tether.Result{Message: "cancelled"}
	want := *oa
	want.Status, want.Result, want.FinishedAt = tether.OrderFailure, cancelled, at(time.Minute)
	checkOrder(t, getOrder(t, s, oa.ID), &want)
	want = *ob
	want.Status, want.SentAt, want.Attempts = tether.OrderFailure, at(time.Second), 1
	want.Result, want.FinishedAt = cancelled, at(time.Minute)
	checkOrder(t, getOrder(t, s, ob.ID), &want)
	wantC := *oc
	wantC.Status, wantC.Result, wantC.FinishedAt = tether.OrderSuccess, res, at(2*time.Second)
	checkOrder(t, getOrder(t, s, oc.ID), &wantC)

	// Again: nothing changes.
	n, sentTo, err = s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r.ID}, at(2*time.Minute))
	must(t, err)
	if n != 0 || len(sentTo) != 0 {
		t.Errorf("second CancelOrders = %d, %v; want 0 and no agent", n, sentTo)
	}
	checkOrder(t, getOrder(t, s, ob.ID), &want)

	// A late report does not overwrite the cancel, and a cancelled order
	// is not delivered.
	got, err := s.FinishOrder(ctx(t), b.ID, ob.ID, tether.OrderSuccess, res, at(3*time.Minute))
	must(t, err)
	checkOrder(t, got, &want)
	for _, ag := range []*tether.Agent{a, b} {
		delivered, err := deliver(t, s, ag.ID, nil, 10, at(3*time.Minute))
		must(t, err)
		checkStrings(t, "delivered after cancel", ids(delivered), nil)
	}

	// One order of a request.
	r2, orders2 := createCommand(t, s, at(time.Minute), time.Hour, a, b)
	n, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{OrderID: orders2[1].ID}, at(4*time.Minute))
	must(t, err)
	if n != 1 {
		t.Errorf("CancelOrders of one order = %d, want 1", n)
	}
	if o := getOrder(t, s, orders2[1].ID); o.Status != tether.OrderFailure || o.Result.Message != "cancelled" {
		t.Errorf("cancelled order: status %s, message %q", o.Status, o.Result.Message)
	}
	checkOrder(t, getOrder(t, s, orders2[0].ID), orders2[0])
	n, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{OrderID: orders2[1].ID}, at(5*time.Minute))
	must(t, err)
	if n != 0 {
		t.Errorf("second CancelOrders of one order = %d, want 0", n)
	}
	// Of a request, both given.
	n, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r2.ID, OrderID: orders2[0].ID}, at(5*time.Minute))
	must(t, err)
	if n != 1 {
		t.Errorf("CancelOrders of one order of a request = %d, want 1", n)
	}

	// A request without orders.
	srv := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
		Action: tether.Action{Name: "noop"}, CreatedAt: t0}
	must(t, s.CreateCommand(ctx(t), srv, nil))
	n, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: srv.ID}, at(time.Minute))
	must(t, err)
	if n != 0 {
		t.Errorf("CancelOrders of a request without orders = %d, want 0", n)
	}

	for _, f := range []tether.CancelFilter{
		{RequestID: newID()},
		{OrderID: newID()},
		{RequestID: r2.ID, OrderID: oa.ID}, // an order of another request
		{RequestID: newID(), OrderID: oa.ID},
	} {
		_, _, err = s.CancelOrders(ctx(t), f, at(time.Hour))
		wantCode(t, err, tether.ENOTFOUND)
	}
	_, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{}, at(time.Hour))
	wantCode(t, err, tether.EINVALID)
}

// testCancelOrdersConcurrent cancels requests while sweepers expire the
// same orders and agents report results: every order changes exactly once,
// and each change is counted by the call that made it.
func testCancelOrdersConcurrent(t *testing.T, s tether.Store) {
	const agents, requests = 10, 20
	var as []*tether.Agent
	for i := range agents {
		as = append(as, register(t, s, fmt.Sprintf("a%d", i)))
	}
	var reqs []*tether.CommandRequest
	var all []*tether.Order
	for i := range requests {
		// The window of request i ends at t0+i+1s: the sweeps, at t0+1s,
		// t0+2s…, expire the requests one after the other.
		r, orders := createCommand(t, s, t0, time.Duration(i+1)*time.Second, as...)
		reqs = append(reqs, r)
		all = append(all, orders...)
	}
	now := at(2 * time.Minute)

	const workers = 4
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		expired, canceled int
	)
	for w := range workers {
		wg.Go(func() { // sweeper
			for i := range requests {
				n, err := s.ExpireOrders(ctx(t), at(time.Duration(i+1)*time.Second))
				if err != nil {
					t.Errorf("ExpireOrders: %v", err)
					return
				}
				mu.Lock()
				expired += n
				mu.Unlock()
			}
		})
		wg.Go(func() { // canceller, each in its own order
			for i := range requests {
				r := reqs[(i*(w+1)+w)%requests]
				n, _, err := s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r.ID}, now)
				if err != nil {
					t.Errorf("CancelOrders: %v", err)
					return
				}
				mu.Lock()
				canceled += n
				mu.Unlock()
			}
		})
	}
	for _, a := range as[:workers] {
		wg.Go(func() { // an agent reporting its results
			for _, o := range all {
				if o.AgentID != a.ID {
					continue
				}
				if _, err := s.FinishOrder(ctx(t), a.ID, o.ID, tether.OrderSuccess, tether.Result{Message: "ok"}, now); err != nil {
					t.Errorf("FinishOrder: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()

	byMessage := map[string]int{}
	for _, o := range all {
		got := getOrder(t, s, o.ID)
		if !got.Status.Finished() {
			t.Errorf("order %s is %s after cancel and sweep", o.ID, got.Status)
		}
		byMessage[got.Result.Message]++
	}
	if byMessage["timed out"] != expired || byMessage["cancelled"] != canceled ||
		expired+canceled+byMessage["ok"] != len(all) {
		t.Errorf("sweepers counted %d, cancellers %d; orders: %v (of %d)", expired, canceled, byMessage, len(all))
	}
	t.Logf("%d orders: %d timed out, %d cancelled, %d reported", len(all), expired, canceled, byMessage["ok"])
}

// testFinishedAmong tells an agent which of the orders it holds finished
// on the server: of that agent only, unknown ids left out.
func testFinishedAmong(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	r, orders := createCommand(t, s, t0, time.Hour, a, b)
	_, more := createCommand(t, s, at(time.Second), time.Hour, a, a)
	all := []string{orders[0].ID, orders[1].ID, more[0].ID, more[1].ID, newID()}
	got, err := s.FinishedAmong(ctx(t), a.ID, all)
	must(t, err)
	checkStrings(t, "finished before any", got, nil)

	_, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r.ID}, at(time.Minute))
	must(t, err)
	_, err = s.FinishOrder(ctx(t), a.ID, more[1].ID, tether.OrderSuccess, tether.Result{}, at(time.Minute))
	must(t, err)
	got, err = s.FinishedAmong(ctx(t), a.ID, all)
	must(t, err)
	checkStrings(t, "finished orders of a", sortedStrings(got), sortedStrings([]string{orders[0].ID, more[1].ID}))
	got, err = s.FinishedAmong(ctx(t), b.ID, all)
	must(t, err)
	checkStrings(t, "finished orders of b", got, []string{orders[1].ID})
	got, err = s.FinishedAmong(ctx(t), a.ID, nil)
	must(t, err)
	checkStrings(t, "finished among none", got, nil)
}

// testCountOrders counts orders by status and action.
func testCountOrders(t *testing.T, s tether.Store) {
	got, err := s.CountOrders(ctx(t))
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("CountOrders of an empty store = %+v", got)
	}
	a := register(t, s, "a")
	b := register(t, s, "b")
	_, orders := createCommand(t, s, t0, time.Hour, a, b) // action "restart"
	_, err = deliver(t, s, a.ID, nil, 10, at(time.Second))
	must(t, err)
	r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetAgent, ID: a.ID},
		Action: tether.Action{Name: "get-config"}, CreatedAt: t0}
	o := &tether.Order{ID: newID(), RequestID: r.ID, AgentID: a.ID, Action: r.Action, Status: tether.OrderPending, CreatedAt: t0}
	must(t, s.CreateCommand(ctx(t), r, []*tether.Order{o}))
	_, err = s.FinishOrder(ctx(t), b.ID, orders[1].ID, tether.OrderSuccess, tether.Result{}, at(time.Minute))
	must(t, err)

	got, err = s.CountOrders(ctx(t))
	must(t, err)
	want := map[string]int{"sent/" + orders[0].Action.Name: 1, "success/" + orders[1].Action.Name: 1, "pending/get-config": 1}
	gotMap := map[string]int{}
	for _, c := range got {
		gotMap[string(c.Status)+"/"+c.Action] += c.N
	}
	if !maps.Equal(gotMap, want) {
		t.Errorf("CountOrders = %v, want %v", gotMap, want)
	}
}
