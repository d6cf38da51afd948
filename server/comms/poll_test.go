package comms_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
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
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

// pollEnv is one node's comms service, command manager and group service
// on a real SQLite store, wired as tether-server wires them.
type pollEnv struct {
	db     *sqlite.DB
	hub    *notify.Hub
	svc    *comms.Service
	mgr    *command.Manager
	groups *group.Service
	keys   *authn.Keyring
}

func newPollEnv(t *testing.T) *pollEnv {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := authn.NewKeyring(context.Background(), db, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &pollEnv{db: db, hub: notify.NewHub(), keys: keys}
	e.svc = comms.New(comms.Options{Store: db, Notifier: e.hub, Keys: keys, Presence: presence.New(db, log), Log: log})
	e.mgr = &command.Manager{Store: db, Notifier: e.hub}
	e.groups = &group.Service{Store: db, Notifier: e.hub, ForgetAgent: e.svc.Forget, ForgetConfigs: e.svc.ForgetConfigs}
	return e
}

// agent registers an agent in groups and returns its id and a token.
func (e *pollEnv) agent(t *testing.T, groups ...string) (string, string) {
	t.Helper()
	id := uuid.NewString()
	if groups == nil {
		groups = []string{}
	}
	if err := e.db.RegisterAgent(context.Background(), &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: groups}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.keys.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id, tok
}

type pollResult struct {
	resp *commsv1.PollCommandsResponse
	err  error
	took time.Duration
}

// poll starts a poll and returns where its answer arrives.
func (e *pollEnv) poll(token string, msg *commsv1.PollCommandsRequest) <-chan pollResult {
	ch := make(chan pollResult, 1)
	go func() {
		req := connect.NewRequest(msg)
		req.Header().Set("Authorization", "Bearer "+token)
		start := time.Now()
		resp, err := e.svc.PollCommands(context.Background(), req)
		r := pollResult{err: err, took: time.Since(start)}
		if err == nil {
			r.resp = resp.Msg
		}
		ch <- r
	}()
	return ch
}

// waitingPoll starts a poll of up to a minute and returns once it waits.
func (e *pollEnv) waitingPoll(t *testing.T, token string, msg *commsv1.PollCommandsRequest) <-chan pollResult {
	t.Helper()
	before := e.hub.Waiting()
	msg.Wait = durationpb.New(time.Minute)
	ch := e.poll(token, msg)
	deadline := time.Now().Add(10 * time.Second)
	for e.hub.Waiting() == before {
		select {
		case r := <-ch:
			t.Fatalf("poll answered at once: %v %v", r.resp, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("poll not waiting after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	// Subscribed is not yet waiting: the first look may still run. Give
	// it the time to, or to answer.
	select {
	case r := <-ch:
		t.Fatalf("poll answered at once: %v %v", r.resp, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	return ch
}

func answerOf(t *testing.T, ch <-chan pollResult) *commsv1.PollCommandsResponse {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.took > 30*time.Second {
			t.Fatalf("poll held %s: it was not woken", r.took)
		}
		return r.resp
	case <-time.After(30 * time.Second):
		t.Fatal("poll not answered within 30s")
		return nil
	}
}

func TestPollAnswersWhenTheConfigurationChanges(t *testing.T) {
	ctx := context.Background()
	e := newPollEnv(t)
	if _, err := e.groups.Create(ctx, "web", "", "log_level: info\n"); err != nil {
		t.Fatal(err)
	}
	id, tok := e.agent(t, "web")

	// The version is given on every answer.
	first := answerOf(t, e.poll(tok, &commsv1.PollCommandsRequest{Wait: durationpb.New(time.Millisecond)}))
	v1 := first.ConfigVersion
	if v1 == "" {
		t.Fatal("poll answer without a config version")
	}
	_, want, err := comms.MergedConfig(ctx, e.db, []string{"web"})
	if err != nil || want != v1 {
		t.Fatalf("poll gave version %q, GetConfig's is %q (%v)", v1, want, err)
	}

	// A poll that runs that version waits; a change of the group's
	// configuration answers it with the new one.
	ch := e.waitingPoll(t, tok, &commsv1.PollCommandsRequest{ConfigVersion: v1})
	cfg := "log_level: debug\n"
	if _, err := e.groups.Update(ctx, "web", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	got := answerOf(t, ch)
	if got.ConfigVersion == v1 || len(got.Orders) != 0 {
		t.Fatalf("after a config change: version %q (was %q), %d orders", got.ConfigVersion, v1, len(got.Orders))
	}
	v2 := got.ConfigVersion

	// Joining another group changes it too.
	ch = e.waitingPoll(t, tok, &commsv1.PollCommandsRequest{ConfigVersion: v2})
	if _, err := e.groups.Create(ctx, "eu", "", "region: eu\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.groups.SetAgentGroups(ctx, id, []string{"web", "eu"}); err != nil {
		t.Fatal(err)
	}
	if got := answerOf(t, ch); got.ConfigVersion == v2 {
		t.Fatalf("after joining a group: version unchanged %q", v2)
	}

	// An agent with a stale version is answered at once.
	r := <-e.poll(tok, &commsv1.PollCommandsRequest{ConfigVersion: v1, Wait: durationpb.New(time.Minute)})
	if r.err != nil || r.took > 10*time.Second || r.resp.ConfigVersion == v1 {
		t.Fatalf("stale version: %v after %s, %v", r.resp, r.took, r.err)
	}
}

func TestPollTellsTheAgentWhichQueuedOrdersWereCancelled(t *testing.T) {
	ctx := context.Background()
	e := newPollEnv(t)
	_, tok := e.agent(t)
	var ids []string
	for range 3 {
		r, _, err := e.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: agentOf(t, e, tok)}, Action: tether.Action{Name: "restart"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	got := answerOf(t, e.poll(tok, &commsv1.PollCommandsRequest{Wait: durationpb.New(time.Millisecond)}))
	if len(got.Orders) != 3 {
		t.Fatalf("delivered %d orders, want 3", len(got.Orders))
	}
	var received []string
	for _, o := range got.Orders {
		received = append(received, o.OrderId)
	}
	// The agent stored all three and runs the first; the other two wait
	// in its queue. Cancelling the third wakes the poll with its id.
	ch := e.waitingPoll(t, tok, &commsv1.PollCommandsRequest{ReceivedOrderIds: received, QueuedOrderIds: received[1:], ConfigVersion: got.ConfigVersion})
	if _, err := e.mgr.Cancel(ctx, tether.CancelFilter{RequestID: ids[2]}); err != nil {
		t.Fatal(err)
	}
	ans := answerOf(t, ch)
	if len(ans.CancelledOrderIds) != 1 || ans.CancelledOrderIds[0] != received[2] || len(ans.Orders) != 0 {
		t.Fatalf("after cancel: cancelled %q, %d orders; want [%s] and none", ans.CancelledOrderIds, len(ans.Orders), received[2])
	}
	// A poll that lists a finished order among its queue is told at once.
	r := <-e.poll(tok, &commsv1.PollCommandsRequest{QueuedOrderIds: received[1:], Wait: durationpb.New(time.Minute)})
	if r.err != nil || r.took > 10*time.Second || len(r.resp.CancelledOrderIds) != 1 {
		t.Fatalf("queued finished order: %v after %s, %v", r.resp, r.took, r.err)
	}
	// Receipts were recorded: nothing is delivered again.
	if len(r.resp.Orders) > 0 {
		t.Fatalf("received orders delivered again: %d", len(r.resp.Orders))
	}
}

// agentOf returns the agent id a token was issued to.
func agentOf(t *testing.T, e *pollEnv, tok string) string {
	t.Helper()
	id, err := e.keys.Verify(context.Background(), tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSetGroupsOnlyCarriesOutASetGroupOrder(t *testing.T) {
	ctx := context.Background()
	e := newPollEnv(t)
	if _, err := e.groups.Create(ctx, "eu", "", "region: eu\n"); err != nil {
		t.Fatal(err)
	}
	id, tok := e.agent(t, "web")
	other, _ := e.agent(t)
	send := func(agent, action, args string) string {
		t.Helper()
		_, orders, err := e.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: agent},
			Action: tether.Action{Name: action, Args: []byte(args)}})
		if err != nil {
			t.Fatal(err)
		}
		return orders[0].ID
	}
	setGroups := func(orderID string, groups ...string) (*commsv1.SetGroupsResponse, error) {
		req := connect.NewRequest(&commsv1.SetGroupsRequest{OrderId: orderID, Groups: groups})
		req.Header().Set("Authorization", "Bearer "+tok)
		resp, err := e.svc.SetGroups(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	good := send(id, "set-group", `{"groups":["eu","linux"]}`)
	finished := send(id, "set-group", `{"groups":["eu"]}`)
	if _, err := e.mgr.Cancel(ctx, tether.CancelFilter{OrderID: finished}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		order  string
		groups []string
	}{
		"another action":          {send(id, "restart", ``), []string{"eu"}},
		"another agent's order":   {send(other, "set-group", `{"groups":["eu"]}`), []string{"eu"}},
		"other groups":            {good, []string{"eu"}},
		"groups in another order": {good, []string{"linux", "eu"}},
		"a finished order":        {finished, []string{"eu"}},
		"an unknown order":        {uuid.NewString(), []string{"eu"}},
	} {
		if _, err := setGroups(c.order, c.groups...); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%s: error %v, want invalid_argument", name, err)
		}
	}
	if a, _ := e.db.Agent(ctx, id); len(a.Groups) != 1 || a.Groups[0] != "web" {
		t.Fatalf("groups changed by refused calls: %v", a.Groups)
	}

	// The order's own groups: applied, and a poll of the agent sees the
	// new configuration version at once.
	before := answerOf(t, e.poll(tok, &commsv1.PollCommandsRequest{Wait: durationpb.New(time.Millisecond)})).ConfigVersion
	got, err := setGroups(good, "eu", "linux")
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := comms.MergedConfig(ctx, e.db, []string{"eu", "linux"})
	if len(got.Groups) != 2 || got.Groups[0] != "eu" || got.ConfigVersion != want || want == before {
		t.Fatalf("SetGroups = %v; want groups [eu linux] and version %s (was %s)", got, want, before)
	}
	after := answerOf(t, e.poll(tok, &commsv1.PollCommandsRequest{Wait: durationpb.New(time.Millisecond)})).ConfigVersion
	if after != want {
		t.Fatalf("poll after SetGroups gives version %s, want %s", after, want)
	}
	if _, err := setGroups(good, "eu", "linux"); err != nil {
		t.Fatalf("repeating SetGroups: %v", err)
	}
}
