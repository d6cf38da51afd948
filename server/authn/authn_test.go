package authn_test

import (
	"context"
	"encoding/base64"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/sqlite"
)

func openStore(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestTokenRoundTripAndFailures(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	keys, err := authn.NewKeyring(ctx, store, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	now := time.Now()
	tok, exp, err := keys.Issue(id, now)
	if err != nil {
		t.Fatal(err)
	}
	if d := exp.Sub(now); d < 14*time.Minute || d > 15*time.Minute {
		t.Fatalf("expiry in %s, want about 15m", d)
	}
	got, err := keys.Verify(ctx, tok, now)
	if err != nil || got != id {
		t.Fatalf("Verify = %q, %v; want %q", got, err, id)
	}
	// Verified tokens are cached: the cache still honours the token's
	// times (its expiry is checked below).
	if got, err := keys.Verify(ctx, tok, now); err != nil || got != id {
		t.Fatalf("second Verify = %q, %v; want %q", got, err, id)
	}
	if _, err := keys.Verify(ctx, tok, now.Add(-2*time.Minute)); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
		t.Errorf("Verify before the token's not-before time: error %v, want code %s", err, tether.EUNAUTHORIZED)
	}

	// A second node on the same store verifies the token: keys are shared.
	other, err := authn.NewKeyring(ctx, store, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := other.Verify(ctx, tok, now); err != nil || got != id {
		t.Fatalf("other node: Verify = %q, %v", got, err)
	}

	parts := strings.Split(tok, ".")
	forgedClaims := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"` + uuid.NewString() + `","iss":"tether","aud":["tether-comms"],"exp":9999999999}`))
	for name, bad := range map[string]string{
		"expired":   tok,
		"forged":    parts[0] + "." + forgedClaims + "." + parts[2],
		"garbage":   "not.a.token",
		"alg none":  base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".",
		"empty":     "",
		"wrong sig": parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64)),
	} {
		at := now
		if name == "expired" {
			at = now.Add(16 * time.Minute)
		}
		_, err := keys.Verify(ctx, bad, at)
		if tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("%s: Verify error %v, want code %s", name, err, tether.EUNAUTHORIZED)
		}
	}
}

func TestRotationKeepsOldTokensValid(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	keys, err := authn.NewKeyring(ctx, store, 0)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	old, _, _ := keys.Issue(id, time.Now())
	if _, err := keys.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	fresh, _, _ := keys.Issue(id, time.Now())
	if strings.Split(old, ".")[0] == strings.Split(fresh, ".")[0] {
		t.Fatal("rotation did not change the kid of new tokens")
	}
	for _, tok := range []string{old, fresh} {
		if _, err := keys.Verify(ctx, tok, time.Now()); err != nil {
			t.Fatalf("token rejected after rotation: %v", err)
		}
	}
}

func TestAPITokenParse(t *testing.T) {
	s, tok := authn.NewAPIToken()
	id, secret, ok := authn.ParseAPIToken(s)
	if !ok || id != tok.ID || !authn.Matches(tok.SecretHash, secret) {
		t.Fatalf("round trip failed: %q %q %v", id, secret, ok)
	}
	for _, bad := range []string{"", "tth_", "tth_abc_def", "xyz_" + s[4:], s[:37]} {
		if _, _, ok := authn.ParseAPIToken(bad); ok {
			t.Errorf("ParseAPIToken(%q) accepted", bad)
		}
	}
	if authn.Matches(tok.SecretHash, secret+"x") {
		t.Fatal("a different secret matched")
	}
}

func FuzzParseAPIToken(f *testing.F) {
	s, _ := authn.NewAPIToken()
	f.Add(s)
	f.Add("tth_00000000000000000000000000000000_x")
	f.Fuzz(func(t *testing.T, in string) {
		id, secret, ok := authn.ParseAPIToken(in)
		if ok && (!tether.ValidID(id) || secret == "") {
			t.Fatalf("accepted %q with id %q", in, id)
		}
	})
}

func TestVerifiedTokensLeaveTheCacheOnceExpired(t *testing.T) {
	ctx := context.Background()
	keys, err := authn.NewKeyring(ctx, openStore(t), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for range 50 {
		tok, _, err := keys.Issue(uuid.NewString(), t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Verify(ctx, tok, t0); err != nil {
			t.Fatal(err)
		}
	}
	if n := keys.VerifiedTokens(); n != 50 {
		t.Fatalf("%d tokens cached, want 50", n)
	}
	// Two minutes on, the 50 have expired: the next token verified drops
	// them.
	later := t0.Add(2 * time.Minute)
	tok, _, err := keys.Issue(uuid.NewString(), later)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, tok, later); err != nil {
		t.Fatal(err)
	}
	if n := keys.VerifiedTokens(); n != 1 {
		t.Fatalf("%d tokens cached after the others expired, want 1", n)
	}
}

// BenchmarkVerifiedTokenCache measures the heap a cached verified token
// takes (the map's room included): b.N tokens, each verified once.
//
//	go test -run '^$' -bench VerifiedTokenCache -benchtime 20000x ./server/authn/
func BenchmarkVerifiedTokenCache(b *testing.B) {
	ctx := context.Background()
	keys, err := authn.NewKeyring(ctx, openStore(b), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	toks := make([]string, b.N)
	for i := range toks {
		if toks[i], _, err = keys.Issue(uuid.NewString(), now); err != nil {
			b.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for _, tok := range toks {
		if _, err := keys.Verify(ctx, tok, now); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/float64(b.N), "B/token")
	runtime.KeepAlive(toks)
	runtime.KeepAlive(keys)
}
