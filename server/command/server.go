package command

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/metrics"
)

// ServerHandler runs a server action and returns its final status and
// result.
type ServerHandler func(ctx context.Context, o *tether.Order) (tether.OrderStatus, tether.Result)

// ServerRunner executes orders whose target is the server: every node runs
// one, and the store's claim makes sure each order runs on one node only.
type ServerRunner struct {
	Store    tether.CommandStore
	Handlers map[string]ServerHandler
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	// Interval between claims (default 500 ms).
	Interval time.Duration
}

// Run claims and runs server orders until ctx ends.
func (r *ServerRunner) Run(ctx context.Context) {
	every := r.Interval
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.runOnce(ctx)
		}
	}
}

func (r *ServerRunner) runOnce(ctx context.Context) {
	orders, err := r.Store.ClaimServerOrders(ctx, 10, time.Now().UTC())
	if err != nil {
		if ctx.Err() == nil {
			r.Log.Warn("claim server orders", "err", err)
		}
		return
	}
	for _, o := range orders {
		status, res := tether.OrderFailure, tether.Result{Message: "unknown server action " + o.Action.Name}
		if h, ok := r.Handlers[o.Action.Name]; ok {
			status, res = h(ctx, o)
		}
		now := time.Now().UTC()
		if _, err := r.Store.FinishOrder(ctx, "", o.ID, status, res, now); err != nil {
			r.Log.Warn("finish server order", "order", o.ID, "err", err)
			continue
		}
		r.Metrics.OrderFinished(o.Action.Name, string(status), o.CreatedAt, now)
		r.Log.Info("server order done", "order", o.ID, "action", o.Action.Name, "status", status, "message", res.Message)
	}
}

// Archiver removes finished orders older than the retention period, after
// writing each to the event sinks as a "commands" event.
type Archiver struct {
	Store     tether.CommandStore
	Sinks     []tether.Sink
	Retention time.Duration
	Log       *slog.Logger
	// Interval between passes (default 1 minute).
	Interval time.Duration
	// Exclusive, when set, runs each pass: the nodes of a cluster give it
	// a lock they share, so that one node at a time archives (two at once
	// would both write the same orders to the sinks). It calls pass when
	// this node holds the lock, and returns nil without calling it when
	// another node does.
	Exclusive func(ctx context.Context, pass func(context.Context) error) error
}

// archiveBatch is how many orders one pass moves at a time.
const archiveBatch = 1000

// Run archives every interval until ctx ends.
func (a *Archiver) Run(ctx context.Context) {
	every := a.Interval
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n, err := a.pass(ctx, now.UTC()); err != nil && ctx.Err() == nil {
				a.Log.Warn("archive finished orders", "err", err)
			} else if n > 0 {
				a.Log.Info("finished orders archived", "count", n)
			}
		}
	}
}

// pass runs Once, under Exclusive when set.
func (a *Archiver) pass(ctx context.Context, now time.Time) (n int, err error) {
	if a.Exclusive == nil {
		return a.Once(ctx, now)
	}
	err = a.Exclusive(ctx, func(ctx context.Context) error {
		n, err = a.Once(ctx, now)
		return err
	})
	return n, err
}

// archived is the payload of a "commands" event: an order with the request
// it came from, under the names the order's fields have in queries
// (agent.groups, command.source, command.target.type, …).
type archived struct {
	Agent   archivedAgent   `json:"agent"`
	Command archivedCommand `json:"command"`
	// Times of the order's life and how many times it was delivered.
	CreatedAt  time.Time  `json:"created_at"`
	SentAt     *time.Time `json:"sent_at,omitempty"`
	ReceivedAt *time.Time `json:"received_at,omitempty"`
	FinishedAt time.Time  `json:"finished_at"`
	Attempts   int        `json:"attempts"`
}

type archivedAgent struct {
	ID     string   `json:"id,omitempty"`
	Groups []string `json:"groups"`
}

type archivedCommand struct {
	RequestID string         `json:"request_id"`
	OrderID   string         `json:"order_id"`
	Source    string         `json:"source,omitempty"`
	User      string         `json:"user,omitempty"`
	Target    archivedTarget `json:"target"`
	Action    archivedAction `json:"action"`
	Timeout   string         `json:"timeout,omitempty"`
	Status    string         `json:"status"`
	Result    archivedResult `json:"result"`
}

type archivedTarget struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

type archivedAction struct {
	Name    string          `json:"name"`
	Args    json.RawMessage `json:"args,omitempty"`
	Version string          `json:"version,omitempty"`
}

type archivedResult struct {
	Code    int             `json:"code"`
	Message string          `json:"message,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// archiveRecord describes an order and its request (nil when the request
// is gone: its fields are then left out).
func archiveRecord(o *tether.Order, r *tether.CommandRequest) archived {
	rec := archived{
		Agent: archivedAgent{ID: o.AgentID, Groups: o.AgentGroups},
		Command: archivedCommand{
			RequestID: o.RequestID, OrderID: o.ID, User: o.User,
			Action: archivedAction{Name: o.Action.Name, Args: o.Action.Args, Version: o.Action.Version},
			Status: string(o.Status),
			Result: archivedResult{Code: o.Result.Code, Message: o.Result.Message, Data: o.Result.Data},
		},
		CreatedAt: o.CreatedAt, SentAt: timePtr(o.SentAt), ReceivedAt: timePtr(o.ReceivedAt),
		FinishedAt: o.FinishedAt, Attempts: o.Attempts,
	}
	if rec.Agent.Groups == nil {
		rec.Agent.Groups = []string{}
	}
	if r != nil {
		rec.Command.Source = r.Source
		rec.Command.Target = archivedTarget{Type: string(r.Target.Type), ID: r.Target.ID}
		if r.Timeout > 0 {
			rec.Command.Timeout = r.Timeout.String()
		}
	}
	return rec
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Once archives every order that finished before now minus the retention
// period and returns how many it moved. An order is deleted only after
// every sink accepted it; a crash in between archives it twice, never
// loses it.
func (a *Archiver) Once(ctx context.Context, now time.Time) (int, error) {
	before := now.Add(-a.Retention)
	total := 0
	for {
		orders, err := a.Store.FinishedOrders(ctx, before, archiveBatch)
		if err != nil || len(orders) == 0 {
			return total, err
		}
		b := &tether.Batch{AgentName: "tether-server", ReceivedAt: now, Events: make([]tether.Event, 0, len(orders))}
		ids := make([]string, 0, len(orders))
		requests := map[string]*tether.CommandRequest{}
		for _, o := range orders {
			r, seen := requests[o.RequestID]
			if !seen {
				r, err = a.Store.CommandRequest(ctx, o.RequestID)
				if err != nil && tether.ErrorCode(err) != tether.ENOTFOUND {
					return total, err
				}
				requests[o.RequestID] = r
			}
			payload, err := json.Marshal(archiveRecord(o, r))
			if err != nil {
				return total, err
			}
			b.Events = append(b.Events, tether.Event{
				ID: o.ID, Module: "commands", Type: "order", CollectedAt: o.FinishedAt,
				Payload: payload, Encoding: tether.EncodingJSON,
			})
			ids = append(ids, o.ID)
		}
		for _, s := range a.Sinks {
			if err := s.Write(ctx, b); err != nil {
				return total, err
			}
		}
		n, err := a.Store.DeleteOrders(ctx, ids)
		total += n
		if err != nil {
			return total, err
		}
		if len(orders) < archiveBatch {
			_, err := a.Store.DeleteEmptyCommands(ctx, before)
			return total, err
		}
	}
}
