package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/authn"
)

// adminToken creates an admin token, named root, in the store of s.
func (s *realServer) adminToken(t *testing.T) string {
	t.Helper()
	secret, tok := authn.NewAPIToken()
	tok.Name, tok.Role, tok.Kind, tok.CreatedAt = "root", tether.RoleAdmin, tether.KindUser, time.Now().UTC()
	if err := s.store.CreateToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return secret
}

// runAs runs tetherctl against s with token.
func (s *realServer) runAs(t *testing.T, token string, args ...string) result {
	t.Helper()
	return runInput(t, nil, "", append([]string{"--server", s.srv.URL, "--ca-cert", s.caFile, "--token", token}, args...)...)
}

// secretOf returns the token printed after "Token (shown only now):" in
// the table output of tokens create.
func secretOf(t *testing.T, stdout string) string {
	t.Helper()
	_, rest, ok := strings.Cut(stdout, "Token (shown only now):\n")
	fields := strings.Fields(rest)
	if !ok || len(fields) == 0 || !strings.HasPrefix(fields[0], "tth_") {
		t.Fatalf("no token in the output:\n%s", stdout)
	}
	return fields[0]
}

// TestTokensAgainstARealServer drives tokens create, list and revoke
// against the management API with real storage: an admin makes a token
// for a person and one for a script, their commands record their kind as
// their source, and nobody else may manage tokens.
func TestTokensAgainstARealServer(t *testing.T) {
	ctx := context.Background()
	s := newRealServer(t)
	root := s.adminToken(t)
	agentID := uuid.NewString()
	if _, err := s.client(t).RegisterAgent(ctx, api.RegisterAgentRequest{ID: agentID, Name: "web-1"}); err != nil {
		t.Fatal(err)
	}

	// A person's token, in a table.
	r := s.runAs(t, root, "tokens", "create", "--name", "alice", "--role", "operator", "--kind", "user", "--ttl", "720h").ok(t)
	for _, want := range []string{"Name:", "alice", "Role:", "operator", "Kind:", "user", "Expires:", "Token (shown only now):", "tetherctl tokens revoke"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tokens create lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "never") {
		t.Errorf("a token with --ttl 720h never expires:\n%s", r.stdout)
	}
	alice := secretOf(t, r.stdout)

	// A script's token, in JSON.
	deploy := decode[api.Token](t, s.runAs(t, root, "tokens", "create", "--name", "ci-deploy", "--role", "operator",
		"--kind", "service", "-o", "json").ok(t).stdout)
	if !strings.HasPrefix(deploy.Token, "tth_") || deploy.Kind != "service" || deploy.Role != "operator" ||
		deploy.ExpiresAt != nil || deploy.CreatedBy != "root" || deploy.Status != "active" {
		t.Errorf("tokens create -o json: %+v", deploy)
	}

	// Their commands record who sent them and the kind of their token.
	for _, tt := range []struct{ token, user, source string }{
		{alice, "alice", "user"}, {deploy.Token, "ci-deploy", "service"}, {s.token, "ops", "user"},
	} {
		cmd := decode[api.Command](t, s.runAs(t, tt.token, "commands", "send", "--agent", agentID, "restart", "-o", "json").ok(t).stdout)
		if cmd.User != tt.user || cmd.Source != tt.source {
			t.Errorf("command sent by %s: user %q, source %q; want %q, %q", tt.user, cmd.User, cmd.Source, tt.user, tt.source)
		}
		r := s.runAs(t, root, "commands", "show", cmd.ID).ok(t)
		if !strings.Contains(r.stdout, "User:") || !strings.Contains(r.stdout, "Source:") ||
			!strings.Contains(r.stdout, " "+tt.user+"\n") || !strings.Contains(r.stdout, " "+tt.source+"\n") {
			t.Errorf("commands show does not give user %s and source %s:\n%s", tt.user, tt.source, r.stdout)
		}
	}

	// The list: people's and services' tokens, no secret, no enrollment token.
	if _, err := s.client(t).CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{Name: "installer"}); err != nil {
		t.Fatal(err)
	}
	r = s.runAs(t, root, "tokens", "list").ok(t)
	for _, want := range []string{"NAME", "ROLE", "KIND", "STATUS", "CREATED BY", "alice", "ci-deploy", "service", "root", "ops"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tokens list lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "installer") || strings.Contains(r.stdout, "tth_") {
		t.Errorf("tokens list shows an enrollment token or a secret:\n%s", r.stdout)
	}
	list := decode[api.TokenList](t, s.runAs(t, root, "tokens", "list", "-o", "json").ok(t).stdout)
	names := map[string]api.Token{}
	for _, tk := range list.Items {
		names[tk.Name] = tk
		if tk.Token != "" {
			t.Errorf("tokens list -o json shows the secret of %s", tk.Name)
		}
	}
	if len(names) != 4 || names["alice"].Kind != "user" || names["ci-deploy"].Kind != "service" || names["root"].Role != "admin" {
		t.Errorf("tokens list -o json: %+v", list.Items)
	}

	// Operators, people or scripts, manage no tokens.
	for _, tok := range []string{s.token, alice, deploy.Token} {
		for _, args := range [][]string{
			{"tokens", "list"},
			{"tokens", "create", "--name", "mallory", "--role", "admin", "--kind", "user"},
			{"tokens", "revoke", names["root"].ID},
		} {
			r := s.runAs(t, tok, args...)
			if r.code != exitFailure {
				t.Errorf("%v as an operator: exit %d, want 1", args, r.code)
			}
			oneErrorLine(t, r.stderr, "(forbidden)")
		}
	}

	// Revoke alice's token: it is refused at once.
	r = s.runAs(t, root, "tokens", "revoke", names["alice"].ID).ok(t)
	if want := "token " + names["alice"].ID + " revoked\n"; r.stdout != want {
		t.Errorf("tokens revoke: %q, want %q", r.stdout, want)
	}
	if got := decode[map[string]string](t, s.runAs(t, root, "tokens", "revoke", names["alice"].ID, "-o", "json").ok(t).stdout); got["status"] != "revoked" {
		t.Errorf("tokens revoke -o json: %v", got)
	}
	r = s.runAs(t, alice, "agents", "list")
	if r.code != exitFailure {
		t.Errorf("a revoked token still works: exit %d", r.code)
	}
	oneErrorLine(t, r.stderr, "revoked")
	r = s.runAs(t, root, "tokens", "list", "--all").ok(t)
	if !strings.Contains(r.stdout, "revoked") {
		t.Errorf("tokens list --all does not show alice's revoked token:\n%s", r.stdout)
	}

	// The last usable admin token stays.
	r = s.runAs(t, root, "tokens", "revoke", names["root"].ID)
	if r.code != exitFailure {
		t.Errorf("revoking the last admin token: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "last usable admin token")
	s.runAs(t, root, "tokens", "list").ok(t)
}

func TestTokensCreateUsageErrors(t *testing.T) {
	s := newRealServer(t)
	root := s.adminToken(t)
	full := []string{"--name", "bob", "--role", "viewer", "--kind", "user"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--role", "viewer", "--kind", "user"}, "--name is required"},
		{[]string{"--name", "bob", "--kind", "user"}, "--role is required: admin, operator or viewer"},
		{[]string{"--name", "bob", "--role", "root", "--kind", "user"}, `--role "root": want admin, operator or viewer`},
		{[]string{"--name", "bob", "--role", "registrar", "--kind", "service"}, "enrollment-tokens create"},
		{[]string{"--name", "bob", "--role", "viewer"}, "--kind is required: user (a person) or service"},
		{[]string{"--name", "bob", "--role", "viewer", "--kind", "robot"}, `--kind "robot": want user or service`},
		{append(full, "--ttl", "soon"), `--ttl "soon"`},
		{append(full, "--ttl", "30s"), "at least 1m"},
		{append(full, "--ttl", "-1h"), `--ttl "-1h"`},
		{append(full, "extra"), "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := s.runAs(t, root, append([]string{"tokens", "create"}, tt.args...)...)
			if r.code != exitUsage {
				t.Errorf("exit code %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			oneErrorLine(t, r.stderr, tt.want)
		})
	}
	if list := decode[api.TokenList](t, s.runAs(t, root, "tokens", "list", "-o", "json").ok(t).stdout); len(list.Items) != 2 {
		t.Errorf("usage errors created tokens: %+v", list.Items)
	}
	// A name the server refuses is an API error naming the field.
	r := s.runAs(t, root, "tokens", "create", "--name", " bob", "--role", "viewer", "--kind", "user")
	if r.code != exitFailure {
		t.Errorf("a name with a leading space: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "name")
}
