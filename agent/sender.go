package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
	"golang.org/x/time/rate"
)

// sendLoop drains the outbox one batch at a time. A batch goes when
// batch_max_events events or batch_max_bytes bytes wait, or when the
// oldest waiting event has waited batch_interval; it holds one kind
// (stateless or stateful) in outbox order, under a sequence number
// persisted before the first attempt, and leaves the outbox only once
// acknowledged. Sending keeps to rate_limit_events and rate_limit_bytes;
// RESOURCE_EXHAUSTED waits the delay the server gave, other failures back
// off exponentially with jitter, and INVALID_ARGUMENT moves the batch to
// the dead-letter file.
func (rt *agentRun) sendLoop(ctx context.Context) error {
	var bo backoff
	var lim sendLimiter
	out := rt.db.Outbox
	var since time.Time // since when the events waiting have waited
	for {
		cfg := rt.config()
		lim.set(cfg)
		if !out.Pending() {
			st := out.Stats()
			if st.Records == 0 {
				since = time.Time{}
				select {
				case <-ctx.Done():
					return nil
				case <-out.Appended():
				case <-rt.sendWake:
				}
				continue
			}
			if since.IsZero() {
				since = time.Now()
			}
			if st.Records < cfg.BatchMaxEvents && st.Bytes < int64(cfg.BatchMaxBytes) {
				if wait := time.Until(since.Add(cfg.BatchInterval)); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-ctx.Done():
						t.Stop()
						return nil
					case <-out.Appended():
						t.Stop()
						continue // more waiting: it may fill a batch
					case <-rt.sendWake:
						t.Stop()
						continue
					case <-t.C:
					}
				}
			}
		}
		formed := time.Now()
		b, err := out.Next(cfg.BatchMaxEvents, cfg.BatchMaxBytes)
		if err != nil {
			d := bo.next(err)
			rt.log.Error("read outbox", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		if b == nil {
			continue
		}
		crashPoint("batched")
		if !lim.wait(ctx, len(b.Records), b.Bytes) {
			return nil
		}
		err = rt.push(ctx, b)
		if err == nil {
			crashPoint("sent")
		}
		if code(err) == connect.CodeResourceExhausted {
			rt.noteCall(ctx, nil) // reachable: only slowed down
		} else {
			rt.noteCall(ctx, err)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			bo.reset()
			if err := out.Ack(b); err != nil {
				rt.log.Error("delete sent events", "err", err)
			}
			rt.log.Debug("events sent", "sequence", b.Seq, "events", len(b.Records), "bytes", b.Bytes)
			notify(rt.kick)
			since = formed // what is left arrived after the batch was formed
		case denied(err):
			return ErrRemoved
		case code(err) == connect.CodeInvalidArgument:
			rt.log.Error("server refused a batch as invalid; moved to the dead-letter file", "sequence", b.Seq, "events", len(b.Records), "err", err)
			rt.deadLetter("events", b.Seq, b.Stateful, err, b.Records)
			if err := out.Drop(b); err != nil {
				rt.log.Error("drop invalid batch", "err", err)
			}
			notify(rt.kick)
		case code(err) == connect.CodeResourceExhausted:
			d := bo.next(err)
			rt.log.Info("server busy or rate limit reached; keeping the events", "sequence", b.Seq, "events", len(b.Records), "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
		default:
			d := bo.next(err)
			rt.log.Warn("send events failed; keeping them", "sequence", b.Seq, "events", len(b.Records), "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
		}
	}
}

// applyEventConfig applies the outbox's bound and fsync window and the
// compression of a configuration now in force.
func (rt *agentRun) applyEventConfig(cfg Config) {
	rt.db.Outbox.SetLimits(cfg.OutboxMaxBytes, cfg.OutboxFsyncWindow)
	if err := rt.client.SetCompression(cfg.Compression); err != nil {
		rt.log.Error("set compression", "err", err) // validated with the configuration
	}
}

// sendLimiter keeps the sender to rate_limit_events and rate_limit_bytes.
type sendLimiter struct {
	eventsRate float64
	bytesRate  int64
	batch      [2]int // batch_max_events, batch_max_bytes: the buckets' sizes
	events     *rate.Limiter
	bytes      *rate.Limiter
}

// set follows the configuration; a change starts the buckets full.
func (l *sendLimiter) set(cfg Config) {
	batch := [2]int{cfg.BatchMaxEvents, cfg.BatchMaxBytes}
	if cfg.RateLimitEvents == l.eventsRate && cfg.RateLimitBytes == l.bytesRate && batch == l.batch {
		return
	}
	l.eventsRate, l.bytesRate, l.batch = cfg.RateLimitEvents, cfg.RateLimitBytes, batch
	l.events, l.bytes = nil, nil
	// A bucket holds a second of its rate, and at least a full batch, so
	// that a slow rate still sends whole batches, less often.
	if r := cfg.RateLimitEvents; r > 0 {
		l.events = rate.NewLimiter(rate.Limit(r), max(int(r), cfg.BatchMaxEvents))
	}
	if r := cfg.RateLimitBytes; r > 0 {
		l.bytes = rate.NewLimiter(rate.Limit(r), int(max(r, int64(cfg.BatchMaxBytes))))
	}
}

// wait waits until events and bytes may be sent; false when ctx ended.
func (l *sendLimiter) wait(ctx context.Context, events, bytes int) bool {
	return waitN(ctx, l.events, events) && waitN(ctx, l.bytes, bytes)
}

// waitN takes n tokens, in pieces no larger than the bucket.
func waitN(ctx context.Context, lim *rate.Limiter, n int) bool {
	if lim == nil {
		return true
	}
	for n > 0 {
		k := min(n, lim.Burst())
		if err := lim.WaitN(ctx, k); err != nil {
			return false
		}
		n -= k
	}
	return true
}

func (rt *agentRun) push(ctx context.Context, b *store.Batch) error {
	var err error
	if b.Stateful {
		changes := make([]client.StateChange, len(b.Records))
		for i, r := range b.Records {
			changes[i] = client.StateChange{Event: r.Event, Key: r.Key, Delete: r.Delete}
		}
		_, _, err = rt.client.PushStateful(ctx, b.Seq, changes)
	} else {
		events := make([]client.Event, len(b.Records))
		for i, r := range b.Records {
			events[i] = r.Event
		}
		_, _, err = rt.client.PushStateless(ctx, b.Seq, events)
	}
	return err
}

// deadLetter appends what the server refused to DATA_DIR/dead-letter.ndjson,
// one JSON line per refusal.
func (rt *agentRun) deadLetter(kind string, seq uint64, stateful bool, reason error, items any) {
	line, err := json.Marshal(map[string]any{
		"dropped_at": time.Now().UTC(),
		"kind":       kind,
		"sequence":   seq,
		"stateful":   stateful,
		"error":      reason.Error(),
		"items":      items,
	})
	if err == nil {
		err = appendLine(filepath.Join(rt.opts.DataDir, DeadLetterFile), line)
	}
	if err != nil {
		rt.log.Error("write dead-letter file", "err", err)
	}
}

func appendLine(path string, line []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("append %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
