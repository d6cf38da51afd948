package mgmt

import (
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/authn"
)

func (s *Server) registerAgent(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	var req api.RegisterAgentRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if !tether.ValidID(req.ID) {
		return tether.FieldError("id", "want the installation UUID in lowercase canonical form")
	}
	for _, f := range []struct{ name, v string }{
		{"name", req.Name}, {"hostname", req.Hostname}, {"os", req.OS}, {"arch", req.Arch}, {"version", req.Version},
	} {
		if len(f.v) > 256 || !utf8.ValidString(f.v) {
			return tether.FieldError(f.name, "want at most 256 bytes of UTF-8")
		}
	}
	name := req.Name
	if name == "" {
		name = req.Hostname
	}
	if name == "" {
		name = req.ID
	}
	ctx := r.Context()
	existing, err := s.o.Store.Agent(ctx, req.ID)
	switch {
	case tether.ErrorCode(err) == tether.ENOTFOUND:
		existing = nil
	case err != nil:
		return err
	case req.CurrentKey == "" || !authn.Matches(existing.KeyHash, req.CurrentKey):
		return tether.Errorf(tether.ECONFLICT, "agent %s is already enrolled: re-enroll from the installation that holds its key, or delete it first (tetherctl agents delete %s)", req.ID, req.ID)
	}
	key, hash := authn.NewAgentKey()
	now := s.o.Now().UTC()
	a := &tether.Agent{
		ID: req.ID, Name: name, KeyHash: hash, Hostname: req.Hostname, OS: req.OS,
		Arch: req.Arch, Version: req.Version, EnrolledAt: now, UpdatedAt: now, EnrolledBy: caller.ID,
	}
	tokenID := ""
	if caller.Role == tether.RoleRegistrar {
		tokenID = caller.ID
		a.Groups = caller.Groups
	}
	if existing != nil && len(a.Groups) == 0 {
		a.Groups = existing.Groups // a token without groups keeps the agent's
	}
	if err := s.o.Store.RegisterAgent(ctx, a, tokenID, now); err != nil {
		return err
	}
	s.o.AgentChanged(a.ID) // a now holds the agent as stored
	status := http.StatusCreated
	if existing != nil {
		status = http.StatusOK
	}
	s.o.Log.Info("agent enrolled", "agent", a.ID, "name", a.Name, "token", caller.ID, "re_enrolled", existing != nil)
	writeJSON(w, status, api.RegisterAgentResponse{Agent: s.agentJSON(a), AgentKey: key, CommsURLs: s.commsURLs(r),
		ReleasePublicKey: s.releasePublicKey()})
	return nil
}

// commsURLs returns the configured comms URLs, or the host the caller reached
// this API at with the comms port.
func (s *Server) commsURLs(r *http.Request) []string {
	if len(s.o.CommsURLs) > 0 || s.o.CommsPort == "" {
		return append([]string{}, s.o.CommsURLs...)
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	return []string{"https://" + net.JoinHostPort(host, s.o.CommsPort)}
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	q := r.URL.Query()
	f := tether.AgentFilter{Group: q.Get("group"), NamePrefix: q.Get("name"), After: q.Get("after")}
	now := s.o.Now().UTC()
	switch st := tether.AgentStatus(q.Get("status")); st {
	case "":
	case tether.AgentActive:
		f.SeenSince = now.Add(-2 * s.o.PollWindow)
	case tether.AgentDisconnected:
		f.NotSeenSince = now.Add(-2 * s.o.PollWindow)
	case tether.AgentNeverSeen:
		f.NeverSeen = true
	default:
		return tether.FieldError("status", "%q is not one of active, disconnected, enrolled", st)
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		return err
	}
	f.Limit = limit
	// Presence marks not yet flushed would make the status filters lag by
	// a flush interval; flush first so the filter and the answer agree.
	if s.o.Presence != nil && (f.SeenSince != time.Time{} || f.NotSeenSince != time.Time{} || f.NeverSeen) {
		if err := s.o.Presence.Flush(r.Context()); err != nil {
			return err
		}
	}
	list, err := s.o.Store.Agents(r.Context(), f)
	if err != nil {
		return err
	}
	out := api.AgentList{Items: make([]api.Agent, 0, len(list))}
	for _, a := range list {
		out.Items = append(out.Items, s.agentJSON(a))
	}
	if len(list) == limit {
		out.Next = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func limitParam(v string) (int, error) {
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, tether.FieldError("limit", "want a number from 1 to 1000")
	}
	return n, nil
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	a, err := s.agentParam(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.agentJSON(a))
	return nil
}

func (s *Server) agentParam(r *http.Request) (*tether.Agent, error) {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return nil, tether.FieldError("id", "want an agent id (a lowercase UUID)")
	}
	a, err := s.o.Store.Agent(r.Context(), id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, tether.NotFound("agent", id)
	}
	return a, err
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	a, err := s.agentParam(r)
	if err != nil {
		return err
	}
	if err := s.o.Store.DeleteAgent(r.Context(), a.ID); err != nil {
		return err
	}
	s.o.AgentChanged(a.ID)
	if s.o.Presence != nil {
		s.o.Presence.Forget(a.ID)
	}
	// Wake its long-polls so they notice at once.
	s.o.Notifier.Notify(a.ID)
	s.o.Log.Info("agent deleted", "agent", a.ID, "name", a.Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) agentState(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	a, err := s.agentParam(r)
	if err != nil {
		return err
	}
	module := r.PathValue("module")
	list, err := s.o.Store.State(r.Context(), a.ID, module)
	if err != nil {
		return err
	}
	out := api.StateList{AgentID: a.ID, Items: make([]api.StateEntry, 0, len(list))}
	for _, e := range list {
		out.Items = append(out.Items, api.StateEntry{Module: e.Module, Key: e.Key, Doc: e.Doc, UpdatedAt: e.UpdatedAt.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) agentJSON(a *tether.Agent) api.Agent {
	seen := a.LastSeen
	if s.o.Presence != nil {
		seen = s.o.Presence.LastSeen(a.ID, seen)
	}
	view := *a
	view.LastSeen = seen
	out := api.Agent{
		ID: a.ID, Name: a.Name, Groups: a.Groups, Status: string(view.StatusAt(s.o.Now(), s.o.PollWindow)),
		Hostname: a.Hostname, OS: a.OS, Arch: a.Arch, Version: a.Version,
		EnrolledAt: a.EnrolledAt.UTC(), LastSeen: timePtr(seen),
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	return out
}
