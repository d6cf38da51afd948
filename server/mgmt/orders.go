package mgmt

import (
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
)

// actionNameRE is the form of an action name (as command.Manager checks it).
var actionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	q := r.URL.Query()
	f := tether.OrderFilter{
		RequestID: q.Get("request"), AgentID: q.Get("agent"), Group: q.Get("group"),
		Status: tether.OrderStatus(q.Get("status")), Action: q.Get("action"), Cursor: q.Get("cursor"),
	}
	switch {
	case f.RequestID != "" && !tether.ValidID(f.RequestID):
		return tether.FieldError("request", "want a command id (a lowercase UUID)")
	case f.AgentID != "" && !tether.ValidID(f.AgentID):
		return tether.FieldError("agent", "want an agent id (a lowercase UUID)")
	case f.Status != "" && !f.Status.Valid():
		return tether.FieldError("status", "%q is not one of pending, sent, success, failure", f.Status)
	case f.Action != "" && !actionNameRE.MatchString(f.Action):
		return tether.FieldError("action", "want 1 to 64 characters of a-z, 0-9, '.', '_', '-'")
	}
	if f.Group != "" {
		if err := tether.ValidateGroups("group", []string{f.Group}); err != nil {
			return err
		}
	}
	var err error
	if f.CreatedAfter, err = timeParam(q, "created_after"); err != nil {
		return err
	}
	if f.CreatedBefore, err = timeParam(q, "created_before"); err != nil {
		return err
	}
	if f.Limit, err = limitParam(q.Get("limit")); err != nil {
		return err
	}
	list, next, err := s.o.Store.Orders(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.OrderList{Items: ordersJSON(list), Next: next})
	return nil
}

// timeParam parses an RFC 3339 time from the query (zero when absent).
func timeParam(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, tether.FieldError(name, "want an RFC 3339 time such as 2024-05-01T12:00:00Z")
	}
	return t, nil
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want an order id (a lowercase UUID)")
	}
	o, err := s.o.Store.Order(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, orderJSON(o))
	return nil
}
