package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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
			name: "create api token", status: 201, answer: `{"id":"t2","kind":"service","token":"secret"}`,
			call: func(c *api.Client) error {
				tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "ci", Role: "operator", Kind: api.KindService, TTL: "720h"})
				if err == nil && (tok.Token != "secret" || tok.Kind != "service") {
					err = errors.New("token not decoded")
				}
				return err
			},
			method: "POST", path: "/api/v1/tokens", inBody: `{"name":"ci","role":"operator","kind":"service","ttl":"720h"}`,
		},
		{
			name: "list api tokens all", status: 200, answer: `{"items":[]}`,
			call:   func(c *api.Client) error { _, err := c.ListTokens(ctx, true); return err },
			method: "GET", path: "/api/v1/tokens", query: "all=true",
		},
		{
			name: "list api tokens", status: 200, answer: `{"items":[]}`,
			call:   func(c *api.Client) error { _, err := c.ListTokens(ctx, false); return err },
			method: "GET", path: "/api/v1/tokens",
		},
		{
			name: "revoke api token", status: 204,
			call:   func(c *api.Client) error { return c.RevokeToken(ctx, "a/b") },
			method: "DELETE", path: "/api/v1/tokens/a%2Fb",
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
		{
			name: "list commands page", status: 200, answer: `{"items":[],"next":"n2"}`,
			call: func(c *api.Client) error {
				l, err := c.ListCommands(ctx, api.CommandQuery{Cursor: "n1"})
				if err == nil && l.Next != "n2" {
					err = errors.New("next not decoded")
				}
				return err
			},
			method: "GET", path: "/api/v1/commands", query: "cursor=n1",
		},
		{
			name: "create group command", status: 201, answer: `{"id":"c1"}`,
			call: func(c *api.Client) error {
				_, err := c.CreateCommand(ctx, api.CreateCommandRequest{Target: api.Target{Type: "group", ID: "web"}, Action: api.Action{Name: "restart"}})
				return err
			},
			method: "POST", path: "/api/v1/commands", inBody: `{"target":{"type":"group","id":"web"},"action":{"name":"restart"}}`,
		},
		{
			name: "create server command", status: 201, answer: `{"id":"c1"}`,
			call: func(c *api.Client) error {
				_, err := c.CreateCommand(ctx, api.CreateCommandRequest{Target: api.Target{Type: "server"}, Action: api.Action{Name: "reload-config"}})
				return err
			},
			method: "POST", path: "/api/v1/commands", inBody: `{"target":{"type":"server","id":""},"action":{"name":"reload-config"}}`,
		},
		{
			name: "cancel command", status: 200, answer: `{"cancelled":3}`,
			call: func(c *api.Client) error {
				r, err := c.CancelCommand(ctx, "c1")
				if err == nil && r.Cancelled != 3 {
					err = errors.New("cancelled not decoded")
				}
				return err
			},
			method: "POST", path: "/api/v1/commands/c1/cancel",
		},
		{
			name: "cancel order", status: 200, answer: `{"cancelled":1}`,
			call:   func(c *api.Client) error { _, err := c.CancelOrder(ctx, "o/1"); return err },
			method: "POST", path: "/api/v1/orders/o%2F1/cancel",
		},
		{
			name: "list orders", status: 200, answer: `{"items":[{"order_id":"o1"}],"next":"x"}`,
			call: func(c *api.Client) error {
				after := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
				_, err := c.ListOrders(ctx, api.OrderQuery{
					RequestID: "r1", AgentID: "a1", Group: "web", Status: "failure", Action: "restart",
					CreatedAfter: after, CreatedBefore: after.Add(90 * time.Minute), Cursor: "cur", Limit: 50,
				})
				return err
			},
			method: "GET", path: "/api/v1/orders",
			query: "action=restart&agent=a1&created_after=2026-01-02T02%3A04%3A05Z&created_before=2026-01-02T03%3A34%3A05Z&cursor=cur&group=web&limit=50&request=r1&status=failure",
		},
		{
			name: "get order", status: 200, answer: `{"order_id":"o1"}`,
			call:   func(c *api.Client) error { _, err := c.GetOrder(ctx, "o1"); return err },
			method: "GET", path: "/api/v1/orders/o1",
		},
		{
			name: "create group", status: 201, answer: `{"name":"web"}`,
			call: func(c *api.Client) error {
				_, err := c.CreateGroup(ctx, api.CreateGroupRequest{Name: "web", Description: "front", Config: "log_level: debug\n"})
				return err
			},
			method: "POST", path: "/api/v1/groups", inBody: `{"name":"web","description":"front","config":"log_level: debug\n"}`,
		},
		{
			name: "list groups", status: 200, answer: `{"items":[]}`,
			call:   func(c *api.Client) error { _, err := c.ListGroups(ctx); return err },
			method: "GET", path: "/api/v1/groups",
		},
		{
			name: "get group", status: 200, answer: `{"name":"a b"}`,
			call:   func(c *api.Client) error { _, err := c.GetGroup(ctx, "a b"); return err },
			method: "GET", path: "/api/v1/groups/a%20b",
		},
		{
			name: "update group config", status: 200, answer: `{"name":"web"}`,
			call: func(c *api.Client) error {
				cfg := "x: 1\n"
				_, err := c.UpdateGroup(ctx, "web", api.UpdateGroupRequest{Config: &cfg})
				return err
			},
			method: "PATCH", path: "/api/v1/groups/web", inBody: `{"config":"x: 1\n"}`,
		},
		{
			name: "delete group", status: 204,
			call:   func(c *api.Client) error { return c.DeleteGroup(ctx, "web") },
			method: "DELETE", path: "/api/v1/groups/web",
		},
		{
			name: "set agent groups", status: 200, answer: `{"id":"a1","groups":["web","db"]}`,
			call: func(c *api.Client) error {
				_, err := c.SetAgentGroups(ctx, "a1", api.SetAgentGroupsRequest{Groups: []string{"web", "db"}})
				return err
			},
			method: "PUT", path: "/api/v1/agents/a1/groups", inBody: `{"groups":["web","db"]}`,
		},
		{
			name: "set agent groups none", status: 200, answer: `{"id":"a1","groups":[]}`,
			call: func(c *api.Client) error {
				_, err := c.SetAgentGroups(ctx, "a1", api.SetAgentGroupsRequest{})
				return err
			},
			method: "PUT", path: "/api/v1/agents/a1/groups", inBody: `{"groups":[]}`,
		},
		{
			name: "list actions", status: 200, answer: `{"items":[{"name":"upgrade","target":"agent","args":[{"name":"version","type":"string","required":true}]}]}`,
			call: func(c *api.Client) error {
				l, err := c.ListActions(ctx)
				if err == nil && (len(l.Items) != 1 || !l.Items[0].Args[0].Required) {
					err = errors.New("actions not decoded")
				}
				return err
			},
			method: "GET", path: "/api/v1/actions",
		},
		{
			name: "upload file", status: 201, answer: `{"name":"agent bin","sha256":"ab","size":5}`,
			call: func(c *api.Client) error {
				f, err := c.UploadFile(ctx, api.Upload{Name: "agent bin", Body: strings.NewReader("bytes"), Size: 5, SHA256: "ab"})
				if err == nil && (f.Size != 5 || f.SHA256 != "ab") {
					err = errors.New("file not decoded")
				}
				return err
			},
			method: "POST", path: "/api/v1/files", query: "name=agent+bin&sha256=ab", inBody: "bytes",
		},
		{
			name: "list files", status: 200, answer: `{"items":[{"name":"a"}]}`,
			call:   func(c *api.Client) error { _, err := c.ListFiles(ctx); return err },
			method: "GET", path: "/api/v1/files",
		},
		{
			name: "get file", status: 200, answer: `{"name":"a"}`,
			call:   func(c *api.Client) error { _, err := c.GetFile(ctx, "ab"); return err },
			method: "GET", path: "/api/v1/files/ab",
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

// TestUploadFileIgnoresTheCallTimeout checks an upload that lasts longer
// than the client's per-call timeout completes, and that the server sees
// its length and content type.
func TestUploadFileIgnoresTheCallTimeout(t *testing.T) {
	var gotLen int64
	var gotType string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotLen, gotType = r.ContentLength, r.Header.Get("Content-Type")
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"size":%d}`, n)
	}))
	t.Cleanup(srv.Close)
	hc := srv.Client()
	hc.Timeout = 100 * time.Millisecond
	c, err := api.New(api.Options{Server: srv.URL, Token: "tok", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowReader{left: 6, every: 50 * time.Millisecond}
	f, err := c.UploadFile(context.Background(), api.Upload{Name: "slow", Body: slow, Size: 6})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if f.Size != 6 || gotLen != 6 || gotType != "application/octet-stream" {
		t.Errorf("size %d, Content-Length %d, Content-Type %q", f.Size, gotLen, gotType)
	}
	if !api.IsNotFound(&api.APIError{Status: 404}) || api.IsNotFound(errors.New("x")) {
		t.Errorf("IsNotFound is wrong")
	}
}

// slowReader returns one byte every `every`.
type slowReader struct {
	left  int
	every time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.every)
	r.left--
	p[0] = 'x'
	return 1, nil
}
