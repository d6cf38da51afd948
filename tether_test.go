package tether_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func TestTransition(t *testing.T) {
	all := []tether.OrderStatus{tether.OrderPending, tether.OrderSent, tether.OrderSuccess, tether.OrderFailure}
	legal := map[[2]tether.OrderStatus]bool{
		{tether.OrderPending, tether.OrderSent}:    true,
		{tether.OrderPending, tether.OrderSuccess}: true,
		{tether.OrderPending, tether.OrderFailure}: true,
		{tether.OrderSent, tether.OrderSuccess}:    true,
		{tether.OrderSent, tether.OrderFailure}:    true,
	}
	for _, from := range all {
		for _, to := range all {
			err := tether.Transition(from, to)
			if legal[[2]tether.OrderStatus{from, to}] != (err == nil) {
				t.Errorf("Transition(%s, %s) = %v", from, to, err)
			}
			if err != nil && tether.ErrorCode(err) != tether.ECONFLICT {
				t.Errorf("Transition(%s, %s) code %s, want conflict", from, to, tether.ErrorCode(err))
			}
		}
	}
}

func TestRolePermissions(t *testing.T) {
	cases := []struct {
		role tether.Role
		perm tether.Permission
		want bool
	}{
		{tether.RoleAdmin, tether.PermTokensWrite, true},
		{tether.RoleOperator, tether.PermCommandsWrite, true},
		{tether.RoleViewer, tether.PermAgentsRead, true},
		{tether.RoleViewer, tether.PermCommandsWrite, false},
		{tether.RoleViewer, tether.PermTokensRead, false},
		{tether.RoleRegistrar, tether.PermAgentsRegister, true},
		{tether.RoleRegistrar, tether.PermAgentsRead, false},
		{tether.RoleViewer, tether.PermEventsRead, true},
		{tether.RoleOperator, tether.PermEventsRead, true},
		{tether.RoleAdmin, tether.PermEventsRead, true},
		{tether.RoleRegistrar, tether.PermEventsRead, false},
		{tether.Role("root"), tether.PermAgentsRead, false},
		{tether.RoleAdmin, tether.PermUsersManage, true},
		{tether.RoleOperator, tether.PermUsersManage, false},
		{tether.RoleViewer, tether.PermUsersManage, false},
		{tether.RoleRegistrar, tether.PermUsersManage, false},
	}
	for _, c := range cases {
		if got := c.role.Can(c.perm); got != c.want {
			t.Errorf("%s.Can(%s) = %v, want %v", c.role, c.perm, got, c.want)
		}
	}
	if tether.Role("root").Valid() || !tether.RoleRegistrar.Valid() {
		t.Error("Role.Valid is wrong")
	}
}

func TestTokenKind(t *testing.T) {
	for _, k := range tether.TokenKinds {
		if !k.Valid() {
			t.Errorf("%q is not valid", k)
		}
	}
	for _, k := range []tether.TokenKind{"", "robot", "User"} {
		if k.Valid() {
			t.Errorf("%q is valid", k)
		}
	}
	for _, r := range tether.Roles {
		want := tether.KindUser
		if r == tether.RoleRegistrar {
			want = tether.KindService
		}
		if got := tether.DefaultKind(r); got != want {
			t.Errorf("DefaultKind(%s) = %q, want %q", r, got, want)
		}
	}
}

func TestTokenUsable(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		tok  tether.Token
		want tether.Code
	}{
		{"fresh", tether.Token{}, ""},
		{"not yet expired", tether.Token{ExpiresAt: now.Add(time.Second)}, ""},
		{"expired", tether.Token{ExpiresAt: now}, tether.EEXPIRED},
		{"revoked", tether.Token{RevokedAt: now.Add(-time.Hour)}, tether.EGONE},
		{"uses left", tether.Token{MaxUses: 2, Uses: 1}, ""},
		{"used up", tether.Token{MaxUses: 2, Uses: 2}, tether.EGONE},
		{"unlimited", tether.Token{Uses: 1000}, ""},
	}
	for _, c := range cases {
		if got := tether.ErrorCode(c.tok.Usable(now)); got != c.want {
			t.Errorf("%s: code %q, want %q", c.name, got, c.want)
		}
	}
}

func TestAgentStatus(t *testing.T) {
	now := time.Now()
	w := 50 * time.Second
	for _, c := range []struct {
		seen time.Time
		want tether.AgentStatus
	}{
		{time.Time{}, tether.AgentNeverSeen},
		{now.Add(-time.Second), tether.AgentActive},
		{now.Add(-2 * w), tether.AgentActive},
		{now.Add(-2*w - time.Second), tether.AgentDisconnected},
	} {
		a := tether.Agent{LastSeen: c.seen}
		if got := a.StatusAt(now, w); got != c.want {
			t.Errorf("last seen %v ago: %s, want %s", now.Sub(c.seen), got, c.want)
		}
	}
}

func TestValidateGroups(t *testing.T) {
	for _, c := range []struct {
		groups []string
		ok     bool
	}{
		{nil, true},
		{[]string{"web", "db-1", "eu.west_2"}, true},
		{[]string{""}, false},
		{[]string{"-web"}, false},
		{[]string{"a b"}, false},
		{[]string{"web", "web"}, false},
	} {
		err := tether.ValidateGroups("groups", c.groups)
		if (err == nil) != c.ok {
			t.Errorf("ValidateGroups(%q) = %v", c.groups, err)
		}
		var e *tether.Error
		if err != nil && (!errors.As(err, &e) || e.Field != "groups") {
			t.Errorf("ValidateGroups(%q) error does not name the field: %v", c.groups, err)
		}
	}
}

func TestErrorCodeAndMessage(t *testing.T) {
	inner := fmt.Errorf("disk on fire")
	wrapped := fmt.Errorf("store: %w", &tether.Error{Code: tether.ENOTFOUND, Message: `agent "x" not found`, Err: inner})
	if tether.ErrorCode(wrapped) != tether.ENOTFOUND || tether.ErrorMessage(wrapped) != `agent "x" not found` {
		t.Fatalf("wrapped: %s %q", tether.ErrorCode(wrapped), tether.ErrorMessage(wrapped))
	}
	if tether.ErrorCode(inner) != tether.EINTERNAL || tether.ErrorMessage(inner) != "internal error" {
		t.Fatal("a plain error must be internal, and its text must not leak")
	}
	if tether.ErrorCode(nil) != "" {
		t.Fatal("nil error has a code")
	}
}

func TestBatchID(t *testing.T) {
	for _, tt := range []struct {
		b    tether.Batch
		want string
	}{
		{tether.Batch{AgentID: "3f2c0000-0000-4000-8000-000000000001", Sequence: 42}, "3f2c0000-0000-4000-8000-000000000001/42"},
		{tether.Batch{AgentID: "a", Sequence: 18446744073709551615}, "a/18446744073709551615"},
		{tether.Batch{AgentID: "a"}, ""},
		{tether.Batch{Sequence: 3, AgentName: "tether-server"}, ""},
	} {
		if got := tt.b.ID(); got != tt.want {
			t.Errorf("ID of %+v = %q, want %q", tt.b, got, tt.want)
		}
	}
}

func TestValidModule(t *testing.T) {
	for name, want := range map[string]bool{
		"logcollector": true, "agent": true, "a.b_c-1": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "Inventory": false, "a b": false, "a/b": false, "é": false,
	} {
		if got := tether.ValidModule(name); got != want {
			t.Errorf("ValidModule(%q) = %v, want %v", name, got, want)
		}
	}
}
