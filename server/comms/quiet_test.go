package comms_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

// lookCounter counts the DeliverOrders calls of a store.
type lookCounter struct {
	*sqlite.DB
	n atomic.Int32
}

func (c *lookCounter) DeliverOrders(ctx context.Context, ds []tether.Delivery, now time.Time) ([][]*tether.Order, error) {
	c.n.Add(int32(len(ds)))
	return c.DB.DeliverOrders(ctx, ds, now)
}

// TestQuietAgentsPollWithoutTheStore has an idle agent poll again and
// again: after a poll that found nothing, the next ones do not look at
// the store, until an order or a cancel is notified for the agent, a
// receipt is carried, or the node wakes everyone after a lost connection.
func TestQuietAgentsPollWithoutTheStore(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := &lookCounter{DB: db}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := authn.NewKeyring(ctx, db, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hub := notify.NewHub()
	e := &pollEnv{db: db, hub: hub, keys: keys}
	e.svc = comms.New(comms.Options{Store: store, Notifier: hub, Keys: keys, Presence: presence.New(db, log), Log: log})
	e.mgr = &command.Manager{Store: db, Notifier: hub}
	id, tok := e.agent(t)
	short := func(received ...string) *commsv1.PollCommandsResponse {
		return answerOf(t, e.poll(tok, &commsv1.PollCommandsRequest{Wait: durationpb.New(20 * time.Millisecond), ReceivedOrderIds: received}))
	}
	looks := func(want int32, when string) {
		t.Helper()
		if got := store.n.Load(); got != want {
			t.Fatalf("%s: %d looks at the store, want %d", when, got, want)
		}
	}

	short()
	looks(1, "first poll")
	short()
	short()
	looks(1, "polls of a quiet agent")

	// An order is notified: the next poll looks, and gets it at once.
	if _, _, err := e.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: id}, Action: tether.Action{Name: "restart"}}); err != nil {
		t.Fatal(err)
	}
	got := short()
	looks(2, "poll after an order")
	if len(got.Orders) != 1 {
		t.Fatalf("poll after an order: %d orders, want 1", len(got.Orders))
	}
	// Its receipt is carried by a look; the agent is quiet again after.
	short(got.Orders[0].OrderId)
	looks(3, "poll with a receipt")
	short()
	looks(3, "quiet again")

	// An order committed without a notification (its node died first) is
	// not seen by a quiet agent's polls, until the node wakes everyone, as
	// it does after its connection to the other nodes came back.
	now := time.Now().UTC()
	r := &tether.CommandRequest{ID: uuid.NewString(), Target: tether.Target{Type: tether.TargetAgent, ID: id},
		Action: tether.Action{Name: "restart"}, CreatedAt: now, Timeout: time.Hour}
	o := &tether.Order{ID: uuid.NewString(), RequestID: r.ID, AgentID: id, Action: r.Action,
		Status: tether.OrderPending, CreatedAt: now, TimeoutAt: now.Add(time.Hour)}
	if err := db.CreateCommand(ctx, r, []*tether.Order{o}); err != nil {
		t.Fatal(err)
	}
	if got := short(); len(got.Orders) != 0 {
		t.Fatal("a quiet agent's poll looked at the store")
	}
	hub.NotifyAll()
	if got := short(); len(got.Orders) != 1 || got.Orders[0].OrderId != o.ID {
		t.Fatalf("after waking everyone: %d orders, want the unnotified one", len(got.Orders))
	}
	looks(4, "after waking everyone")

	// A waiting poll woken by an order is not quiet: the next looks.
	short(o.ID)
	looks(5, "receipt")
	ch := e.waitingPoll(t, tok, &commsv1.PollCommandsRequest{})
	if _, _, err := e.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: id}, Action: tether.Action{Name: "restart"}}); err != nil {
		t.Fatal(err)
	}
	if ans := answerOf(t, ch); len(ans.Orders) != 1 {
		t.Fatalf("woken poll: %d orders, want 1", len(ans.Orders))
	}
	before := store.n.Load()
	short()
	looks(before+1, "poll after a delivery")
}
