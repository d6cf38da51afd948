package command_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/sink/file"
)

func TestServerRunnerRunsEachOrderOnce(t *testing.T) {
	m, db, _ := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := make(chan string, 10)
	handlers := map[string]command.ServerHandler{
		"reload-config": func(_ context.Context, o *tether.Order) (tether.OrderStatus, tether.Result) {
			runs <- o.ID
			return tether.OrderSuccess, tether.Result{Message: "reloaded"}
		},
	}
	// Two nodes' runners on one store.
	for i := 0; i < 2; i++ {
		r := &command.ServerRunner{Store: db, Handlers: handlers, Log: testLogger(), Interval: 5 * time.Millisecond}
		go r.Run(ctx)
	}
	req, _, err := m.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetServer}, Action: tether.Action{Name: "reload-config"}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, orders, err := db.Command(ctx, req.ID)
		if err != nil {
			t.Fatal(err)
		}
		if orders[0].Status == tether.OrderSuccess && orders[0].Result.Message == "reloaded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server order not run: %+v", orders[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if len(runs) != 1 {
		t.Fatalf("server order ran %d times", len(runs))
	}
}

func TestArchiverMovesOldOrdersToTheSinks(t *testing.T) {
	m, db, agentID := setup(t)
	ctx := context.Background()
	old := time.Now().Add(-10 * 24 * time.Hour)
	m.Now = func() time.Time { return old }
	if err := db.SetAgentGroups(ctx, agentID, []string{"web", "eu"}); err != nil {
		t.Fatal(err)
	}
	oldReq, orders, err := m.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: agentID},
		Action: tether.Action{Name: "get-config"}, Source: "service", User: "deploy-bot", Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishOrder(ctx, agentID, orders[0].ID, tether.OrderSuccess, tether.Result{Message: "ok"}, old.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	m.Now = nil
	recent, _, err := m.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: agentID}, Action: tether.Action{Name: "restart"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sink, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	a := &command.Archiver{Store: db, Sinks: []tether.Sink{sink}, Retention: 7 * 24 * time.Hour, Log: testLogger()}
	n, err := a.Once(ctx, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("Once = %d, %v; want 1 order archived", n, err)
	}
	if _, _, err := db.Command(ctx, oldReq.ID); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Fatalf("archived request still readable: %v", err)
	}
	if _, o, err := db.Command(ctx, recent.ID); err != nil || len(o) != 1 {
		t.Fatalf("recent request lost: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	var all strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all.Write(b)
	}
	var line struct {
		Module  string `json:"module"`
		Payload struct {
			Agent struct {
				ID     string   `json:"id"`
				Groups []string `json:"groups"`
			} `json:"agent"`
			Command struct {
				RequestID                     string `json:"request_id"`
				OrderID                       string `json:"order_id"`
				Source, User, Timeout, Status string
				Target                        struct{ Type, ID string }
				Action                        struct{ Name string }
				Result                        struct{ Message string }
			} `json:"command"`
			CreatedAt  time.Time `json:"created_at"`
			FinishedAt time.Time `json:"finished_at"`
		} `json:"payload"`
	}
	// The record carries the order with its request, under the names of
	// the order's fields (agent.groups, command.source, …).
	if err := json.Unmarshal([]byte(strings.TrimSpace(all.String())), &line); err != nil {
		t.Fatalf("sink content %v:\n%s", err, all.String())
	}
	p, c := line.Payload, line.Payload.Command
	if line.Module != "commands" || p.Agent.ID != agentID || strings.Join(p.Agent.Groups, ",") != "web,eu" ||
		c.OrderID != orders[0].ID || c.RequestID != oldReq.ID || c.Source != "service" || c.User != "deploy-bot" ||
		c.Target.Type != "agent" || c.Target.ID != agentID || c.Action.Name != "get-config" || c.Timeout != "5m0s" ||
		c.Status != "success" || c.Result.Message != "ok" || p.CreatedAt.IsZero() || p.FinishedAt.IsZero() {
		t.Fatalf("archived record:\n%s", all.String())
	}
	if n, err := a.Once(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("second pass: %d %v", n, err)
	}
}
