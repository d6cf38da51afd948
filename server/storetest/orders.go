package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

// sortOrders returns the orders by creation time, then id: the order of
// Orders.
func sortOrders(os ...*tether.Order) []*tether.Order {
	out := slices.Clone(os)
	slices.SortFunc(out, func(x, y *tether.Order) int {
		if c := x.CreatedAt.Compare(y.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return out
}

func testOrders(t *testing.T, s tether.Store) {
	a := register(t, s, "a", "web")
	b := register(t, s, "b", "web", "eu")
	c := register(t, s, "c", "db")
	r1, o1 := createCommand(t, s, t0, time.Hour, a, b, c)
	r2, o2 := newCommand(at(time.Minute), time.Hour, a)
	r2.Action.Name, o2[0].Action.Name = "ping", "ping"
	must(t, s.CreateCommand(ctx(t), r2, o2))
	r3 := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
		Action: tether.Action{Name: "reload-config"}, CreatedAt: at(2 * time.Minute)}
	o3 := []*tether.Order{{ID: newID(), Action: r3.Action, CreatedAt: r3.CreatedAt}}
	must(t, s.CreateCommand(ctx(t), r3, o3))
	_, err := deliver(t, s, b.ID, nil, 10, at(time.Second))
	must(t, err)
	_, err = s.FinishOrder(ctx(t), c.ID, o1[2].ID, tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Second))
	must(t, err)
	oa, ob, oc := o1[0], o1[1], o1[2]

	tests := []struct {
		name   string
		filter tether.OrderFilter
		want   []*tether.Order
	}{
		{"all", tether.OrderFilter{}, slices.Concat(sortOrders(o1...), o2, o3)},
		{"request", tether.OrderFilter{RequestID: r1.ID}, sortOrders(o1...)},
		{"server request", tether.OrderFilter{RequestID: r3.ID}, o3},
		{"unknown request", tether.OrderFilter{RequestID: newID()}, nil},
		{"agent", tether.OrderFilter{AgentID: a.ID}, []*tether.Order{oa, o2[0]}},
		{"group", tether.OrderFilter{Group: "web"}, slices.Concat(sortOrders(oa, ob), o2)},
		{"group eu", tether.OrderFilter{Group: "eu"}, []*tether.Order{ob}},
		{"group nobody", tether.OrderFilter{Group: "nobody"}, nil},
		{"pending", tether.OrderFilter{Status: tether.OrderPending}, slices.Concat([]*tether.Order{oa}, o2, o3)},
		{"sent", tether.OrderFilter{Status: tether.OrderSent}, []*tether.Order{ob}},
		{"success", tether.OrderFilter{Status: tether.OrderSuccess}, []*tether.Order{oc}},
		{"failure", tether.OrderFilter{Status: tether.OrderFailure}, nil},
		{"action", tether.OrderFilter{Action: "ping"}, o2},
		{"created after", tether.OrderFilter{CreatedAfter: t0}, slices.Concat(o2, o3)},
		{"created before", tether.OrderFilter{CreatedBefore: at(2 * time.Minute)}, slices.Concat(sortOrders(o1...), o2)},
		{"created between", tether.OrderFilter{CreatedAfter: t0, CreatedBefore: at(2 * time.Minute)}, o2},
		{"request and status", tether.OrderFilter{RequestID: r1.ID, Status: tether.OrderPending}, []*tether.Order{oa}},
		{"agent and action", tether.OrderFilter{AgentID: a.ID, Action: "restart"}, []*tether.Order{oa}},
		{"group and request", tether.OrderFilter{Group: "web", RequestID: r2.ID}, o2},
	}
	for _, tt := range tests {
		got, next, err := s.Orders(ctx(t), tt.filter)
		must(t, err)
		checkStrings(t, "Orders "+tt.name, ids(got), ids(tt.want))
		if next != "" {
			t.Errorf("Orders %s: cursor %q on the only page", tt.name, next)
		}
	}
	got, _, err := s.Orders(ctx(t), tether.OrderFilter{Status: tether.OrderSuccess})
	must(t, err)
	if len(got) == 1 {
		want := *oc
		want.Status, want.Result, want.FinishedAt = tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Second)
		checkOrder(t, got[0], &want)
	}

	// The group filter reads the membership of now.
	must(t, s.SetAgentGroups(ctx(t), a.ID, nil))
	got, _, err = s.Orders(ctx(t), tether.OrderFilter{Group: "web"})
	must(t, err)
	checkStrings(t, "Orders of web after a left", ids(got), []string{ob.ID})

	_, _, err = s.Orders(ctx(t), tether.OrderFilter{Cursor: "not a cursor"})
	wantCode(t, err, tether.EINVALID)
	_, _, err = s.Commands(ctx(t), tether.CommandFilter{Cursor: "not a cursor"})
	wantCode(t, err, tether.EINVALID)
}

func testOrdersLimit(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	r, _ := newCommand(t0, time.Hour, a)
	var orders []*tether.Order
	for i := range tether.MaxOrderLimit + 100 {
		orders = append(orders, &tether.Order{ID: newID(), AgentID: a.ID, Action: r.Action,
			CreatedAt: at(time.Duration(i) * time.Millisecond)})
	}
	must(t, s.CreateCommand(ctx(t), r, orders))
	for _, tt := range []struct{ limit, want int }{
		{0, tether.DefaultOrderLimit},
		{-1, tether.DefaultOrderLimit},
		{7, 7},
		{tether.MaxOrderLimit, tether.MaxOrderLimit},
		{tether.MaxOrderLimit + 1, tether.MaxOrderLimit},
		{1 << 30, tether.MaxOrderLimit},
	} {
		got, next, err := s.Orders(ctx(t), tether.OrderFilter{RequestID: r.ID, Limit: tt.limit})
		must(t, err)
		if len(got) != tt.want || next == "" {
			t.Errorf("Orders with limit %d = %d orders and cursor %q, want %d and a cursor", tt.limit, len(got), next, tt.want)
		}
		checkStrings(t, "first page", ids(got), ids(orders[:len(got)]))
	}
}

// testOrdersPagination pages through orders of which many share their
// creation time: no order is skipped or repeated.
func testOrdersPagination(t *testing.T, s tether.Store) {
	var as []*tether.Agent
	for i := range 5 {
		as = append(as, register(t, s, fmt.Sprintf("a%d", i)))
	}
	_, early := createCommand(t, s, at(-time.Minute), time.Hour, as...)
	// 250 orders made in one transaction, all at t0.
	r, _ := newCommand(t0, time.Hour, as[0])
	var same []*tether.Order
	for i := range 250 {
		same = append(same, &tether.Order{ID: newID(), AgentID: as[i%len(as)].ID, Action: r.Action, CreatedAt: t0})
	}
	must(t, s.CreateCommand(ctx(t), r, same))
	_, late := createCommand(t, s, at(time.Minute), time.Hour, as...)
	want := slices.Concat(sortOrders(early...), sortOrders(same...), sortOrders(late...))

	page := func(f tether.OrderFilter) []*tether.Order {
		t.Helper()
		var all []*tether.Order
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("more than 100 pages")
			}
			got, next, err := s.Orders(ctx(t), f)
			must(t, err)
			if len(got) > 100 {
				t.Fatalf("page of %d orders, over the limit of 100", len(got))
			}
			all = append(all, got...)
			if next == "" {
				return all
			}
			f.Cursor = next
		}
	}
	got := page(tether.OrderFilter{Limit: 100})
	checkStrings(t, "all pages", ids(got), ids(want))
	got = page(tether.OrderFilter{RequestID: r.ID, Limit: 100})
	checkStrings(t, "pages of the request", ids(got), ids(sortOrders(same...)))
	got = page(tether.OrderFilter{AgentID: as[2].ID, Limit: 7})
	var mine []*tether.Order
	for _, o := range want {
		if o.AgentID == as[2].ID {
			mine = append(mine, o)
		}
	}
	checkStrings(t, "pages of one agent", ids(got), ids(mine))

	// Exactly 100 orders of the request left after the cursor: the page
	// that holds them says it is the last.
	first, next, err := s.Orders(ctx(t), tether.OrderFilter{RequestID: r.ID, Limit: 150})
	must(t, err)
	if len(first) != 150 || next == "" {
		t.Fatalf("first page = %d orders, cursor %q; want 150 and a cursor", len(first), next)
	}
	rest, next, err := s.Orders(ctx(t), tether.OrderFilter{RequestID: r.ID, Limit: 100, Cursor: next})
	must(t, err)
	if len(rest) != 100 || next != "" {
		t.Errorf("last page = %d orders, cursor %q; want 100 and none", len(rest), next)
	}

	// Orders made while paging come on a later page.
	first, next, err = s.Orders(ctx(t), tether.OrderFilter{Limit: 100})
	must(t, err)
	_, newer := createCommand(t, s, at(time.Hour), time.Hour, as[0])
	f := tether.OrderFilter{Limit: 100, Cursor: next}
	got = page(f)
	checkStrings(t, "pages with an order made meanwhile", ids(slices.Concat(first, got)), ids(slices.Concat(want, newer)))
}

// testCommandsPagination pages through requests of which many share their
// creation time.
func testCommandsPagination(t *testing.T, s tether.Store) {
	var want []*tether.CommandRequest
	for i := range 250 {
		created := t0
		if i%50 == 0 {
			created = at(time.Duration(i) * time.Second)
		}
		r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
			Action: tether.Action{Name: "noop"}, CreatedAt: created}
		must(t, s.CreateCommand(ctx(t), r, nil))
		want = append(want, r)
	}
	slices.SortFunc(want, func(x, y *tether.CommandRequest) int {
		if c := y.CreatedAt.Compare(x.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	var got []*tether.CommandRequest
	f := tether.CommandFilter{Limit: 100}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("more than 10 pages")
		}
		rs, next, err := s.Commands(ctx(t), f)
		must(t, err)
		got = append(got, rs...)
		if next == "" {
			break
		}
		f.Cursor = next
	}
	checkStrings(t, "all pages", reqIDs(got), reqIDs(want))
}

func testCommandCounts(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	c := register(t, s, "c")
	r1, o1 := createCommand(t, s, t0, time.Hour, a, b, c, a)
	_, err := deliver(t, s, b.ID, nil, 10, at(time.Second))
	must(t, err)
	_, err = s.FinishOrder(ctx(t), c.ID, o1[2].ID, tether.OrderSuccess, tether.Result{}, at(time.Second))
	must(t, err)
	r2, _ := createCommand(t, s, t0, time.Hour, b)
	_, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r2.ID}, at(time.Second))
	must(t, err)
	r3 := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
		Action: tether.Action{Name: "noop"}, CreatedAt: t0}
	must(t, s.CreateCommand(ctx(t), r3, nil))
	r4, _ := createCommand(t, s, t0, time.Hour, c) // not asked for

	got, err := s.CommandCounts(ctx(t), []string{r1.ID, r2.ID, r3.ID, newID()})
	must(t, err)
	want := map[string]map[tether.OrderStatus]int{
		r1.ID: {tether.OrderPending: 2, tether.OrderSent: 1, tether.OrderSuccess: 1},
		r2.ID: {tether.OrderFailure: 1},
	}
	for id, counts := range got {
		if len(counts) > 0 && want[id] == nil {
			t.Errorf("CommandCounts has %s: %v", id, counts)
		}
	}
	if got[r4.ID] != nil {
		t.Errorf("CommandCounts has a request not asked for")
	}
	for id, counts := range want {
		for _, st := range []tether.OrderStatus{tether.OrderPending, tether.OrderSent, tether.OrderSuccess, tether.OrderFailure} {
			if got[id][st] != counts[st] {
				t.Errorf("CommandCounts[%s][%s] = %d, want %d", id, st, got[id][st], counts[st])
			}
		}
	}

	got, err = s.CommandCounts(ctx(t), nil)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("CommandCounts(nil) = %v, want none", got)
	}

	// Many ids at once.
	var many []string
	for range 5000 {
		many = append(many, newID())
	}
	many = append(many, r1.ID)
	got, err = s.CommandCounts(ctx(t), many)
	must(t, err)
	if got[r1.ID][tether.OrderPending] != 2 {
		t.Errorf("CommandCounts of 5001 ids: %v for r1", got[r1.ID])
	}
}
