package mgmt_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/mgmt"
)

// startCommand registers an agent and sends it a command; it returns the
// command's id.
func startCommand(t *testing.T, e *env) string {
	t.Helper()
	agent := uuid.NewString()
	if status, body := e.do(t, "POST", "/api/v1/agents", e.tokens[tether.RoleAdmin], api.RegisterAgentRequest{ID: agent}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	var cmd api.Command
	status, body := e.do(t, "POST", "/api/v1/commands", e.tokens[tether.RoleOperator],
		api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: api.Action{Name: "restart"}})
	if status != http.StatusCreated {
		t.Fatalf("create command: %d %s", status, body)
	}
	decodeInto(t, body, &cmd)
	return cmd.ID
}

// openStream opens the progress stream of a command and returns its lines.
func openStream(t *testing.T, ctx context.Context, e *env, id string) <-chan string {
	t.Helper()
	req := e.request(t, "GET", "/api/v1/commands/"+id+"/progress", e.tokens[tether.RoleViewer], nil).WithContext(ctx)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("stream: status %d, headers %v", resp.StatusCode, resp.Header)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// waitLine reads lines until one starts with prefix.
func waitLine(t *testing.T, lines <-chan string, prefix string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the stream ended before a line %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
		case <-deadline:
			t.Fatalf("no line %q", prefix)
		}
	}
}

// waitEnd reads lines until the stream ends.
func waitEnd(t *testing.T, lines <-chan string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the stream did not end")
		}
	}
}

func TestProgressStreamKeepsAlive(t *testing.T) {
	e := newEnvWith(t, func(o *mgmt.Options) {
		o.ProgressInterval = 5 * time.Millisecond
		o.ProgressKeepAlive = 20 * time.Millisecond
	})
	id := startCommand(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := openStream(t, ctx, e, id)
	waitLine(t, lines, "data: ")
	// Nothing changes: comments keep the stream alive.
	waitLine(t, lines, ": keep-alive")
	waitLine(t, lines, ": keep-alive")
	// The client goes away: the handler ends (the server's Close, at the
	// end of the test, waits for it).
	cancel()
	waitEnd(t, lines)
}

func TestProgressStreamEndsWhenTheNodeCloses(t *testing.T) {
	closing := make(chan struct{})
	e := newEnvWith(t, func(o *mgmt.Options) { o.Closing = closing })
	id := startCommand(t, e)
	lines := openStream(t, context.Background(), e, id)
	waitLine(t, lines, "data: ")
	close(closing)
	waitEnd(t, lines)
}
