package pgnotify_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/group"
	"github.com/tetherhq/tether/server/pgnotify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

// node is one server node's comms service, command manager and group
// service, joined to the others by a pgnotify.Notifier, wired as
// tether-server wires them.
type node struct {
	n      *pgnotify.Notifier
	svc    *comms.Service
	mgr    *command.Manager
	groups *group.Service
}

// cluster returns two nodes on one store.
func cluster(t *testing.T) (store *sqlite.DB, keys *authn.Keyring, a, b *node) {
	t.Helper()
	url, ch := testURL(t), channel()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if keys, err = authn.NewKeyring(context.Background(), db, time.Hour); err != nil {
		t.Fatal(err)
	}
	mk := func() *node {
		n := open(t, url, ch, nil)
		svc := comms.New(comms.Options{Store: db, Notifier: n, Keys: keys, Presence: presence.New(db, quiet), Log: quiet})
		n.SetCaches(svc)
		return &node{
			n: n, svc: svc, mgr: &command.Manager{Store: db, Notifier: n},
			groups: &group.Service{Store: db, Notifier: n, ForgetAgent: svc.Forget, ForgetConfigs: svc.ForgetConfigs},
		}
	}
	return db, keys, mk(), mk()
}

type answer struct {
	msg  *commsv1.PollCommandsResponse
	err  error
	took time.Duration
}

// poll starts a poll of up to a minute on the node and returns once it
// waits, with where its answer arrives.
func (nd *node) poll(t *testing.T, tok string, msg *commsv1.PollCommandsRequest) <-chan answer {
	t.Helper()
	before := nd.n.Waiting()
	msg.Wait = durationpb.New(time.Minute)
	ch := make(chan answer, 1)
	go func() {
		req := connect.NewRequest(msg)
		req.Header().Set("Authorization", "Bearer "+tok)
		start := time.Now()
		resp, err := nd.svc.PollCommands(context.Background(), req)
		a := answer{err: err, took: time.Since(start)}
		if err == nil {
			a.msg = resp.Msg
		}
		ch <- a
	}()
	deadline := time.Now().Add(10 * time.Second)
	for nd.n.Waiting() == before {
		if time.Now().After(deadline) {
			t.Fatal("poll not waiting after 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	// Subscribed is not yet waiting: the first look may still run.
	select {
	case a := <-ch:
		t.Fatalf("poll answered at once: %v %v", a.msg, a.err)
	case <-time.After(50 * time.Millisecond):
	}
	return ch
}

func await(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		if a.took > 30*time.Second {
			t.Fatalf("poll held %s: it was not woken", a.took)
		}
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("poll not answered within 30 s")
		return answer{}
	}
}

func TestClusterOrderThroughOneNodeReachesPollOnAnother(t *testing.T) {
	ctx := context.Background()
	db, keys, a, b := cluster(t)
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: []string{}}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tok, _, err := keys.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ch := b.poll(t, tok, &commsv1.PollCommandsRequest{})
	_, orders, err := a.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: id}, Action: tether.Action{Name: "restart"}})
	if err != nil {
		t.Fatal(err)
	}
	got := await(t, ch)
	if got.err != nil || len(got.msg.Orders) != 1 || got.msg.Orders[0].OrderId != orders[0].ID {
		t.Fatalf("poll on the other node answered %v, %v; want order %s", got.msg, got.err, orders[0].ID)
	}
}

func TestClusterConfigChangeThroughOneNodeReachesPollOnAnother(t *testing.T) {
	ctx := context.Background()
	db, keys, a, b := cluster(t)
	if _, err := a.groups.Create(ctx, "web", "", "log_level: info\n"); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: []string{"web"}}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tok, _, err := keys.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, v1, err := comms.MergedConfig(ctx, db, []string{"web"})
	if err != nil {
		t.Fatal(err)
	}
	// The poll on b caches the version of web's configuration; the change
	// through a must drop it there, or the woken poll would find the
	// cached version and wait on.
	ch := b.poll(t, tok, &commsv1.PollCommandsRequest{ConfigVersion: v1})
	cfg := "log_level: debug\n"
	if _, err := a.groups.Update(ctx, "web", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	got := await(t, ch)
	if got.err != nil || got.msg.ConfigVersion == v1 {
		t.Fatalf("poll on the other node answered %v, %v; want a version other than %s", got.msg, got.err, v1)
	}

	// Moving the agent to another group through a: b drops the agent's
	// record it cached, and answers with that group's version.
	if _, err := a.groups.Create(ctx, "eu", "", "region: eu\n"); err != nil {
		t.Fatal(err)
	}
	v2 := got.msg.ConfigVersion
	ch = b.poll(t, tok, &commsv1.PollCommandsRequest{ConfigVersion: v2})
	if _, err := a.groups.SetAgentGroups(ctx, id, []string{"eu"}); err != nil {
		t.Fatal(err)
	}
	_, v3, err := comms.MergedConfig(ctx, db, []string{"eu"})
	if err != nil {
		t.Fatal(err)
	}
	if got := await(t, ch); got.err != nil || got.msg.ConfigVersion != v3 {
		t.Fatalf("after the agent moved groups, the poll on the other node answered %v, %v; want version %s", got.msg, got.err, v3)
	}
}

func TestClusterAgentDeletedThroughOneNodeEndsPollOnAnother(t *testing.T) {
	ctx := context.Background()
	db, keys, a, b := cluster(t)
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: []string{}}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tok, _, err := keys.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ch := b.poll(t, tok, &commsv1.PollCommandsRequest{})
	// What the management API does to delete an agent.
	if err := db.DeleteAgent(ctx, id); err != nil {
		t.Fatal(err)
	}
	a.svc.Forget(id)
	a.n.Notify(id)
	if got := await(t, ch); connect.CodeOf(got.err) != connect.CodePermissionDenied {
		t.Fatalf("poll of a deleted agent on the other node answered %v, %v; want permission_denied", got.msg, got.err)
	}
}

// TestClusterOrderLatency measures how long an order created through one
// node takes to reach the poll its agent holds on another: from the call
// to command.Manager.Create to the poll's answer, through the store, the
// notification and the poll's look. It logs the distribution (run with -v)
// and asserts nothing about time.
func TestClusterOrderLatency(t *testing.T) {
	ctx := context.Background()
	db, keys, a, b := cluster(t)
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: []string{}}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tok, _, err := keys.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	d := make([]time.Duration, 0, n)
	var received []string
	for range n {
		before := b.n.Waiting()
		done := make(chan answer, 1)
		go func() {
			req := connect.NewRequest(&commsv1.PollCommandsRequest{Wait: durationpb.New(time.Minute), ReceivedOrderIds: received})
			req.Header().Set("Authorization", "Bearer "+tok)
			resp, err := b.svc.PollCommands(ctx, req)
			a := answer{err: err}
			if err == nil {
				a.msg = resp.Msg
			}
			done <- a
		}()
		deadline := time.Now().Add(10 * time.Second)
		for b.n.Waiting() == before {
			if time.Now().After(deadline) {
				t.Fatal("poll not waiting after 10 s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		start := time.Now()
		if _, _, err := a.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: id}, Action: tether.Action{Name: "restart"}}); err != nil {
			t.Fatal(err)
		}
		got := await(t, done)
		d = append(d, time.Since(start))
		if got.err != nil || len(got.msg.Orders) != 1 {
			t.Fatalf("poll answered %v, %v; want one order", got.msg, got.err)
		}
		received = []string{got.msg.Orders[0].OrderId}
	}
	slices.Sort(d)
	t.Logf("order created through node A to the answer of the poll on node B, over %d orders: p50 %v, p90 %v, p99 %v, max %v",
		n, d[n/2], d[n*90/100], d[n*99/100], d[n-1])
}
