package authn

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
)

// APITokenPrefix starts every management API token, so that secret scanners
// can recognise one.
const APITokenPrefix = "tth_"

// NewAPIToken returns a fresh bearer token string and its stored form
// (ID and SecretHash set; the caller fills the rest).
func NewAPIToken() (string, *tether.Token) {
	id := uuid.NewString()
	secret := randomString(32)
	return APITokenPrefix + strings.ReplaceAll(id, "-", "") + "_" + secret,
		&tether.Token{ID: id, SecretHash: Hash(secret)}
}

// ParseAPIToken splits a bearer token into its id and secret. ok is false
// when s does not have the form of a Tether API token.
func ParseAPIToken(s string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(s, APITokenPrefix)
	if !found {
		return "", "", false
	}
	hexID, secret, found := strings.Cut(rest, "_")
	if !found || len(hexID) != 32 || secret == "" {
		return "", "", false
	}
	u, err := uuid.Parse(hexID)
	if err != nil {
		return "", "", false
	}
	return u.String(), secret, true
}

// NewAgentKey returns a fresh agent key and its hash.
func NewAgentKey() (key string, hash []byte) {
	key = randomString(32)
	return key, Hash(key)
}

// Hash returns the SHA-256 of a secret. Secrets here are 256-bit random
// strings, so a plain hash is enough to make a stolen database useless.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Matches reports in constant time whether secret hashes to hash.
func Matches(hash []byte, secret string) bool {
	return len(hash) == sha256.Size && subtle.ConstantTimeCompare(hash, Hash(secret)) == 1
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// BearerToken returns the token of an Authorization header value of the
// form "Bearer TOKEN" (the scheme is case-insensitive, RFC 7235).
func BearerToken(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(header[len(scheme):])
	return tok, tok != ""
}
