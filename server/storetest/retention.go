package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func testRetention(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	r1, o1 := createCommand(t, s, t0, time.Hour, a, b)
	_, err := s.FinishOrder(ctx(t), a.ID, o1[0].ID, tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Minute))
	must(t, err)
	n, err := s.ExpireOrders(ctx(t), at(2*time.Hour)) // o1[1] fails, finished at t0+2h
	must(t, err)
	if n != 1 {
		t.Fatalf("ExpireOrders = %d, want 1", n)
	}
	r2, o2 := createCommand(t, s, t0, 10*time.Hour, a) // pending
	empty := func(created time.Time) *tether.CommandRequest {
		r := &tether.CommandRequest{ID: newID(), Target: tether.Target{Type: tether.TargetServer},
			Action: tether.Action{Name: "noop"}, CreatedAt: created}
		must(t, s.CreateCommand(ctx(t), r, nil))
		return r
	}
	r3 := empty(t0)
	r4 := empty(at(5 * time.Hour))

	for _, tt := range []struct {
		before time.Time
		limit  int
		want   []*tether.Order
	}{
		{at(time.Minute), 10, nil},
		{at(90 * time.Minute), 10, o1[:1]},
		{at(3 * time.Hour), 10, o1},
		{at(3 * time.Hour), 1, o1[:1]},
		{at(3 * time.Hour), 0, o1},
	} {
		got, err := s.FinishedOrders(ctx(t), tt.before, tt.limit)
		must(t, err)
		checkStrings(t, fmt.Sprintf("FinishedOrders(%v, %d)", tt.before.Sub(t0), tt.limit), ids(got), ids(tt.want))
	}
	got, err := s.FinishedOrders(ctx(t), at(time.Hour), 10)
	must(t, err)
	if len(got) == 1 {
		want := *o1[0]
		want.Status, want.Result, want.FinishedAt = tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Minute)
		checkOrder(t, got[0], &want)
	}

	// Unfinished orders and unknown ids are not deleted.
	n, err = s.DeleteOrders(ctx(t), []string{o1[0].ID, o1[1].ID, o2[0].ID, newID()})
	must(t, err)
	if n != 2 {
		t.Errorf("DeleteOrders = %d, want 2", n)
	}
	for _, o := range o1 {
		_, err = s.Order(ctx(t), o.ID)
		wantCode(t, err, tether.ENOTFOUND)
	}
	checkOrder(t, getOrder(t, s, o2[0].ID), o2[0])
	n, err = s.DeleteOrders(ctx(t), nil)
	must(t, err)
	if n != 0 {
		t.Errorf("DeleteOrders(nil) = %d, want 0", n)
	}

	// The request whose orders were deleted remains until its own turn.
	_, left, err := s.Command(ctx(t), r1.ID)
	must(t, err)
	if len(left) != 0 {
		t.Errorf("request after DeleteOrders has %d orders, want 0", len(left))
	}
	n, err = s.DeleteEmptyCommands(ctx(t), at(time.Hour))
	must(t, err)
	if n != 2 {
		t.Errorf("DeleteEmptyCommands = %d, want 2", n)
	}
	for _, r := range []*tether.CommandRequest{r1, r3} {
		_, _, err = s.Command(ctx(t), r.ID)
		wantCode(t, err, tether.ENOTFOUND)
	}
	for _, r := range []*tether.CommandRequest{r2, r4} {
		_, _, err = s.Command(ctx(t), r.ID)
		must(t, err)
	}
	n, err = s.DeleteEmptyCommands(ctx(t), at(time.Hour))
	must(t, err)
	if n != 0 {
		t.Errorf("second DeleteEmptyCommands = %d, want 0", n)
	}
}

// testRetentionLoop archives and deletes orders in small batches, as the
// retention job does, when many finished at the same time.
func testRetentionLoop(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	const total = 95
	r, orders := newCommand(t0, time.Minute, a)
	for range total - 1 {
		_, more := newCommand(t0, time.Minute, a)
		more[0].RequestID = r.ID
		orders = append(orders, more[0])
	}
	must(t, s.CreateCommand(ctx(t), r, orders))
	_, _, err := s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r.ID}, at(time.Second))
	must(t, err)
	kept, _ := createCommand(t, s, t0, time.Hour, a)
	_, err = s.FinishOrder(ctx(t), a.ID, getRequestOrder(t, s, kept.ID).ID, tether.OrderSuccess, tether.Result{}, at(time.Hour))
	must(t, err)

	seen := map[string]bool{}
	for rounds := 0; ; rounds++ {
		if rounds > total {
			t.Fatal("the retention loop does not end")
		}
		batch, err := s.FinishedOrders(ctx(t), at(time.Minute), 10)
		must(t, err)
		if len(batch) == 0 {
			break
		}
		for _, o := range batch {
			if seen[o.ID] {
				t.Fatalf("order %s returned after it was deleted", o.ID)
			}
			seen[o.ID] = true
		}
		n, err := s.DeleteOrders(ctx(t), ids(batch))
		must(t, err)
		if n != len(batch) {
			t.Fatalf("DeleteOrders = %d, want %d", n, len(batch))
		}
	}
	if len(seen) != total {
		t.Errorf("retention deleted %d orders, want %d", len(seen), total)
	}
	n, err := s.DeleteEmptyCommands(ctx(t), at(time.Minute))
	must(t, err)
	if n != 1 {
		t.Errorf("DeleteEmptyCommands = %d, want 1", n)
	}
	_, _, err = s.Command(ctx(t), kept.ID)
	must(t, err)
}

// getRequestOrder returns the only order of the request.
func getRequestOrder(t *testing.T, s tether.Store, requestID string) *tether.Order {
	t.Helper()
	_, orders, err := s.Command(ctx(t), requestID)
	must(t, err)
	if len(orders) != 1 {
		t.Fatalf("request %s has %d orders, want 1", requestID, len(orders))
	}
	return orders[0]
}
