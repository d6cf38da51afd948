package authn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tetherhq/tether"
)

// Token claims constants.
const (
	Issuer   = "tether"
	Audience = "tether-comms"
	// DefaultTokenTTL is the lifetime of an agent token.
	DefaultTokenTTL = 15 * time.Minute
	// reloadEvery bounds how often an unknown kid makes the keyring reread
	// the store.
	reloadEvery = 5 * time.Second
)

// Keyring signs and verifies agent tokens with the signing keys of the
// store. The newest key signs; every key verifies.
type Keyring struct {
	store tether.KeyStore
	ttl   time.Duration

	mu     sync.RWMutex
	keys   map[string]ed25519.PrivateKey
	signer *tether.SigningKey
	// lastMiss is when a token signed by an unknown key last made the
	// keyring read the store again.
	lastMiss time.Time

	// verified caches the tokens whose signature checked out: an agent
	// presents the same token on every call for its whole life, and an
	// Ed25519 verification costs far more than a map look-up. Expired
	// tokens are dropped at most pruneEvery after they expire, so that it
	// holds about one token per connected agent (a map never gives back
	// the room it grew to).
	vmu       sync.Mutex
	verified  map[[sha256.Size]byte]verifiedToken
	nextPrune int64 // UnixNano
}

// verifiedToken is what Verify learnt from a token it checked; times are
// UnixNano (half the room of time.Time, for thousands of entries).
type verifiedToken struct {
	subject   string
	notBefore int64
	expires   int64
}

// valid reports whether the token is valid at now (UnixNano).
func (v verifiedToken) valid(now int64) bool { return now < v.expires && now >= v.notBefore }

const (
	// maxVerified bounds the cache of verified tokens (about 130 bytes
	// each with the map's own room: BenchmarkVerifiedTokenCache).
	maxVerified = 1 << 18
	// pruneEvery is how often remembering a token drops the expired ones.
	pruneEvery = time.Minute
)

// NewKeyring loads the store's signing keys, creating the first one when
// there is none.
func NewKeyring(ctx context.Context, store tether.KeyStore, ttl time.Duration) (*Keyring, error) {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	k := &Keyring{store: store, ttl: ttl}
	if err := k.reload(ctx); err != nil {
		return nil, err
	}
	if k.signer == nil {
		if _, err := k.Rotate(ctx); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Rotate adds a new signing key: new tokens are signed with it, tokens
// signed with older keys stay valid until they expire.
func (k *Keyring) Rotate(ctx context.Context) (string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate signing key: %w", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	sk := &tether.SigningKey{ID: hex.EncodeToString(id[:]), Private: priv, CreatedAt: time.Now().UTC()}
	if err := k.store.AddSigningKey(ctx, sk); err != nil {
		return "", fmt.Errorf("store signing key: %w", err)
	}
	return sk.ID, k.reload(ctx)
}

func (k *Keyring) reload(ctx context.Context) error {
	list, err := k.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	keys := make(map[string]ed25519.PrivateKey, len(list))
	var signer *tether.SigningKey
	for _, sk := range list {
		if len(sk.Private) != ed25519.PrivateKeySize {
			return fmt.Errorf("signing key %s: bad length %d", sk.ID, len(sk.Private))
		}
		keys[sk.ID] = ed25519.PrivateKey(sk.Private)
		if sk.RetiredAt.IsZero() && (signer == nil || sk.CreatedAt.After(signer.CreatedAt)) {
			signer = sk
		}
	}
	k.mu.Lock()
	k.keys, k.signer = keys, signer
	k.mu.Unlock()
	return nil
}

// Refresh reads the signing keys from the store again: a key another node
// of the cluster added (rotate-signing-key runs on one node) signs this
// node's new tokens from then on.
func (k *Keyring) Refresh(ctx context.Context) error { return k.reload(ctx) }

// Run refreshes the keys every interval until ctx ends. Tokens signed by a
// key this node does not know yet are verified all the same: an unknown
// kid makes the keyring read the store (at most every 5 s).
func (k *Keyring) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = k.reload(ctx) // the next tick tries again; the keys in hand stay
		}
	}
}

// Claims are the claims of an agent token.
type Claims struct {
	jwt.RegisteredClaims
}

// Issue returns a signed token for the agent and its expiry.
func (k *Keyring) Issue(agentID string, now time.Time) (string, time.Time, error) {
	k.mu.RLock()
	signer := k.signer
	k.mu.RUnlock()
	if signer == nil {
		return "", time.Time{}, errors.New("no signing key")
	}
	exp := now.Add(k.ttl).Truncate(time.Second)
	claims := Claims{jwt.RegisteredClaims{
		Issuer:    Issuer,
		Subject:   agentID,
		Audience:  jwt.ClaimStrings{Audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(exp),
		ID:        uuid.NewString(),
	}}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = signer.ID
	s, err := t.SignedString(ed25519.PrivateKey(signer.Private))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return s, exp, nil
}

// Verify checks a token's signature, issuer, audience and times and returns
// the agent id it was issued to. Failures are EUNAUTHORIZED errors whose
// message says what is wrong without echoing the token.
func (k *Keyring) Verify(ctx context.Context, token string, now time.Time) (string, error) {
	sum := sha256.Sum256([]byte(token))
	k.vmu.Lock()
	v, ok := k.verified[sum]
	k.vmu.Unlock()
	if ok && v.valid(now.UnixNano()) {
		return v.subject, nil
	}
	v, err := k.verify(ctx, token, now)
	if err != nil {
		return "", err
	}
	k.remember(sum, v, now)
	return v.subject, nil
}

// remember caches a verified token, first dropping the expired entries
// when pruneEvery passed since the last time or the cache is full (and all
// of them if that is not enough).
func (k *Keyring) remember(sum [sha256.Size]byte, v verifiedToken, now time.Time) {
	at := now.UnixNano()
	k.vmu.Lock()
	defer k.vmu.Unlock()
	if k.verified == nil {
		k.verified = make(map[[sha256.Size]byte]verifiedToken)
	}
	if at >= k.nextPrune || len(k.verified) >= maxVerified {
		for s, e := range k.verified {
			if at >= e.expires {
				delete(k.verified, s)
			}
		}
		k.nextPrune = at + int64(pruneEvery)
		if len(k.verified) >= maxVerified {
			clear(k.verified)
		}
	}
	k.verified[sum] = v
}

// VerifiedTokens returns the number of verified tokens cached.
func (k *Keyring) VerifiedTokens() int {
	k.vmu.Lock()
	defer k.vmu.Unlock()
	return len(k.verified)
}

// verify checks a token the cache does not hold and returns what the cache
// keeps of it.
func (k *Keyring) verify(ctx context.Context, token string, now time.Time) (verifiedToken, error) {
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var claims Claims
	_, err := parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key := k.key(ctx, kid)
		if key == nil {
			return nil, fmt.Errorf("unknown signing key %q", kid)
		}
		return key.Public(), nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return verifiedToken{}, tether.Errorf(tether.EUNAUTHORIZED, "token expired: authenticate again")
	default:
		return verifiedToken{}, &tether.Error{Code: tether.EUNAUTHORIZED, Message: "invalid token", Err: err}
	}
	if !tether.ValidID(claims.Subject) {
		return verifiedToken{}, tether.Errorf(tether.EUNAUTHORIZED, "invalid token subject")
	}
	v := verifiedToken{subject: claims.Subject, expires: claims.ExpiresAt.UnixNano(), notBefore: math.MinInt64}
	if claims.NotBefore != nil {
		v.notBefore = claims.NotBefore.UnixNano()
	}
	return v, nil
}

func (k *Keyring) key(ctx context.Context, kid string) ed25519.PrivateKey {
	k.mu.RLock()
	key := k.keys[kid]
	k.mu.RUnlock()
	if key != nil || kid == "" {
		return key
	}
	k.mu.Lock()
	stale := time.Since(k.lastMiss) > reloadEvery
	if stale {
		k.lastMiss = time.Now()
	}
	k.mu.Unlock()
	if stale && k.reload(ctx) == nil {
		k.mu.RLock()
		key = k.keys[kid]
		k.mu.RUnlock()
	}
	return key
}
