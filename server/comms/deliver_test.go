package comms

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sqlite"
)

// TestDelivererServesConcurrentPollsTogether has many polls ask at once:
// each gets its own agent's order, and they share far fewer transactions
// than polls; a poll that gives up is answered with its context's error and
// its order is delivered again to the next poll.
func TestDelivererServesConcurrentPollsTogether(t *testing.T) {
	ctx := context.Background()
	const n = 300
	db, ids, orders := agentsWithAnOrder(t, n)
	want := map[string]string{}
	for i, id := range ids {
		want[id] = orders[i].ID
	}

	counting := &countingStore{CommandStore: db, hold: 2, release: make(chan struct{})}
	d := &deliverer{store: counting, now: time.Now}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.deliver(gone, ids[0], nil, 10); err != context.Canceled {
		t.Fatalf("deliver with a cancelled context: %v, want %v", err, context.Canceled)
	}
	// The cancelled poll's transaction may still run: wait for it.
	waitFor(t, func() bool { return counting.calls() == 1 })

	// The second transaction is held until every other poll queued behind
	// it: they must then be served together.
	go func() {
		waitFor(t, func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			return counting.firstHeld()+len(d.queue) == n
		})
		close(counting.release)
	}()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := d.deliver(ctx, id, nil, 10)
			if err != nil {
				t.Error(err)
				return
			}
			if len(got) != 1 || got[0].ID != want[id] || got[0].AgentID != id {
				t.Errorf("agent %s got %v, want its order %s", id, got, want[id])
			}
		}()
	}
	wg.Wait()
	// 1 for the cancelled poll, 1 held, 1 for all the polls queued behind.
	if calls := counting.calls(); calls > 3 {
		t.Errorf("%d polls served by %d transactions, want at most 3", n, calls)
	}
}

// TestFinisherAppliesConcurrentReportsTogether has many agents report at
// once: each result is applied to its own order, the reports share far
// fewer transactions than reports, and a result for another agent's order
// is refused alone.
func TestFinisherAppliesConcurrentReportsTogether(t *testing.T) {
	ctx := context.Background()
	const n = 300
	db, ids, orders := agentsWithAnOrder(t, n)
	counting := &countingStore{CommandStore: db, hold: 1, release: make(chan struct{})}
	f := &finisher{store: counting, now: time.Now}
	go func() {
		waitFor(t, func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return counting.firstHeld()/2+len(f.queue) == n // two results per report
		})
		close(counting.release)
	}()
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := tether.Finish{AgentID: id, OrderID: orders[i].ID, Status: tether.OrderSuccess, Result: tether.Result{Message: "ok"}}
			theirs := tether.Finish{AgentID: id, OrderID: orders[(i+1)%n].ID, Status: tether.OrderSuccess}
			got, err := f.finish(ctx, []tether.Finish{theirs, mine})
			if err != nil {
				t.Error(err)
				return
			}
			if len(got) != 2 || tether.ErrorCode(got[0].Err) != tether.ENOTFOUND {
				t.Errorf("agent %s: another agent's order gave %+v, want not found", id, got)
				return
			}
			if o := got[1].Order; got[1].Err != nil || !got[1].Finished || o.ID != orders[i].ID || o.Status != tether.OrderSuccess {
				t.Errorf("agent %s: its result gave %+v, want its order finished", id, got[1])
			}
		}()
	}
	wg.Wait()
	if calls := counting.calls(); calls > 2 {
		t.Errorf("%d reports applied by %d transactions, want at most 2", n, calls)
	}
	// A status that finishes nothing is refused before it joins a batch.
	if _, err := f.finish(ctx, []tether.Finish{{AgentID: ids[0], OrderID: orders[0].ID, Status: tether.OrderSent}}); tether.ErrorCode(err) != tether.EINVALID {
		t.Errorf("a result that finishes nothing: %v, want invalid", err)
	}
}

// agentsWithAnOrder opens a SQLite store with n agents and one pending
// order each (orders[i] is ids[i]'s).
func agentsWithAnOrder(t *testing.T, n int) (*sqlite.DB, []string, []*tether.Order) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	ids := make([]string, n)
	r := &tether.CommandRequest{ID: uuid.NewString(), Target: tether.Target{Type: tether.TargetGroup, ID: "g"},
		Action: tether.Action{Name: "restart"}, CreatedAt: now, Timeout: time.Hour}
	orders := make([]*tether.Order, n)
	for i := range ids {
		ids[i] = uuid.NewString()
		if err := db.RegisterAgent(ctx, &tether.Agent{ID: ids[i], Name: "a", KeyHash: make([]byte, 32)}, "", now); err != nil {
			t.Fatal(err)
		}
		orders[i] = &tether.Order{ID: uuid.NewString(), RequestID: r.ID, AgentID: ids[i], Action: r.Action,
			Status: tether.OrderPending, CreatedAt: now, TimeoutAt: now.Add(time.Hour)}
	}
	if err := db.CreateCommand(ctx, r, orders); err != nil {
		t.Fatal(err)
	}
	return db, ids, orders
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Error("condition not met within 10s")
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// countingStore counts DeliverOrders and FinishOrders transactions and
// holds the one numbered hold until release is closed.
type countingStore struct {
	tether.CommandStore
	hold    int
	release chan struct{}

	mu   sync.Mutex
	n    int
	held int // calls in the held transaction
}

func (c *countingStore) DeliverOrders(ctx context.Context, ds []tether.Delivery, now time.Time) ([][]*tether.Order, error) {
	c.count(len(ds))
	return c.CommandStore.DeliverOrders(ctx, ds, now)
}

func (c *countingStore) FinishOrders(ctx context.Context, fs []tether.Finish, at time.Time) ([]tether.FinishOutcome, error) {
	c.count(len(fs))
	return c.CommandStore.FinishOrders(ctx, fs, at)
}

// count counts a transaction of n calls, and holds it until release is
// closed when it is the one numbered hold.
func (c *countingStore) count(n int) {
	c.mu.Lock()
	c.n++
	hold := c.n == c.hold
	if hold {
		c.held = n
	}
	c.mu.Unlock()
	if hold {
		<-c.release
	}
}

func (c *countingStore) firstHeld() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held
}

func (c *countingStore) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
