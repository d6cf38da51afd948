package tether

import "time"

// Token is a management API bearer token. The secret is shown once, when the
// token is created; the server keeps only its SHA-256 hash.
//
// A token in the registrar role is an enrollment token: it can do nothing but
// register agents, optionally only into Groups, at most MaxUses times, and
// only until ExpiresAt.
type Token struct {
	ID   string
	Name string
	Role Role
	// Kind says who holds the token: a person or automation. A command
	// request records it as its Source.
	Kind TokenKind
	// SecretHash is the SHA-256 of the secret part of the token.
	SecretHash []byte
	// Groups an enrollment token places its agents in.
	Groups []string
	// MaxUses is how many agents the token may enroll (0: unlimited).
	MaxUses int
	// Uses is how many it has enrolled.
	Uses int
	// ExpiresAt is when the token stops working (zero: never).
	ExpiresAt time.Time
	// RevokedAt is when the token was revoked (zero: not revoked).
	RevokedAt time.Time
	CreatedAt time.Time
	// CreatedBy is the name of the token that created this one ("" for the
	// bootstrap admin token).
	CreatedBy string
}

// TokenKind says who holds a management API token.
type TokenKind string

// Token kinds.
const (
	// KindUser is a token held by a person.
	KindUser TokenKind = "user"
	// KindService is a token held by automation: scripts, pipelines,
	// installers. Enrollment tokens are service tokens.
	KindService TokenKind = "service"
)

// TokenKinds lists every token kind.
var TokenKinds = []TokenKind{KindUser, KindService}

// Valid reports whether k is a known kind.
func (k TokenKind) Valid() bool { return k == KindUser || k == KindService }

// DefaultKind is the kind of a token of role r created without one:
// service for enrollment (registrar) tokens, user for the others.
func DefaultKind(r Role) TokenKind {
	if r == RoleRegistrar {
		return KindService
	}
	return KindUser
}

// Usable returns nil when the token may be used at now, or an error saying
// why it may not: revoked, expired or used up.
func (t *Token) Usable(now time.Time) error {
	switch {
	case !t.RevokedAt.IsZero():
		return Errorf(EGONE, "token %s was revoked", t.ID)
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return Errorf(EEXPIRED, "token %s expired at %s", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return Errorf(EGONE, "token %s has been used %d of %d times", t.ID, t.Uses, t.MaxUses)
	}
	return nil
}

// TokenFilter selects tokens in a list.
type TokenFilter struct {
	// Role, when set, keeps tokens of that role.
	Role Role
	// IncludeRevoked keeps revoked and expired tokens too.
	IncludeRevoked bool
}
