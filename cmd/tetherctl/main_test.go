package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/api"
)

// fakeServer serves canned answers for every management route and records
// the requests it saw.
type fakeServer struct {
	t      *testing.T
	srv    *httptest.Server
	caFile string

	mu    sync.Mutex
	reqs  []string // "METHOD escaped-path?query"
	polls map[string]int
	last  []byte // body of the last POST
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, polls: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enrollment-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateEnrollmentTokenRequest
		if err := json.Unmarshal(f.body(), &req); err != nil {
			f.fail(w, 400, "invalid", "bad body")
			return
		}
		exp := t0.Add(24 * time.Hour)
		f.reply(w, 201, api.EnrollmentToken{ID: "tok-1", Name: req.Name, Token: "tthr_secret", Groups: req.Groups,
			MaxUses: req.MaxUses, ExpiresAt: &exp, CreatedAt: t0, Status: "active"})
	})
	mux.HandleFunc("GET /api/v1/enrollment-tokens", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, api.EnrollmentTokenList{Items: []api.EnrollmentToken{
			{ID: "tok-1", Name: "first", Groups: []string{"linux"}, MaxUses: 5, Uses: 2, CreatedAt: t0, Status: "active"},
		}})
	})
	mux.HandleFunc("DELETE /api/v1/enrollment-tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /api/v1/agents", func(w http.ResponseWriter, r *http.Request) {
		seen := t0
		f.reply(w, 200, api.AgentList{Items: []api.Agent{
			{ID: "a-1", Name: "web-1", Status: "active", Groups: []string{"linux", "web"}, OS: "linux", Arch: "amd64", Version: "1.0.0", EnrolledAt: t0, LastSeen: &seen},
			{ID: "a-2", Name: "web-2", Status: "enrolled", EnrolledAt: t0},
		}, Next: "a-2"})
	})
	mux.HandleFunc("GET /api/v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "a-1" {
			f.fail(w, 404, "not_found", `agent "`+r.PathValue("id")+`" not found`)
			return
		}
		f.reply(w, 200, api.Agent{ID: "a-1", Name: "web-1", Status: "active", Hostname: "web-1.example", EnrolledAt: t0})
	})
	mux.HandleFunc("DELETE /api/v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	state := func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, api.StateList{AgentID: r.PathValue("id"), Items: []api.StateEntry{
			{Module: "inventory", Key: "os", Doc: json.RawMessage(`{"name": "debian", "version": 13}`), UpdatedAt: t0},
		}})
	}
	mux.HandleFunc("GET /api/v1/agents/{id}/state", state)
	mux.HandleFunc("GET /api/v1/agents/{id}/state/{module}", state)
	mux.HandleFunc("POST /api/v1/commands", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateCommandRequest
		if err := json.Unmarshal(f.body(), &req); err != nil {
			f.fail(w, 400, "invalid", "bad body")
			return
		}
		if req.Target.ID == "missing" {
			f.fail(w, 404, "not_found", `agent "missing" not found`)
			return
		}
		switch req.Target.Type {
		case "group":
			if req.Target.ID == "big" {
				f.reply(w, 201, bigCommand())
				return
			}
			id := "c-grp"
			if req.Action.Name == "fail" {
				id = "c-grpfail"
			}
			f.reply(w, 201, groupCommand(id, false))
			return
		case "server":
			c := f.command("c-srv", 3)
			c.Target = req.Target
			c.Orders[0].AgentID = ""
			f.reply(w, 201, c)
			return
		}
		id := "c-ok"
		if req.Action.Name == "fail" {
			id = "c-fail"
		}
		f.reply(w, 201, f.command(id, 0))
	})
	mux.HandleFunc("GET /api/v1/commands/{id}/progress", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !strings.HasPrefix(id, "c-grp") {
			f.fail(w, 404, "not_found", "no route")
			return
		}
		failure, success := 0, 3
		if id == "c-grpfail" {
			failure, success = 1, 2
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, chunk := range []string{
			": keep-alive\n\n",
			`event: progress` + "\n" + `data: {"request_id":"` + id + `","total":3,"pending":3}` + "\n\n",
			`event: progress` + "\n" + `data: {"request_id":"` + id + `","total":3,"sent":2,"success":1}` + "\n\n: keep-alive\n",
			"\n",
			`event: progress` + "\n" + `data: {"request_id":"` + id + `","total":3,"sent":2,"success":1}` + "\n\n",
			"event: progress\ndata: " + fmt.Sprintf(`{"request_id":"%s","total":3,"success":%d,"failure":%d,"done":true}`, id, success, failure) + "\n\n",
		} {
			io.WriteString(w, chunk)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("GET /api/v1/commands", func(w http.ResponseWriter, r *http.Request) {
		list := api.CommandList{Items: []api.Command{{
			ID: "c-ok", Target: api.Target{Type: "agent", ID: "a-1"}, Action: api.Action{Name: "restart"},
			Status: "success", User: "admin", CreatedAt: t0, Total: 1, Counts: map[string]int{"success": 1},
		}}}
		if r.URL.Query().Get("cursor") != "" {
			list.Items = append(list.Items, api.Command{
				ID: "c-grp", Target: api.Target{Type: "group", ID: "web"}, Action: api.Action{Name: "restart"},
				Status: "sent", User: "admin", CreatedAt: t0, Total: 7, Counts: map[string]int{"pending": 1, "sent": 2, "success": 3, "failure": 1},
			}, api.Command{
				ID: "c-srv", Target: api.Target{Type: "server"}, Action: api.Action{Name: "reload-config"},
				Status: "success", User: "admin", CreatedAt: t0, Total: 1, Counts: map[string]int{"success": 1},
			})
			list.Next = "n3"
		}
		f.reply(w, 200, list)
	})
	mux.HandleFunc("POST /api/v1/commands/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, api.CancelResponse{Cancelled: 2})
	})
	mux.HandleFunc("POST /api/v1/orders/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		n := 1
		if r.PathValue("id") == "o-done" {
			n = 0
		}
		f.reply(w, 200, api.CancelResponse{Cancelled: n})
	})
	mux.HandleFunc("GET /api/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		c := groupCommand("c-grpfail", true)
		list := api.OrderList{Items: c.Orders[:2], Next: "p2"}
		if r.URL.Query().Get("cursor") == "p2" {
			list = api.OrderList{Items: c.Orders[2:]}
		}
		f.reply(w, 200, list)
	})
	mux.HandleFunc("GET /api/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		o := groupCommand("c-grpfail", true).Orders[2]
		o.OrderID = r.PathValue("id")
		f.reply(w, 200, o)
	})
	mux.HandleFunc("POST /api/v1/groups", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateGroupRequest
		if err := json.Unmarshal(f.body(), &req); err != nil {
			f.fail(w, 400, "invalid", "bad body")
			return
		}
		f.reply(w, 201, api.Group{Name: req.Name, Description: req.Description, Config: req.Config, Version: "v1", CreatedAt: t0, UpdatedAt: t0})
	})
	mux.HandleFunc("GET /api/v1/groups", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, api.GroupList{Items: []api.Group{webGroup()}})
	})
	mux.HandleFunc("GET /api/v1/groups/{name}", func(w http.ResponseWriter, r *http.Request) {
		g := webGroup()
		g.Name = r.PathValue("name")
		if g.Name == "empty" {
			g.Config = ""
		}
		f.reply(w, 200, g)
	})
	mux.HandleFunc("PATCH /api/v1/groups/{name}", func(w http.ResponseWriter, r *http.Request) {
		var req api.UpdateGroupRequest
		if err := json.Unmarshal(f.body(), &req); err != nil || req.Config == nil {
			f.fail(w, 400, "invalid", "bad body")
			return
		}
		g := webGroup()
		g.Config, g.Version = *req.Config, "v2"
		f.reply(w, 200, g)
	})
	mux.HandleFunc("DELETE /api/v1/groups/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	mux.HandleFunc("PUT /api/v1/agents/{id}/groups", func(w http.ResponseWriter, r *http.Request) {
		var req api.SetAgentGroupsRequest
		if err := json.Unmarshal(f.body(), &req); err != nil || req.Groups == nil {
			f.fail(w, 400, "invalid", "groups: required")
			return
		}
		f.reply(w, 200, api.Agent{ID: r.PathValue("id"), Name: "web-1", Groups: req.Groups, Status: "active", EnrolledAt: t0})
	})
	mux.HandleFunc("GET /api/v1/actions", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, api.ActionList{Items: []api.ActionSpec{
			{Name: "restart", Target: "agent", Doc: "Re-execute the agent."},
			{Name: "upgrade", Target: "agent", Doc: "Install another version.", Args: []api.ArgSpec{
				{Name: "version", Type: "string", Required: true, Doc: "the version"},
				{Name: "note", Type: "string", Doc: "a note\nfor people"},
			}},
			{Name: "reload-config", Target: "server", Doc: "Reload the server's configuration."},
		}})
	})
	mux.HandleFunc("GET /api/v1/commands/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if strings.HasPrefix(id, "c-grp") {
			f.reply(w, 200, groupCommand(id, true))
			return
		}
		f.mu.Lock()
		f.polls[id]++
		n := f.polls[id]
		f.mu.Unlock()
		f.reply(w, 200, f.command(id, n))
	})
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.EscapedPath()+"?"+r.URL.RawQuery)
		f.last = nil
		if r.Body != nil {
			f.last, _ = io.ReadAll(r.Body)
		}
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer secret" {
			f.fail(w, 401, "unauthorized", "invalid token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	f.caFile = filepath.Join(t.TempDir(), "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(f.caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// command returns command id as seen at its n-th poll: pending at first,
// finished from the third poll on.
func (f *fakeServer) command(id string, n int) api.Command {
	c := api.Command{ID: id, Target: api.Target{Type: "agent", ID: "a-1"}, Action: api.Action{Name: "restart"},
		Timeout: "5m", Status: "pending", CreatedAt: t0}
	o := api.Order{OrderID: "o-1", RequestID: id, AgentID: "a-1", Action: c.Action, Status: "pending", CreatedAt: t0, TimeoutAt: t0.Add(5 * time.Minute)}
	switch {
	case n == 2:
		o.Status = "sent"
	case n >= 3 && id == "c-fail":
		o.Status = "failure"
		o.Result = &api.Result{Code: 1, Message: "no such action"}
	case n >= 3:
		o.Status = "success"
		o.Result = &api.Result{Code: 0, Message: "ok", Data: json.RawMessage(`{"pid": 42}`)}
	}
	c.Status = o.Status
	c.Orders = []api.Order{o}
	return c
}

// groupCommand is command id for group web of three agents, as created
// or once finished; c-grpfail's third order fails.
func groupCommand(id string, finished bool) api.Command {
	c := api.Command{ID: id, Target: api.Target{Type: "group", ID: "web"}, Action: api.Action{Name: "restart"},
		Timeout: "5m", Status: "pending", CreatedAt: t0, Total: 3, Counts: map[string]int{"pending": 3}}
	for i := 1; i <= 3; i++ {
		n := strconv.Itoa(i)
		o := api.Order{OrderID: "o-" + n, RequestID: id, AgentID: "a-" + n, Action: c.Action, Status: "pending", CreatedAt: t0}
		if finished {
			fin := t0.Add(time.Second)
			o.Status, o.FinishedAt, o.Result = "success", &fin, &api.Result{Message: "ok"}
			if i == 3 && id == "c-grpfail" {
				o.Status, o.Result = "failure", &api.Result{Code: 1, Message: "timed out"}
			}
		}
		c.Orders = append(c.Orders, o)
	}
	if finished {
		c.Status, c.Counts = "success", map[string]int{"success": 3}
		if id == "c-grpfail" {
			c.Status, c.Counts = "failure", map[string]int{"success": 2, "failure": 1}
		}
	}
	return c
}

// bigCommand is a command for group big: 60 orders, two already failed.
func bigCommand() api.Command {
	c := api.Command{ID: "c-big", Target: api.Target{Type: "group", ID: "big"}, Action: api.Action{Name: "restart"},
		Status: "pending", CreatedAt: t0, Total: 60, Counts: map[string]int{"pending": 58, "failure": 2}}
	for i := range 60 {
		o := api.Order{OrderID: fmt.Sprintf("o-%02d", i), RequestID: c.ID, AgentID: fmt.Sprintf("a-%02d", i), Status: "pending", CreatedAt: t0}
		if i == 7 || i == 42 {
			o.Status, o.Result = "failure", &api.Result{Code: 1, Message: "unknown action"}
		}
		c.Orders = append(c.Orders, o)
	}
	return c
}

func webGroup() api.Group {
	return api.Group{Name: "web", Description: "front-end servers", Config: "log_level: debug\nevents:\n  batch: 100\n",
		Version: "0123456789abcdef", Members: 12, CreatedAt: t0, UpdatedAt: t0}
}

func (f *fakeServer) body() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *fakeServer) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

func (f *fakeServer) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		f.t.Error(err)
	}
}

func (f *fakeServer) fail(w http.ResponseWriter, status int, code, msg string) {
	f.reply(w, status, api.ErrorResponse{Error: api.Error{Code: code, Message: msg}})
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs tetherctl against f with the connection flags set, and an
// empty environment and standard input.
func (f *fakeServer) run(t *testing.T, args ...string) result {
	t.Helper()
	return runInput(t, nil, "", f.connect(args)...)
}

// runStdin is run with stdin as the standard input.
func (f *fakeServer) runStdin(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runInput(t, nil, stdin, f.connect(args)...)
}

// connect prepends the flags that connect to f to args.
func (f *fakeServer) connect(args []string) []string {
	return append([]string{"--server", f.srv.URL, "--ca-cert", f.caFile, "--token", "secret"}, args...)
}

// runWith runs tetherctl with env as its environment and an empty
// standard input.
func runWith(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return runInput(t, env, "", args...)
}

func runInput(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := runIO(ctx, args, strings.NewReader(stdin), &stdout, &stderr, func(k string) string { return env[k] })
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// smokeCase is a command that sends one request, run with both outputs.
type smokeCase struct {
	args    []string
	request string
	body    string   // the request body, when there is one
	table   []string // substrings of the table output
	json    []string // keys of the JSON object
}

// runSmoke checks the request and both outputs of each case.
func runSmoke(t *testing.T, f *fakeServer, tests []smokeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := f.run(t, tt.args...).ok(t)
			if got := f.lastRequests(1)[0]; got != tt.request {
				t.Errorf("request = %q, want %q", got, tt.request)
			}
			if tt.body != "" && string(f.body()) != tt.body {
				t.Errorf("body = %s, want %s", f.body(), tt.body)
			}
			for _, want := range tt.table {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("table lacks %q:\n%s", want, r.stdout)
				}
			}
			r = f.run(t, append(tt.args, "-o", "json")...).ok(t)
			obj := decode[map[string]any](t, r.stdout)
			for _, k := range tt.json {
				if _, ok := obj[k]; !ok {
					t.Errorf("JSON lacks %q:\n%s", k, r.stdout)
				}
			}
		})
	}
}

func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit code %d, stderr: %s", r.code, r.stderr)
	}
	return r
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document:\n%s", s)
	}
	return v
}

// oneErrorLine checks stderr is exactly one "tetherctl: …" line containing
// want.
func oneErrorLine(t *testing.T, stderr, want string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "tetherctl: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr is not one 'tetherctl: ' line: %q", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not contain %q", stderr, want)
	}
}

func TestAgentsListJSON(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "agents", "list", "--status", "active", "--group", "linux", "--name", "web-", "--limit", "5", "-o", "json").ok(t)
	list := decode[api.AgentList](t, r.stdout)
	if len(list.Items) != 2 || list.Next != "a-2" {
		t.Fatalf("list = %+v", list)
	}
	// The raw objects carry id, name and status.
	var raw struct{ Items []map[string]any }
	json.Unmarshal([]byte(r.stdout), &raw)
	for _, it := range raw.Items {
		for _, k := range []string{"id", "name", "status"} {
			if _, ok := it[k].(string); !ok {
				t.Errorf("item %v has no string %q", it, k)
			}
		}
	}
	reqs := f.requests()
	if want := "GET /api/v1/agents?group=linux&limit=5&name=web-&status=active"; reqs[len(reqs)-1] != want {
		t.Errorf("request = %q, want %q", reqs[len(reqs)-1], want)
	}
}

func TestAgentsListTable(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "agents", "list").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, 2 rows and a next-page line, got:\n%s", r.stdout)
	}
	if !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "STATUS") || !strings.Contains(lines[0], "LAST SEEN") {
		t.Errorf("header = %q", lines[0])
	}
	for _, want := range []string{"a-1", "web-1", "active", "linux,web", "linux/amd64", "ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[3], "--after a-2") {
		t.Errorf("no next-page hint: %q", lines[3])
	}
	// Columns are aligned: "STATUS" starts where "active" starts.
	if strings.Index(lines[0], "STATUS") != strings.Index(lines[1], "active") {
		t.Errorf("columns not aligned:\n%s", r.stdout)
	}
}

func TestTokensCreate(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "enrollment-tokens", "create", "--group", "linux", "--group", "prod", "--ttl", "1h", "--uses", "3", "--name", "n", "-o", "json").ok(t)
	tok := decode[api.EnrollmentToken](t, r.stdout)
	if tok.Token != "tthr_secret" || tok.ID != "tok-1" {
		t.Errorf("token = %+v", tok)
	}
	var req api.CreateEnrollmentTokenRequest
	json.Unmarshal(f.body(), &req)
	if strings.Join(req.Groups, ",") != "linux,prod" || req.TTL != "1h" || req.MaxUses != 3 || req.Name != "n" {
		t.Errorf("request = %+v", req)
	}

	r = f.run(t, "enrollment-tokens", "create").ok(t)
	for _, want := range []string{"tthr_secret", "tether-agent enroll --server " + f.srv.URL + " --token tthr_secret --ca-cert " + f.caFile} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = f.run(t, "enrollment-tokens", "create", "--ttl", "soon")
	if r.code != exitUsage {
		t.Errorf("bad --ttl: exit %d, want 2", r.code)
	}
	oneErrorLine(t, r.stderr, "--ttl")
}

func TestSmoke(t *testing.T) {
	f := newFakeServer(t)
	runSmoke(t, f, []smokeCase{
		{args: []string{"enrollment-tokens", "list", "--all"}, request: "GET /api/v1/enrollment-tokens?all=true", table: []string{"tok-1", "2/5"}, json: []string{"items"}},
		{args: []string{"et", "revoke", "tok/1"}, request: "DELETE /api/v1/enrollment-tokens/tok%2F1?", table: []string{"tok/1 revoked"}, json: []string{"id", "status"}},
		{args: []string{"agents", "show", "a-1"}, request: "GET /api/v1/agents/a-1?", table: []string{"web-1.example", "2026-01-02T03:04:05Z"}, json: []string{"id", "name", "status"}},
		{args: []string{"agents", "delete", "a-1"}, request: "DELETE /api/v1/agents/a-1?", table: []string{"a-1 deleted"}, json: []string{"id", "status"}},
		{args: []string{"agents", "state", "a-1"}, request: "GET /api/v1/agents/a-1/state?", table: []string{"inventory", `{"name":"debian","version":13}`}, json: []string{"agent_id", "items"}},
		{args: []string{"agents", "state", "a-1", "inventory"}, request: "GET /api/v1/agents/a-1/state/inventory?", table: []string{"os"}, json: []string{"items"}},
		{args: []string{"commands", "list", "--agent", "a-1", "--status", "success", "--limit", "2"}, request: "GET /api/v1/commands?agent=a-1&limit=2&status=success", table: []string{"c-ok", "restart", "agent/a-1"}, json: []string{"items"}},
		{args: []string{"commands", "show", "c-x"}, request: "GET /api/v1/commands/c-x?", table: []string{"o-1", "pending"}, json: []string{"id", "orders"}},
	})
}

func TestCommandsSend(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "commands", "send", "--agent", "a-1", "restart", "--arg", "delay=5s", "--args-json", `{"force":true}`, "--timeout", "2m", "-o", "json").ok(t)
	c := decode[api.Command](t, r.stdout)
	if c.ID != "c-ok" || len(c.Orders) != 1 || c.Orders[0].OrderID != "o-1" || c.Orders[0].Status != "pending" {
		t.Errorf("command = %+v", c)
	}
	var req api.CreateCommandRequest
	json.Unmarshal(f.body(), &req)
	if req.Target != (api.Target{Type: "agent", ID: "a-1"}) || req.Action.Name != "restart" || req.Timeout != "2m" ||
		string(req.Action.Args) != `{"delay":"5s","force":true}` {
		t.Errorf("request = %+v args %s", req, req.Action.Args)
	}

	r = f.run(t, "commands", "send", "--agent", "a-1", "restart").ok(t)
	if !strings.Contains(r.stdout, "command c-ok created") || !strings.Contains(r.stdout, "o-1") {
		t.Errorf("table output:\n%s", r.stdout)
	}
}

func TestCommandsSendWait(t *testing.T) {
	tests := []struct {
		action   string
		code     int
		status   string
		progress string
	}{
		{"restart", exitOK, "success", "1/1 finished: 1 success, 0 failure"},
		{"fail", exitFailed, "failure", "1/1 finished: 0 success, 1 failure"},
	}
	for _, tt := range tests {
		for _, out := range []string{"json", "table"} {
			t.Run(tt.action+"/"+out, func(t *testing.T) {
				f := newFakeServer(t)
				r := f.run(t, "commands", "send", "--agent", "a-1", tt.action, "--wait", "--interval", "10ms", "-o", out)
				if r.code != tt.code {
					t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
				}
				if !strings.Contains(r.stderr, "0/1 finished: 0 success, 0 failure\n") || !strings.Contains(r.stderr, tt.progress+"\n") {
					t.Errorf("progress:\n%s", r.stderr)
				}
				if tt.code == exitFailed && !strings.HasSuffix(r.stderr, "tetherctl: order o-1 failed: no such action\n") {
					t.Errorf("no failure line:\n%s", r.stderr)
				}
				if out == "json" {
					c := decode[api.Command](t, r.stdout)
					if len(c.Orders) != 1 || c.Orders[0].OrderID != "o-1" || c.Orders[0].Status != tt.status {
						t.Errorf("command = %+v", c)
					}
				} else if !strings.Contains(r.stdout, tt.status) {
					t.Errorf("table lacks %q:\n%s", tt.status, r.stdout)
				}
			})
		}
	}
}

func TestAPIErrorIsOneLine(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "agents", "show", "nope")
	if r.code != exitFailure {
		t.Errorf("exit code %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, `agent "nope" not found (not_found)`)
	if r.stdout != "" {
		t.Errorf("stdout = %q", r.stdout)
	}

	r = f.run(t, "commands", "send", "--agent", "missing", "restart", "--wait")
	if r.code != exitFailure {
		t.Errorf("exit code %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "not found")

	r = runWith(t, nil, "--server", f.srv.URL, "--ca-cert", f.caFile, "--token", "wrong", "agents", "list")
	if r.code != exitFailure {
		t.Errorf("bad token: exit code %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "invalid token")
}

func TestTransportErrors(t *testing.T) {
	f := newFakeServer(t)
	// Without the CA the server's certificate is not trusted.
	r := runWith(t, nil, "--server", f.srv.URL, "--token", "secret", "agents", "list")
	if r.code != exitFailure {
		t.Errorf("exit code %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "--ca-cert")

	addr := f.srv.Listener.Addr().String()
	f.srv.Close()
	r = runWith(t, nil, "--server", "https://"+addr, "--token", "secret", "agents", "list")
	if r.code != exitFailure {
		t.Errorf("exit code %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "cannot reach")
}

func TestUsageErrors(t *testing.T) {
	f := newFakeServer(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing token", []string{"--server", f.srv.URL, "agents", "list"}, "no API token"},
		{"unknown command", []string{"agnets", "list"}, "unknown command"},
		{"unknown subcommand", []string{"agents", "frob"}, "unknown command"},
		{"unknown flag", []string{"agents", "list", "--frob"}, "unknown flag"},
		{"missing argument", []string{"--token", "x", "agents", "show"}, "accepts 1 arg"},
		{"bad output", []string{"--token", "x", "-o", "yaml", "agents", "list"}, `--output "yaml"`},
		{"bad status", []string{"--token", "x", "agents", "list", "--status", "up"}, "--status"},
		{"no target", []string{"--token", "x", "commands", "send", "restart"}, "no target: give exactly one of --agent ID, --group NAME or --to-server"},
		{"two targets", []string{"--token", "x", "commands", "send", "--agent", "a", "--group", "g", "restart"}, "--agent and --group: give exactly one target"},
		{"three targets", []string{"--token", "x", "commands", "send", "--agent", "a", "--group", "g", "--to-server", "restart"}, "--agent and --group and --to-server"},
		{"group and server", []string{"--token", "x", "commands", "send", "--group", "g", "--to-server", "reload-config"}, "--group and --to-server"},
		{"empty agent", []string{"--token", "x", "commands", "send", "--agent", "", "restart"}, "--agent: empty agent id"},
		{"empty group", []string{"--token", "x", "commands", "send", "--group=", "restart"}, "--group: empty group name"},
		{"server false", []string{"--token", "x", "commands", "send", "--to-server=false", "restart"}, "--to-server=false names no target"},
		{"no action", []string{"--token", "x", "commands", "send", "--group", "g"}, "accepts 1 arg"},
		{"cancel neither", []string{"--token", "x", "commands", "cancel"}, "give a command ID or --order ORDER_ID"},
		{"cancel both", []string{"--token", "x", "commands", "cancel", "c-1", "--order", "o-1"}, "give a command ID or --order ORDER_ID"},
		{"cancel two", []string{"--token", "x", "commands", "cancel", "c-1", "c-2"}, "accepts at most 1 arg"},
		{"commands list status", []string{"--token", "x", "commands", "list", "--status", "done"}, `--status "done"`},
		{"orders status", []string{"--token", "x", "orders", "list", "--status", "ok"}, `--status "ok"`},
		{"orders since", []string{"--token", "x", "orders", "list", "--since", "yesterday"}, `--since "yesterday": want a duration`},
		{"orders since negative", []string{"--token", "x", "orders", "list", "--since", "-1h"}, `--since "-1h": want a positive duration`},
		{"orders until", []string{"--token", "x", "orders", "list", "--until", "2026-13-01"}, `--until "2026-13-01"`},
		{"orders limit", []string{"--token", "x", "orders", "list", "--limit", "-1"}, "--limit -1"},
		{"orders show no id", []string{"--token", "x", "orders", "show"}, "accepts 1 arg"},
		{"set-groups nothing", []string{"--token", "x", "agents", "set-groups", "a-1"}, "or --none"},
		{"set-groups both", []string{"--token", "x", "agents", "set-groups", "a-1", "web", "--none"}, "exclusive"},
		{"set-config no file", []string{"--token", "x", "groups", "set-config", "web"}, "--config-file is required"},
		{"set-config missing file", []string{"--token", "x", "groups", "set-config", "web", "--config-file", "/nonexistent/web.yaml"}, "--config-file: open /nonexistent/web.yaml"},
		{"create missing file", []string{"--token", "x", "groups", "create", "web", "--config-file", "/nonexistent/web.yaml"}, "--config-file"},
		{"show config json", []string{"--token", "x", "groups", "show", "web", "--config", "-o", "json"}, "--config prints YAML"},
		{"groups unknown", []string{"--token", "x", "groups", "frob"}, "unknown command"},
		{"bad arg", []string{"--token", "x", "commands", "send", "--agent", "a", "restart", "--arg", "novalue"}, "KEY=VALUE"},
		{"token and token file", []string{"--token", "x", "--token-file", "/nonexistent", "agents", "list"}, "exclusive"},
		{"missing token file", []string{"--token-file", "/nonexistent/token", "agents", "list"}, "--token-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runWith(t, nil, tt.args...)
			if r.code != exitUsage {
				t.Errorf("exit code %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			oneErrorLine(t, r.stderr, tt.want)
			if strings.Contains(r.stderr, "Usage:") || strings.Contains(r.stdout, "Usage:") {
				t.Errorf("usage dumped")
			}
		})
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("usage errors sent %d requests", n)
	}
}

func TestEnvironment(t *testing.T) {
	f := newFakeServer(t)
	env := map[string]string{"TETHER_SERVER": f.srv.URL, "TETHER_TOKEN": "secret", "TETHER_CA_CERT": f.caFile}
	runWith(t, env, "agents", "list").ok(t)

	// Flags win over the environment.
	r := runWith(t, env, "--token", "wrong", "agents", "list")
	if r.code != exitFailure {
		t.Errorf("--token did not override TETHER_TOKEN: exit %d", r.code)
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("secret\n"), 0o600)
	delete(env, "TETHER_TOKEN")
	runWith(t, env, "--token-file", tokenFile, "agents", "list").ok(t)
}

func TestHelp(t *testing.T) {
	r := runWith(t, nil, "--help").ok(t)
	for _, want := range []string{"TETHER_SERVER", "TETHER_TOKEN", "TETHER_CA_CERT", "Exit codes", "3  commands send --wait"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	for _, cmd := range [][]string{
		{"enrollment-tokens", "create"}, {"enrollment-tokens", "list"}, {"enrollment-tokens", "revoke"},
		{"tokens"}, {"tokens", "create"}, {"tokens", "list"}, {"tokens", "revoke"},
		{"agents", "list"}, {"agents", "show"}, {"agents", "delete"}, {"agents", "state"},
		{"commands", "send"}, {"commands", "list"}, {"commands", "show"}, {"commands", "cancel"},
		{"agents", "set-groups"},
		{"orders", "list"}, {"orders", "show"},
		{"groups", "create"}, {"groups", "list"}, {"groups", "show"}, {"groups", "set-config"}, {"groups", "delete"},
		{"actions", "list"}, {"actions", "show"},
	} {
		r := runWith(t, nil, append(cmd, "--help")...).ok(t)
		if !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%v --help has no examples", cmd)
		}
	}
}

func TestBuildArgs(t *testing.T) {
	tests := []struct {
		name    string
		kv      []string
		json    string
		want    string
		wantErr string
	}{
		{name: "none", want: ""},
		{name: "one", kv: []string{"a=b"}, want: `{"a":"b"}`},
		{name: "strings stay strings", kv: []string{"n=5", "ok=true", "x=null"}, want: `{"n":"5","ok":"true","x":"null"}`},
		{name: "value with equals", kv: []string{"q=a=b"}, want: `{"q":"a=b"}`},
		{name: "empty value", kv: []string{"a="}, want: `{"a":""}`},
		{name: "last wins", kv: []string{"a=1", "a=2"}, want: `{"a":"2"}`},
		{name: "unicode and quotes", kv: []string{`msg=héllo "x"`}, want: `{"msg":"héllo \"x\""}`},
		{name: "json only", json: `{"n": 5, "deep": {"x": [1, 2]}}`, want: `{"deep":{"x":[1,2]},"n":5}`},
		{name: "json overrides", kv: []string{"a=1", "b=2"}, json: `{"a": 3}`, want: `{"a":3,"b":"2"}`},
		{name: "big number kept", json: `{"n": 12345678901234567890}`, want: `{"n":12345678901234567890}`},
		{name: "no equals", kv: []string{"a"}, wantErr: "KEY=VALUE"},
		{name: "empty key", kv: []string{"=v"}, wantErr: "empty key"},
		{name: "json array", json: `[1]`, wantErr: "--args-json"},
		{name: "json null", json: `null`, wantErr: "--args-json"},
		{name: "json broken", json: `{"a":`, wantErr: "--args-json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildArgs(tt.kv, tt.json)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("args = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestAgo(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return t0 }
	for _, tt := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, ""},
		{t0.Add(-12 * time.Second), "12s ago"},
		{t0.Add(-5 * time.Minute), "5m ago"},
		{t0.Add(-3 * time.Hour), "3h ago"},
		{t0.Add(-72 * time.Hour), "3d ago"},
		{t0.Add(23 * time.Hour), "in 23h"},
	} {
		if got := ago(tt.t); got != tt.want {
			t.Errorf("ago(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestProgressPlainAndBar(t *testing.T) {
	var buf strings.Builder
	p := &progress{w: &buf}
	p.update(0, 4, 0, 0)
	p.update(0, 4, 0, 0) // unchanged: not repeated
	p.update(4, 4, 3, 1)
	p.done()
	if got := buf.String(); got != "0/4 finished: 0 success, 0 failure\n4/4 finished: 3 success, 1 failure\n" {
		t.Fatalf("plain progress:\n%s", got)
	}
	buf.Reset()
	p = &progress{w: &buf, tty: true}
	p.update(2, 4, 2, 0)
	p.done()
	if got := buf.String(); !strings.HasPrefix(got, "\r[###############...............] 2/4 finished") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("bar: %q", got)
	}
}
