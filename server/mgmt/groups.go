package mgmt

import (
	"net/http"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
)

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	var req api.CreateGroupRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	g, err := s.o.Groups.Create(r.Context(), req.Name, req.Description, req.Config)
	if err != nil {
		return err
	}
	s.o.Log.Info("group created", "group", g.Name, "version", g.Version)
	writeJSON(w, http.StatusCreated, groupJSON(g))
	return nil
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	list, err := s.o.Groups.List(r.Context())
	if err != nil {
		return err
	}
	out := api.GroupList{Items: make([]api.Group, 0, len(list))}
	for _, g := range list {
		out.Items = append(out.Items, groupJSON(g))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	g, err := s.o.Groups.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, groupJSON(g))
	return nil
}

func (s *Server) updateGroup(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	name := r.PathValue("name")
	if err := tether.ValidateGroups("name", []string{name}); err != nil {
		return err
	}
	var req api.UpdateGroupRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	g, err := s.o.Groups.Update(r.Context(), name, req.Description, req.Config)
	if err != nil {
		return err
	}
	s.o.Log.Info("group updated", "group", g.Name, "version", g.Version)
	writeJSON(w, http.StatusOK, groupJSON(g))
	return nil
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	name := r.PathValue("name")
	if err := s.o.Groups.Delete(r.Context(), name); err != nil {
		return err
	}
	s.o.Log.Info("group deleted", "group", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) setAgentGroups(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	// The service reads the agent: an unknown one is not found there.
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want an agent id (a lowercase UUID)")
	}
	var req api.SetAgentGroupsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Groups == nil {
		return tether.FieldError("groups", "required: the agent's full list of groups ([] for none)")
	}
	a, err := s.o.Groups.SetAgentGroups(r.Context(), id, req.Groups)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return tether.NotFound("agent", id)
	} else if err != nil {
		return err
	}
	// s.o.Groups told AgentChanged before it woke the agent's polls.
	s.o.Log.Info("agent groups set", "agent", a.ID, "groups", a.Groups)
	writeJSON(w, http.StatusOK, s.agentJSON(a))
	return nil
}

func groupJSON(g *tether.Group) api.Group {
	return api.Group{
		Name: g.Name, Description: g.Description, Config: string(g.Config), Version: g.Version,
		Members: g.Members, CreatedAt: g.CreatedAt.UTC(), UpdatedAt: g.UpdatedAt.UTC(),
	}
}
