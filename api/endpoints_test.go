package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/api"
)

// recorder answers every request with status and body and remembers the
// last request line.
type recorder struct {
	method, rawPath, query, auth, body string
	status                             int
	answer                             string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.method = req.Method
	r.rawPath = req.URL.EscapedPath()
	r.query = req.URL.RawQuery
	r.auth = req.Header.Get("Authorization")
	b, _ := io.ReadAll(req.Body)
	r.body = string(b)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	io.WriteString(w, r.answer)
}

func newClient(t *testing.T, h http.Handler) *api.Client {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	c, err := api.New(api.Options{Server: srv.URL, Token: "tok", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoutes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name          string
		status        int
		answer        string
		call          func(c *api.Client) error
		method, path  string
		query, inBody string
	}{
		{
			name: "create token", status: 201, answer: `{"id":"t1","token":"secret"}`,
			call: func(c *api.Client) error {
				tok, err := c.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{Groups: []string{"a"}, TTL: "1h", MaxUses: 2})
				if err == nil && tok.Token != "secret" {
					err = errors.New("token not decoded")
				}
				return err
			},
			method: "POST", path: "/api/v1/enrollment-tokens", inBody: `{"groups":["a"],"ttl":"1h","max_uses":2}`,
		},
		{
			name: "list tokens all", status: 200, answer: `{"items":[]}`,
			call:   func(c *api.Client) error { _, err := c.ListEnrollmentTokens(ctx, true); return err },
			method: "GET", path: "/api/v1/enrollment-tokens", query: "all=true",
		},
		{
			name: "list tokens", status: 200, answer: `{"items":[]}`,
			call:   func(c *api.Client) error { _, err := c.ListEnrollmentTokens(ctx, false); return err },
			method: "GET", path: "/api/v1/enrollment-tokens",
		},
		{
			name: "revoke token", status: 204,
			call:   func(c *api.Client) error { return c.RevokeEnrollmentToken(ctx, "a/b c") },
			method: "DELETE", path: "/api/v1/enrollment-tokens/a%2Fb%20c",
		},
		{
			name: "list agents", status: 200, answer: `{"items":[{"id":"a1"}],"next":"a1"}`,
			call: func(c *api.Client) error {
				_, err := c.ListAgents(ctx, api.AgentQuery{Status: "active", Group: "g", Name: "web", Limit: 5, After: "x"})
				return err
			},
			method: "GET", path: "/api/v1/agents", query: "after=x&group=g&limit=5&name=web&status=active",
		},
		{
			name: "get agent", status: 200, answer: `{"id":"a1"}`,
			call:   func(c *api.Client) error { _, err := c.GetAgent(ctx, "a1"); return err },
			method: "GET", path: "/api/v1/agents/a1",
		},
		{
			name: "delete agent", status: 204,
			call:   func(c *api.Client) error { return c.DeleteAgent(ctx, "a1") },
			method: "DELETE", path: "/api/v1/agents/a1",
		},
		{
			name: "state all", status: 200, answer: `{"agent_id":"a1","items":[]}`,
			call:   func(c *api.Client) error { _, err := c.AgentState(ctx, "a1", ""); return err },
			method: "GET", path: "/api/v1/agents/a1/state",
		},
		{
			name: "state module", status: 200, answer: `{"agent_id":"a1","items":[]}`,
			call:   func(c *api.Client) error { _, err := c.AgentState(ctx, "a1", "inv/x"); return err },
			method: "GET", path: "/api/v1/agents/a1/state/inv%2Fx",
		},
		{
			name: "create command", status: 201, answer: `{"id":"c1","orders":[{"order_id":"o1","status":"pending"}]}`,
			call: func(c *api.Client) error {
				_, err := c.CreateCommand(ctx, api.CreateCommandRequest{
					Target: api.Target{Type: "agent", ID: "a1"},
					Action: api.Action{Name: "restart"},
				})
				return err
			},
			method: "POST", path: "/api/v1/commands", inBody: `{"target":{"type":"agent","id":"a1"},"action":{"name":"restart"}}`,
		},
		{
			name: "list commands", status: 200, answer: `{"items":[]}`,
			call: func(c *api.Client) error {
				_, err := c.ListCommands(ctx, api.CommandQuery{AgentID: "a1", Status: "failure", Limit: 3})
				return err
			},
			method: "GET", path: "/api/v1/commands", query: "agent=a1&limit=3&status=failure",
		},
		{
			name: "get command", status: 200, answer: `{"id":"c1"}`,
			call:   func(c *api.Client) error { _, err := c.GetCommand(ctx, "c1"); return err },
			method: "GET", path: "/api/v1/commands/c1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: tt.status, answer: tt.answer}
			c := newClient(t, rec)
			if err := tt.call(c); err != nil {
				t.Fatalf("call: %v", err)
			}
			if rec.method != tt.method || rec.rawPath != tt.path || rec.query != tt.query {
				t.Errorf("request = %s %s?%s, want %s %s?%s", rec.method, rec.rawPath, rec.query, tt.method, tt.path, tt.query)
			}
			if rec.auth != "Bearer tok" {
				t.Errorf("Authorization = %q", rec.auth)
			}
			if rec.body != tt.inBody {
				t.Errorf("body = %s, want %s", rec.body, tt.inBody)
			}
		})
	}
}

func TestAPIError(t *testing.T) {
	rec := &recorder{status: 404, answer: `{"error":{"code":"not_found","message":"agent \"x\" not found","field":"id"}}`}
	c := newClient(t, rec)
	_, err := c.GetAgent(context.Background(), "x")
	var ae *api.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want *api.APIError", err, err)
	}
	if ae.Status != 404 || ae.Code != "not_found" || ae.Field != "id" || ae.Error() != `agent "x" not found` {
		t.Errorf("APIError = %+v", ae)
	}
}

func TestWaitCommand(t *testing.T) {
	var polls atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := polls.Add(1)
		status := "sent"
		if n >= 3 {
			status = "failure"
		}
		json.NewEncoder(w).Encode(api.Command{ID: "c1", Orders: []api.Order{
			{OrderID: "o1", Status: "success"},
			{OrderID: "o2", Status: status},
		}})
	})
	c := newClient(t, h)
	var seen int
	cmd, err := c.WaitCommand(context.Background(), "c1", time.Millisecond, func(*api.Command) { seen++ })
	if err != nil {
		t.Fatal(err)
	}
	if seen != 3 || polls.Load() != 3 {
		t.Errorf("progress called %d times, %d polls; want 3", seen, polls.Load())
	}
	if f, s, fl := cmd.Tally(); f != 2 || s != 1 || fl != 1 {
		t.Errorf("counts = %d %d %d", f, s, fl)
	}
}

func TestWaitCommandContextEnds(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"c1","orders":[{"order_id":"o1","status":"pending"}]}`)
	})
	c := newClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.WaitCommand(ctx, "c1", 5*time.Millisecond, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
