package comms

import (
	"context"
	"encoding/json"
	"slices"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/group"
)

// SetGroups implements the AgentService RPC: it carries out a set-group
// order of the calling agent, and only that.
func (s *Service) SetGroups(ctx context.Context, req *connect.Request[commsv1.SetGroupsRequest]) (*connect.Response[commsv1.SetGroupsResponse], error) {
	const method = "SetGroups"
	a, err := s.authenticate(ctx, req.Header())
	if err != nil {
		return nil, s.fail(method, err)
	}
	id, groups := req.Msg.GetOrderId(), req.Msg.GetGroups()
	if !tether.ValidID(id) {
		return nil, s.fail(method, tether.FieldError("order_id", "want the id of the set-group order"))
	}
	if groups == nil {
		groups = []string{}
	}
	if err := s.checkSetGroupOrder(ctx, a.ID, id, groups); err != nil {
		return nil, s.fail(method, err)
	}
	// The group service drops the cached record (Forget) when the groups
	// changed, before it wakes the agent's polls.
	gs := &group.Service{Store: s.o.Store, Notifier: s.o.Notifier, ForgetAgent: s.Forget, ForgetConfigs: s.ForgetConfigs}
	updated, err := gs.SetAgentGroups(ctx, a.ID, groups)
	if err != nil {
		return nil, s.fail(method, err)
	}
	version, err := s.configVersion(ctx, updated.Groups)
	if err != nil {
		return nil, s.fail(method, err)
	}
	s.o.Log.Info("agent groups set by order", "agent", a.ID, "order", id, "groups", updated.Groups)
	return connect.NewResponse(&commsv1.SetGroupsResponse{Groups: updated.Groups, ConfigVersion: version}), nil
}

// checkSetGroupOrder allows the change only for an unfinished set-group
// order of the agent whose groups argument is groups.
func (s *Service) checkSetGroupOrder(ctx context.Context, agentID, orderID string, groups []string) error {
	refuse := tether.FieldError("order_id", "not an open set-group order of this agent with these groups")
	o, err := s.o.Store.Order(ctx, orderID)
	switch {
	case tether.ErrorCode(err) == tether.ENOTFOUND:
		return refuse
	case err != nil:
		return err
	case o.AgentID != agentID || o.Action.Name != "set-group" || o.Status.Finished():
		return refuse
	}
	var args struct {
		Groups []string `json:"groups"`
	}
	if err := json.Unmarshal(o.Action.Args, &args); err != nil || !slices.Equal(args.Groups, groups) {
		return refuse
	}
	return nil
}
