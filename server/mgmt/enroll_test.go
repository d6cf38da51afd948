package mgmt_test

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/mgmt"
)

func TestEnrollmentTokenLimits(t *testing.T) {
	tests := []struct {
		name string
		edit func(*tether.Token)
		// ok is how many registrations succeed before the one that fails.
		ok       int
		code     string
		contains string
	}{
		{"used up", func(tk *tether.Token) { tk.MaxUses = 1 }, 1, "gone", "used 1 of 1 times"},
		{"used up after three", func(tk *tether.Token) { tk.MaxUses = 3 }, 3, "gone", "used 3 of 3 times"},
		{"expired", func(tk *tether.Token) { tk.ExpiresAt = time.Now().Add(-time.Minute) }, 0, "expired", "expired"},
		{"revoked", func(tk *tether.Token) { tk.RevokedAt = time.Now().Add(-time.Minute) }, 0, "gone", "revoked"},
		{"revoked before its expiry", func(tk *tether.Token) {
			tk.ExpiresAt, tk.RevokedAt = time.Now().Add(time.Hour), time.Now()
		}, 0, "gone", "revoked"},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := e.newToken(t, tether.RoleRegistrar, tt.edit)
			for i := range tt.ok {
				status, body := e.do(t, "POST", "/api/v1/agents", tok, api.RegisterAgentRequest{ID: uuid.NewString()})
				if status != http.StatusCreated {
					t.Fatalf("registration %d: status %d: %s", i+1, status, body)
				}
			}
			id := uuid.NewString()
			status, body := e.do(t, "POST", "/api/v1/agents", tok, api.RegisterAgentRequest{ID: id})
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", status, body)
			}
			er := wantError(t, body, tt.code, "")
			if !strings.Contains(er.Message, tt.contains) {
				t.Errorf("message %q does not say %q", er.Message, tt.contains)
			}
			// The refused registration left nothing behind.
			if status, _ := e.do(t, "GET", "/api/v1/agents/"+id, e.tokens[tether.RoleViewer], nil); status != http.StatusNotFound {
				t.Errorf("refused agent: status %d, want 404", status)
			}
		})
	}
}

func TestRegistrationJoinsTheTokensGroups(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		groups []string
	}{
		{"no groups", nil},
		{"one group", []string{"web"}},
		{"groups in order", []string{"prod", "eu-west.1", "db_primary"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var created api.EnrollmentToken
			status, body := e.do(t, "POST", "/api/v1/enrollment-tokens", e.tokens[tether.RoleOperator],
				api.CreateEnrollmentTokenRequest{Groups: tt.groups})
			if status != http.StatusCreated {
				t.Fatalf("create token: %d %s", status, body)
			}
			decodeInto(t, body, &created)
			id := uuid.NewString()
			var reg api.RegisterAgentResponse
			status, body = e.do(t, "POST", "/api/v1/agents", created.Token, api.RegisterAgentRequest{ID: id, Hostname: "h"})
			if status != http.StatusCreated {
				t.Fatalf("register: %d %s", status, body)
			}
			decodeInto(t, body, &reg)
			want := tt.groups
			if want == nil {
				want = []string{}
			}
			if !slices.Equal(reg.Agent.Groups, want) {
				t.Errorf("groups %q, want %q", reg.Agent.Groups, want)
			}
			for _, g := range tt.groups {
				var l api.AgentList
				_, body := e.do(t, "GET", "/api/v1/agents?group="+g, e.tokens[tether.RoleViewer], nil)
				decodeInto(t, body, &l)
				if !slices.ContainsFunc(l.Items, func(a api.Agent) bool { return a.ID == id }) {
					t.Errorf("agents?group=%s does not list the agent", g)
				}
			}
		})
	}
}

func TestReenrollWithCurrentKey(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens[tether.RoleRegistrar]
	id := uuid.NewString()
	var first api.RegisterAgentResponse
	status, body := e.do(t, "POST", "/api/v1/agents", tok, api.RegisterAgentRequest{ID: id, Hostname: "old", Version: "1.0.0"})
	if status != http.StatusCreated {
		t.Fatalf("enroll: %d %s", status, body)
	}
	decodeInto(t, body, &first)

	tests := []struct {
		name string
		key  func() string
		want int
	}{
		{"no key", func() string { return "" }, http.StatusConflict},
		{"wrong key", func() string { return "not-the-key" }, http.StatusConflict},
		{"current key", func() string { return first.AgentKey }, http.StatusOK},
		// The key changed with the re-enrollment.
		{"previous key", func() string { return first.AgentKey }, http.StatusConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.do(t, "POST", "/api/v1/agents", tok,
				api.RegisterAgentRequest{ID: id, Hostname: "new", Version: "1.1.0", CurrentKey: tt.key()})
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, body)
			}
			if status != http.StatusOK {
				wantError(t, body, "conflict", "")
				return
			}
			var again api.RegisterAgentResponse
			decodeInto(t, body, &again)
			if !again.Agent.EnrolledAt.Equal(first.Agent.EnrolledAt) {
				t.Errorf("enrolled_at %v, want it kept at %v", again.Agent.EnrolledAt, first.Agent.EnrolledAt)
			}
			if again.AgentKey == "" || again.AgentKey == first.AgentKey {
				t.Errorf("re-enrollment did not hand out a new key")
			}
			if again.Agent.Hostname != "new" || again.Agent.Version != "1.1.0" {
				t.Errorf("facts not updated: %+v", again.Agent)
			}
		})
	}
}

func TestCommsURLs(t *testing.T) {
	tests := []struct {
		name string
		edit func(*mgmt.Options)
		want func(e *env) []string
	}{
		{"configured", nil, func(*env) []string { return commsURLs }},
		{"derived from the host and the comms port", func(o *mgmt.Options) { o.CommsURLs, o.CommsPort = nil, "7443" },
			func(e *env) []string {
				ip := e.srv.Listener.Addr().(*net.TCPAddr).IP.String()
				return []string{"https://" + net.JoinHostPort(ip, "7443")}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, tt.edit)
			status, body := e.do(t, "POST", "/api/v1/agents", e.tokens[tether.RoleRegistrar], api.RegisterAgentRequest{ID: uuid.NewString()})
			if status != http.StatusCreated {
				t.Fatalf("register: %d %s", status, body)
			}
			var reg api.RegisterAgentResponse
			decodeInto(t, body, &reg)
			if want := tt.want(e); !slices.Equal(reg.CommsURLs, want) {
				t.Errorf("comms_urls %q, want %q", reg.CommsURLs, want)
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	e := newEnv(t)
	var h api.Health
	status, body := e.do(t, "GET", "/readyz", "", nil)
	decodeInto(t, body, &h)
	if status != http.StatusOK || h.Status != "ok" || h.Checks["store"] != "ok" {
		t.Fatalf("open store: %d %s", status, body)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	status, body = e.do(t, "GET", "/readyz", "", nil)
	h = api.Health{}
	decodeInto(t, body, &h)
	if status != http.StatusServiceUnavailable || h.Status != "unavailable" || h.Checks["store"] == "ok" || h.Checks["store"] == "" {
		t.Errorf("closed store: %d %s", status, body)
	}
	// Liveness does not depend on the store.
	if status, body := e.do(t, "GET", "/healthz", "", nil); status != http.StatusOK {
		t.Errorf("healthz with a closed store: %d %s", status, body)
	}
}

func TestBodyOverOneMiB(t *testing.T) {
	e := newEnv(t)
	big := `{"name":"` + strings.Repeat("a", 1<<20) + `"}`
	for _, rt := range mgmt.Routes() {
		if rt.Method != http.MethodPost || rt.Streams() { // TestUploadTooLarge
			continue
		}
		t.Run(rt.Pattern, func(t *testing.T) {
			status, body := e.do(t, rt.Method, rt.Pattern, e.tokens[tether.RoleAdmin], big)
			if status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, want 413: %.200s", status, body)
			}
			wantError(t, body, "too_large", "")
		})
	}
	// Just under the limit is read in full (and refused for its content).
	under := `{"name":"` + strings.Repeat("a", 1<<20-12) + `"}`
	status, body := e.do(t, "POST", "/api/v1/enrollment-tokens", e.tokens[tether.RoleAdmin], under)
	if status != http.StatusBadRequest {
		t.Fatalf("body under the limit: status %d, want 400: %.200s", status, body)
	}
	wantError(t, body, "invalid", "name")
}

func TestCreateCommandValidation(t *testing.T) {
	e := newEnv(t)
	agent := uuid.NewString()
	if status, body := e.do(t, "POST", "/api/v1/agents", e.tokens[tether.RoleAdmin], api.RegisterAgentRequest{ID: agent}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	restart := api.Action{Name: "restart"}
	tests := []struct {
		name  string
		req   api.CreateCommandRequest
		want  int
		field string
	}{
		{"unknown agent", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: uuid.NewString()}, Action: restart}, 400, "target.id"},
		{"agent id not a uuid", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: "web-1"}, Action: restart}, 400, "target.id"},
		{"no target type", api.CreateCommandRequest{Target: api.Target{ID: agent}, Action: restart}, 400, "target.type"},
		{"bad action name", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: api.Action{Name: "Re start"}}, 400, "action.name"},
		{"timeout below 1s", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart, Timeout: "500ms"}, 400, "timeout"},
		{"timeout above 24h", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart, Timeout: "24h1s"}, 400, "timeout"},
		{"negative timeout", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart, Timeout: "-1m"}, 400, "timeout"},
		{"timeout not a duration", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart, Timeout: "soon"}, 400, "timeout"},
		{"timeout 1s", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart, Timeout: "1s"}, 201, ""},
		{"timeout 24h", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart, Timeout: "24h"}, 201, ""},
		{"default timeout", api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: restart}, 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.do(t, "POST", "/api/v1/commands", e.tokens[tether.RoleOperator], tt.req)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, body)
			}
			if tt.want != http.StatusCreated {
				wantError(t, body, "invalid", tt.field)
				return
			}
			var c api.Command
			decodeInto(t, body, &c)
			want := tt.req.Timeout
			if want == "" {
				want = "5m"
			}
			d, _ := time.ParseDuration(want)
			if c.Timeout != d.String() || len(c.Orders) != 1 || !c.Orders[0].TimeoutAt.Equal(c.Orders[0].CreatedAt.Add(d)) {
				t.Errorf("command %+v: want a %s window", c, d)
			}
		})
	}
}
