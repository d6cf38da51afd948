package mgmt_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/mgmt"
)

// loadDoc loads and validates the embedded OpenAPI document.
func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(mgmt.OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	if doc.OpenAPI != "3.0.3" || doc.Info.Version != "1.0.0" {
		t.Errorf("openapi %q, info.version %q; want 3.0.3 and 1.0.0", doc.OpenAPI, doc.Info.Version)
	}
	return doc
}

// checker sends requests to an env and validates each request and response
// against the OpenAPI document.
type checker struct {
	e      *env
	doc    *openapi3.T
	router routers.Router
	opts   *openapi3filter.Options
	mu     sync.Mutex // guards exercised: streams are read in the background
	// exercised counts the 2xx answers of each operation.
	exercised map[string]int
	// streams are closed when the event streams watched ended.
	streams []chan struct{}
}

func init() {
	// Event streams are validated as text: their events are checked one
	// by one against the Progress schema.
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
}

func newChecker(t *testing.T, e *env) *checker {
	doc := loadDoc(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("openapi router: %v", err)
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		SkipSettingDefaults:   true,
		// The server checks tokens; the document only says a bearer
		// token must be sent.
		AuthenticationFunc: func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
			h := in.RequestValidationInput.Request.Header.Get("Authorization")
			if !strings.HasPrefix(h, "Bearer ") {
				return errors.New("no bearer token")
			}
			return nil
		},
	}
	return &checker{e: e, doc: doc, router: router, opts: opts, exercised: map[string]int{}}
}

// call is one request of a scenario.
type call struct {
	method, path, token string
	body                any
	// want is the expected status.
	want int
	// invalid marks a request that knowingly breaks the document (bad
	// JSON, unknown field, missing token...): the document must reject it
	// too, and the server's answer must still match the document.
	invalid bool
}

// do sends c, checks its status, validates the request and the response
// against the document, and returns the response body.
func (c *checker) do(t *testing.T, cl call) []byte {
	t.Helper()
	name := cl.method + " " + cl.path
	req := c.e.request(t, cl.method, cl.path, cl.token, cl.body)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s: not in the OpenAPI document: %v", name, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: c.opts}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case cl.invalid && err == nil:
		t.Errorf("%s: the document accepts a request the test made invalid", name)
	case !cl.invalid && err != nil:
		t.Errorf("%s: request does not match the document: %v", name, err)
	}
	// Send a fresh request: validation consumed the body.
	resp, body := send(t, c.e.request(t, cl.method, cl.path, cl.token, cl.body))
	if resp.StatusCode != cl.want {
		t.Errorf("%s: status %d, want %d; body: %s", name, resp.StatusCode, cl.want, body)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                c.opts,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(body)); err != nil {
		t.Errorf("%s: %d response does not match the document: %v\nbody: %s", name, resp.StatusCode, err, body)
	}
	if resp.StatusCode/100 == 2 {
		c.mark(route.Method + " " + route.Path)
	}
	return body
}

func (c *checker) mark(op string) {
	c.mu.Lock()
	c.exercised[op]++
	c.mu.Unlock()
}

// watch opens an event stream and reads it in the background: each event
// must be a "progress" event whose data matches the Progress schema, and is
// sent on the returned channel, closed when the stream ends. The request
// and the whole answer are then validated against the document.
func (c *checker) watch(t *testing.T, path, token string) <-chan api.Progress {
	t.Helper()
	req := c.e.request(t, "GET", path, token, nil)
	req.Header.Set("Accept", "text/event-stream")
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s: not in the OpenAPI document: %v", path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: c.opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		t.Errorf("%s: request does not match the document: %v", path, err)
	}
	resp, err := http.DefaultClient.Do(c.e.request(t, "GET", path, token, nil))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("%s: status %d, content type %q; want 200 text/event-stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Ends the stream if the test stops before it did.
	t.Cleanup(func() { resp.Body.Close() })
	schema := c.doc.Components.Schemas["Progress"].Value
	events := make(chan api.Progress, 100)
	go func() {
		defer close(events)
		defer resp.Body.Close()
		var body bytes.Buffer
		sc := bufio.NewScanner(io.TeeReader(resp.Body, &body))
		var name, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if name == "" && data == "" {
					continue
				}
				if name != "progress" {
					t.Errorf("%s: event %q, want progress", path, name)
				}
				var v any
				if err := json.Unmarshal([]byte(data), &v); err != nil {
					t.Errorf("%s: event data %q: %v", path, data, err)
				} else if err := schema.VisitJSON(v); err != nil {
					t.Errorf("%s: event data %s does not match the Progress schema: %v", path, data, err)
				}
				var p api.Progress
				_ = json.Unmarshal([]byte(data), &p)
				events <- p
				name, data = "", ""
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			default:
				t.Errorf("%s: unexpected line %q", path, line)
			}
		}
		if err := sc.Err(); err != nil {
			t.Errorf("%s: read stream: %v", path, err)
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: c.opts}
		if err := openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(body.Bytes())); err != nil {
			t.Errorf("%s: response does not match the document: %v", path, err)
		}
		c.mark(route.Method + " " + route.Path)
	}()
	return events
}

// wantError checks an error body's code and field.
func wantError(t *testing.T, body []byte, code, field string) api.Error {
	t.Helper()
	var er api.ErrorResponse
	decodeInto(t, body, &er)
	if er.Error.Code != code || er.Error.Field != field || er.Error.Message == "" {
		t.Errorf("error %+v; want code %q, field %q and a message", er.Error, code, field)
	}
	return er.Error
}

func TestOpenAPIMatchesResponses(t *testing.T) {
	e := newEnv(t)
	c := newChecker(t, e)
	ctx := context.Background()
	admin, operator, viewer, registrar := e.tokens[tether.RoleAdmin], e.tokens[tether.RoleOperator],
		e.tokens[tether.RoleViewer], e.tokens[tether.RoleRegistrar]

	// Public routes.
	c.do(t, call{method: "GET", path: "/healthz", want: 200})
	c.do(t, call{method: "GET", path: "/readyz", want: 200})
	c.do(t, call{method: "GET", path: "/api/v1/openapi.json", want: 200})
	c.do(t, call{method: "GET", path: "/metrics", want: 200})

	// Enrollment tokens.
	var enroll api.EnrollmentToken
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, want: 201,
		body: api.CreateEnrollmentTokenRequest{Name: "web", Groups: []string{"web", "eu"}, TTL: "1h", MaxUses: 5}}), &enroll)
	if enroll.Token == "" || enroll.Status != "active" || enroll.ExpiresAt == nil || enroll.CreatedBy != "test-operator" {
		t.Errorf("created token %+v: want a secret, active, an expiry, created by test-operator", enroll)
	}
	var forever api.EnrollmentToken
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/enrollment-tokens", token: admin, want: 201,
		body: map[string]any{"ttl": "0"}}), &forever)
	if forever.ExpiresAt != nil || forever.Name != "enrollment" {
		t.Errorf("token with ttl 0: %+v; want no expiry and the default name", forever)
	}
	var tokens api.EnrollmentTokenList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/enrollment-tokens", token: operator, want: 200}), &tokens)
	// The registrar token of the env is an enrollment token too.
	if len(tokens.Items) != 3 {
		t.Errorf("listed %d enrollment tokens, want 3", len(tokens.Items))
	}
	for _, tk := range tokens.Items {
		if tk.Token != "" {
			t.Errorf("list shows the secret of token %s", tk.ID)
		}
	}

	// Agents.
	agent1, agent2 := uuid.NewString(), uuid.NewString()
	var reg api.RegisterAgentResponse
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/agents", token: enroll.Token, want: 201,
		body: api.RegisterAgentRequest{ID: agent1, Hostname: "web-1", OS: "linux", Arch: "amd64", Version: "1.0.0"}}), &reg)
	if reg.AgentKey == "" || reg.Agent.Name != "web-1" || !slices.Equal(reg.Agent.Groups, []string{"web", "eu"}) ||
		!slices.Equal(reg.CommsURLs, commsURLs) || reg.Agent.Status != "enrolled" {
		t.Errorf("registered %+v", reg)
	}
	c.do(t, call{method: "POST", path: "/api/v1/agents", token: admin, want: 201,
		body: api.RegisterAgentRequest{ID: agent2, Name: "db-1"}})
	body := c.do(t, call{method: "POST", path: "/api/v1/agents", token: enroll.Token, want: 409,
		body: api.RegisterAgentRequest{ID: agent1, Hostname: "web-1"}})
	wantError(t, body, "conflict", "")
	c.do(t, call{method: "POST", path: "/api/v1/agents", token: enroll.Token, want: 200,
		body: api.RegisterAgentRequest{ID: agent1, Hostname: "web-1", CurrentKey: reg.AgentKey}})

	// agent2 connects: it is active with a last_seen.
	e.presence.Seen(agent2, time.Now().UTC())
	var agents api.AgentList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents", token: viewer, want: 200}), &agents)
	if len(agents.Items) != 2 || agents.Next != "" {
		t.Errorf("agents: %+v; want 2 and no next page", agents)
	}
	for _, q := range []struct {
		query string
		want  []string
	}{
		{"group=web", []string{agent1}},
		{"group=nope", nil},
		{"name=web-", []string{agent1}},
		{"status=enrolled", []string{agent1}},
		{"status=active", []string{agent2}},
		{"status=disconnected", nil},
		{"status=active&group=web", nil},
	} {
		var l api.AgentList
		decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents?" + q.query, token: viewer, want: 200}), &l)
		var got []string
		for _, a := range l.Items {
			got = append(got, a.ID)
		}
		if !slices.Equal(got, q.want) {
			t.Errorf("agents?%s: %v, want %v", q.query, got, q.want)
		}
	}
	var page1, page2 api.AgentList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents?limit=1", token: viewer, want: 200}), &page1)
	if len(page1.Items) != 1 || page1.Next != page1.Items[0].ID {
		t.Fatalf("first page: %+v; want one agent and next", page1)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents?limit=1&after=" + page1.Next, token: viewer, want: 200}), &page2)
	if len(page2.Items) != 1 || page2.Items[0].ID == page1.Items[0].ID {
		t.Errorf("second page: %+v", page2)
	}
	var a2 api.Agent
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent2, token: viewer, want: 200}), &a2)
	if a2.Status != "active" || a2.LastSeen == nil || a2.Name != "db-1" {
		t.Errorf("agent2: %+v; want active, last seen, named db-1", a2)
	}

	// State.
	now := time.Now().UTC()
	err := e.store.ApplyState(ctx, agent1, 1, []tether.Event{
		{ID: "e1", Module: "inventory", Type: "package", Key: "openssl", Op: tether.StateUpsert,
			Payload: []byte(`{"version":"3.0.13"}`), Encoding: tether.EncodingJSON, CollectedAt: now},
		{ID: "e2", Module: "health", Type: "status", Key: "agent", Op: tether.StateUpsert,
			Payload: []byte(`{"ok":true}`), Encoding: tether.EncodingJSON, CollectedAt: now},
	}, now)
	if err != nil {
		t.Fatalf("apply state: %v", err)
	}
	var state api.StateList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent1 + "/state", token: viewer, want: 200}), &state)
	if state.AgentID != agent1 || len(state.Items) != 2 {
		t.Errorf("state: %+v; want 2 entries", state)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent1 + "/state/inventory", token: viewer, want: 200}), &state)
	if len(state.Items) != 1 || state.Items[0].Key != "openssl" || compact(t, state.Items[0].Doc) != `{"version":"3.0.13"}` {
		t.Errorf("inventory state: %+v", state)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent2 + "/state/inventory", token: viewer, want: 200}), &state)
	if len(state.Items) != 0 {
		t.Errorf("agent2 state: %+v; want none", state)
	}

	// Commands.
	var cmd api.Command
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands", token: operator, want: 201,
		body: map[string]any{"target": map[string]any{"type": "agent", "id": agent1},
			"action": map[string]any{"name": "active-response", "args": map[string]any{"command": "block-ip", "args": []string{"10.0.0.1"}}, "version": "1"}, "timeout": "10m"}}), &cmd)
	if len(cmd.Orders) != 1 || cmd.Status != "pending" || cmd.Timeout != "10m0s" || cmd.User != "test-operator" || cmd.Source != "user" {
		t.Fatalf("created command %+v", cmd)
	}
	c.do(t, call{method: "POST", path: "/api/v1/commands", token: admin, want: 201,
		body: api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent2}, Action: api.Action{Name: "restart"}}})
	// agent1 receives and runs its order.
	if _, err := e.store.DeliverOrders(ctx, []tether.Delivery{{AgentID: agent1, Limit: 10}}, time.Now().UTC()); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	if _, err := e.store.FinishOrder(ctx, agent1, cmd.Orders[0].OrderID, tether.OrderSuccess,
		tether.Result{Code: 0, Message: "done", Data: json.RawMessage(`{"blocked":1}`)}, time.Now().UTC()); err != nil {
		t.Fatalf("finish: %v", err)
	}
	var shown api.Command
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands/" + cmd.ID, token: viewer, want: 200}), &shown)
	if shown.Status != "success" || len(shown.Orders) != 1 || shown.Orders[0].Result == nil ||
		shown.Orders[0].SentAt == nil || shown.Orders[0].FinishedAt == nil || shown.Orders[0].Attempts != 1 {
		t.Errorf("finished command %+v", shown)
	}
	var cmds api.CommandList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands", token: viewer, want: 200}), &cmds)
	if len(cmds.Items) != 2 || cmds.Items[0].Orders != nil {
		t.Errorf("commands: %+v; want 2 without orders", cmds)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands?agent=" + agent1 + "&status=success&limit=5", token: viewer, want: 200}), &cmds)
	if len(cmds.Items) != 1 || cmds.Items[0].ID != cmd.ID {
		t.Errorf("commands of agent1 in success: %+v", cmds)
	}

	// Errors.
	errCases := []struct {
		call
		code, field string
	}{
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, body: `{"name":`, want: 400, invalid: true}, "invalid", ""},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, body: `{"nmae":"x"}`, want: 400, invalid: true}, "invalid", "nmae"},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, body: `{"max_uses":"1"}`, want: 400, invalid: true}, "invalid", "max_uses"},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, body: `{"ttl":"soon"}`, want: 400}, "invalid", "ttl"},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, body: `{"groups":["a b"]}`, want: 400, invalid: true}, "invalid", "groups"},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, body: "", want: 400, invalid: true}, "invalid", ""},
		{call{method: "POST", path: "/api/v1/agents", token: admin, body: `{"id":"NOT-A-UUID"}`, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "POST", path: "/api/v1/agents", body: api.RegisterAgentRequest{ID: uuid.NewString()}, want: 401, invalid: true}, "unauthorized", ""},
		{call{method: "GET", path: "/api/v1/agents", token: "tth_not-a-token", want: 401}, "unauthorized", ""},
		{call{method: "GET", path: "/api/v1/agents", token: viewer + "x", want: 401}, "unauthorized", ""},
		{call{method: "POST", path: "/api/v1/commands", token: viewer, want: 403,
			body: api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent1}, Action: api.Action{Name: "restart"}}}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/agents", token: registrar, want: 403}, "forbidden", ""},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: enroll.Token, body: `{}`, want: 403}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/agents/" + uuid.NewString(), token: viewer, want: 404}, "not_found", ""},
		{call{method: "DELETE", path: "/api/v1/agents/" + uuid.NewString(), token: operator, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/agents/" + uuid.NewString() + "/state", token: viewer, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/commands/" + uuid.NewString(), token: viewer, want: 404}, "not_found", ""},
		{call{method: "DELETE", path: "/api/v1/enrollment-tokens/" + uuid.NewString(), token: operator, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/agents/not-a-uuid", token: viewer, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "GET", path: "/api/v1/commands/not-a-uuid", token: viewer, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "DELETE", path: "/api/v1/enrollment-tokens/not-a-uuid", token: operator, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "GET", path: "/api/v1/agents?status=asleep", token: viewer, want: 400, invalid: true}, "invalid", "status"},
		{call{method: "GET", path: "/api/v1/agents?limit=0", token: viewer, want: 400, invalid: true}, "invalid", "limit"},
		{call{method: "GET", path: "/api/v1/commands?limit=1001", token: viewer, want: 400, invalid: true}, "invalid", "limit"},
		{call{method: "GET", path: "/api/v1/commands?status=done", token: viewer, want: 400, invalid: true}, "invalid", "status"},
		{call{method: "GET", path: "/api/v1/commands?agent=x", token: viewer, want: 400, invalid: true}, "invalid", "agent"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400,
			body: api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: uuid.NewString()}, Action: api.Action{Name: "restart"}}}, "invalid", "target.id"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400,
			body: api.CreateCommandRequest{Target: api.Target{Type: "server", ID: "web"}, Action: api.Action{Name: "reload-config"}}}, "invalid", "target.id"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400,
			body: api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent1}, Action: api.Action{Name: "restart"}, Timeout: "48h"}}, "invalid", "timeout"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400, invalid: true,
			body: api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent1}, Action: api.Action{Name: "Restart!"}}}, "invalid", "action.name"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400,
			body: `{"target":{"type":"agent","id":"` + agent1 + `"},"action":{"name":"restart","args":[1]}}`}, "invalid", "action.args"},
		{call{method: "POST", path: "/api/v1/enrollment-tokens", token: operator, want: 413, invalid: true,
			body: `{"name":"` + strings.Repeat("a", 1<<20) + `"}`}, "too_large", ""},
	}
	for _, ec := range errCases {
		t.Run(fmt.Sprintf("%d %s %s", ec.want, ec.method, ec.path[:min(len(ec.path), 60)]), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}

	members := exerciseGroups(t, c, agent1, agent2)
	exerciseOrders(t, c, members)
	exerciseProgress(t, c, members)
	exerciseFiles(t, c, members[0])
	exerciseTokens(t, c, agent1)
	exerciseEvents(t, c, agent1, agent2)

	// Revoke the enrollment token: it enrolls no more.
	c.do(t, call{method: "DELETE", path: "/api/v1/enrollment-tokens/" + enroll.ID, token: operator, want: 204})
	c.do(t, call{method: "DELETE", path: "/api/v1/enrollment-tokens/" + enroll.ID, token: admin, want: 204})
	body = c.do(t, call{method: "POST", path: "/api/v1/agents", token: enroll.Token, want: 401,
		body: api.RegisterAgentRequest{ID: uuid.NewString()}})
	wantError(t, body, "gone", "")
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/enrollment-tokens?all=true", token: operator, want: 200}), &tokens)
	found := false
	for _, tk := range tokens.Items {
		if tk.ID == enroll.ID {
			found = true
			if tk.Status != "revoked" || tk.RevokedAt == nil || tk.Uses != 2 {
				t.Errorf("revoked token: %+v; want revoked with 2 uses", tk)
			}
		}
	}
	if !found {
		t.Errorf("all=true does not list the revoked token")
	}
	// Only enrollment tokens can be revoked here.
	c.do(t, call{method: "DELETE", path: "/api/v1/enrollment-tokens/" + tokenID(t, admin), token: admin, want: 404})

	// Delete an agent.
	c.do(t, call{method: "DELETE", path: "/api/v1/agents/" + agent2, token: operator, want: 204})
	c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent2, token: viewer, want: 404})

	for _, rt := range mgmt.Routes() {
		if c.exercised[rt.Method+" "+rt.Pattern] == 0 {
			t.Errorf("the scenario never got a 2xx from %s %s", rt.Method, rt.Pattern)
		}
	}
}

// compact returns a JSON document without insignificant spaces.
func compact(t *testing.T, doc []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		t.Fatalf("compact %s: %v", doc, err)
	}
	return b.String()
}

// tokenID returns the id of a bearer token.
func tokenID(t *testing.T, bearer string) string {
	t.Helper()
	parts := strings.SplitN(strings.TrimPrefix(bearer, "tth_"), "_", 2)
	id, err := uuid.Parse(parts[0])
	if err != nil {
		t.Fatalf("token id of %q: %v", bearer, err)
	}
	return id.String()
}

// TestOpenAPIRejectsUndocumentedFields checks that the response validation
// of TestOpenAPIMatchesResponses would catch a field the handlers add
// without documenting it.
func TestOpenAPIRejectsUndocumentedFields(t *testing.T) {
	e := newEnv(t)
	c := newChecker(t, e)
	id := uuid.NewString()
	c.do(t, call{method: "POST", path: "/api/v1/agents", token: e.tokens[tether.RoleAdmin], want: 201,
		body: api.RegisterAgentRequest{ID: id, Hostname: "h"}})
	req := e.request(t, "GET", "/api/v1/agents/"+id, e.tokens[tether.RoleViewer], nil)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := send(t, req)
	var m map[string]any
	decodeInto(t, body, &m)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: c.opts}
	validate := func(v any) error {
		b, _ := json.Marshal(v)
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: c.opts}
		return openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(b))
	}
	if err := validate(m); err != nil {
		t.Fatalf("the real answer does not validate: %v", err)
	}
	m["disabled"] = false
	if err := validate(m); err == nil {
		t.Errorf("an undocumented field passes response validation")
	}
	delete(m, "disabled")
	delete(m, "enrolled_at")
	if err := validate(m); err == nil {
		t.Errorf("a missing required field passes response validation")
	}
	// The status code is checked too.
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: http.StatusTeapot, Header: resp.Header, Options: c.opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(body)); err == nil {
		t.Errorf("an undocumented status passes response validation")
	}
}

// TestOpenAPIDescribesEveryRoute checks the document and Routes() list the
// same operations, each with its permission and security.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := loadDoc(t)
	routes := map[string]mgmt.Route{}
	for _, rt := range mgmt.Routes() {
		routes[rt.Method+" "+rt.Pattern] = rt
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			key := method + " " + path
			documented[key] = true
			rt, ok := routes[key]
			if !ok {
				t.Errorf("%s is documented but not served", key)
				continue
			}
			if op.OperationID == "" || op.Summary == "" || op.Description == "" {
				t.Errorf("%s: needs an operationId, a summary and a description", key)
			}
			perm, _ := op.Extensions["x-permission"].(string)
			public := op.Security != nil && len(*op.Security) == 0
			switch {
			case rt.Perm == "" && !public:
				t.Errorf("%s is public but the document asks for a token (want security: [])", key)
			case rt.Perm == "" && perm != "":
				t.Errorf("%s is public but documents permission %q", key, perm)
			case rt.Perm != "" && (public || op.Security != nil):
				t.Errorf("%s needs %s but the document overrides the global bearerAuth security", key, rt.Perm)
			case rt.Perm != "" && perm != string(rt.Perm):
				t.Errorf("%s: x-permission %q, the route checks %q", key, perm, rt.Perm)
			}
			if rt.Perm != "" {
				var roles []string
				for _, role := range tether.Roles {
					if role.Can(rt.Perm) {
						roles = append(roles, "`"+string(role)+"`")
					}
				}
				want := fmt.Sprintf("Needs permission `%s` (roles %s).", rt.Perm, strings.Join(roles, ", "))
				if !strings.Contains(op.Description, want) {
					t.Errorf("%s: the description does not say %q", key, want)
				}
				for _, status := range []int{401, 403, 500} {
					if op.Responses.Status(status) == nil {
						t.Errorf("%s: no %d response", key, status)
					}
				}
			}
		}
	}
	for key := range routes {
		if !documented[key] {
			t.Errorf("%s is served but not documented", key)
		}
	}
}

// TestOpenAPISchemasMatchAPITypes checks each schema against the Go type
// of the same name in package api, field for field: the JSON names, which
// are required (no omitempty), and the types.
func TestOpenAPISchemasMatchAPITypes(t *testing.T) {
	doc := loadDoc(t)
	types := []any{
		api.Error{}, api.ErrorResponse{}, api.CreateEnrollmentTokenRequest{}, api.EnrollmentToken{},
		api.RegisterAgentRequest{}, api.RegisterAgentResponse{}, api.Agent{}, api.AgentList{},
		api.EnrollmentTokenList{}, api.StateEntry{}, api.StateList{}, api.Target{}, api.Action{},
		api.CreateCommandRequest{}, api.Result{}, api.Order{}, api.Command{}, api.CommandList{}, api.Health{},
		api.Group{}, api.GroupList{}, api.CreateGroupRequest{}, api.UpdateGroupRequest{}, api.SetAgentGroupsRequest{},
		api.OrderList{}, api.CancelResponse{}, api.ActionSpec{}, api.ArgSpec{}, api.ActionList{}, api.Progress{},
		api.File{}, api.FileList{}, api.CreateTokenRequest{}, api.Token{}, api.TokenList{},
		api.Event{}, api.EventsSkipped{},
	}
	timeType, rawType := reflect.TypeFor[time.Time](), reflect.TypeFor[json.RawMessage]()
	for _, v := range types {
		typ := reflect.TypeOf(v)
		ref := doc.Components.Schemas[typ.Name()]
		if ref == nil {
			t.Errorf("no schema %s", typ.Name())
			continue
		}
		s := ref.Value
		if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
			t.Errorf("%s: want additionalProperties: false", typ.Name())
		}
		var required []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" || name == "-" {
				t.Fatalf("%s.%s has no JSON name", typ.Name(), f.Name)
			}
			if opts != "omitempty" {
				required = append(required, name)
			}
			p := s.Properties[name]
			if p == nil {
				t.Errorf("%s: no property %q", typ.Name(), name)
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			var want string
			switch {
			case ft == timeType:
				want = "string"
				if p.Value.Format != "date-time" {
					t.Errorf("%s.%s: want format date-time", typ.Name(), name)
				}
			case ft == rawType:
				want = ""
			case ft.Kind() == reflect.String:
				want = "string"
			case ft.Kind() == reflect.Int, ft.Kind() == reflect.Int64, ft.Kind() == reflect.Uint64:
				want = "integer"
			case ft.Kind() == reflect.Bool:
				want = "boolean"
			case ft.Kind() == reflect.Slice:
				want = "array"
			case ft.Kind() == reflect.Map, ft.Kind() == reflect.Struct:
				want = "object"
			}
			got := schemaType(p.Value)
			if got != want {
				t.Errorf("%s.%s: type %q, want %q", typ.Name(), name, got, want)
			}
			if f.Type.Kind() == reflect.Pointer && p.Value.Nullable {
				t.Errorf("%s.%s: omitted when nil, so never null: want nullable false", typ.Name(), name)
			}
		}
		if len(s.Properties) != typ.NumField() {
			t.Errorf("%s: %d properties, the Go type has %d fields", typ.Name(), len(s.Properties), typ.NumField())
		}
		got := slices.Clone(s.Required)
		slices.Sort(got)
		slices.Sort(required)
		if !slices.Equal(got, required) {
			t.Errorf("%s: required %v, want %v", typ.Name(), got, required)
		}
	}
}

// schemaType returns the JSON type of a schema, looking through allOf.
func schemaType(s *openapi3.Schema) string {
	if s.Type != nil && len(*s.Type) == 1 {
		return (*s.Type)[0]
	}
	for _, r := range s.AllOf {
		if t := schemaType(r.Value); t != "" {
			return t
		}
	}
	return ""
}

// exerciseGroups runs the groups part of the scenario: agent1 is already in
// the group web (its enrollment token's). It leaves the group web with three
// members, agent1, agent2 and a third agent, and returns them.
func exerciseGroups(t *testing.T, c *checker, agent1, agent2 string) []string {
	t.Helper()
	admin, operator, viewer, registrar := c.e.tokens[tether.RoleAdmin], c.e.tokens[tether.RoleOperator],
		c.e.tokens[tether.RoleViewer], c.e.tokens[tether.RoleRegistrar]

	var web, db api.Group
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/groups", token: operator, want: 201,
		body: api.CreateGroupRequest{Name: "web", Description: "front ends", Config: "log:\n  level: info\n"}}), &web)
	if web.Name != "web" || web.Members != 1 || web.Config != "log:\n  level: info\n" || len(web.Version) != 16 {
		t.Errorf("created group %+v; want web with 1 member, its config and a version", web)
	}
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/groups", token: admin, want: 201,
		body: api.CreateGroupRequest{Name: "db"}}), &db)
	if db.Members != 0 || db.Config != "" || db.Version == web.Version {
		t.Errorf("created group %+v", db)
	}
	var groups api.GroupList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/groups", token: viewer, want: 200}), &groups)
	if len(groups.Items) != 2 || groups.Items[0].Name != "db" || groups.Items[1].Name != "web" {
		t.Errorf("groups: %+v; want db and web", groups)
	}
	var got api.Group
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/groups/web", token: viewer, want: 200}), &got)
	if got != web {
		t.Errorf("shown %+v, created %+v", got, web)
	}
	// A new description keeps the version; a new configuration changes it.
	desc, cfg := "web front ends", "log: {level: debug}\n"
	decodeInto(t, c.do(t, call{method: "PATCH", path: "/api/v1/groups/web", token: operator, want: 200,
		body: api.UpdateGroupRequest{Description: &desc}}), &got)
	if got.Description != desc || got.Version != web.Version || got.Config != web.Config {
		t.Errorf("after a description change: %+v", got)
	}
	decodeInto(t, c.do(t, call{method: "PATCH", path: "/api/v1/groups/web", token: operator, want: 200,
		body: api.UpdateGroupRequest{Config: &cfg}}), &got)
	if got.Description != desc || got.Version == web.Version || got.Config != cfg {
		t.Errorf("after a config change: %+v", got)
	}

	// Membership.
	agent3 := uuid.NewString()
	c.do(t, call{method: "POST", path: "/api/v1/agents", token: admin, want: 201,
		body: api.RegisterAgentRequest{ID: agent3, Name: "web-3"}})
	var a api.Agent
	decodeInto(t, c.do(t, call{method: "PUT", path: "/api/v1/agents/" + agent2 + "/groups", token: operator, want: 200,
		body: api.SetAgentGroupsRequest{Groups: []string{"web", "db"}}}), &a)
	if a.ID != agent2 || !slices.Equal(a.Groups, []string{"web", "db"}) {
		t.Errorf("agent2 after set groups: %+v", a)
	}
	decodeInto(t, c.do(t, call{method: "PUT", path: "/api/v1/agents/" + agent3 + "/groups", token: admin, want: 200,
		body: api.SetAgentGroupsRequest{Groups: []string{"db", "web"}}}), &a)
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/groups/web", token: viewer, want: 200}), &got)
	if got.Members != 3 {
		t.Errorf("web has %d members, want 3", got.Members)
	}
	// Deleting db leaves the agents in web only.
	c.do(t, call{method: "DELETE", path: "/api/v1/groups/db", token: operator, want: 204})
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent3, token: viewer, want: 200}), &a)
	if !slices.Equal(a.Groups, []string{"web"}) {
		t.Errorf("agent3 after deleting db: groups %v, want [web]", a.Groups)
	}

	errCases := []struct {
		call
		code, field string
	}{
		{call{method: "POST", path: "/api/v1/groups", token: operator, want: 409, body: api.CreateGroupRequest{Name: "web"}}, "conflict", ""},
		{call{method: "POST", path: "/api/v1/groups", token: operator, want: 400, body: api.CreateGroupRequest{Name: "x", Config: "- a\n- b\n"}}, "invalid", "config"},
		{call{method: "POST", path: "/api/v1/groups", token: operator, want: 400, body: api.CreateGroupRequest{Name: "x", Config: "a: 1\n2: two\n"}}, "invalid", "config"},
		{call{method: "POST", path: "/api/v1/groups", token: operator, want: 400, body: api.CreateGroupRequest{Name: "x", Config: "a: [1\n"}}, "invalid", "config"},
		{call{method: "POST", path: "/api/v1/groups", token: operator, want: 400, invalid: true, body: api.CreateGroupRequest{Name: "a b"}}, "invalid", "name"},
		{call{method: "POST", path: "/api/v1/groups", token: operator, want: 400, invalid: true, body: `{"name":"x","members":3}`}, "invalid", "members"},
		{call{method: "POST", path: "/api/v1/groups", token: viewer, want: 403, body: api.CreateGroupRequest{Name: "x"}}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/groups", token: registrar, want: 403}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/groups/nope", token: viewer, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/groups/no!pe", token: viewer, want: 400, invalid: true}, "invalid", "name"},
		{call{method: "PATCH", path: "/api/v1/groups/nope", token: operator, want: 404, body: api.UpdateGroupRequest{Description: &desc}}, "not_found", ""},
		{call{method: "PATCH", path: "/api/v1/groups/web", token: operator, want: 400, body: `{"config":"not: [a mapping"}`}, "invalid", "config"},
		{call{method: "PATCH", path: "/api/v1/groups/web", token: viewer, want: 403, body: api.UpdateGroupRequest{Description: &desc}}, "forbidden", ""},
		{call{method: "DELETE", path: "/api/v1/groups/nope", token: operator, want: 404}, "not_found", ""},
		{call{method: "PUT", path: "/api/v1/agents/" + uuid.NewString() + "/groups", token: operator, want: 404,
			body: api.SetAgentGroupsRequest{Groups: []string{"web"}}}, "not_found", ""},
		{call{method: "PUT", path: "/api/v1/agents/" + agent1 + "/groups", token: operator, want: 400, invalid: true, body: `{}`}, "invalid", "groups"},
		{call{method: "PUT", path: "/api/v1/agents/" + agent1 + "/groups", token: operator, want: 400, invalid: true,
			body: api.SetAgentGroupsRequest{Groups: []string{"a b"}}}, "invalid", "groups"},
		{call{method: "PUT", path: "/api/v1/agents/" + agent1 + "/groups", token: viewer, want: 403,
			body: api.SetAgentGroupsRequest{Groups: []string{"web"}}}, "forbidden", ""},
	}
	for _, ec := range errCases {
		t.Run(fmt.Sprintf("%d %s %s", ec.want, ec.method, ec.path), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}
	// The group web is unchanged by the refused calls.
	var after api.Group
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/groups/web", token: viewer, want: 200}), &after)
	if after.Version != got.Version || after.Description != desc {
		t.Errorf("web after refused calls: %+v", after)
	}
	return []string{agent1, agent2, agent3}
}

// exerciseOrders runs the group command and order list part of the
// scenario; members are the three agents of the group web.
func exerciseOrders(t *testing.T, c *checker, members []string) {
	t.Helper()
	ctx := context.Background()
	operator, viewer := c.e.tokens[tether.RoleOperator], c.e.tokens[tether.RoleViewer]

	before := time.Now().UTC()
	var cmd api.Command
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands", token: operator, want: 201,
		body: api.CreateCommandRequest{Target: api.Target{Type: "group", ID: "web"}, Action: api.Action{Name: "restart"}}}), &cmd)
	if cmd.Total != 3 || len(cmd.Orders) != 3 || cmd.Counts["pending"] != 3 || cmd.Status != "pending" {
		t.Fatalf("group command: %+v; want 3 pending orders", cmd)
	}
	agents := []string{}
	for _, o := range cmd.Orders {
		agents = append(agents, o.AgentID)
		if o.RequestID != cmd.ID {
			t.Errorf("order %s of request %s, want %s", o.OrderID, o.RequestID, cmd.ID)
		}
	}
	slices.Sort(agents)
	if want := slices.Sorted(slices.Values(members)); !slices.Equal(agents, want) {
		t.Errorf("orders for %v, want one per member %v", agents, want)
	}
	// The first member runs its order; the second fails it.
	orderOf := map[string]string{}
	for _, o := range cmd.Orders {
		orderOf[o.AgentID] = o.OrderID
	}
	for i, status := range []tether.OrderStatus{tether.OrderSuccess, tether.OrderFailure} {
		if _, err := c.e.store.DeliverOrders(ctx, []tether.Delivery{{AgentID: members[i], Limit: 10}}, time.Now().UTC()); err != nil {
			t.Fatalf("deliver to member %d: %v", i, err)
		}
		res := tether.Result{Code: i, Message: string(status)}
		if _, err := c.e.store.FinishOrder(ctx, members[i], orderOf[members[i]], status, res, time.Now().UTC()); err != nil {
			t.Fatalf("finish: %v", err)
		}
	}
	var shown api.Command
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands/" + cmd.ID, token: viewer, want: 200}), &shown)
	if shown.Total != 3 || shown.Status != "pending" || len(shown.Orders) != 3 ||
		shown.Counts["success"] != 1 || shown.Counts["failure"] != 1 || shown.Counts["pending"] != 1 {
		t.Errorf("group command after two results: %+v", shown)
	}

	// A page of two, then the last one.
	var page1, page2 api.OrderList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/orders?request=" + cmd.ID + "&limit=2", token: viewer, want: 200}), &page1)
	if len(page1.Items) != 2 || page1.Next == "" {
		t.Fatalf("first page: %+v; want 2 orders and a next cursor", page1)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/orders?request=" + cmd.ID + "&limit=2&cursor=" + page1.Next, token: viewer, want: 200}), &page2)
	if len(page2.Items) != 1 || page2.Next != "" {
		t.Fatalf("second page: %+v; want the last order and no next cursor", page2)
	}
	seen := map[string]bool{}
	for _, o := range append(page1.Items, page2.Items...) {
		seen[o.OrderID] = true
	}
	for i, o := range cmd.Orders {
		if !seen[o.OrderID] {
			t.Errorf("paging missed order %s", o.OrderID)
		}
		// The command shows its orders in the order the list pages them.
		if i < 2 && page1.Items[i].OrderID != o.OrderID {
			t.Errorf("order %d: list has %s, the command %s", i, page1.Items[i].OrderID, o.OrderID)
		}
	}
	after := time.Now().UTC().Add(time.Second)
	for _, f := range []struct {
		query string
		want  int
	}{
		{"agent=" + members[0], 1},
		{"group=web&action=restart", 3},
		{"status=failure", 1},
		{"status=pending&group=web", 1},
		{"action=upgrade", 0},
		{"created_after=" + before.Add(-time.Millisecond).Format(time.RFC3339Nano) + "&created_before=" + after.Format(time.RFC3339), 3},
		{"created_after=" + after.Format(time.RFC3339), 0},
	} {
		var l api.OrderList
		decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/orders?request=" + cmd.ID + "&" + f.query, token: viewer, want: 200}), &l)
		if len(l.Items) != f.want {
			t.Errorf("orders?%s: %d, want %d", f.query, len(l.Items), f.want)
		}
	}
	var o api.Order
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/orders/" + page1.Items[0].OrderID, token: viewer, want: 200}), &o)
	if o.OrderID != page1.Items[0].OrderID || o.RequestID != cmd.ID {
		t.Errorf("shown order %+v", o)
	}

	// A server command: its order has no agent.
	var srv api.Command
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands", token: operator, want: 201,
		body: api.CreateCommandRequest{Target: api.Target{Type: "server"}, Action: api.Action{Name: "reload-config"}}}), &srv)
	if len(srv.Orders) != 1 || srv.Orders[0].AgentID != "" || srv.Total != 1 {
		t.Errorf("server command: %+v; want one order without an agent", srv)
	}

	// Commands a page at a time, newest first.
	var cmds1, cmds2 api.CommandList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands?limit=1", token: viewer, want: 200}), &cmds1)
	if len(cmds1.Items) != 1 || cmds1.Items[0].ID != srv.ID || cmds1.Next == "" {
		t.Fatalf("commands first page: %+v; want the server command and a cursor", cmds1)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands?limit=1&cursor=" + cmds1.Next, token: viewer, want: 200}), &cmds2)
	if len(cmds2.Items) != 1 || cmds2.Items[0].ID != cmd.ID {
		t.Fatalf("commands second page: %+v; want the group command", cmds2)
	}
	if g := cmds2.Items[0]; g.Total != 3 || g.Status != "pending" || g.Counts["success"] != 1 || g.Orders != nil {
		t.Errorf("listed group command: %+v; want its counts without its orders", g)
	}

	// Cancel the last order of the group command: once only.
	var cancelled api.CancelResponse
	last := orderOf[members[2]]
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/orders/" + last + "/cancel", token: operator, want: 200}), &cancelled)
	if cancelled.Cancelled != 1 {
		t.Errorf("cancel an order: %+v, want 1 cancelled", cancelled)
	}
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/orders/" + last + "/cancel", token: operator, want: 200}), &cancelled)
	if cancelled.Cancelled != 0 {
		t.Errorf("cancel it again: %+v, want 0 cancelled", cancelled)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/orders/" + last, token: viewer, want: 200}), &o)
	if o.Status != "failure" || o.Result == nil || o.Result.Message != "cancelled" || o.FinishedAt == nil {
		t.Errorf("cancelled order: %+v", o)
	}
	// Nothing is left to cancel in the group command; the server command
	// still waits for a node.
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands/" + cmd.ID + "/cancel", token: operator, want: 200}), &cancelled)
	if cancelled.Cancelled != 0 {
		t.Errorf("cancel a finished command: %+v, want 0", cancelled)
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands/" + cmd.ID, token: viewer, want: 200}), &shown)
	if shown.Status != "failure" || shown.Counts["failure"] != 2 || shown.Counts["success"] != 1 || shown.Total != 3 {
		t.Errorf("group command after the cancel: %+v", shown)
	}
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands/" + srv.ID + "/cancel", token: c.e.tokens[tether.RoleAdmin], want: 200}), &cancelled)
	if cancelled.Cancelled != 1 {
		t.Errorf("cancel the server command: %+v, want 1", cancelled)
	}

	// The built-in actions.
	var actions api.ActionList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/actions", token: viewer, want: 200}), &actions)
	byName := map[string]api.ActionSpec{}
	for _, a := range actions.Items {
		byName[a.Name] = a
	}
	if a := byName["rotate-signing-key"]; a.Target != "server" || a.Doc == "" {
		t.Errorf("rotate-signing-key: %+v; want a documented server action", a)
	}
	up := byName["upgrade"]
	if up.Target != "agent" || !slices.ContainsFunc(up.Args, func(a api.ArgSpec) bool { return a.Name == "sha256" && a.Required && a.Type == "string" }) {
		t.Errorf("upgrade: %+v; want an agent action with a required sha256 string", up)
	}

	errCases := []struct {
		call
		code, field string
	}{
		{call{method: "POST", path: "/api/v1/commands/" + cmd.ID + "/cancel", token: viewer, want: 403}, "forbidden", ""},
		{call{method: "POST", path: "/api/v1/orders/" + last + "/cancel", token: viewer, want: 403}, "forbidden", ""},
		{call{method: "POST", path: "/api/v1/commands/" + uuid.NewString() + "/cancel", token: operator, want: 404}, "not_found", ""},
		{call{method: "POST", path: "/api/v1/orders/" + uuid.NewString() + "/cancel", token: operator, want: 404}, "not_found", ""},
		{call{method: "POST", path: "/api/v1/orders/not-a-uuid/cancel", token: operator, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "POST", path: "/api/v1/orders/" + last + "/cancel", token: operator, want: 400, body: `{"force":true}`}, "invalid", "force"},
		{call{method: "GET", path: "/api/v1/actions", token: c.e.tokens[tether.RoleRegistrar], want: 403}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/orders?status=done", token: viewer, want: 400, invalid: true}, "invalid", "status"},
		{call{method: "GET", path: "/api/v1/orders?request=x", token: viewer, want: 400, invalid: true}, "invalid", "request"},
		{call{method: "GET", path: "/api/v1/orders?agent=x", token: viewer, want: 400, invalid: true}, "invalid", "agent"},
		{call{method: "GET", path: "/api/v1/orders?group=a!b", token: viewer, want: 400, invalid: true}, "invalid", "group"},
		{call{method: "GET", path: "/api/v1/orders?action=Restart", token: viewer, want: 400, invalid: true}, "invalid", "action"},
		{call{method: "GET", path: "/api/v1/orders?created_after=yesterday", token: viewer, want: 400, invalid: true}, "invalid", "created_after"},
		{call{method: "GET", path: "/api/v1/orders?created_before=2024-13-01", token: viewer, want: 400, invalid: true}, "invalid", "created_before"},
		{call{method: "GET", path: "/api/v1/orders?cursor=nope", token: viewer, want: 400}, "invalid", "cursor"},
		{call{method: "GET", path: "/api/v1/orders?limit=1001", token: viewer, want: 400, invalid: true}, "invalid", "limit"},
		{call{method: "GET", path: "/api/v1/orders/" + uuid.NewString(), token: viewer, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/orders/not-a-uuid", token: viewer, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "GET", path: "/api/v1/orders", token: c.e.tokens[tether.RoleRegistrar], want: 403}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/commands?cursor=nope", token: viewer, want: 400}, "invalid", "cursor"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400,
			body: api.CreateCommandRequest{Target: api.Target{Type: "group", ID: "empty"}, Action: api.Action{Name: "restart"}}}, "invalid", "target.id"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400,
			body: api.CreateCommandRequest{Target: api.Target{Type: "group", ID: "web"}, Action: api.Action{Name: "upgrade", Args: json.RawMessage(`{"version":"2"}`)}}}, "invalid", "action.args.sha256"},
	}
	for _, ec := range errCases {
		t.Run(fmt.Sprintf("%d %s %s", ec.want, ec.method, ec.path), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}
}

// exerciseProgress follows a group command to its end on the progress
// stream; members are the three agents of the group web.
func exerciseProgress(t *testing.T, c *checker, members []string) {
	t.Helper()
	ctx := context.Background()
	operator, viewer := c.e.tokens[tether.RoleOperator], c.e.tokens[tether.RoleViewer]
	var cmd api.Command
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands", token: operator, want: 201,
		body: api.CreateCommandRequest{Target: api.Target{Type: "group", ID: "web"}, Action: api.Action{Name: "get-config"}}}), &cmd)
	orderOf := map[string]string{}
	for _, o := range cmd.Orders {
		orderOf[o.AgentID] = o.OrderID
	}
	events := c.watch(t, "/api/v1/commands/"+cmd.ID+"/progress", viewer)
	// await reads events until one satisfies ok.
	await := func(what string, ok func(api.Progress) bool) api.Progress {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case p, open := <-events:
				if !open {
					t.Fatalf("the stream ended before %s", what)
				}
				if p.RequestID != cmd.ID || p.Total != 3 || p.Pending+p.Sent+p.Success+p.Failure != 3 {
					t.Errorf("event %+v: want the 3 orders of %s", p, cmd.ID)
				}
				if p.Done != (p.Pending+p.Sent == 0) {
					t.Errorf("event %+v: done is wrong", p)
				}
				if ok(p) {
					return p
				}
			case <-deadline:
				t.Fatalf("no event shows %s", what)
			}
		}
	}
	await("the first counts", func(p api.Progress) bool { return p.Pending == 3 && !p.Done })

	if _, err := c.e.store.DeliverOrders(ctx, []tether.Delivery{{AgentID: members[0], Limit: 10}}, time.Now().UTC()); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	await("the order sent", func(p api.Progress) bool { return p.Sent == 1 })
	finish := func(i int, st tether.OrderStatus) {
		t.Helper()
		if _, err := c.e.store.FinishOrder(ctx, members[i], orderOf[members[i]], st, tether.Result{Message: string(st)}, time.Now().UTC()); err != nil {
			t.Fatalf("finish: %v", err)
		}
	}
	finish(0, tether.OrderSuccess)
	await("a success", func(p api.Progress) bool { return p.Success == 1 && p.Sent == 0 })
	finish(1, tether.OrderFailure)
	await("a failure", func(p api.Progress) bool { return p.Failure == 1 })
	var cancelled api.CancelResponse
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands/" + cmd.ID + "/cancel", token: operator, want: 200}), &cancelled)
	if cancelled.Cancelled != 1 {
		t.Errorf("cancel: %+v, want 1", cancelled)
	}
	last := await("the end", func(p api.Progress) bool { return p.Done })
	if last.Success != 1 || last.Failure != 2 {
		t.Errorf("last event %+v; want 1 success and 2 failures", last)
	}
	select {
	case p, open := <-events:
		if open {
			t.Errorf("event %+v after the done event", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the stream did not end after its done event")
	}

	// A finished command: one done event, and the end.
	events = c.watch(t, "/api/v1/commands/"+cmd.ID+"/progress", viewer)
	if p := <-events; !p.Done || p.Failure != 2 {
		t.Errorf("stream of a finished command: %+v", p)
	}
	if _, open := <-events; open {
		t.Errorf("the stream of a finished command goes on")
	}

	for _, ec := range []struct {
		call
		code, field string
	}{
		{call{method: "GET", path: "/api/v1/commands/" + uuid.NewString() + "/progress", token: viewer, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/commands/not-a-uuid/progress", token: viewer, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "GET", path: "/api/v1/commands/" + cmd.ID + "/progress", token: c.e.tokens[tether.RoleRegistrar], want: 403}, "forbidden", ""},
	} {
		t.Run(fmt.Sprintf("%d %s %s", ec.want, ec.method, ec.path), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}
}
