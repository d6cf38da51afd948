package mgmt

import (
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/authn"
)

// MinTokenTTL is the shortest lifetime an API token may be given.
const MinTokenTTL = time.Minute

// maxTokenName is the longest token name, in characters.
const maxTokenName = 128

// tokenRoles are the roles of the tokens of people and services;
// registrar tokens are enrollment tokens, made by their own route.
var tokenRoles = []tether.Role{tether.RoleAdmin, tether.RoleOperator, tether.RoleViewer}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	var req api.CreateTokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := validTokenName(req.Name); err != nil {
		return err
	}
	role := tether.Role(req.Role)
	switch {
	case req.Role == "":
		return tether.FieldError("role", "required: one of admin, operator, viewer")
	case role == tether.RoleRegistrar:
		return tether.FieldError("role", "registrar tokens are enrollment tokens: create them with POST /api/v1/enrollment-tokens")
	case !slices.Contains(tokenRoles, role):
		return tether.FieldError("role", "%q is not one of admin, operator, viewer", req.Role)
	}
	kind := tether.TokenKind(req.Kind)
	switch {
	case req.Kind == "":
		return tether.FieldError("kind", "required: user (a person) or service (automation)")
	case !kind.Valid():
		return tether.FieldError("kind", "%q is not one of user, service", req.Kind)
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < 0 || (d > 0 && d < MinTokenTTL) {
			return tether.FieldError("ttl", "want a duration of at least %s such as \"720h\", or \"0\" for no expiry", MinTokenTTL)
		}
		ttl = d
	}
	secret, tok := authn.NewAPIToken()
	now := s.o.Now().UTC()
	tok.Name, tok.Role, tok.Kind = req.Name, role, kind
	tok.CreatedAt, tok.CreatedBy = now, caller.Name
	if ttl > 0 {
		tok.ExpiresAt = now.Add(ttl)
	}
	if err := s.o.Store.CreateToken(r.Context(), tok); err != nil {
		return err
	}
	s.o.Log.Info("token created", "token", tok.ID, "name", tok.Name, "role", tok.Role, "kind", tok.Kind,
		"by", caller.Name)
	out := tokenJSON(tok, now)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// validTokenName checks the name of a person's or service's token: it is
// what their commands record as their user.
func validTokenName(name string) error {
	switch {
	case name == "":
		return tether.FieldError("name", "required: whose token it is, such as \"alice\" or \"ci-deploy\"")
	case len([]rune(name)) > maxTokenName:
		return tether.FieldError("name", "at most %d characters", maxTokenName)
	case strings.TrimSpace(name) != name:
		return tether.FieldError("name", "no spaces at the start or the end")
	case strings.ContainsFunc(name, unicode.IsControl):
		return tether.FieldError("name", "no control characters")
	}
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	all := r.URL.Query().Get("all") == "true"
	list, err := s.o.Store.Tokens(r.Context(), tether.TokenFilter{IncludeRevoked: all})
	if err != nil {
		return err
	}
	now := s.o.Now()
	out := api.TokenList{Items: make([]api.Token, 0, len(list))}
	for _, t := range list {
		if t.Role == tether.RoleRegistrar {
			continue // enrollment tokens: GET /api/v1/enrollment-tokens
		}
		out.Items = append(out.Items, tokenJSON(t, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want a token id (a lowercase UUID)")
	}
	t, err := s.o.Store.Token(r.Context(), id)
	if err != nil {
		return err
	}
	if t.Role == tether.RoleRegistrar {
		return tether.Errorf(tether.ENOTFOUND,
			"token %q not found: it is an enrollment token (revoke it with DELETE /api/v1/enrollment-tokens/%s)", id, id)
	}
	// The store refuses, atomically, to revoke the last usable admin
	// token (conflict).
	if err := s.o.Store.RevokeToken(r.Context(), id, s.o.Now().UTC()); err != nil {
		return err
	}
	s.o.Log.Info("token revoked", "token", id, "name", t.Name, "role", t.Role, "by", caller.Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func tokenJSON(t *tether.Token, now time.Time) api.Token {
	return api.Token{
		ID: t.ID, Name: t.Name, Role: string(t.Role), Kind: string(t.Kind),
		ExpiresAt: timePtr(t.ExpiresAt), RevokedAt: timePtr(t.RevokedAt),
		CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy, Status: tokenStatus(t, now),
	}
}

// tokenStatus is active, expired, used_up or revoked: why the token may or
// may not be used at now.
func tokenStatus(t *tether.Token, now time.Time) string {
	switch code := tether.ErrorCode(t.Usable(now)); {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case code == tether.EEXPIRED:
		return "expired"
	case code == tether.EGONE:
		return "used_up"
	}
	return "active"
}
