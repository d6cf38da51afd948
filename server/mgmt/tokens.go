package mgmt

import (
	"net/http"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/authn"
)

// DefaultEnrollmentTTL is the lifetime of an enrollment token created
// without a ttl.
const DefaultEnrollmentTTL = 24 * time.Hour

func (s *Server) createEnrollmentToken(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	var req api.CreateEnrollmentTokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := tether.ValidateGroups("groups", req.Groups); err != nil {
		return err
	}
	ttl := DefaultEnrollmentTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < 0 {
			return tether.FieldError("ttl", "want a duration such as \"24h\" or \"30m\", or \"0\" for no expiry")
		}
		ttl = d
	}
	if req.MaxUses < 0 {
		return tether.FieldError("max_uses", "want 0 (unlimited) or more")
	}
	if len(req.Name) > 128 {
		return tether.FieldError("name", "at most 128 characters")
	}
	secret, tok := authn.NewAPIToken()
	now := s.o.Now().UTC()
	tok.Name = req.Name
	if tok.Name == "" {
		tok.Name = "enrollment"
	}
	tok.Role, tok.Kind = tether.RoleRegistrar, tether.KindService
	tok.Groups = req.Groups
	tok.MaxUses = req.MaxUses
	tok.CreatedAt = now
	tok.CreatedBy = caller.Name
	if ttl > 0 {
		tok.ExpiresAt = now.Add(ttl)
	}
	if err := s.o.Store.CreateToken(r.Context(), tok); err != nil {
		return err
	}
	out := enrollmentTokenJSON(tok, now)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listEnrollmentTokens(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	all := r.URL.Query().Get("all") == "true"
	list, err := s.o.Store.Tokens(r.Context(), tether.TokenFilter{Role: tether.RoleRegistrar, IncludeRevoked: all})
	if err != nil {
		return err
	}
	now := s.o.Now()
	out := api.EnrollmentTokenList{Items: make([]api.EnrollmentToken, 0, len(list))}
	for _, t := range list {
		out.Items = append(out.Items, enrollmentTokenJSON(t, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeEnrollmentToken(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want a token id (a lowercase UUID)")
	}
	t, err := s.o.Store.Token(r.Context(), id)
	if err != nil {
		return err
	}
	if t.Role != tether.RoleRegistrar {
		return tether.NotFound("enrollment token", id)
	}
	if err := s.o.Store.RevokeToken(r.Context(), id, s.o.Now().UTC()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func enrollmentTokenJSON(t *tether.Token, now time.Time) api.EnrollmentToken {
	out := api.EnrollmentToken{
		ID: t.ID, Name: t.Name, Groups: t.Groups, MaxUses: t.MaxUses, Uses: t.Uses,
		ExpiresAt: timePtr(t.ExpiresAt), RevokedAt: timePtr(t.RevokedAt),
		CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy, Status: tokenStatus(t, now),
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
