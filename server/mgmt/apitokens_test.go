package mgmt_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
)

// exerciseTokens runs the tokens part of the scenario: an admin creates,
// lists and revokes the tokens of a person and of a script, whose commands
// to agent record their source; nobody else may.
func exerciseTokens(t *testing.T, c *checker, agent string) {
	t.Helper()
	admin, operator, viewer, registrar := c.e.tokens[tether.RoleAdmin], c.e.tokens[tether.RoleOperator],
		c.e.tokens[tether.RoleViewer], c.e.tokens[tether.RoleRegistrar]

	var alice, deploy, audit api.Token
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/tokens", token: admin, want: 201,
		body: api.CreateTokenRequest{Name: "alice", Role: "operator", Kind: "user", TTL: "720h"}}), &alice)
	if !strings.HasPrefix(alice.Token, "tth_") || alice.Role != "operator" || alice.Kind != "user" ||
		alice.ExpiresAt == nil || alice.Status != "active" || alice.CreatedBy != "test-admin" {
		t.Errorf("created alice's token %+v: want a secret, operator, user, an expiry, active, created by test-admin", alice)
	}
	if d := alice.ExpiresAt.Sub(alice.CreatedAt); d.Hours() != 720 {
		t.Errorf("alice's token lives %v, want 720h", d)
	}
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/tokens", token: admin, want: 201,
		body: api.CreateTokenRequest{Name: "ci-deploy", Role: "operator", Kind: "service"}}), &deploy)
	if deploy.Kind != "service" || deploy.ExpiresAt != nil {
		t.Errorf("created the script's token %+v: want a service token without expiry", deploy)
	}
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/tokens", token: admin, want: 201,
		body: map[string]any{"name": "audit", "role": "viewer", "kind": "user", "ttl": "0"}}), &audit)
	if audit.ExpiresAt != nil || audit.Role != "viewer" {
		t.Errorf("token with ttl 0: %+v; want a viewer token without expiry", audit)
	}

	// Commands record who sent them, and the kind of their token.
	send := api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agent}, Action: api.Action{Name: "restart"}}
	for _, tt := range []struct {
		tok          api.Token
		user, source string
	}{{alice, "alice", "user"}, {deploy, "ci-deploy", "service"}} {
		var cmd api.Command
		decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/commands", token: tt.tok.Token, want: 201, body: send}), &cmd)
		if cmd.User != tt.user || cmd.Source != tt.source {
			t.Errorf("command sent with %s's token: user %q, source %q; want %q, %q", tt.tok.Name, cmd.User, cmd.Source, tt.user, tt.source)
		}
		var shown api.Command
		decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/commands/" + cmd.ID, token: viewer, want: 200}), &shown)
		if shown.Source != tt.source {
			t.Errorf("command %s read back with source %q, want %q", cmd.ID, shown.Source, tt.source)
		}
	}
	// Audit's token reads and changes nothing.
	c.do(t, call{method: "GET", path: "/api/v1/agents/" + agent, token: audit.Token, want: 200})
	c.do(t, call{method: "POST", path: "/api/v1/commands", token: audit.Token, want: 403, body: send})

	// The list holds people's and services' tokens, not enrollment tokens,
	// and never a secret.
	list := func(query string) map[string]api.Token {
		var l api.TokenList
		decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/tokens" + query, token: admin, want: 200}), &l)
		byName := map[string]api.Token{}
		for _, tk := range l.Items {
			if tk.Token != "" {
				t.Errorf("list shows the secret of token %s", tk.Name)
			}
			if tk.Role == "registrar" || tk.Kind == "" {
				t.Errorf("list shows token %+v", tk)
			}
			byName[tk.Name] = tk
		}
		return byName
	}
	got := list("")
	for _, name := range []string{"alice", "ci-deploy", "audit", "test-admin", "test-operator", "test-viewer"} {
		if _, ok := got[name]; !ok {
			t.Errorf("tokens list lacks %s: %v", name, got)
		}
	}
	if len(got) != 6 {
		t.Errorf("tokens list has %d tokens, want 6: %v", len(got), got)
	}
	if got["ci-deploy"].Kind != "service" || got["alice"].Kind != "user" || got["test-admin"].Role != "admin" {
		t.Errorf("listed kinds and roles: %+v", got)
	}

	// Revoke alice's token: it is refused at once.
	c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + alice.ID, token: admin, want: 204})
	c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + alice.ID, token: admin, want: 204})
	wantError(t, c.do(t, call{method: "GET", path: "/api/v1/agents", token: alice.Token, want: 401}), "gone", "")
	if _, ok := list("")["alice"]; ok {
		t.Errorf("the list still shows alice's revoked token")
	}
	if tk := list("?all=true")["alice"]; tk.Status != "revoked" || tk.RevokedAt == nil {
		t.Errorf("all=true shows alice's token as %+v; want revoked", tk)
	}
	// An enrollment token is not revoked here.
	body := c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + tokenID(t, registrar), token: admin, want: 404})
	if e := wantError(t, body, "not_found", ""); !strings.Contains(e.Message, "enrollment-tokens") {
		t.Errorf("revoking an enrollment token: %q does not point at the enrollment-tokens route", e.Message)
	}

	errCases := []struct {
		call
		code, field string
	}{
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"role":"viewer","kind":"user"}`, want: 400, invalid: true}, "invalid", "name"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":" bob","role":"viewer","kind":"user"}`, want: 400}, "invalid", "name"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob\u0007","role":"viewer","kind":"user"}`, want: 400}, "invalid", "name"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"` + strings.Repeat("b", 129) + `","role":"viewer","kind":"user"}`, want: 400, invalid: true}, "invalid", "name"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","kind":"user"}`, want: 400, invalid: true}, "invalid", "role"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"root","kind":"user"}`, want: 400, invalid: true}, "invalid", "role"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"registrar","kind":"service"}`, want: 400, invalid: true}, "invalid", "role"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"viewer"}`, want: 400, invalid: true}, "invalid", "kind"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"viewer","kind":"robot"}`, want: 400, invalid: true}, "invalid", "kind"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"viewer","kind":"user","ttl":"soon"}`, want: 400}, "invalid", "ttl"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"viewer","kind":"user","ttl":"30s"}`, want: 400}, "invalid", "ttl"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"viewer","kind":"user","ttl":"-1h"}`, want: 400}, "invalid", "ttl"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":"bob","role":"viewer","kind":"user","groups":["web"]}`, want: 400, invalid: true}, "invalid", "groups"},
		{call{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"name":`, want: 400, invalid: true}, "invalid", ""},
		{call{method: "DELETE", path: "/api/v1/tokens/not-a-uuid", token: admin, want: 400, invalid: true}, "invalid", "id"},
		{call{method: "DELETE", path: "/api/v1/tokens/" + uuid.NewString(), token: admin, want: 404}, "not_found", ""},
		{call{method: "POST", path: "/api/v1/tokens", token: deploy.Token, body: api.CreateTokenRequest{Name: "x", Role: "admin", Kind: "user"}, want: 403}, "forbidden", ""},
	}
	// Operators (the person's and the script's tokens too), viewers and
	// registrars manage no users.
	for _, tok := range []string{operator, deploy.Token, viewer, registrar} {
		errCases = append(errCases,
			struct {
				call
				code, field string
			}{call{method: "POST", path: "/api/v1/tokens", token: tok, body: api.CreateTokenRequest{Name: "x", Role: "admin", Kind: "user"}, want: 403}, "forbidden", ""},
			struct {
				call
				code, field string
			}{call{method: "GET", path: "/api/v1/tokens", token: tok, want: 403}, "forbidden", ""},
			struct {
				call
				code, field string
			}{call{method: "DELETE", path: "/api/v1/tokens/" + tokenID(t, admin), token: tok, want: 403}, "forbidden", ""},
		)
	}
	for i, ec := range errCases {
		t.Run(fmt.Sprintf("%d %d %s %s", i, ec.want, ec.method, ec.path[:min(len(ec.path), 40)]), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}
	// None of the refused requests created a token.
	if got := list("?all=true"); len(got) != 6 {
		t.Errorf("after the refused requests: %d tokens, want 6: %v", len(got), got)
	}
}

// TestRevokeLastAdminToken revokes admin tokens until one is left: that one
// is refused with a 409 that says why, and keeps working.
func TestRevokeLastAdminToken(t *testing.T) {
	e := newEnv(t)
	c := newChecker(t, e)
	first := e.tokens[tether.RoleAdmin]
	var second api.Token
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/tokens", token: first, want: 201,
		body: api.CreateTokenRequest{Name: "second-admin", Role: "admin", Kind: "user"}}), &second)
	// An expired admin token does not count as a usable one.
	e.newToken(t, tether.RoleAdmin, func(tok *tether.Token) {
		tok.Name, tok.ExpiresAt = "expired-admin", tok.CreatedAt.Add(-1)
	})

	// The second admin revokes the first: one is left.
	c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + tokenID(t, first), token: second.Token, want: 204})
	c.do(t, call{method: "GET", path: "/api/v1/tokens", token: first, want: 401})

	body := c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + second.ID, token: second.Token, want: 409})
	if e := wantError(t, body, "conflict", ""); !strings.Contains(e.Message, "last usable admin token") {
		t.Errorf("409 message %q does not say it is the last usable admin token", e.Message)
	}
	var list api.TokenList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/tokens", token: second.Token, want: 200}), &list)
	for _, tk := range list.Items {
		if tk.ID == second.ID && tk.Status != "active" {
			t.Errorf("the last admin token is %s, want active", tk.Status)
		}
	}

	// With another admin, it may go.
	var third api.Token
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/tokens", token: second.Token, want: 201,
		body: api.CreateTokenRequest{Name: "third-admin", Role: "admin", Kind: "user", TTL: "1h"}}), &third)
	c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + second.ID, token: third.Token, want: 204})
	c.do(t, call{method: "DELETE", path: "/api/v1/tokens/" + third.ID, token: third.Token, want: 409})
}

// TestEnrollmentTokensAreServiceTokens checks the kind the routes give:
// an enrollment token is a service token, and its agents' registrations
// are no commands, but an operator's default token is a user's.
func TestEnrollmentTokensAreServiceTokens(t *testing.T) {
	e := newEnv(t)
	status, body := e.do(t, "POST", "/api/v1/enrollment-tokens", e.tokens[tether.RoleOperator], api.CreateEnrollmentTokenRequest{})
	if status != http.StatusCreated {
		t.Fatalf("create enrollment token: %d %s", status, body)
	}
	var et api.EnrollmentToken
	decodeInto(t, body, &et)
	tok, err := e.store.Token(t.Context(), et.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Kind != tether.KindService || tok.Role != tether.RoleRegistrar {
		t.Errorf("enrollment token stored as %s %s, want a registrar service token", tok.Role, tok.Kind)
	}
}
