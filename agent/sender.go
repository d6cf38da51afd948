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
)

// sendLoop drains the outbox in batches: by count (batch_max_events) and
// time (batch_interval), one kind per batch, each under a sequence number
// persisted before the first attempt, deleted only once acknowledged.
func (rt *agentRun) sendLoop(ctx context.Context) error {
	var bo backoff
	for {
		cfg := rt.config()
		b, err := rt.db.Outbox.Next(cfg.BatchMaxEvents, 1<<20)
		if err != nil {
			d := bo.next(err)
			rt.log.Error("read outbox", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		if b == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-rt.sendWake:
			}
			// Let a batch fill up for batch_interval.
			if rt.db.Outbox.Len() < cfg.BatchMaxEvents && !sleep(ctx, cfg.BatchInterval) {
				return nil
			}
			continue
		}
		err = rt.push(ctx, b)
		rt.noteCall(ctx, err)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			bo.reset()
			if err := rt.db.Outbox.Ack(b); err != nil {
				rt.log.Error("delete sent events", "err", err)
			}
			notify(rt.kick)
			if rt.db.Outbox.Len() > 0 && rt.db.Outbox.Len() < cfg.BatchMaxEvents && !sleep(ctx, cfg.BatchInterval) {
				return nil
			}
		case denied(err):
			return ErrRemoved
		case code(err) == connect.CodeInvalidArgument:
			rt.log.Error("server refused a batch as invalid; moved to the dead-letter file", "sequence", b.Seq, "events", len(b.Records), "err", err)
			rt.deadLetter("events", b.Seq, b.Stateful, err, b.Records)
			if err := rt.db.Outbox.Drop(b); err != nil {
				rt.log.Error("drop invalid batch", "err", err)
			}
			notify(rt.kick)
		default:
			d := bo.next(err)
			rt.log.Warn("send events failed; keeping them", "sequence", b.Seq, "events", len(b.Records), "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
		}
	}
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
