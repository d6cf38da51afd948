package mgmt

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/live"
)

// eventStream streams the events this node accepts from now on, as
// Server-Sent Events: an "event" event per event, in the order they were
// accepted, a "skipped" event when the client read too slowly and events
// were left out (see package server/live), and a keep-alive comment when
// nothing was sent for a while. It ends when the client goes away or the
// node is closing. The headers are sent as soon as the subscription is
// made, so a client that has them receives every event accepted after.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	if s.o.Events == nil {
		return tether.Errorf(tether.ENOTSUPPORTED, "this server node does not stream events")
	}
	q := r.URL.Query()
	f := live.Filter{AgentID: q.Get("agent"), Module: q.Get("module")}
	if f.AgentID != "" && !tether.ValidID(f.AgentID) {
		return tether.FieldError("agent", "want an agent id (a lowercase UUID)")
	}
	if f.Module != "" && !tether.ValidModule(f.Module) {
		return tether.FieldError("module", "want 1 to 64 characters of a-z, 0-9, '_', '.', '-'")
	}
	ctx := r.Context()
	if f.AgentID != "" {
		// An id with a typo would wait forever for events.
		if _, err := s.o.Store.Agent(ctx, f.AgentID); err != nil {
			return err
		}
	}
	sub, err := s.o.Events.Subscribe(f)
	switch {
	case errors.Is(err, live.ErrTooMany):
		return tether.Errorf(tether.EEXHAUSTED, "too many event streams open on this server node: try again later")
	case errors.Is(err, live.ErrClosed):
		return tether.Errorf(tether.EUNAVAILABLE, "this server node is shutting down")
	case err != nil:
		return err
	}
	defer sub.Close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events through at once
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// A write deadline of the listener would cut a long stream.
	_ = rc.SetWriteDeadline(time.Time{})
	if rc.Flush() != nil {
		return nil
	}
	keepAlive := time.NewTimer(s.o.ProgressKeepAlive)
	defer keepAlive.Stop()
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.o.Closing:
			return nil
		case <-sub.Done():
			return nil
		case <-keepAlive.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
			keepAlive.Reset(s.o.ProgressKeepAlive)
		case <-sub.Ready():
			batches, skipped := sub.Take()
			buf = buf[:0]
			for _, b := range batches {
				for i := range b.Events {
					buf = appendSSE(buf, "event", eventJSON(b, &b.Events[i]))
				}
			}
			if skipped > 0 {
				buf = appendSSE(buf, "skipped", api.EventsSkipped{Skipped: skipped})
			}
			if len(buf) == 0 {
				continue
			}
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return nil
			}
			keepAlive.Reset(s.o.ProgressKeepAlive)
		}
	}
}

// appendSSE appends one Server-Sent Event whose data is v in JSON (one
// line: encoding/json escapes newlines in strings).
func appendSSE(buf []byte, name string, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		// Only a payload could fail, and eventJSON checked it.
		data = fmt.Appendf(nil, `{"error":%q}`, err.Error())
	}
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

// eventJSON converts an event to its API form, with the payload rule of
// the event files: a JSON payload that is valid JSON is embedded, any other
// is in payload_b64.
func eventJSON(b *tether.Batch, e *tether.Event) api.Event {
	out := api.Event{
		AgentID: b.AgentID, AgentName: b.AgentName, Groups: b.Groups, Sequence: b.Sequence,
		EventID: e.ID, Module: e.Module, Type: e.Type, Encoding: string(e.Encoding),
		CollectedAt: e.CollectedAt.UTC(), ReceivedAt: b.ReceivedAt.UTC(),
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	if b.Stateful {
		out.Key, out.Op = e.Key, string(e.Op)
	}
	if e.Encoding == tether.EncodingJSON && utf8.Valid(e.Payload) && json.Valid(e.Payload) {
		out.Payload = json.RawMessage(e.Payload)
	} else {
		out.PayloadB64 = base64.StdEncoding.EncodeToString(e.Payload)
	}
	return out
}
