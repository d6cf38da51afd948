package command_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/sqlite"
)

func setup(t *testing.T) (*command.Manager, *sqlite.DB, string) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	id := uuid.NewString()
	if err := db.RegisterAgent(context.Background(), &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	return &command.Manager{Store: db, Notifier: notify.NewHub()}, db, id
}

func TestCreateValidates(t *testing.T) {
	m, _, agentID := setup(t)
	agent := tether.Target{Type: tether.TargetAgent, ID: agentID}
	cases := []struct {
		name  string
		n     command.New
		field string
	}{
		{"no target type", command.New{Action: tether.Action{Name: "restart"}}, "target.type"},
		{"bad target type", command.New{Target: tether.Target{Type: "planet"}, Action: tether.Action{Name: "restart"}}, "target.type"},
		{"bad agent id", command.New{Target: tether.Target{Type: tether.TargetAgent, ID: "x"}, Action: tether.Action{Name: "restart"}}, "target.id"},
		{"unknown agent", command.New{Target: tether.Target{Type: tether.TargetAgent, ID: uuid.NewString()}, Action: tether.Action{Name: "restart"}}, "target.id"},
		{"no action", command.New{Target: agent}, "action.name"},
		{"bad action", command.New{Target: agent, Action: tether.Action{Name: "Rm -rf"}}, "action.name"},
		{"args not an object", command.New{Target: agent, Action: tether.Action{Name: "x", Args: json.RawMessage(`[1]`)}}, "action.args"},
		{"timeout too short", command.New{Target: agent, Action: tether.Action{Name: "x"}, Timeout: time.Millisecond}, "timeout"},
		{"timeout too long", command.New{Target: agent, Action: tether.Action{Name: "x"}, Timeout: 48 * time.Hour}, "timeout"},
	}
	for _, c := range cases {
		_, _, err := m.Create(context.Background(), c.n)
		e, ok := err.(*tether.Error)
		if !ok || e.Code != tether.EINVALID || e.Field != c.field {
			t.Errorf("%s: %v, want an invalid %s", c.name, err, c.field)
		}
	}
}

func TestCreateStoresAndWakes(t *testing.T) {
	m, db, agentID := setup(t)
	wake, release := m.Notifier.Subscribe(agentID)
	defer release()
	req, orders, err := m.Create(context.Background(), command.New{
		Target: tether.Target{Type: tether.TargetAgent, ID: agentID},
		Action: tether.Action{Name: "osquery.run", Args: json.RawMessage(`{"a":"b"}`)},
		User:   "alice", Source: "user",
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	default:
		t.Fatal("creating an order did not wake its agent's poll")
	}
	if len(orders) != 1 || orders[0].Status != tether.OrderPending || orders[0].TimeoutAt.Sub(req.CreatedAt) != command.DefaultTimeout {
		t.Fatalf("orders: %+v", orders)
	}
	got, stored, err := db.Command(context.Background(), req.ID)
	if err != nil || got.User != "alice" || len(stored) != 1 || stored[0].ID != orders[0].ID {
		t.Fatalf("stored: %+v %+v %v", got, stored, err)
	}
}

func TestSweeperFailsTimedOutOrders(t *testing.T) {
	m, db, agentID := setup(t)
	now := time.Now()
	m.Now = func() time.Time { return now.Add(-time.Hour) }
	req, _, err := m.Create(context.Background(), command.New{
		Target: tether.Target{Type: tether.TargetAgent, ID: agentID}, Action: tether.Action{Name: "x"}, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { command.RunSweeper(ctx, db, 10*time.Millisecond, testLogger(), nil); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, orders, err := db.Command(context.Background(), req.ID)
		if err != nil {
			t.Fatal(err)
		}
		if orders[0].Status == tether.OrderFailure {
			if orders[0].Result.Message != "timed out" {
				t.Fatalf("result %+v", orders[0].Result)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sweeper did not fail the timed-out order")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestBuiltinActionArguments(t *testing.T) {
	m, _, agentID := setup(t)
	agent := tether.Target{Type: tether.TargetAgent, ID: agentID}
	sha := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	sig := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
	cases := []struct {
		name   string
		target tether.Target
		action string
		args   string
		field  string // "" when valid
	}{
		{"restart takes nothing", agent, "restart", ``, ""},
		{"restart refuses args", agent, "restart", `{"now":true}`, "action.args.now"},
		{"upgrade complete", agent, "upgrade", `{"version":"1.2.0","sha256":"` + sha + `","file":"tether-agent","signature":"` + sig + `"}`, ""},
		{"upgrade bad signature", agent, "upgrade", `{"version":"1.2.0","sha256":"` + sha + `","file":"tether-agent","signature":"c2ln"}`, "action.args.signature"},
		{"upgrade missing sha", agent, "upgrade", `{"version":"1.2.0","file":"f","signature":"s"}`, "action.args.sha256"},
		{"upgrade bad sha", agent, "upgrade", `{"version":"1","sha256":"xyz","file":"f","signature":"s"}`, "action.args.sha256"},
		{"active-response", agent, "active-response", `{"command":"block-ip","args":["1.2.3.4"],"timeout":"30s"}`, ""},
		{"active-response bad args", agent, "active-response", `{"command":"x","args":"1.2.3.4"}`, "action.args.args"},
		{"active-response bad timeout", agent, "active-response", `{"command":"x","timeout":"soon"}`, "action.args.timeout"},
		{"set-group needs groups", agent, "set-group", `{}`, "action.args.groups"},
		{"plugin action unchecked", agent, "osquery.run", `{"sql":"select 1"}`, ""},
		{"server action on agent", agent, "rotate-signing-key", ``, "action.name"},
		{"agent action on server", tether.Target{Type: tether.TargetServer}, "restart", ``, "action.name"},
	}
	for _, c := range cases {
		_, _, err := m.Create(context.Background(), command.New{Target: c.target, Action: tether.Action{Name: c.action, Args: json.RawMessage(c.args)}})
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		e, ok := err.(*tether.Error)
		if !ok || e.Field != c.field {
			t.Errorf("%s: %v, want an error on %s", c.name, err, c.field)
		}
	}
}

func TestGroupAndServerTargets(t *testing.T) {
	m, db, first := setup(t)
	ctx := context.Background()
	members := []string{first}
	for i := 0; i < 2; i++ {
		id := uuid.NewString()
		if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "b", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
			t.Fatal(err)
		}
		members = append(members, id)
	}
	for _, id := range members {
		if err := db.SetAgentGroups(ctx, id, []string{"web"}); err != nil {
			t.Fatal(err)
		}
	}
	wake, release := m.Notifier.Subscribe(members[2])
	defer release()
	_, orders, err := m.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetGroup, ID: "web"}, Action: tether.Action{Name: "restart"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != 3 {
		t.Fatalf("group of 3: %d orders", len(orders))
	}
	select {
	case <-wake:
	default:
		t.Fatal("a member's poll was not woken")
	}
	_, _, err = m.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetGroup, ID: "empty"}, Action: tether.Action{Name: "restart"}})
	if e, ok := err.(*tether.Error); !ok || e.Field != "target.id" {
		t.Fatalf("empty group: %v", err)
	}
	req, orders, err := m.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetServer}, Action: tether.Action{Name: "reload-config"}})
	if err != nil || len(orders) != 1 || orders[0].AgentID != "" {
		t.Fatalf("server target: %v %+v", err, orders)
	}
	claimed, err := db.ClaimServerOrders(ctx, 10, time.Now())
	if err != nil || len(claimed) != 1 || claimed[0].RequestID != req.ID {
		t.Fatalf("server order not claimable: %v %+v", err, claimed)
	}
	n, err := m.Cancel(ctx, tether.CancelFilter{RequestID: orders[0].RequestID})
	if err != nil || n != 1 {
		t.Fatalf("cancel: %d %v", n, err)
	}
}
