package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

// groupRequest returns a request aimed at the group, created at created,
// and the template of its orders, whose window ends timeout later.
func groupRequest(group string, created time.Time, timeout time.Duration) (*tether.CommandRequest, tether.Order) {
	r := &tether.CommandRequest{
		ID:        newID(),
		Target:    tether.Target{Type: tether.TargetGroup, ID: group},
		Action:    tether.Action{Name: "restart", Args: json.RawMessage(`{"delay": 5}`), Version: "2"},
		Timeout:   timeout,
		Source:    "user",
		User:      "alice",
		CreatedAt: created,
	}
	return r, tether.Order{
		RequestID: r.ID,
		Action:    r.Action,
		Status:    tether.OrderPending,
		User:      r.User,
		CreatedAt: created,
		TimeoutAt: created.Add(timeout),
	}
}

func testCreateGroupCommand(t *testing.T, s tether.Store) {
	a := register(t, s, "a", "web", "eu")
	b := register(t, s, "b", "eu", "web")
	c := register(t, s, "c", "db")
	d := register(t, s, "d", "web")
	// "web" was never created as a Group: membership is what counts.
	r, tmpl := groupRequest("web", at(time.Minute), time.Hour)
	orders, err := s.CreateGroupCommand(ctx(t), r, tmpl)
	must(t, err)

	members := sortAgents(a, b, d)
	if len(orders) != len(members) {
		t.Fatalf("CreateGroupCommand returned %d orders, want %d", len(orders), len(members))
	}
	seen := map[string]bool{}
	for i, o := range orders {
		if o.AgentID != members[i].ID {
			t.Errorf("order %d for agent %s, want %s (agent id order)", i, o.AgentID, members[i].ID)
		}
		if !tether.ValidID(o.ID) || seen[o.ID] {
			t.Errorf("order %d has id %q: want a new UUID", i, o.ID)
		}
		seen[o.ID] = true
		want := tmpl
		want.ID, want.AgentID, want.AgentGroups = o.ID, members[i].ID, members[i].Groups
		checkOrder(t, o, &want)
		checkOrder(t, getOrder(t, s, o.ID), &want)
	}
	gotR, gotOrders, err := s.Command(ctx(t), r.ID)
	must(t, err)
	checkRequest(t, gotR, r)
	checkStrings(t, "stored orders", sortedIDs(gotOrders), sortedIDs(orders))

	// Each member gets its order; the others nothing.
	got, err := deliver(t, s, b.ID, nil, 10, at(2*time.Minute))
	must(t, err)
	if len(got) != 1 || got[0].AgentID != b.ID || got[0].RequestID != r.ID {
		t.Errorf("delivered to a member: %v", ids(got))
	}
	got, err = deliver(t, s, c.ID, nil, 10, at(2*time.Minute))
	must(t, err)
	checkStrings(t, "delivered to a non-member", ids(got), nil)

	// Membership is read at the moment of the request.
	must(t, s.SetAgentGroups(ctx(t), c.ID, []string{"db", "web"}))
	must(t, s.SetAgentGroups(ctx(t), a.ID, nil))
	r2, tmpl2 := groupRequest("web", at(2*time.Minute), time.Hour)
	orders, err = s.CreateGroupCommand(ctx(t), r2, tmpl2)
	must(t, err)
	var agents []string
	for _, o := range orders {
		agents = append(agents, o.AgentID)
	}
	checkStrings(t, "members of the second request", agents, agentIDs(sortAgents(b, c, d)...))

	// A zero CreatedAt in the template is the request's.
	r3, tmpl3 := groupRequest("db", at(3*time.Minute), time.Hour)
	tmpl3.CreatedAt = time.Time{}
	orders, err = s.CreateGroupCommand(ctx(t), r3, tmpl3)
	must(t, err)
	if len(orders) != 1 {
		t.Fatalf("orders for db = %d, want 1", len(orders))
	}
	checkTime(t, "CreatedAt", getOrder(t, s, orders[0].ID).CreatedAt, at(3*time.Minute))
}

func testCreateGroupCommandRefused(t *testing.T, s tether.Store) {
	register(t, s, "a", "web")
	must(t, s.CreateGroup(ctx(t), &tether.Group{Name: "empty", CreatedAt: t0}))

	// No members, whether the group was created or not: EINVALID on
	// target.id, and nothing stored.
	for _, group := range []string{"empty", "nobody"} {
		r, tmpl := groupRequest(group, t0, time.Hour)
		orders, err := s.CreateGroupCommand(ctx(t), r, tmpl)
		wantCode(t, err, tether.EINVALID)
		var e *tether.Error
		if !errors.As(err, &e) || e.Field != "target.id" || !strings.Contains(e.Message, "has no members") {
			t.Errorf("error for group %s = %+v, want field target.id and a message saying it has no members", group, e)
		}
		if len(orders) != 0 {
			t.Errorf("%d orders returned with an error", len(orders))
		}
		_, _, err = s.Command(ctx(t), r.ID)
		wantCode(t, err, tether.ENOTFOUND)
	}

	// A request id in use: ECONFLICT, and no orders stored.
	r, tmpl := groupRequest("web", t0, time.Hour)
	first, err := s.CreateGroupCommand(ctx(t), r, tmpl)
	must(t, err)
	again, tmpl2 := groupRequest("web", at(time.Minute), time.Hour)
	again.ID, tmpl2.RequestID = r.ID, r.ID
	_, err = s.CreateGroupCommand(ctx(t), again, tmpl2)
	wantCode(t, err, tether.ECONFLICT)
	_, orders, err := s.Command(ctx(t), r.ID)
	must(t, err)
	checkStrings(t, "orders after a conflict", ids(orders), ids(first))

	// Only group targets.
	bad, tmpl3 := groupRequest("web", t0, time.Hour)
	bad.Target.Type = tether.TargetAgent
	_, err = s.CreateGroupCommand(ctx(t), bad, tmpl3)
	wantCode(t, err, tether.EINVALID)
}

// testCreateGroupCommandLarge expands a group of 10,000 agents: no cap, and
// one transaction.
func testCreateGroupCommandLarge(t *testing.T, s tether.Store) {
	if testing.Short() {
		t.Skip("10,000 agents: not in -short mode")
	}
	const n = 10000
	registerMany(t, s, n, "big")
	r, tmpl := groupRequest("big", t0, time.Hour)
	start := time.Now()
	orders, err := s.CreateGroupCommand(ctx(t), r, tmpl)
	must(t, err)
	t.Logf("expanded a group of %d agents in %v", n, time.Since(start))
	if len(orders) != n {
		t.Fatalf("CreateGroupCommand returned %d orders, want %d", len(orders), n)
	}
	agents := map[string]bool{}
	for i, o := range orders {
		if i > 0 && orders[i-1].AgentID >= o.AgentID {
			t.Fatalf("orders %d and %d are not in agent id order", i-1, i)
		}
		agents[o.AgentID] = true
	}
	if len(agents) != n {
		t.Errorf("orders for %d distinct agents, want %d", len(agents), n)
	}
	_, stored, err := s.Command(ctx(t), r.ID)
	must(t, err)
	if len(stored) != n {
		t.Errorf("Command has %d orders, want %d", len(stored), n)
	}
}

// registerMany registers n agents in the group, from a few goroutines, and
// returns them.
func registerMany(t *testing.T, s tether.Store, n int, group string) []*tether.Agent {
	t.Helper()
	as := make([]*tether.Agent, n)
	for i := range as {
		as[i] = newAgent(fmt.Sprintf("%s-%05d", group, i), group)
		as[i].EnrolledAt, as[i].UpdatedAt = t0, t0
	}
	const workers = 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := s.RegisterAgent(ctx(t), as[i], "", t0); err != nil {
					t.Errorf("RegisterAgent: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return as
}

// countingCtx counts how often its Done channel or Err is asked for, which
// every store does between its steps, and cancels itself at the k-th time
// (never when k is 0).
type countingCtx struct {
	context.Context
	cancel context.CancelFunc
	k      int64
	n      atomic.Int64
}

func newCountingCtx(t *testing.T, k int64) *countingCtx {
	c, cancel := context.WithCancel(ctx(t))
	t.Cleanup(cancel)
	return &countingCtx{Context: c, cancel: cancel, k: k}
}

func (c *countingCtx) tick() {
	if n := c.n.Add(1); c.k > 0 && n == c.k {
		c.cancel()
	}
}

func (c *countingCtx) Done() <-chan struct{} { c.tick(); return c.Context.Done() }
func (c *countingCtx) Err() error            { c.tick(); return c.Context.Err() }

// testCreateGroupCommandAtomic cancels an expansion in its middle: nothing
// of the request stays, not the request, not one order.
func testCreateGroupCommandAtomic(t *testing.T, s tether.Store) {
	const n = 2000
	registerMany(t, s, n, "dry")
	as := registerMany(t, s, n, "wet")

	// How often does a whole expansion of this size look at its context?
	dry := newCountingCtx(t, 0)
	r, tmpl := groupRequest("dry", t0, time.Hour)
	_, err := s.CreateGroupCommand(dry, r, tmpl)
	must(t, err)
	checks := dry.n.Load()
	if checks < 2 {
		t.Skipf("the store looks at the context %d times in an expansion: cannot cancel one in its middle", checks)
	}

	// Cancel the same expansion halfway.
	wet := newCountingCtx(t, checks/2)
	r, tmpl = groupRequest("wet", t0, time.Hour)
	orders, err := s.CreateGroupCommand(wet, r, tmpl)
	if err == nil {
		t.Fatalf("CreateGroupCommand cancelled after %d of %d context checks succeeded with %d orders", checks/2, checks, len(orders))
	}
	if wet.Context.Err() == nil {
		t.Fatalf("CreateGroupCommand failed before its context was cancelled: %v", err)
	}
	t.Logf("cancelled after %d of %d context checks: %v", checks/2, checks, err)
	_, _, err = s.Command(ctx(t), r.ID)
	wantCode(t, err, tether.ENOTFOUND)
	left, _, err := s.Orders(ctx(t), tether.OrderFilter{RequestID: r.ID})
	must(t, err)
	checkStrings(t, "orders of a cancelled expansion", ids(left), nil)
	left, _, err = s.Orders(ctx(t), tether.OrderFilter{Group: "wet"})
	must(t, err)
	checkStrings(t, "orders of the group after a cancelled expansion", ids(left), nil)
	for _, a := range []*tether.Agent{as[0], as[n/4], as[n/2], as[n-1]} {
		got, err := deliver(t, s, a.ID, nil, 10, at(time.Minute))
		must(t, err)
		checkStrings(t, "orders of a member after a cancelled expansion", ids(got), nil)
	}

	// The group can still be expanded.
	r, tmpl = groupRequest("wet", at(time.Minute), time.Hour)
	orders, err = s.CreateGroupCommand(ctx(t), r, tmpl)
	must(t, err)
	if len(orders) != n {
		t.Errorf("expansion after a cancelled one: %d orders, want %d", len(orders), n)
	}
}

func testServerOrders(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	r := &tether.CommandRequest{
		ID:        newID(),
		Target:    tether.Target{Type: tether.TargetServer},
		Action:    tether.Action{Name: "rotate-signing-key"},
		Timeout:   time.Minute,
		Source:    "user",
		User:      "alice",
		CreatedAt: t0,
	}
	o := &tether.Order{ID: newID(), RequestID: r.ID, Action: r.Action, Status: tether.OrderPending,
		User: "alice", CreatedAt: t0, TimeoutAt: at(time.Minute)}
	must(t, s.CreateCommand(ctx(t), r, []*tether.Order{o}))
	checkOrder(t, getOrder(t, s, o.ID), o)
	_, stored, err := s.Command(ctx(t), r.ID)
	must(t, err)
	checkStrings(t, "server request's orders", ids(stored), []string{o.ID})

	// Agents never get server orders.
	for _, id := range []string{a.ID, ""} {
		got, err := deliver(t, s, id, nil, 10, at(time.Second))
		if err == nil && len(got) != 0 {
			t.Errorf("DeliverOrders(%q) returned %d orders", id, len(got))
		}
	}

	// One claim gets it, marked sent; the next gets nothing.
	got, err := s.ClaimServerOrders(ctx(t), 10, at(time.Second))
	must(t, err)
	want := *o
	want.Status, want.SentAt, want.Attempts = tether.OrderSent, at(time.Second), 1
	if len(got) != 1 {
		t.Fatalf("ClaimServerOrders = %d orders, want 1", len(got))
	}
	checkOrder(t, got[0], &want)
	checkOrder(t, getOrder(t, s, o.ID), &want)
	got, err = s.ClaimServerOrders(ctx(t), 10, at(2*time.Second))
	must(t, err)
	checkStrings(t, "second claim", ids(got), nil)

	// Only the server finishes it.
	res := tether.Result{Message: "rotated", Data: json.RawMessage(`{"kid": "k2"}`)}
	_, err = s.FinishOrder(ctx(t), a.ID, o.ID, tether.OrderSuccess, res, at(3*time.Second))
	wantCode(t, err, tether.ENOTFOUND)
	done, err := s.FinishOrder(ctx(t), "", o.ID, tether.OrderSuccess, res, at(3*time.Second))
	must(t, err)
	want.Status, want.Result, want.FinishedAt = tether.OrderSuccess, res, at(3*time.Second)
	checkOrder(t, done, &want)

	// An agent's order is not the server's.
	_, agentOrders := createCommand(t, s, t0, time.Hour, a)
	_, err = s.FinishOrder(ctx(t), "", agentOrders[0].ID, tether.OrderSuccess, res, at(3*time.Second))
	wantCode(t, err, tether.ENOTFOUND)

	// Claims go oldest first, up to the limit, and skip orders whose
	// window ended; the sweeper fails those, claimed or not.
	var orders []*tether.Order
	for i := range 5 {
		r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
			Action: tether.Action{Name: "reload-config"}, CreatedAt: at(time.Duration(5-i) * time.Second)}
		o := &tether.Order{ID: newID(), Action: r.Action, CreatedAt: r.CreatedAt, TimeoutAt: at(time.Hour)}
		if i == 0 {
			o.TimeoutAt = at(time.Minute)
		}
		must(t, s.CreateCommand(ctx(t), r, []*tether.Order{o}))
		orders = append(orders, o)
	}
	got, err = s.ClaimServerOrders(ctx(t), 2, at(2*time.Minute))
	must(t, err)
	checkStrings(t, "claim with a limit", ids(got), []string{orders[4].ID, orders[3].ID})
	n, err := s.ExpireOrders(ctx(t), at(2*time.Hour))
	must(t, err)
	if n != 6 { // the five server orders, and the agent's order
		t.Errorf("ExpireOrders = %d, want 6", n)
	}
	for _, o := range orders {
		if got := getOrder(t, s, o.ID); got.Status != tether.OrderFailure || got.Result.Message != "timed out" {
			t.Errorf("server order after its window: status %s, message %q", got.Status, got.Result.Message)
		}
	}
}

// testClaimServerOrdersConcurrent claims from several goroutines at once:
// no order is claimed twice, none is left.
func testClaimServerOrdersConcurrent(t *testing.T, s tether.Store) {
	const total = 300
	for i := range total / 3 {
		r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
			Action: tether.Action{Name: "noop"}, CreatedAt: at(time.Duration(i) * time.Millisecond)}
		var orders []*tether.Order
		for range 3 {
			orders = append(orders, &tether.Order{ID: newID(), Action: r.Action, CreatedAt: r.CreatedAt})
		}
		must(t, s.CreateCommand(ctx(t), r, orders))
	}
	const claimers = 4
	claimed := make([][]string, claimers)
	var wg sync.WaitGroup
	for i := range claimers {
		wg.Go(func() {
			for {
				got, err := s.ClaimServerOrders(ctx(t), 7, at(time.Minute))
				if err != nil {
					t.Errorf("ClaimServerOrders: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				claimed[i] = append(claimed[i], ids(got)...)
			}
		})
	}
	wg.Wait()
	all := slices.Concat(claimed...)
	slices.Sort(all)
	if len(all) != total {
		t.Errorf("claimed %d orders in all, want %d", len(all), total)
	}
	if len(slices.Compact(all)) != len(all) {
		t.Errorf("an order was claimed twice")
	}
}
