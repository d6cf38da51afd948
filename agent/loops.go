package agent

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/client"
)

// backoff is an exponential backoff with jitter, capped at 30 s.
type backoff struct{ n int }

const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// next returns how long to wait after err: the server's RetryAfter when it
// gave one, else an exponential delay with jitter.
func (b *backoff) next(err error) time.Duration {
	var ce *client.Error
	if errors.As(err, &ce) && ce.RetryAfter > 0 {
		b.n++
		return ce.RetryAfter + rand.N(ce.RetryAfter/10+time.Millisecond)
	}
	d := backoffMin << min(b.n, 10)
	if d > backoffMax {
		d = backoffMax
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// code is the Connect code of a client error (CodeUnknown for others).
func code(err error) connect.Code {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return connect.CodeUnknown
}

func denied(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Denied()
}

// maxQueuedIDs is the most queued order ids a poll lists.
const maxQueuedIDs = 1000

// pollLoop keeps exactly one PollCommands open, stores new orders durably
// and acknowledges them on the next poll. It also lists the orders waiting
// in the queue, to skip those the server cancelled, and the configuration
// version the agent runs, to fetch a new one as soon as there is one.
func (rt *agentRun) pollLoop(ctx context.Context) error {
	var received []string
	var bo backoff
	// seen is the configuration version the server last gave: polls send
	// it rather than the version applied, so that a configuration the agent
	// cannot fetch yet does not make every poll return at once.
	seen := ""
	for {
		queued, err := rt.db.Orders.Queued(maxQueuedIDs)
		if err != nil {
			rt.log.Error("read queued orders", "err", err)
		}
		rt.mu.Lock()
		applied := rt.central.Version
		rt.mu.Unlock()
		version := cmp.Or(seen, applied)
		wait := rt.config().PollWait
		if version == "" {
			// A poll without a configuration version is not woken by a
			// change of configuration: keep it short until one is known
			// (the first poll of a new agent, racing the first GetConfig).
			wait = min(wait, 5*time.Second)
		}
		res, err := rt.client.Poll(ctx, client.PollRequest{Wait: wait, Received: received, Queued: queued, ConfigVersion: version})
		rt.noteCall(ctx, err)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if denied(err) {
				return ErrRemoved
			}
			d := bo.next(err)
			rt.log.Warn("poll failed", "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		rt.mu.Lock()
		rt.lastPollAt = time.Now().UTC()
		rt.mu.Unlock()
		received = nil // the server got them
		if res.ConfigVersion != "" && res.ConfigVersion != applied {
			notify(rt.configNow)
		}
		seen = res.ConfigVersion
		if len(res.Cancelled) > 0 && !rt.cancelQueued(res.Cancelled) {
			// Not recorded: the next poll lists them again and would be
			// answered at once.
			if !sleep(ctx, bo.next(nil)) {
				return nil
			}
		}
		if len(res.Orders) == 0 {
			bo.reset()
			continue
		}
		added, err := rt.db.Orders.Add(res.Orders)
		crashPoint("stored")
		if err != nil {
			// Not acknowledged: the server delivers them again.
			d := bo.next(err)
			rt.log.Error("store orders", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		bo.reset()
		for _, o := range res.Orders {
			received = append(received, o.ID)
		}
		for _, so := range added {
			rt.log.Info("order received", "order_id", so.Order.ID, "action", so.Order.Action, "user", so.Order.User)
		}
		if len(added) > 0 {
			rt.exec.Wake()
			notify(rt.kick)
		}
	}
}

// cancelQueued drops the queued orders the server finished without them
// (cancelled or timed out there): they never start. Their result, a
// failure "cancelled", is reported like any other; the server keeps its own.
func (rt *agentRun) cancelQueued(ids []string) bool {
	done, err := rt.db.Orders.Cancel(ids, client.Result{Success: false, Message: "cancelled", FinishedAt: time.Now().UTC()})
	if err != nil {
		rt.log.Error("cancel queued orders", "err", err)
		return false
	}
	for _, so := range done {
		rt.log.Info("order cancelled on the server: skipped", "order_id", so.Order.ID, "action", so.Order.Action)
	}
	if len(done) > 0 {
		notify(rt.reportNow)
		notify(rt.kick)
	}
	return true
}

// reportLoop sends stored results until the server acknowledges them.
func (rt *agentRun) reportLoop(ctx context.Context) error {
	var bo backoff
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		results, err := rt.db.Orders.Results(1000)
		if err != nil {
			rt.log.Error("read results", "err", err)
		}
		if err == nil && len(results) > 0 {
			acked, err := rt.client.Report(ctx, results)
			crashPoint("reported")
			rt.noteCall(ctx, err)
			switch {
			case ctx.Err() != nil:
				return nil
			case denied(err):
				return ErrRemoved
			case code(err) == connect.CodeInvalidArgument:
				rt.log.Error("server refused results as invalid; dropping them to the dead-letter file", "err", err, "results", len(results))
				rt.deadLetter("results", 0, false, err, results)
				ids := make([]string, len(results))
				for i, r := range results {
					ids[i] = r.OrderID
				}
				if err := rt.db.Orders.Ack(ids); err != nil {
					rt.log.Error("drop results", "err", err)
				}
				continue
			case err != nil:
				d := bo.next(err)
				rt.log.Warn("report results failed", "err", err, "retry_in", d.Round(time.Millisecond))
				if !sleep(ctx, d) {
					return nil
				}
				continue
			}
			if err := rt.db.Orders.Ack(acked); err != nil {
				rt.log.Error("delete acknowledged results", "err", err)
			}
			rt.log.Debug("results acknowledged", "sent", len(results), "acked", len(acked))
			notify(rt.kick)
			if len(acked) > 0 {
				bo.reset()
				continue
			}
			// Nothing acknowledged (not our orders?): do not spin.
			d := bo.next(nil)
			rt.log.Warn("server acknowledged none of the results", "results", len(results), "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rt.reportNow:
		case <-t.C:
		}
	}
}
