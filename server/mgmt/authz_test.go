package mgmt_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/mgmt"
)

// publicRoutes are the only routes that may be served without a token.
var publicRoutes = map[string]bool{
	"GET /healthz":             true,
	"GET /readyz":              true,
	"GET /api/v1/openapi.json": true,
	"GET /metrics":             true,
}

func TestEveryRouteChecksItsPermission(t *testing.T) {
	e := newEnv(t)
	callers := []struct {
		name  string
		token string
		// role is "" for callers without a valid token.
		role tether.Role
	}{
		{"no token", "", ""},
		{"malformed token", "not-a-tether-token", ""},
		{"unknown token", "tth_" + strings.ReplaceAll(uuid.NewString(), "-", "") + "_secret", ""},
		{"wrong secret", e.tokens[tether.RoleAdmin] + "x", ""},
	}
	for _, r := range tether.Roles {
		callers = append(callers, struct {
			name  string
			token string
			role  tether.Role
		}{string(r), e.tokens[r], r})
	}
	for _, rt := range mgmt.Routes() {
		key := rt.Method + " " + rt.Pattern
		public := rt.Perm == ""
		if public != publicRoutes[key] {
			t.Errorf("%s: permission %q; only %v may be public", key, rt.Perm, publicRoutes)
		}
		if !public && !tether.RoleAdmin.Can(rt.Perm) {
			t.Errorf("%s checks %q, a permission no admin holds", key, rt.Perm)
		}
		path := strings.NewReplacer("{id}", uuid.NewString(), "{module}", "inventory", "{name}", "web",
			"{sha256}", strings.Repeat("ab", 32)).Replace(rt.Pattern)
		var body any
		if rt.Method == http.MethodPost {
			body = "{}"
		}
		for _, c := range callers {
			t.Run(key+"/"+c.name, func(t *testing.T) {
				status, data := e.doStatus(t, rt.Method, path, c.token, body)
				// Stated plainly, whatever the permissions say: a
				// viewer changes nothing (it cannot send nor cancel a
				// command), a registrar only registers agents, an
				// operator manages no users (API tokens).
				switch {
				case public:
				case c.role == tether.RoleViewer && rt.Method != http.MethodGet && status != http.StatusForbidden:
					t.Errorf("a viewer may %s: status %d", key, status)
				case c.role == tether.RoleRegistrar && key != "POST /api/v1/agents" && status != http.StatusForbidden:
					t.Errorf("a registrar may %s: status %d", key, status)
				case c.role == tether.RoleOperator && strings.HasPrefix(rt.Pattern, "/api/v1/tokens") && status != http.StatusForbidden:
					t.Errorf("an operator may manage users: %s: status %d", key, status)
				}
				switch {
				case public:
					if status == http.StatusUnauthorized || status == http.StatusForbidden {
						t.Errorf("public route answered %d: %s", status, data)
					}
				case c.role == "":
					if status != http.StatusUnauthorized {
						t.Errorf("status %d, want 401: %s", status, data)
					}
				case !c.role.Can(rt.Perm):
					if status != http.StatusForbidden {
						t.Errorf("%s lacks %s: status %d, want 403: %s", c.role, rt.Perm, status, data)
					}
				default:
					if status == http.StatusUnauthorized || status == http.StatusForbidden {
						t.Errorf("%s holds %s: status %d: %s", c.role, rt.Perm, status, data)
					}
				}
			})
		}
	}
}
