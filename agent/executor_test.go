package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

func openStore(t *testing.T, path string) *store.DB {
	t.Helper()
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newOrder(id, action string) client.Order {
	return client.Order{ID: id, Action: action, Args: json.RawMessage("{}"), CreatedAt: time.Now(), TimeoutAt: time.Now().Add(time.Minute)}
}

func TestExecutorRunsInArrivalOrder(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	var ran []string
	handlers := map[string]agent.Handler{
		"echo": {Run: func(_ context.Context, o client.Order) (agent.Outcome, error) {
			ran = append(ran, o.ID)
			return agent.Outcome{Success: true, Message: "ok", Data: map[string]string{"id": o.ID}}, nil
		}},
		"fail": {Run: func(context.Context, client.Order) (agent.Outcome, error) {
			return agent.Outcome{Code: 3}, errors.New("disk full")
		}},
	}
	expired := newOrder("o3", "echo")
	expired.TimeoutAt = time.Now().Add(-time.Second)
	if _, err := db.Orders.Add([]client.Order{newOrder("o2", "echo"), newOrder("o1", "echo"), expired, newOrder("o4", "nope"), newOrder("o5", "fail")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Orders.Add([]client.Order{newOrder("o0", "echo")}); err != nil {
		t.Fatal(err)
	}
	ex := agent.NewExecutor(db.Orders, handlers, nil)
	if err := ex.RunPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(ran); got != 3 || ran[0] != "o2" || ran[1] != "o1" || ran[2] != "o0" {
		t.Fatalf("ran %v, want [o2 o1 o0]", ran)
	}
	results, err := db.Orders.Results(0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id      string
		success bool
		msg     string
	}{{"o2", true, "ok"}, {"o1", true, "ok"}, {"o3", false, "expired"}, {"o4", false, `unknown action "nope"`}, {"o5", false, "disk full"}, {"o0", true, "ok"}}
	if len(results) != len(want) {
		t.Fatalf("results %+v", results)
	}
	for i, w := range want {
		r := results[i]
		if r.OrderID != w.id || r.Success != w.success || r.Message != w.msg || r.FinishedAt.IsZero() {
			t.Errorf("result %d = %+v, want %+v", i, r, w)
		}
	}
	if string(results[0].Data) != `{"id":"o2"}` || results[4].Code != 3 {
		t.Errorf("data %s, code %d", results[0].Data, results[4].Code)
	}
	if db.Orders.Len() != 0 {
		t.Fatalf("%d orders left", db.Orders.Len())
	}
}

func TestRestartResumesAsSuccess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := openStore(t, path)
	handlers := agent.BuiltinHandlers(func() any { return nil })
	handlers["slow"] = agent.Handler{Run: func(context.Context, client.Order) (agent.Outcome, error) {
		return agent.Outcome{Success: true}, nil
	}}
	if _, err := db.Orders.Add([]client.Order{newOrder("r1", "restart"), newOrder("after", "slow")}); err != nil {
		t.Fatal(err)
	}
	err := agent.NewExecutor(db.Orders, handlers, nil).RunPending(context.Background())
	if !errors.Is(err, agent.ErrRestart) {
		t.Fatalf("RunPending = %v, want ErrRestart", err)
	}
	list, _ := db.Orders.List()
	if len(list) != 2 || list[0].Status != store.StatusRunning || list[1].Status != store.StatusPending {
		t.Fatalf("orders after restart request: %+v", list)
	}
	// Simulate another order interrupted by a crash.
	if err := db.Orders.MarkRunning(list[1].Seq); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openStore(t, path)
	defer db.Close()
	ex := agent.NewExecutor(db.Orders, handlers, nil)
	if err := ex.Recover(); err != nil {
		t.Fatal(err)
	}
	results, _ := db.Orders.Results(0)
	if len(results) != 2 {
		t.Fatalf("results %+v", results)
	}
	r := results[0]
	var data struct{ PID int }
	json.Unmarshal(r.Data, &data)
	if r.OrderID != "r1" || !r.Success || r.Message != "agent restarted" || data.PID != os.Getpid() {
		t.Fatalf("restart result = %+v (%s)", r, r.Data)
	}
	if r := results[1]; r.OrderID != "after" || r.Success || r.Message != "interrupted" {
		t.Fatalf("interrupted result = %+v", r)
	}
	if db.Orders.Len() != 0 {
		t.Fatalf("%d orders left", db.Orders.Len())
	}
}

func TestLongMessageIsCutAtARuneBoundary(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	long := strings.Repeat("€", 2000) // 3 bytes each: 4096 falls inside a rune
	handlers := map[string]agent.Handler{
		"fail": {Run: func(context.Context, client.Order) (agent.Outcome, error) {
			return agent.Outcome{}, errors.New(long)
		}},
		"bad": {Run: func(context.Context, client.Order) (agent.Outcome, error) {
			return agent.Outcome{Message: "a\xffb"}, nil
		}},
	}
	if _, err := db.Orders.Add([]client.Order{newOrder("o1", "fail"), newOrder("o2", "bad")}); err != nil {
		t.Fatal(err)
	}
	if err := agent.NewExecutor(db.Orders, handlers, nil).RunPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	results, err := db.Orders.Results(0)
	if err != nil || len(results) != 2 {
		t.Fatalf("results %d, %v", len(results), err)
	}
	if m := results[0].Message; len(m) > 4096 || !utf8.ValidString(m) || !strings.HasPrefix(long, m) || len(m) < 4090 {
		t.Fatalf("long message cut to %d bytes, valid UTF-8 %v, a prefix %v", len(m), utf8.ValidString(m), strings.HasPrefix(long, m))
	}
	if m := results[1].Message; m != "a\uFFFDb" {
		t.Fatalf("invalid UTF-8 message stored as %q", m)
	}
}

func TestIdempotentOrderRunsAgainAfterACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := openStore(t, path)
	if _, err := db.Orders.Add([]client.Order{newOrder("i1", "idem"), newOrder("i2", "idem")}); err != nil {
		t.Fatal(err)
	}
	list, _ := db.Orders.List()
	if err := db.Orders.MarkRunning(list[0].Seq); err != nil { // the crash came while i1 ran
		t.Fatal(err)
	}
	db.Close()

	db = openStore(t, path)
	defer db.Close()
	var ran []string
	handlers := map[string]agent.Handler{"idem": {Idempotent: true, Run: func(_ context.Context, o client.Order) (agent.Outcome, error) {
		ran = append(ran, o.ID)
		return agent.Outcome{Success: true, Message: "done"}, nil
	}}}
	ex := agent.NewExecutor(db.Orders, handlers, nil)
	if err := ex.Recover(); err != nil {
		t.Fatal(err)
	}
	if err := ex.RunPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ran, ",") != "i1,i2" {
		t.Fatalf("ran %v, want i1 again then i2", ran)
	}
	results, _ := db.Orders.Results(0)
	if len(results) != 2 || !results[0].Success || results[0].OrderID != "i1" || !results[1].Success {
		t.Fatalf("results %+v", results)
	}
}
