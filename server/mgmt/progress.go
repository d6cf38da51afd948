package mgmt

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
)

// Defaults of the progress stream.
const (
	defaultProgressInterval  = 250 * time.Millisecond
	defaultProgressKeepAlive = 15 * time.Second
)

// commandProgress streams the order counts of a command as Server-Sent
// Events: a "progress" event at once, another whenever the counts change,
// a keep-alive comment when nothing was sent for a while, and a last event
// with done true once every order finished; then the stream ends. It ends
// early when the client goes away or the node is closing.
//
// The counts are read from the store (one query per interval), not from
// this node's memory, so the stream follows orders whichever node delivers
// them and whichever node the client reached.
func (s *Server) commandProgress(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	id := r.PathValue("id")
	if !tether.ValidID(id) {
		return tether.FieldError("id", "want a command id (a lowercase UUID)")
	}
	ctx := r.Context()
	p, err := s.progress(ctx, id)
	if err != nil {
		return err
	}
	if p.Total == 0 {
		// No orders: an unknown command, or one whose orders were all
		// deleted (retention), which is finished.
		if _, _, err := s.o.Store.Command(ctx, id); err != nil {
			return err
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events through at once
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// A write deadline of the listener would cut a long stream.
	_ = rc.SetWriteDeadline(time.Time{})
	send := func(p api.Progress) bool {
		data, err := json.Marshal(p)
		if err == nil {
			_, err = fmt.Fprintf(w, "event: progress\ndata: %s\n\n", data)
		}
		return err == nil && rc.Flush() == nil
	}
	if !send(p) || p.Done {
		return nil
	}

	tick := time.NewTicker(s.o.ProgressInterval)
	defer tick.Stop()
	keepAlive := time.NewTimer(s.o.ProgressKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.o.Closing:
			return nil
		case <-keepAlive.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
			keepAlive.Reset(s.o.ProgressKeepAlive)
		case <-tick.C:
			next, err := s.progress(ctx, id)
			if err != nil {
				if ctx.Err() == nil {
					s.o.Log.Warn("progress stream: count orders", "command", id, "err", err)
				}
				// The headers are sent: ending the stream is the only
				// way to say it; the client sees it ended early.
				return nil
			}
			if next == p {
				continue
			}
			p = next
			if !send(p) || p.Done {
				return nil
			}
			keepAlive.Reset(s.o.ProgressKeepAlive)
		}
	}
}

// progress reads the order counts of a command.
func (s *Server) progress(ctx context.Context, id string) (api.Progress, error) {
	counts, err := s.o.Store.CommandCounts(ctx, []string{id})
	if err != nil {
		return api.Progress{}, err
	}
	c := counts[id]
	p := api.Progress{
		RequestID: id,
		Pending:   c[tether.OrderPending],
		Sent:      c[tether.OrderSent],
		Success:   c[tether.OrderSuccess],
		Failure:   c[tether.OrderFailure],
	}
	p.Total = p.Pending + p.Sent + p.Success + p.Failure
	p.Done = p.Pending+p.Sent == 0
	return p, nil
}
