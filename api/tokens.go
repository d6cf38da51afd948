package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Token kinds: who holds a token.
const (
	// KindUser is a token held by a person.
	KindUser = "user"
	// KindService is a token held by automation (scripts, pipelines).
	KindService = "service"
)

// CreateTokenRequest is the body of POST /api/v1/tokens: an API token for
// a person or a service. Enrollment tokens have their own route.
type CreateTokenRequest struct {
	// Name says whose token it is: commands sent with it record it as
	// their user (at most 128 characters, no control characters).
	Name string `json:"name"`
	// Role is admin, operator or viewer.
	Role string `json:"role"`
	// Kind is user (a person) or service (automation): commands sent with
	// the token record it as their source.
	Kind string `json:"kind"`
	// TTL is how long the token works, as a Go duration of at least a
	// minute ("720h"); empty or "0": it never expires.
	TTL string `json:"ttl,omitempty"`
}

// Token describes an API token of a person or a service. Token is set only
// in the answer to its creation.
type Token struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Token string `json:"token,omitempty"`
	// Role is admin, operator or viewer.
	Role string `json:"role"`
	// Kind is user or service.
	Kind      string     `json:"kind"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	// CreatedBy is the name of the token that created it ("" for the
	// bootstrap admin token).
	CreatedBy string `json:"created_by"`
	// Status is active, expired or revoked.
	Status string `json:"status"`
}

// TokenList is the answer of GET /api/v1/tokens.
type TokenList struct {
	Items []Token `json:"items"`
}

// CreateToken creates an API token for a person or a service (admin only).
// The answer is the only one that carries the token's secret (Token.Token).
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (*Token, error) {
	return call[Token](ctx, c, http.MethodPost, "/api/v1/tokens", nil, req)
}

// ListTokens lists the API tokens of people and services, never their
// secrets nor enrollment tokens (admin only); includeRevoked also returns
// revoked and expired ones.
func (c *Client) ListTokens(ctx context.Context, includeRevoked bool) (*TokenList, error) {
	var q url.Values
	if includeRevoked {
		q = url.Values{"all": {"true"}}
	}
	return call[TokenList](ctx, c, http.MethodGet, "/api/v1/tokens", q, nil)
}

// RevokeToken revokes an API token by id (admin only). The server refuses
// (409, code conflict) to revoke the last usable admin token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("revoke token: empty id")
	}
	return c.Do(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}
