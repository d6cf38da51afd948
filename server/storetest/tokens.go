package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func newToken(name string, role tether.Role, created time.Time) *tether.Token {
	return &tether.Token{
		ID:         newID(),
		Name:       name,
		Role:       role,
		SecretHash: hash("secret of " + name),
		CreatedAt:  created,
		CreatedBy:  "admin",
	}
}

func checkToken(t *testing.T, got, want *tether.Token) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Role != want.Role ||
		got.MaxUses != want.MaxUses || got.Uses != want.Uses || got.CreatedBy != want.CreatedBy {
		t.Errorf("token = %+v, want %+v", got, want)
	}
	checkBytes(t, "SecretHash", got.SecretHash, want.SecretHash)
	checkStrings(t, "Groups", got.Groups, want.Groups)
	checkTime(t, "ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTime(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
	checkTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
}

func testToken(t *testing.T, s tether.Store) {
	enroll := newToken("enroll", tether.RoleRegistrar, t0)
	enroll.Groups = []string{"web", "eu-west"}
	enroll.MaxUses = 5
	enroll.ExpiresAt = at(24 * time.Hour)
	admin := newToken("admin", tether.RoleAdmin, at(time.Second))
	admin.CreatedBy = ""
	for _, tok := range []*tether.Token{enroll, admin} {
		must(t, s.CreateToken(ctx(t), tok))
	}
	for _, want := range []*tether.Token{enroll, admin} {
		got, err := s.Token(ctx(t), want.ID)
		must(t, err)
		checkToken(t, got, want)
	}

	_, err := s.Token(ctx(t), newID())
	wantCode(t, err, tether.ENOTFOUND)

	dup := newToken("dup", tether.RoleViewer, t0)
	dup.ID = admin.ID
	wantCode(t, s.CreateToken(ctx(t), dup), tether.ECONFLICT)
	got, err := s.Token(ctx(t), admin.ID)
	must(t, err)
	checkToken(t, got, admin)
}

func testTokens(t *testing.T, s tether.Store) {
	now := time.Now().UTC().Truncate(time.Second)
	base := now.Add(-time.Hour)
	admin := newToken("admin", tether.RoleAdmin, base)
	viewer := newToken("viewer", tether.RoleViewer, base.Add(time.Minute))
	enroll := newToken("enroll", tether.RoleRegistrar, base.Add(2*time.Minute))
	enroll.ExpiresAt = now.Add(time.Hour)
	expired := newToken("expired", tether.RoleRegistrar, base.Add(3*time.Minute))
	expired.ExpiresAt = now.Add(-time.Minute)
	revoked := newToken("revoked", tether.RoleViewer, base.Add(4*time.Minute))
	for _, tok := range []*tether.Token{admin, viewer, enroll, expired, revoked} {
		must(t, s.CreateToken(ctx(t), tok))
	}
	must(t, s.RevokeToken(ctx(t), revoked.ID, now))

	names := func(ts []*tether.Token) []string {
		var s []string
		for _, t := range ts {
			s = append(s, t.Name)
		}
		return s
	}
	tests := []struct {
		filter tether.TokenFilter
		want   []string
	}{
		{tether.TokenFilter{}, []string{"enroll", "viewer", "admin"}},
		{tether.TokenFilter{IncludeRevoked: true}, []string{"revoked", "expired", "enroll", "viewer", "admin"}},
		{tether.TokenFilter{Role: tether.RoleRegistrar}, []string{"enroll"}},
		{tether.TokenFilter{Role: tether.RoleRegistrar, IncludeRevoked: true}, []string{"expired", "enroll"}},
		{tether.TokenFilter{Role: tether.RoleViewer, IncludeRevoked: true}, []string{"revoked", "viewer"}},
		{tether.TokenFilter{Role: tether.RoleOperator}, nil},
	}
	for _, tt := range tests {
		got, err := s.Tokens(ctx(t), tt.filter)
		must(t, err)
		checkStrings(t, fmt.Sprintf("Tokens(%+v)", tt.filter), names(got), tt.want)
	}
}

func testRevokeToken(t *testing.T, s tether.Store) {
	tok := newToken("ops", tether.RoleOperator, t0)
	must(t, s.CreateToken(ctx(t), tok))
	must(t, s.RevokeToken(ctx(t), tok.ID, at(time.Hour)))
	got, err := s.Token(ctx(t), tok.ID)
	must(t, err)
	checkTime(t, "RevokedAt", got.RevokedAt, at(time.Hour))
	wantCode(t, got.Usable(at(time.Hour)), tether.EGONE)

	// Revoking again is not an error and keeps the first time.
	must(t, s.RevokeToken(ctx(t), tok.ID, at(2*time.Hour)))
	got, err = s.Token(ctx(t), tok.ID)
	must(t, err)
	checkTime(t, "RevokedAt after second revocation", got.RevokedAt, at(time.Hour))

	wantCode(t, s.RevokeToken(ctx(t), newID(), t0), tether.ENOTFOUND)
}
