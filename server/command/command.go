// Package command is the server's command manager: it validates command
// requests, expands them into one order per target agent, wakes the agents'
// long-polls, and sweeps orders whose time window has passed.
package command

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/metrics"
)

// Timeout bounds of a command request.
const (
	DefaultTimeout = 5 * time.Minute
	MinTimeout     = time.Second
	MaxTimeout     = 24 * time.Hour
	maxArgsBytes   = 64 << 10
)

var actionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Manager creates command requests and their orders.
type Manager struct {
	Store    tether.Store
	Notifier tether.Notifier
	// Metrics, when set, counts created orders.
	Metrics *metrics.Metrics
	// Now returns the current time (time.Now when nil).
	Now func() time.Time
}

// New is what a caller asks for.
type New struct {
	Target  tether.Target
	Action  tether.Action
	Timeout time.Duration
	Source  string
	User    string
}

// Create validates n, stores the request and its orders in one transaction,
// and wakes the long-polls of the target agents.
func (m *Manager) Create(ctx context.Context, n New) (*tether.CommandRequest, []*tether.Order, error) {
	if err := validate(&n); err != nil {
		return nil, nil, err
	}
	now := m.now()
	req := &tether.CommandRequest{
		ID: uuid.NewString(), Target: n.Target, Action: n.Action, Timeout: n.Timeout,
		Source: n.Source, User: n.User, CreatedAt: now,
	}
	tmpl := tether.Order{
		RequestID: req.ID, Action: n.Action, Status: tether.OrderPending, User: n.User,
		CreatedAt: now, TimeoutAt: now.Add(n.Timeout),
	}
	var orders []*tether.Order
	switch n.Target.Type {
	case tether.TargetAgent, tether.TargetServer:
		// One order; a server order has no agent and a server node claims
		// it. The store refuses an order for an unknown agent.
		o := tmpl
		o.ID, o.AgentID = uuid.NewString(), n.Target.ID
		orders = []*tether.Order{&o}
		err := m.Store.CreateCommand(ctx, req, orders)
		if tether.ErrorCode(err) == tether.ENOTFOUND {
			return nil, nil, tether.FieldError("target.id", "no agent %q", n.Target.ID)
		} else if err != nil {
			return nil, nil, err
		}
	case tether.TargetGroup:
		var err error
		// Expanded to the members at this moment, in one transaction.
		if orders, err = m.Store.CreateGroupCommand(ctx, req, tmpl); err != nil {
			return nil, nil, err
		}
	}
	agentIDs := make([]string, 0, len(orders))
	for _, o := range orders {
		if o.AgentID != "" {
			agentIDs = append(agentIDs, o.AgentID)
		}
	}
	m.Notifier.Notify(agentIDs...)
	m.Metrics.OrderCreated(n.Action.Name, string(n.Target.Type), len(orders))
	return req, orders, nil
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

func validate(n *New) error {
	switch n.Target.Type {
	case tether.TargetAgent, tether.TargetGroup, tether.TargetServer:
	case "":
		return tether.FieldError("target.type", "required: one of agent, group, server")
	default:
		return tether.FieldError("target.type", "%q is not one of agent, group, server", n.Target.Type)
	}
	switch n.Target.Type {
	case tether.TargetAgent:
		if !tether.ValidID(n.Target.ID) {
			return tether.FieldError("target.id", "want an agent id (a lowercase UUID)")
		}
	case tether.TargetGroup:
		if err := tether.ValidateGroups("target.id", []string{n.Target.ID}); err != nil {
			return err
		}
	case tether.TargetServer:
		if n.Target.ID != "" {
			return tether.FieldError("target.id", "leave empty for a server target")
		}
	}
	if !actionNameRE.MatchString(n.Action.Name) {
		return tether.FieldError("action.name", "want 1 to 64 characters of a-z, 0-9, '.', '_', '-'")
	}
	if len(n.Action.Args) > maxArgsBytes {
		return &tether.Error{Code: tether.ETOOLARGE, Field: "action.args", Message: "action.args: larger than 64 KiB"}
	}
	if args := bytes.TrimSpace(n.Action.Args); len(args) > 0 && !bytes.Equal(args, []byte("null")) {
		var obj map[string]any
		if err := json.Unmarshal(args, &obj); err != nil {
			return tether.FieldError("action.args", "want a JSON object")
		}
	} else {
		n.Action.Args = nil
	}
	if err := checkAction(n.Target.Type, n.Action); err != nil {
		return err
	}
	if len(n.Action.Version) > 64 {
		return tether.FieldError("action.version", "longer than 64 characters")
	}
	if n.Timeout == 0 {
		n.Timeout = DefaultTimeout
	}
	if n.Timeout < MinTimeout || n.Timeout > MaxTimeout {
		return tether.FieldError("timeout", "%s is outside the allowed range %s to %s", n.Timeout, MinTimeout, MaxTimeout)
	}
	return nil
}

// Cancel fails every unfinished order of a request (or one order) with
// "cancelled" and returns how many orders changed. A result an agent
// reports later for a cancelled order is acknowledged and ignored.
func (m *Manager) Cancel(ctx context.Context, f tether.CancelFilter) (int, error) {
	n, sentTo, err := m.Store.CancelOrders(ctx, f, m.now())
	if err != nil {
		return 0, err
	}
	// Agents holding a cancelled order learn it on their next poll, which
	// this wakes: they skip the order if they have not started it.
	if len(sentTo) > 0 && m.Notifier != nil {
		m.Notifier.Notify(sentTo...)
	}
	return n, nil
}

// RunSweeper fails orders past their time window every interval until ctx
// ends. It is idempotent: every node of a cluster may run it.
func RunSweeper(ctx context.Context, store tether.CommandStore, interval time.Duration, log *slog.Logger, m *metrics.Metrics) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n, err := store.ExpireOrders(ctx, now.UTC())
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("sweep expired orders", "err", err)
			case n > 0:
				m.OrdersTimedOut(n)
				log.Info("orders timed out", "count", n)
			}
		}
	}
}
