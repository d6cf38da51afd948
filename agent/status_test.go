package agent_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
)

func TestStatusRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := agent.ReadStatus(dir); !errors.Is(err, agent.ErrNoStatus) {
		t.Fatalf("ReadStatus on empty dir = %v", err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	in := agent.Status{
		AgentID: "a1", Name: "web-1", Server: "https://m:7444", CommsURL: "https://c:7443", State: "running",
		Connected: true, LastPollAt: now, QueuedEvents: 3, PendingOrders: 1, PendingResults: 2,
		DeadLetterBatches: 4, StartedAt: now.Add(-time.Hour), PID: 42, Version: "1.0", UpdatedAt: now,
		ConfigVersion: "v1", ConfigError: "version v2 not applied: bad",
		Orders: []agent.OrderState{{ID: "o1", Action: "restart", State: "running", ReceivedAt: now, StartedAt: now, User: "admin"}},
	}
	if err := agent.WriteStatus(dir, in); err != nil {
		t.Fatal(err)
	}
	out, err := agent.ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	if out.Stale(now.Add(time.Second)) || !out.Stale(now.Add(time.Minute)) {
		t.Fatal("Stale is wrong")
	}
}
