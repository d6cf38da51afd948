package mgmt

import (
	"cmp"
	"net/http"
	"slices"
	"strings"
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
	if err := s.checkUpgrade(req.Action); err != nil {
		return err
	}
	cr, orders, err := s.o.Commands.Create(r.Context(), command.New{
		Target:  tether.Target{Type: tether.TargetType(req.Target.Type), ID: req.Target.ID},
		Action:  tether.Action{Name: req.Action.Name, Args: req.Action.Args, Version: req.Action.Version},
		Timeout: timeout,
		Source:  string(caller.Kind),
		User:    caller.Name,
	})
	if err != nil {
		return err
	}
	s.o.Log.Info("command created", "command", cr.ID, "target_type", cr.Target.Type, "target", cr.Target.ID,
		"action", cr.Action.Name, "orders", len(orders), "user", cr.User)
	// The orders as GET /api/v1/orders?request= lists them: by creation
	// time, then id.
	slices.SortFunc(orders, func(a, b *tether.Order) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	writeJSON(w, http.StatusCreated, commandWithOrders(cr, orders))
	return nil
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	q := r.URL.Query()
	f := tether.CommandFilter{AgentID: q.Get("agent"), Status: tether.OrderStatus(q.Get("status")), Cursor: q.Get("cursor")}
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
	ctx := r.Context()
	list, next, err := s.o.Store.Commands(ctx, f)
	if err != nil {
		return err
	}
	ids := make([]string, len(list))
	for i, cr := range list {
		ids[i] = cr.ID
	}
	// The counts of the whole page in one query.
	counts, err := s.o.Store.CommandCounts(ctx, ids)
	if err != nil {
		return err
	}
	out := api.CommandList{Items: make([]api.Command, 0, len(list)), Next: next}
	for _, cr := range list {
		out.Items = append(out.Items, commandJSON(cr, counts[cr.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want a command id (a lowercase UUID)")
	}
	// The request and its orders in one read, by creation time then id:
	// the counts and the first page of orders agree.
	cr, orders, err := s.o.Store.Command(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, commandWithOrders(cr, orders))
	return nil
}

// commandWithOrders describes a request with all its orders (sorted as
// GET /api/v1/orders?request= lists them): counts of them all, and the
// first page of them.
func commandWithOrders(cr *tether.CommandRequest, orders []*tether.Order) api.Command {
	counts := map[tether.OrderStatus]int{}
	for _, o := range orders {
		counts[o.Status]++
	}
	out := commandJSON(cr, counts)
	out.Orders = ordersJSON(orders[:min(len(orders), tether.MaxOrderLimit)])
	return out
}

// commandJSON describes a request whose orders are counts (by status;
// nil when it has none).
func commandJSON(cr *tether.CommandRequest, counts map[tether.OrderStatus]int) api.Command {
	out := api.Command{
		ID:        cr.ID,
		Target:    api.Target{Type: string(cr.Target.Type), ID: cr.Target.ID},
		Action:    actionJSON(cr.Action),
		Timeout:   cr.Timeout.String(),
		Source:    cr.Source,
		User:      cr.User,
		CreatedAt: cr.CreatedAt.UTC(),
		Status:    string(summarize(counts)),
		Counts:    map[string]int{},
	}
	for st, n := range counts {
		out.Counts[string(st)] = n
		out.Total += n
	}
	return out
}

func ordersJSON(orders []*tether.Order) []api.Order {
	out := make([]api.Order, 0, len(orders))
	for _, o := range orders {
		out = append(out, orderJSON(o))
	}
	return out
}

func actionJSON(a tether.Action) api.Action {
	return api.Action{Name: a.Name, Args: a.Args, Version: a.Version}
}

// summarize gives a request the status of its least advanced order, or once
// all finished, failure if any failed. A request with no orders left (its
// agents were deleted) did not succeed: failure.
func summarize(counts map[tether.OrderStatus]int) tether.OrderStatus {
	switch {
	case counts[tether.OrderPending] > 0:
		return tether.OrderPending
	case counts[tether.OrderSent] > 0:
		return tether.OrderSent
	case counts[tether.OrderFailure] > 0 || counts[tether.OrderSuccess] == 0:
		return tether.OrderFailure
	}
	return tether.OrderSuccess
}

func orderJSON(o *tether.Order) api.Order {
	out := api.Order{
		OrderID: o.ID, RequestID: o.RequestID, AgentID: o.AgentID, AgentGroups: o.AgentGroups, Action: actionJSON(o.Action),
		Status: string(o.Status), CreatedAt: o.CreatedAt.UTC(), SentAt: timePtr(o.SentAt), ReceivedAt: timePtr(o.ReceivedAt),
		FinishedAt: timePtr(o.FinishedAt), TimeoutAt: o.TimeoutAt.UTC(), Attempts: o.Attempts,
	}
	if o.Status.Finished() {
		out.Result = &api.Result{Code: o.Result.Code, Message: o.Result.Message, Data: o.Result.Data}
	}
	return out
}

func (s *Server) cancelCommand(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	if err := noBody(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want a command id (a lowercase UUID)")
	}
	n, err := s.o.Commands.Cancel(r.Context(), tether.CancelFilter{RequestID: id})
	if err != nil {
		return err
	}
	s.o.Log.Info("command cancelled", "command", id, "orders", n, "user", caller.Name)
	writeJSON(w, http.StatusOK, api.CancelResponse{Cancelled: n})
	return nil
}

func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	if err := noBody(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want an order id (a lowercase UUID)")
	}
	n, err := s.o.Commands.Cancel(r.Context(), tether.CancelFilter{OrderID: id})
	if err != nil {
		return err
	}
	s.o.Log.Info("order cancelled", "order", id, "changed", n == 1, "user", caller.Name)
	writeJSON(w, http.StatusOK, api.CancelResponse{Cancelled: n})
	return nil
}

func (s *Server) listActions(w http.ResponseWriter, _ *http.Request, _ *tether.Token) error {
	specs := command.Builtins()
	out := api.ActionList{Items: make([]api.ActionSpec, 0, len(specs))}
	for _, sp := range specs {
		a := api.ActionSpec{Name: sp.Name, Target: string(tether.TargetAgent), Doc: sp.Doc, Args: make([]api.ArgSpec, 0, len(sp.Args))}
		if sp.Server {
			a.Target = string(tether.TargetServer)
		}
		for _, arg := range sp.Args {
			a.Args = append(a.Args, api.ArgSpec{Name: arg.Name, Type: string(arg.Type), Required: arg.Required, Doc: arg.Doc})
		}
		out.Items = append(out.Items, a)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
