package integration_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/client"
)

// tailEvent is a line of `tetherctl events tail -o json`.
type tailEvent struct {
	AgentID   string          `json:"agent_id"`
	AgentName string          `json:"agent_name"`
	Sequence  uint64          `json:"sequence"`
	EventID   string          `json:"event_id"`
	Module    string          `json:"module"`
	Type      string          `json:"type"`
	Key       string          `json:"key"`
	Op        string          `json:"op"`
	Payload   json.RawMessage `json:"payload"`
}

// tailLines decodes the JSON lines of a tail's output (its stderr lines,
// mixed in, do not start with "{").
func tailLines(t *testing.T, out string) []tailEvent {
	t.Helper()
	var events []tailEvent
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e tailEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("tail output %q: %v", line, err)
		}
		events = append(events, e)
	}
	return events
}

// pushAgent registers an agent with the admin token and returns a comms
// client for it, as a third-party agent built on package client would.
func (s *server) pushAgent(t *testing.T, name string) (string, *client.Client) {
	t.Helper()
	c, err := api.New(api.Options{Server: s.apiURL, Token: s.adminToken, CACertFile: s.caCert})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	var reg api.RegisterAgentResponse
	if err := c.Do(context.Background(), "POST", "/api/v1/agents", nil, api.RegisterAgentRequest{ID: id, Name: name}, &reg); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	pem, err := os.ReadFile(s.caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cc, err := client.New(client.Config{URLs: []string{s.commsURL}, AgentID: id, AgentKey: reg.AgentKey, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	return id, cc
}

// tail starts `tetherctl events tail` with args and waits until it follows
// the server's events.
func (s *server) tail(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin("tetherctl"), append([]string{"events", "tail"}, args...)...)
	cmd.Env = append(os.Environ(), "TETHER_SERVER="+s.apiURL, "TETHER_CA_CERT="+s.caCert, "TETHER_TOKEN="+s.adminToken)
	p := startCmd(t, cmd)
	await(t, 20*time.Second, "tetherctl events tail to follow", func() bool {
		return strings.Contains(p.Output(), "Following the events")
	})
	return p
}

func TestEventsTail(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	web, webc := s.pushAgent(t, "web-1")
	db, dbc := s.pushAgent(t, "db-1")

	all := s.tail(t, "-o", "json")
	webLogs := s.tail(t, "--agent", web, "--module", "logcollector")
	inventory := s.tail(t, "--module", "inventory", "-o", "json")

	at := time.Now().UTC().Truncate(time.Millisecond)
	if _, _, err := webc.PushStateless(ctx, 1, []client.Event{
		{ID: "w1", Module: "logcollector", Type: "line", CollectedAt: at, Payload: []byte(`{"line":"sshd: accepted"}`)},
		{ID: "w2", Module: "health", Type: "beat", CollectedAt: at, Payload: []byte(`{}`)},
		{ID: "w3", Module: "logcollector", Type: "line", CollectedAt: at, Payload: []byte(`{"line":"sshd: closed"}`)},
	}); err != nil {
		t.Fatalf("push: %v", err)
	}
	if _, _, err := dbc.PushStateful(ctx, 1, []client.StateChange{
		{Event: client.Event{ID: "d1", Module: "inventory", Type: "package", CollectedAt: at, Payload: []byte(`{"version":"3.0"}`)}, Key: "openssl"},
		{Event: client.Event{ID: "d2", Module: "logcollector", Type: "line", CollectedAt: at, Payload: []byte(`{"line":"db"}`)}, Key: "x"},
	}); err != nil {
		t.Fatalf("push stateful: %v", err)
	}

	await(t, 20*time.Second, "5 events on the unfiltered tail", func() bool { return len(tailLines(t, all.Output())) >= 5 })
	got := tailLines(t, all.Output())
	var ids []string
	for _, e := range got {
		ids = append(ids, e.EventID)
	}
	// Each agent's events come in order; the two agents' batches in the
	// order the server accepted them.
	if strings.Join(ids, " ") != "w1 w2 w3 d1 d2" {
		t.Errorf("unfiltered tail: %v", ids)
	}
	if e := got[0]; e.AgentID != web || e.AgentName != "web-1" || e.Sequence != 1 || e.Type != "line" ||
		string(e.Payload) != `{"line":"sshd: accepted"}` || e.Key != "" {
		t.Errorf("first event: %+v", e)
	}
	if e := got[3]; e.AgentID != db || e.Key != "openssl" || e.Op != "upsert" {
		t.Errorf("stateful event: %+v", e)
	}

	await(t, 20*time.Second, "the inventory event on the inventory tail", func() bool { return len(tailLines(t, inventory.Output())) >= 1 })
	await(t, 20*time.Second, "two rows on the agent's log tail", func() bool {
		return strings.Count(webLogs.Output(), "web-1") >= 2
	})
	out := webLogs.Output()
	if !strings.Contains(out, "COLLECTED") || !strings.Contains(out, `{"line":"sshd: accepted"}`) ||
		!strings.Contains(out, `{"line":"sshd: closed"}`) || strings.Contains(out, "health") || strings.Contains(out, "db-1") {
		t.Errorf("table tail of web-1's log collector:\n%s", out)
	}

	// A retried batch is not stored again, nor shown again.
	if _, dup, err := webc.PushStateless(ctx, 1, []client.Event{
		{ID: "w1", Module: "logcollector", Type: "line", CollectedAt: at, Payload: []byte(`{"line":"sshd: accepted"}`)},
	}); err != nil || !dup {
		t.Fatalf("retry: duplicate %v, %v", dup, err)
	}
	if _, _, err := webc.PushStateless(ctx, 2, []client.Event{
		{ID: "w4", Module: "logcollector", Type: "line", CollectedAt: at, Payload: []byte(`{"line":"later"}`)},
	}); err != nil {
		t.Fatalf("push: %v", err)
	}
	await(t, 20*time.Second, "the next batch on the tail", func() bool { return len(tailLines(t, all.Output())) >= 6 })
	if got := tailLines(t, all.Output()); len(got) != 6 || got[5].EventID != "w4" {
		t.Errorf("after a retry and a new batch: %+v", got[5:])
	}
	// The tail showed what the sink stored.
	if n := len(readEvents(t, s.dataDir)); n != 6 {
		t.Errorf("the event files hold %d events, want 6", n)
	}

	// An agent id that is not one is refused by the server, naming it.
	_, stderr, code := s.ctl(t, "events", "tail", "--agent", "web-1")
	if code != 1 || !strings.Contains(stderr, "agent") {
		t.Errorf("tail --agent web-1: exit %d, %s", code, stderr)
	}

	// Ctrl-C ends a tail cleanly.
	var ok bool
	for _, p := range []*proc{all, inventory} {
		p.cmd.Process.Signal(os.Interrupt)
		if code, ok = p.exited(10 * time.Second); !ok || code != 0 {
			t.Errorf("tail after Ctrl-C: exited %v with %d, want 0\n%s", ok, code, p.Output())
		}
	}
	// A server that shuts down ends the stream: tail says so and fails.
	s.cmd.Process.Signal(syscall.SIGTERM)
	code, ok = webLogs.exited(20 * time.Second)
	if !ok || code != 1 || !strings.Contains(webLogs.Output(), "shutting down") {
		t.Errorf("tail of a server shutting down: exited %v with %d, want 1 and a reason\n%s", ok, code, webLogs.Output())
	}

}
