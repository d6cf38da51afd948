package mgmt

import (
	"net/http"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/command"
)

func (s *Server) createCommand(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	var req api.CreateCommandRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	var timeout time.Duration
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil {
			return tether.FieldError("timeout", "want a duration such as \"30s\" or \"5m\"")
		}
		timeout = d
	}
	cr, orders, err := s.o.Commands.Create(r.Context(), command.New{
		Target:  tether.Target{Type: tether.TargetType(req.Target.Type), ID: req.Target.ID},
		Action:  tether.Action{Name: req.Action.Name, Args: req.Action.Args, Version: req.Action.Version},
		Timeout: timeout,
		Source:  "user",
		User:    caller.Name,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, commandJSON(cr, orders, true))
	return nil
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	q := r.URL.Query()
	f := tether.CommandFilter{AgentID: q.Get("agent"), Status: tether.OrderStatus(q.Get("status"))}
	if f.AgentID != "" && !tether.ValidID(f.AgentID) {
		return tether.FieldError("agent", "want an agent id (a lowercase UUID)")
	}
	if f.Status != "" && !f.Status.Valid() {
		return tether.FieldError("status", "%q is not one of pending, sent, success, failure", f.Status)
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		return err
	}
	f.Limit = limit
	list, _, err := s.o.Store.Commands(r.Context(), f)
	if err != nil {
		return err
	}
	out := api.CommandList{Items: make([]api.Command, 0, len(list))}
	for _, cr := range list {
		// The status summary needs the orders; requests in this version
		// have one order each.
		_, orders, err := s.o.Store.Command(r.Context(), cr.ID)
		if err != nil {
			return err
		}
		out.Items = append(out.Items, commandJSON(cr, orders, false))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want a command id (a lowercase UUID)")
	}
	cr, orders, err := s.o.Store.Command(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, commandJSON(cr, orders, true))
	return nil
}

func commandJSON(cr *tether.CommandRequest, orders []*tether.Order, withOrders bool) api.Command {
	out := api.Command{
		ID:        cr.ID,
		Target:    api.Target{Type: string(cr.Target.Type), ID: cr.Target.ID},
		Action:    actionJSON(cr.Action),
		Timeout:   cr.Timeout.String(),
		Source:    cr.Source,
		User:      cr.User,
		CreatedAt: cr.CreatedAt.UTC(),
		Status:    summarize(orders),
		Total:     len(orders),
		Counts:    map[string]int{},
	}
	for _, o := range orders {
		out.Counts[string(o.Status)]++
	}
	if withOrders {
		out.Orders = make([]api.Order, 0, len(orders))
		for _, o := range orders {
			out.Orders = append(out.Orders, orderJSON(o))
		}
	}
	return out
}

func actionJSON(a tether.Action) api.Action {
	return api.Action{Name: a.Name, Args: a.Args, Version: a.Version}
}

// summarize gives a request the status of its least advanced order, or once
// all finished, failure if any failed. A request with no orders left (its
// agent was deleted) did not succeed: failure.
func summarize(orders []*tether.Order) string {
	if len(orders) == 0 {
		return string(tether.OrderFailure)
	}
	pending, sent, failed := false, false, false
	for _, o := range orders {
		switch o.Status {
		case tether.OrderPending:
			pending = true
		case tether.OrderSent:
			sent = true
		case tether.OrderFailure:
			failed = true
		}
	}
	switch {
	case pending:
		return string(tether.OrderPending)
	case sent:
		return string(tether.OrderSent)
	case failed:
		return string(tether.OrderFailure)
	}
	return string(tether.OrderSuccess)
}

func orderJSON(o *tether.Order) api.Order {
	out := api.Order{
		OrderID: o.ID, RequestID: o.RequestID, AgentID: o.AgentID, Action: actionJSON(o.Action),
		Status: string(o.Status), CreatedAt: o.CreatedAt.UTC(), SentAt: timePtr(o.SentAt),
		FinishedAt: timePtr(o.FinishedAt), TimeoutAt: o.TimeoutAt.UTC(), Attempts: o.Attempts,
	}
	if o.Status.Finished() {
		out.Result = &api.Result{Code: o.Result.Code, Message: o.Result.Message, Data: o.Result.Data}
	}
	return out
}
