package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

// Outcome is what a handler made of an order.
type Outcome struct {
	Success bool
	// Code is an action-specific code (an exit code, for instance).
	Code    int
	Message string
	// Data is any JSON-encodable value, or nil.
	Data any
}

// Handler implements one action.
type Handler struct {
	// Run executes the order. Its context ends at the order's timeout_at.
	// A returned error is a failure whose message is the error's text;
	// ErrRestart instead stops the agent, leaving the order running, to be
	// settled by Resume when the agent starts again.
	Run func(ctx context.Context, o client.Order) (Outcome, error)
	// Resume settles an order of this action found running when the agent
	// starts (the agent stopped while it ran). Nil: a failure
	// "interrupted", unless Idempotent.
	Resume func(o client.Order) Outcome
	// Idempotent handlers may run twice to the same effect: an order of
	// theirs found running at start (and without Resume) runs again.
	Idempotent bool
}

// Executor runs stored orders one at a time, strictly in arrival order: it
// persists status running before calling the handler, then replaces the
// order by its result. The reporter sends results.
type Executor struct {
	orders   *store.OrderStore
	handlers map[string]Handler
	log      *slog.Logger
	wake     chan struct{}
	// OnResult, if set, is called after each result is stored.
	OnResult func()
}

// NewExecutor returns an executor over orders with the given action
// registry.
func NewExecutor(orders *store.OrderStore, handlers map[string]Handler, logger *slog.Logger) *Executor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Executor{orders: orders, handlers: handlers, log: logger, wake: make(chan struct{}, 1)}
}

// Wake tells the executor new orders were stored.
func (e *Executor) Wake() { notify(e.wake) }

// Recover settles the orders found running at start-up through their
// handler's Resume (a failure "interrupted" by default). Call it before Run.
func (e *Executor) Recover() error {
	list, err := e.orders.List()
	if err != nil {
		return err
	}
	for _, so := range list {
		if so.Status != store.StatusRunning {
			continue
		}
		out := Outcome{Success: false, Message: "interrupted"}
		h, ok := e.handlers[so.Order.Action]
		switch {
		case ok && h.Resume != nil:
			out = h.Resume(so.Order)
		case ok && h.Idempotent:
			e.log.Info("order was running when the agent stopped; running it again", "order_id", so.Order.ID, "action", so.Order.Action)
			if err := e.orders.Requeue(so.Seq); err != nil {
				return err
			}
			continue
		}
		e.log.Info("order was running when the agent stopped", "order_id", so.Order.ID, "action", so.Order.Action, "success", out.Success, "message", out.Message)
		if err := e.finish(so, out); err != nil {
			return err
		}
	}
	return nil
}

// Run executes orders as they are stored until ctx ends (nil) or a handler
// asks for a restart (ErrRestart).
func (e *Executor) Run(ctx context.Context) error {
	for {
		if err := e.RunPending(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrRestart) {
				return err
			}
			e.log.Error("order store", "err", err)
			if !sleep(ctx, 5*time.Second) {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		}
	}
}

// RunPending executes the stored orders until none is left. It returns
// ErrRestart, with the restart order left running, when one asks for it.
func (e *Executor) RunPending(ctx context.Context) error {
	for ctx.Err() == nil {
		so, err := e.orders.Next()
		if err != nil || so == nil {
			return err
		}
		if err := e.execute(ctx, *so); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (e *Executor) execute(ctx context.Context, so store.StoredOrder) error {
	o := so.Order
	log := e.log.With("order_id", o.ID, "action", o.Action, "user", o.User)
	if so.Status == store.StatusRunning { // Recover was not called
		return e.finish(so, Outcome{Message: "interrupted"})
	}
	if !o.TimeoutAt.IsZero() && !time.Now().Before(o.TimeoutAt) {
		log.Warn("order expired before it could start", "timeout_at", o.TimeoutAt)
		return e.finish(so, Outcome{Message: "expired"})
	}
	h, ok := e.handlers[o.Action]
	if !ok || h.Run == nil {
		log.Warn("unknown action")
		return e.finish(so, Outcome{Message: fmt.Sprintf("unknown action %q", o.Action)})
	}
	if err := e.orders.MarkRunning(so.Seq); err != nil {
		if errors.Is(err, store.ErrUnknownOrder) {
			log.Info("order cancelled before it started")
			return nil
		}
		return err
	}
	crashPoint("running")
	log.Info("running order")
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if !o.TimeoutAt.IsZero() {
		hctx, cancel = context.WithDeadline(ctx, o.TimeoutAt)
	}
	out, err := h.Run(hctx, o)
	cancel()
	if errors.Is(err, ErrRestart) {
		log.Info("restarting the agent")
		return ErrRestart
	}
	if ctx.Err() != nil {
		// Shutting down: leave the order running; the next start settles it.
		return ctx.Err()
	}
	if err != nil {
		out = Outcome{Success: false, Code: out.Code, Message: err.Error()}
	}
	log.Info("order finished", "success", out.Success, "code", out.Code, "message", out.Message)
	return e.finish(so, out)
}

func (e *Executor) finish(so store.StoredOrder, out Outcome) error {
	r := client.Result{
		OrderID:    so.Order.ID,
		Success:    out.Success,
		Code:       out.Code,
		Message:    truncate(out.Message, 4096),
		FinishedAt: time.Now().UTC(),
	}
	if out.Data != nil {
		b, err := json.Marshal(out.Data)
		if err != nil {
			r.Success, r.Message = false, "encode result data: "+err.Error()
		} else {
			r.Data = b
		}
	}
	if err := e.orders.Finish(so.Seq, r); err != nil {
		if errors.Is(err, store.ErrUnknownOrder) { // cancelled meanwhile
			return nil
		}
		return err
	}
	crashPoint("finished")
	if e.OnResult != nil {
		e.OnResult()
	}
	return nil
}

// truncate makes s valid UTF-8 and cuts it to at most n bytes, at a rune
// boundary: the server refuses a result whose message is not.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
