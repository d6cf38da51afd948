package storetest

import (
	"fmt"
	"sync"
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
	if got.ID != want.ID || got.Name != want.Name || got.Role != want.Role || got.Kind != want.Kind ||
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
	enroll.Kind = tether.KindService
	admin := newToken("admin", tether.RoleAdmin, at(time.Second))
	admin.CreatedBy = ""
	admin.Kind = tether.KindUser
	script := newToken("deploy", tether.RoleOperator, at(2*time.Second))
	script.Kind = tether.KindService
	for _, tok := range []*tether.Token{enroll, admin, script} {
		must(t, s.CreateToken(ctx(t), tok))
	}
	for _, want := range []*tether.Token{enroll, admin, script} {
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

// testTokenKind checks that a token created without a kind gets its role's
// default, and that an unknown kind is refused.
func testTokenKind(t *testing.T, s tether.Store) {
	for _, tt := range []struct {
		role tether.Role
		want tether.TokenKind
	}{
		{tether.RoleAdmin, tether.KindUser},
		{tether.RoleOperator, tether.KindUser},
		{tether.RoleViewer, tether.KindUser},
		{tether.RoleRegistrar, tether.KindService},
	} {
		tok := newToken(string(tt.role), tt.role, t0)
		must(t, s.CreateToken(ctx(t), tok))
		if tok.Kind != tt.want {
			t.Errorf("CreateToken of a %s token without a kind set Kind %q, want %q", tt.role, tok.Kind, tt.want)
		}
		got, err := s.Token(ctx(t), tok.ID)
		must(t, err)
		if got.Kind != tt.want {
			t.Errorf("%s token created without a kind reads back as %q, want %q", tt.role, got.Kind, tt.want)
		}
	}
	bad := newToken("bad", tether.RoleViewer, t0)
	bad.Kind = "robot"
	err := s.CreateToken(ctx(t), bad)
	wantCode(t, err, tether.EINVALID)
	if e, ok := err.(*tether.Error); !ok || e.Field != "kind" {
		t.Errorf("CreateToken with kind robot: %v; want an error on the field kind", err)
	}
	_, err = s.Token(ctx(t), bad.ID)
	wantCode(t, err, tether.ENOTFOUND)
}

// testRevokeLastAdmin checks that the last usable admin token cannot be
// revoked, while tokens that are not usable admins can.
func testRevokeLastAdmin(t *testing.T, s tether.Store) {
	now := time.Now().UTC().Truncate(time.Second)
	first := newToken("first", tether.RoleAdmin, now.Add(-time.Hour))
	second := newToken("second", tether.RoleAdmin, now.Add(-time.Hour))
	expired := newToken("expired", tether.RoleAdmin, now.Add(-time.Hour))
	expired.ExpiresAt = now.Add(-time.Minute)
	later := newToken("later", tether.RoleAdmin, now.Add(-time.Hour))
	later.ExpiresAt = now.Add(time.Hour)
	ops := newToken("ops", tether.RoleOperator, now.Add(-time.Hour))
	for _, tok := range []*tether.Token{first, second, expired, later, ops} {
		must(t, s.CreateToken(ctx(t), tok))
	}
	// later is usable at now: first and second may go.
	must(t, s.RevokeToken(ctx(t), first.ID, now))
	must(t, s.RevokeToken(ctx(t), second.ID, now))
	// later is the last usable admin token; an expired one does not count.
	wantCode(t, s.RevokeToken(ctx(t), later.ID, now), tether.ECONFLICT)
	got, err := s.Token(ctx(t), later.ID)
	must(t, err)
	checkTime(t, "RevokedAt of the refused revocation", got.RevokedAt, time.Time{})
	// Tokens that are not usable admins go whatever happens.
	must(t, s.RevokeToken(ctx(t), expired.ID, now))
	must(t, s.RevokeToken(ctx(t), ops.ID, now))
	// Revoking a revoked admin token again is still not an error.
	must(t, s.RevokeToken(ctx(t), first.ID, now.Add(time.Minute)))
	got, err = s.Token(ctx(t), first.ID)
	must(t, err)
	checkTime(t, "RevokedAt of first", got.RevokedAt, now)
	// Once later has expired it counts no more: at that time it may be
	// revoked, since it revokes no usable admin.
	must(t, s.RevokeToken(ctx(t), later.ID, now.Add(2*time.Hour)))
}

// testRevokeLastAdminConcurrent revokes two admin tokens, the only two
// usable ones, at once, many times: exactly one revocation succeeds each
// time. The tokens of a round expire before the next round's time, so that
// its survivor does not count then.
func testRevokeLastAdminConcurrent(t *testing.T, s tether.Store) {
	base := time.Now().UTC().Truncate(time.Second)
	for round := range 20 {
		now := base.Add(time.Duration(round) * time.Hour)
		var ids []string
		for _, name := range []string{"a", "b"} {
			tok := newToken(fmt.Sprintf("%s%d", name, round), tether.RoleAdmin, now)
			tok.ExpiresAt = now.Add(30 * time.Minute)
			must(t, s.CreateToken(ctx(t), tok))
			ids = append(ids, tok.ID)
		}
		errs := make(chan error, len(ids))
		var start sync.WaitGroup
		start.Add(1)
		for _, id := range ids {
			go func() {
				start.Wait()
				errs <- s.RevokeToken(ctx(t), id, now)
			}()
		}
		start.Done()
		var ok, conflict int
		for range ids {
			switch err := <-errs; tether.ErrorCode(err) {
			case "":
				ok++
			case tether.ECONFLICT:
				conflict++
			default:
				t.Fatalf("round %d: RevokeToken: %v", round, err)
			}
		}
		if ok != 1 || conflict != 1 {
			t.Fatalf("round %d: %d revocations succeeded and %d conflicted, want 1 and 1", round, ok, conflict)
		}
		var usable int
		for _, id := range ids {
			tok, err := s.Token(ctx(t), id)
			must(t, err)
			if tok.Usable(now) == nil {
				usable++
			}
		}
		if usable != 1 {
			t.Fatalf("round %d: %d usable admin tokens left, want 1", round, usable)
		}
	}
}

// testCreateFirstAdmin creates the bootstrap admin token once: a store that
// holds an admin token already, revoked or not, creates no other.
func testCreateFirstAdmin(t *testing.T, s tether.Store) {
	bad := newToken("viewer", tether.RoleViewer, t0)
	created, err := s.CreateFirstAdmin(ctx(t), bad)
	wantCode(t, err, tether.EINVALID)
	if e, ok := err.(*tether.Error); !ok || e.Field != "role" {
		t.Errorf("CreateFirstAdmin of a viewer token: %v; want an error on the field role", err)
	}
	if created {
		t.Errorf("CreateFirstAdmin of a viewer token reports it created it")
	}
	// Tokens of other roles do not count.
	must(t, s.CreateToken(ctx(t), bad))

	first := newToken("admin", tether.RoleAdmin, t0)
	first.CreatedBy = ""
	created, err = s.CreateFirstAdmin(ctx(t), first)
	must(t, err)
	if !created {
		t.Fatal("CreateFirstAdmin on a store without admin tokens did not create one")
	}
	if first.Kind != tether.KindUser {
		t.Errorf("CreateFirstAdmin without a kind set Kind %q, want %q", first.Kind, tether.KindUser)
	}
	got, err := s.Token(ctx(t), first.ID)
	must(t, err)
	checkToken(t, got, first)

	second := newToken("again", tether.RoleAdmin, at(time.Minute))
	created, err = s.CreateFirstAdmin(ctx(t), second)
	must(t, err)
	if created {
		t.Error("CreateFirstAdmin created a second admin token")
	}
	_, err = s.Token(ctx(t), second.ID)
	wantCode(t, err, tether.ENOTFOUND)
	// CreateToken still creates other admin tokens.
	must(t, s.CreateToken(ctx(t), second))
}

// testCreateFirstAdminRevoked: a revoked admin token counts.
func testCreateFirstAdminRevoked(t *testing.T, s tether.Store) {
	old := newToken("old", tether.RoleAdmin, t0)
	old.RevokedAt = at(time.Hour)
	must(t, s.CreateToken(ctx(t), old))
	created, err := s.CreateFirstAdmin(ctx(t), newToken("admin", tether.RoleAdmin, at(2*time.Hour)))
	must(t, err)
	if created {
		t.Error("CreateFirstAdmin created an admin token in a store that holds a revoked one")
	}
}

// testCreateFirstAdminConcurrent: of many nodes starting at once, one
// creates the bootstrap admin token.
func testCreateFirstAdminConcurrent(t *testing.T, s tether.Store) {
	const n = 10
	created := make([]bool, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Go(func() {
			start.Wait()
			var err error
			created[i], err = s.CreateFirstAdmin(ctx(t), newToken(fmt.Sprintf("admin-%d", i), tether.RoleAdmin, t0))
			if err != nil {
				t.Errorf("CreateFirstAdmin: %v", err)
			}
		})
	}
	start.Done()
	wg.Wait()
	yes := 0
	for _, c := range created {
		if c {
			yes++
		}
	}
	admins, err := s.Tokens(ctx(t), tether.TokenFilter{Role: tether.RoleAdmin, IncludeRevoked: true})
	must(t, err)
	if yes != 1 || len(admins) != 1 {
		t.Errorf("%d calls created the first admin token and %d are stored, want 1 and 1", yes, len(admins))
	}
}
