package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func checkRequest(t *testing.T, got, want *tether.CommandRequest) {
	t.Helper()
	if got.ID != want.ID || got.Target != want.Target || got.Action.Name != want.Action.Name ||
		got.Action.Version != want.Action.Version || got.Timeout != want.Timeout ||
		got.Source != want.Source || got.User != want.User {
		t.Errorf("request = %+v, want %+v", got, want)
	}
	checkJSON(t, "request Action.Args", got.Action.Args, want.Action.Args)
	checkTime(t, "request CreatedAt", got.CreatedAt, want.CreatedAt)
}

func checkOrder(t *testing.T, got, want *tether.Order) {
	t.Helper()
	if got.ID != want.ID || got.RequestID != want.RequestID || got.AgentID != want.AgentID ||
		got.Action.Name != want.Action.Name || got.Action.Version != want.Action.Version ||
		got.Status != want.Status || got.Result.Code != want.Result.Code ||
		got.Result.Message != want.Result.Message || got.User != want.User || got.Attempts != want.Attempts {
		t.Errorf("order = %+v, want %+v", got, want)
	}
	checkJSON(t, "order Action.Args", got.Action.Args, want.Action.Args)
	checkJSON(t, "order Result.Data", got.Result.Data, want.Result.Data)
	checkTime(t, "order CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "order SentAt", got.SentAt, want.SentAt)
	checkTime(t, "order ReceivedAt", got.ReceivedAt, want.ReceivedAt)
	checkTime(t, "order FinishedAt", got.FinishedAt, want.FinishedAt)
	checkTime(t, "order TimeoutAt", got.TimeoutAt, want.TimeoutAt)
	checkStrings(t, "order AgentGroups", got.AgentGroups, want.AgentGroups)
}

// testOrderAgentGroups keeps, on each order, the groups its agent was in
// when the order was created.
func testOrderAgentGroups(t *testing.T, s tether.Store) {
	a := register(t, s, "a", "web", "eu")
	_, direct := createCommand(t, s, t0, time.Hour, a)
	checkStrings(t, "groups of an agent order", direct[0].AgentGroups, []string{"web", "eu"})
	r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetGroup, ID: "eu"},
		Action: tether.Action{Name: "restart"}, CreatedAt: t0}
	expanded, err := s.CreateGroupCommand(ctx(t), r, tether.Order{TimeoutAt: at(time.Hour)})
	must(t, err)
	if len(expanded) != 1 {
		t.Fatalf("group command expanded to %d orders", len(expanded))
	}
	checkStrings(t, "groups of a group order", expanded[0].AgentGroups, []string{"web", "eu"})

	must(t, s.SetAgentGroups(ctx(t), a.ID, []string{"db"}))
	for _, o := range []*tether.Order{direct[0], expanded[0]} {
		checkStrings(t, "groups kept after the agent moved", getOrder(t, s, o.ID).AgentGroups, []string{"web", "eu"})
	}
	_, later := createCommand(t, s, at(time.Minute), time.Hour, a)
	checkStrings(t, "groups of a later order", getOrder(t, s, later[0].ID).AgentGroups, []string{"db"})
}

func getOrder(t *testing.T, s tether.Store, id string) *tether.Order {
	t.Helper()
	o, err := s.Order(ctx(t), id)
	must(t, err)
	return o
}

func testCreateCommand(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	c := register(t, s, "c")
	r, orders := newCommand(at(time.Minute), 5*time.Minute, a, b, c)
	// One order made earlier than the others: Command lists by creation
	// time, then id.
	orders[2].CreatedAt = t0
	must(t, s.CreateCommand(ctx(t), r, orders))

	gotR, gotOrders, err := s.Command(ctx(t), r.ID)
	must(t, err)
	checkRequest(t, gotR, r)
	onlyR, err := s.CommandRequest(ctx(t), r.ID)
	must(t, err)
	checkRequest(t, onlyR, r)
	_, err = s.CommandRequest(ctx(t), newID())
	wantCode(t, err, tether.ENOTFOUND)
	want := sortOrders(orders...)
	checkStrings(t, "order ids", ids(gotOrders), ids(want))
	if len(gotOrders) == len(want) {
		for i := range want {
			checkOrder(t, gotOrders[i], want[i])
		}
	}
	for _, o := range orders {
		checkOrder(t, getOrder(t, s, o.ID), o)
	}

	// A request without orders (a server target), without arguments.
	srv := &tether.CommandRequest{
		ID:        newID(),
		Target:    tether.Target{Type: tether.TargetServer},
		Action:    tether.Action{Name: "rotate-keys"},
		Source:    "service",
		User:      "cron",
		CreatedAt: at(time.Hour),
	}
	must(t, s.CreateCommand(ctx(t), srv, nil))
	gotR, gotOrders, err = s.Command(ctx(t), srv.ID)
	must(t, err)
	checkRequest(t, gotR, srv)
	if len(gotOrders) != 0 {
		t.Errorf("orders of a server request = %d, want 0", len(gotOrders))
	}

	_, _, err = s.Command(ctx(t), newID())
	wantCode(t, err, tether.ENOTFOUND)
	_, err = s.Order(ctx(t), newID())
	wantCode(t, err, tether.ENOTFOUND)
}

func testCreateCommandRefused(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	ghost := newAgent("ghost") // never registered

	r, orders := newCommand(t0, time.Minute, a, ghost)
	wantCode(t, s.CreateCommand(ctx(t), r, orders), tether.ENOTFOUND)
	_, _, err := s.Command(ctx(t), r.ID)
	wantCode(t, err, tether.ENOTFOUND)
	_, err = s.Order(ctx(t), orders[0].ID)
	wantCode(t, err, tether.ENOTFOUND)

	r, orders = createCommand(t, s, t0, time.Minute, a)
	dup, dupOrders := newCommand(t0, time.Minute, a)
	dup.ID = r.ID
	for _, o := range dupOrders {
		o.RequestID = r.ID
	}
	wantCode(t, s.CreateCommand(ctx(t), dup, dupOrders), tether.ECONFLICT)
	_, err = s.Order(ctx(t), dupOrders[0].ID)
	wantCode(t, err, tether.ENOTFOUND)

	dup, dupOrders = newCommand(t0, time.Minute, a)
	dupOrders[0].ID = orders[0].ID
	wantCode(t, s.CreateCommand(ctx(t), dup, dupOrders), tether.ECONFLICT)
	_, _, err = s.Command(ctx(t), dup.ID)
	wantCode(t, err, tether.ENOTFOUND)
}

func testCreateCommandLarge(t *testing.T, s tether.Store) {
	const agents, perAgent = 200, 50
	var as []*tether.Agent
	for i := range agents {
		as = append(as, register(t, s, fmt.Sprintf("host-%03d", i)))
	}
	r, _ := newCommand(t0, time.Hour, as[0])
	r.Target = tether.Target{Type: tether.TargetGroup, ID: "all"}
	var orders []*tether.Order
	for i := range perAgent {
		for _, a := range as {
			orders = append(orders, &tether.Order{
				ID:        newID(),
				RequestID: r.ID,
				AgentID:   a.ID,
				Action:    tether.Action{Name: "ping", Args: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))},
				Status:    tether.OrderPending,
				User:      r.User,
				CreatedAt: t0,
				TimeoutAt: at(time.Hour),
			})
		}
	}
	must(t, s.CreateCommand(ctx(t), r, orders))

	_, got, err := s.Command(ctx(t), r.ID)
	must(t, err)
	want := ids(orders)
	slices.Sort(want)
	if !slices.Equal(ids(got), want) {
		t.Fatalf("Command returned %d orders, want the %d created, ordered by id", len(got), len(want))
	}

	// One agent's orders come in the order they were made.
	var mine []string
	for _, o := range orders {
		if o.AgentID == as[7].ID {
			mine = append(mine, o.ID)
		}
	}
	delivered, err := deliver(t, s, as[7].ID, nil, 100, at(time.Minute))
	must(t, err)
	checkStrings(t, "delivered", ids(delivered), mine)
}

func testCommands(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	c1, _ := createCommand(t, s, t0, time.Hour, a, b)
	c2, o2 := createCommand(t, s, at(time.Minute), time.Hour, a)
	c3, _ := createCommand(t, s, at(2*time.Minute), time.Hour, b)
	c4 := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
		Action: tether.Action{Name: "noop"}, CreatedAt: at(3 * time.Minute)}
	must(t, s.CreateCommand(ctx(t), c4, nil))

	_, err := s.FinishOrder(ctx(t), a.ID, o2[0].ID, tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Hour))
	must(t, err)
	delivered, err := deliver(t, s, b.ID, nil, 10, at(30*time.Minute))
	must(t, err)
	if len(delivered) != 2 {
		t.Fatalf("delivered %d orders to b, want 2", len(delivered))
	}

	tests := []struct {
		name   string
		filter tether.CommandFilter
		want   []*tether.CommandRequest
	}{
		{"all", tether.CommandFilter{}, []*tether.CommandRequest{c4, c3, c2, c1}},
		{"agent a", tether.CommandFilter{AgentID: a.ID}, []*tether.CommandRequest{c2, c1}},
		{"agent b", tether.CommandFilter{AgentID: b.ID}, []*tether.CommandRequest{c3, c1}},
		{"agent unknown", tether.CommandFilter{AgentID: newID()}, nil},
		{"success", tether.CommandFilter{Status: tether.OrderSuccess}, []*tether.CommandRequest{c2}},
		{"pending", tether.CommandFilter{Status: tether.OrderPending}, []*tether.CommandRequest{c1}},
		{"sent", tether.CommandFilter{Status: tether.OrderSent}, []*tether.CommandRequest{c3, c1}},
		{"failure", tether.CommandFilter{Status: tether.OrderFailure}, nil},
		{"agent a pending", tether.CommandFilter{AgentID: a.ID, Status: tether.OrderPending}, []*tether.CommandRequest{c1}},
		{"agent b pending", tether.CommandFilter{AgentID: b.ID, Status: tether.OrderPending}, nil},
		{"before", tether.CommandFilter{Before: at(2 * time.Minute)}, []*tether.CommandRequest{c2, c1}},
		{"limit", tether.CommandFilter{Limit: 2}, []*tether.CommandRequest{c4, c3}},
		{"before and limit", tether.CommandFilter{Before: at(3 * time.Minute), Limit: 1}, []*tether.CommandRequest{c3}},
	}
	for _, tt := range tests {
		got, _, err := s.Commands(ctx(t), tt.filter)
		must(t, err)
		checkStrings(t, "Commands "+tt.name, reqIDs(got), reqIDs(tt.want))
	}
	got, _, err := s.Commands(ctx(t), tether.CommandFilter{Limit: 1})
	must(t, err)
	if len(got) == 1 {
		checkRequest(t, got[0], c4)
	}

	// The default limit is 100.
	for i := range 100 {
		r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
			Action: tether.Action{Name: "noop"}, CreatedAt: at(time.Hour + time.Duration(i)*time.Second)}
		must(t, s.CreateCommand(ctx(t), r, nil))
	}
	got, next, err := s.Commands(ctx(t), tether.CommandFilter{})
	must(t, err)
	if len(got) != 100 || next == "" {
		t.Errorf("Commands with the default limit = %d and cursor %q, want 100 and a cursor", len(got), next)
	}
	got, next, err = s.Commands(ctx(t), tether.CommandFilter{Cursor: next})
	must(t, err)
	checkStrings(t, "Commands after the first 100", reqIDs(got), reqIDs([]*tether.CommandRequest{c4, c3, c2, c1}))
	if next != "" {
		t.Errorf("cursor after the last page = %q, want none", next)
	}
}

func testDeliverOrders(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	_, orders := createCommand(t, s, t0, time.Hour, a, b)
	oa, ob := orders[0], orders[1]

	// First delivery.
	got, err := deliver(t, s, a.ID, nil, 10, at(time.Second))
	must(t, err)
	want := *oa
	want.Status, want.SentAt, want.Attempts = tether.OrderSent, at(time.Second), 1
	if len(got) != 1 {
		t.Fatalf("delivered %d orders, want 1", len(got))
	}
	checkOrder(t, got[0], &want)
	checkOrder(t, getOrder(t, s, oa.ID), &want)

	// Not received: delivered again, first SentAt kept.
	got, err = deliver(t, s, a.ID, nil, 10, at(2*time.Second))
	must(t, err)
	want.Attempts = 2
	if len(got) != 1 {
		t.Fatalf("redelivered %d orders, want 1", len(got))
	}
	checkOrder(t, got[0], &want)

	// Received (the other agent's order and unknown ids are ignored): not
	// delivered again.
	got, err = deliver(t, s, a.ID, []string{oa.ID, ob.ID, newID()}, 10, at(3*time.Second))
	must(t, err)
	if len(got) != 0 {
		t.Errorf("delivered %d orders after receipt, want 0", len(got))
	}
	want.ReceivedAt = at(3 * time.Second)
	checkOrder(t, getOrder(t, s, oa.ID), &want)
	checkOrder(t, getOrder(t, s, ob.ID), ob)

	// A second receipt keeps the first time.
	_, err = deliver(t, s, a.ID, []string{oa.ID}, 10, at(4*time.Second))
	must(t, err)
	checkOrder(t, getOrder(t, s, oa.ID), &want)

	// The other agent still gets its order.
	got, err = deliver(t, s, b.ID, nil, 10, at(5*time.Second))
	must(t, err)
	checkStrings(t, "delivered to b", ids(got), []string{ob.ID})

	// A received order can be acknowledged in the same call that
	// delivers a new one.
	_, more := createCommand(t, s, at(time.Minute), time.Hour, b)
	got, err = deliver(t, s, b.ID, []string{ob.ID}, 10, at(2*time.Minute))
	must(t, err)
	checkStrings(t, "delivered to b", ids(got), ids(more))
	checkTime(t, "ReceivedAt", getOrder(t, s, ob.ID).ReceivedAt, at(2*time.Minute))

	got, err = deliver(t, s, newID(), nil, 10, at(time.Minute))
	if err == nil && len(got) != 0 {
		t.Errorf("delivered %d orders to an unknown agent", len(got))
	}
}

func testDeliverOrdersOrder(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	// x: five orders for a made at once, at t0+1m.
	x, _ := newCommand(at(time.Minute), time.Hour, a)
	var xs []*tether.Order
	for range 5 {
		_, os := newCommand(at(time.Minute), time.Hour, a)
		os[0].RequestID = x.ID
		xs = append(xs, os[0])
	}
	must(t, s.CreateCommand(ctx(t), x, xs))
	_, y := createCommand(t, s, t0, time.Hour, a)              // made before x
	_, z := createCommand(t, s, at(time.Minute), time.Hour, a) // at the same time as x, stored after

	want := append(append(ids(y), ids(xs)...), ids(z)...)
	got, err := deliver(t, s, a.ID, nil, 100, at(2*time.Minute))
	must(t, err)
	checkStrings(t, "delivery order", ids(got), want)
}

func testDeliverOrdersLimit(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	var all []*tether.Order
	for i := range 5 {
		_, os := createCommand(t, s, at(time.Duration(i)*time.Second), time.Hour, a)
		all = append(all, os...)
	}
	now := at(time.Minute)
	got, err := deliver(t, s, a.ID, nil, 2, now)
	must(t, err)
	checkStrings(t, "first delivery", ids(got), ids(all[:2]))
	// Unreceived orders come first again.
	got, err = deliver(t, s, a.ID, nil, 2, now)
	must(t, err)
	checkStrings(t, "second delivery", ids(got), ids(all[:2]))
	got, err = deliver(t, s, a.ID, ids(got), 2, now)
	must(t, err)
	checkStrings(t, "third delivery", ids(got), ids(all[2:4]))
	got, err = deliver(t, s, a.ID, ids(got), 2, now)
	must(t, err)
	checkStrings(t, "fourth delivery", ids(got), ids(all[4:]))
	got, err = deliver(t, s, a.ID, ids(got), 2, now)
	must(t, err)
	checkStrings(t, "last delivery", ids(got), nil)
	for _, o := range all {
		if got := getOrder(t, s, o.ID); got.Attempts != 1 && o.ID != all[0].ID && o.ID != all[1].ID {
			t.Errorf("order %s: %d attempts, want 1", o.ID, got.Attempts)
		}
	}
	if got := getOrder(t, s, all[0].ID); got.Attempts != 2 {
		t.Errorf("first order: %d attempts, want 2", got.Attempts)
	}
}

func testDeliverOrdersExpired(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	_, short := createCommand(t, s, t0, time.Minute, a)
	_, long := createCommand(t, s, at(time.Second), time.Hour, a)

	got, err := deliver(t, s, a.ID, nil, 10, at(59*time.Second))
	must(t, err)
	checkStrings(t, "before the end of the window", ids(got), append(ids(short), ids(long)...))
	// The window of short ends at t0+1m: sent but not received, it is not
	// delivered again once the window ended.
	got, err = deliver(t, s, a.ID, nil, 10, at(time.Minute))
	must(t, err)
	checkStrings(t, "at the end of the window", ids(got), ids(long))

	_, late := createCommand(t, s, at(-time.Hour), time.Minute, a)
	got, err = deliver(t, s, a.ID, ids(long), 10, at(2*time.Minute))
	must(t, err)
	checkStrings(t, "after the end of the window", ids(got), nil)
	if o := getOrder(t, s, late[0].ID); o.Status != tether.OrderPending || o.Attempts != 0 {
		t.Errorf("expired order: status %s, %d attempts, want pending and 0", o.Status, o.Attempts)
	}
}

func testFinishOrder(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	_, orders := createCommand(t, s, t0, time.Hour, a, a)
	sent, pending := orders[0], orders[1]
	got, err := deliver(t, s, a.ID, nil, 1, at(time.Second))
	must(t, err)
	checkStrings(t, "delivered", ids(got), ids(orders[:1]))

	res := tether.Result{Code: 0, Message: "restarted", Data: json.RawMessage(`{"pid": 42}`)}
	done, err := s.FinishOrder(ctx(t), a.ID, sent.ID, tether.OrderSuccess, res, at(time.Minute))
	must(t, err)
	want := *sent
	want.Status, want.SentAt, want.Attempts = tether.OrderSuccess, at(time.Second), 1
	want.Result, want.FinishedAt = res, at(time.Minute)
	checkOrder(t, done, &want)
	checkOrder(t, getOrder(t, s, sent.ID), &want)

	// A repeated report, even a different one, returns the order as stored.
	again, err := s.FinishOrder(ctx(t), a.ID, sent.ID, tether.OrderFailure,
		tether.Result{Code: 1, Message: "boom"}, at(2*time.Minute))
	must(t, err)
	checkOrder(t, again, &want)
	checkOrder(t, getOrder(t, s, sent.ID), &want)

	// A pending order can finish without having been delivered.
	res = tether.Result{Code: 3, Message: "refused"}
	done, err = s.FinishOrder(ctx(t), a.ID, pending.ID, tether.OrderFailure, res, at(3*time.Minute))
	must(t, err)
	want = *pending
	want.Status, want.Result, want.FinishedAt = tether.OrderFailure, res, at(3*time.Minute)
	checkOrder(t, done, &want)

	// Finished orders are not delivered, received or not.
	got, err = deliver(t, s, a.ID, nil, 10, at(4*time.Minute))
	must(t, err)
	checkStrings(t, "delivered after finishing", ids(got), nil)
}

// testFinishOrdersBatch applies several agents' results in one call: each
// as FinishOrder would, an unknown order or another agent's one refused
// alone, a status that finishes nothing refusing the batch.
func testFinishOrdersBatch(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	_, orders := createCommand(t, s, t0, time.Hour, a, b)
	oa, ob := orders[0], orders[1]
	ok := tether.Result{Message: "ok"}
	fs := []tether.Finish{
		{AgentID: a.ID, OrderID: oa.ID, Status: tether.OrderSuccess, Result: ok},
		{AgentID: a.ID, OrderID: ob.ID, Status: tether.OrderSuccess, Result: ok}, // b's
		{AgentID: b.ID, OrderID: newID(), Status: tether.OrderSuccess, Result: ok},
		{AgentID: b.ID, OrderID: ob.ID, Status: tether.OrderFailure, Result: tether.Result{Code: 2, Message: "no"}},
		{AgentID: a.ID, OrderID: oa.ID, Status: tether.OrderFailure, Result: tether.Result{Message: "late"}}, // again
	}
	out, err := s.FinishOrders(ctx(t), fs, at(time.Minute))
	must(t, err)
	if len(out) != len(fs) {
		t.Fatalf("%d outcomes for %d results", len(out), len(fs))
	}
	wantA := *oa
	wantA.Status, wantA.Result, wantA.FinishedAt = tether.OrderSuccess, ok, at(time.Minute)
	wantB := *ob
	wantB.Status, wantB.Result, wantB.FinishedAt = tether.OrderFailure, fs[3].Result, at(time.Minute)
	for i, want := range []*tether.Order{&wantA, nil, nil, &wantB, &wantA} {
		if first := i == 0 || i == 3; out[i].Finished != first {
			t.Errorf("outcome %d: finished %v, want %v", i, out[i].Finished, first)
		}
		if want == nil {
			if out[i].Order != nil {
				t.Errorf("outcome %d: order %+v, want none", i, out[i].Order)
			}
			wantCode(t, out[i].Err, tether.ENOTFOUND)
			continue
		}
		if out[i].Err != nil {
			t.Errorf("outcome %d: %v", i, out[i].Err)
			continue
		}
		checkOrder(t, out[i].Order, want)
	}
	checkOrder(t, getOrder(t, s, oa.ID), &wantA)
	checkOrder(t, getOrder(t, s, ob.ID), &wantB)

	// A status that finishes nothing refuses the batch, and changes nothing.
	_, more := createCommand(t, s, t0, time.Hour, a)
	_, err = s.FinishOrders(ctx(t), []tether.Finish{
		{AgentID: a.ID, OrderID: more[0].ID, Status: tether.OrderSuccess, Result: ok},
		{AgentID: a.ID, OrderID: more[0].ID, Status: tether.OrderSent},
	}, at(time.Minute))
	wantCode(t, err, tether.EINVALID)
	checkOrder(t, getOrder(t, s, more[0].ID), more[0])

	out, err = s.FinishOrders(ctx(t), nil, at(time.Minute))
	must(t, err)
	if len(out) != 0 {
		t.Errorf("%d outcomes for no result", len(out))
	}
}

func testFinishOrderRefused(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	_, orders := createCommand(t, s, t0, time.Hour, a)
	o := orders[0]
	res := tether.Result{Message: "ok"}

	_, err := s.FinishOrder(ctx(t), b.ID, o.ID, tether.OrderSuccess, res, at(time.Minute))
	wantCode(t, err, tether.ENOTFOUND)
	_, err = s.FinishOrder(ctx(t), a.ID, newID(), tether.OrderSuccess, res, at(time.Minute))
	wantCode(t, err, tether.ENOTFOUND)
	for _, st := range []tether.OrderStatus{tether.OrderPending, tether.OrderSent, "", "done"} {
		_, err = s.FinishOrder(ctx(t), a.ID, o.ID, st, res, at(time.Minute))
		wantCode(t, err, tether.EINVALID)
	}
	checkOrder(t, getOrder(t, s, o.ID), o)

	// Finished, it is still not the other agent's.
	_, err = s.FinishOrder(ctx(t), a.ID, o.ID, tether.OrderSuccess, res, at(time.Minute))
	must(t, err)
	_, err = s.FinishOrder(ctx(t), b.ID, o.ID, tether.OrderSuccess, res, at(time.Minute))
	wantCode(t, err, tether.ENOTFOUND)
}

// testDeliverOrdersBatch serves several polls in one call: each gets its
// own agent's orders at its own index, receipts included, and an unknown
// agent gets none without failing the others.
func testDeliverOrdersBatch(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	c := register(t, s, "c")
	_, first := createCommand(t, s, t0, time.Hour, a, b)
	oa, ob := first[0], first[1]
	got, err := s.DeliverOrders(ctx(t), []tether.Delivery{{AgentID: a.ID}, {AgentID: b.ID}, {AgentID: c.ID}, {AgentID: newID()}}, at(time.Second))
	must(t, err)
	if len(got) != 4 {
		t.Fatalf("DeliverOrders of 4 polls returned %d lists", len(got))
	}
	checkStrings(t, "delivered to a", ids(got[0]), []string{oa.ID})
	checkStrings(t, "delivered to b", ids(got[1]), []string{ob.ID})
	checkStrings(t, "delivered to c", ids(got[2]), nil)
	checkStrings(t, "delivered to an unknown agent", ids(got[3]), nil)

	// a acknowledges its order; b does not, and gets it again, with the
	// new one; the limit applies per poll.
	_, second := createCommand(t, s, at(time.Minute), time.Hour, a, b)
	got, err = s.DeliverOrders(ctx(t), []tether.Delivery{
		{AgentID: a.ID, Received: []string{oa.ID}, Limit: 10},
		{AgentID: b.ID, Limit: 1},
	}, at(2*time.Minute))
	must(t, err)
	checkStrings(t, "delivered to a", ids(got[0]), []string{second[0].ID})
	checkStrings(t, "delivered to b", ids(got[1]), []string{ob.ID})
	checkTime(t, "ReceivedAt of a's order", getOrder(t, s, oa.ID).ReceivedAt, at(2*time.Minute))
	if n := getOrder(t, s, ob.ID).Attempts; n != 2 {
		t.Errorf("b's first order delivered %d times, want 2", n)
	}

	got, err = s.DeliverOrders(ctx(t), nil, at(3*time.Minute))
	must(t, err)
	if len(got) != 0 {
		t.Errorf("DeliverOrders of no poll returned %d lists", len(got))
	}
}
