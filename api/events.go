package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Event is one event a server node accepted, with the context of its
// batch: the data of an "event" event of GET /api/v1/events/stream. Its
// fields are those of a line of the server's event files.
type Event struct {
	AgentID   string   `json:"agent_id"`
	AgentName string   `json:"agent_name"`
	Groups    []string `json:"groups"`
	// Sequence is the agent's batch sequence number.
	Sequence uint64 `json:"sequence"`
	EventID  string `json:"event_id"`
	Module   string `json:"module"`
	Type     string `json:"type"`
	// Encoding is how the agent encoded the payload: json or protobuf.
	Encoding string `json:"encoding"`
	// CollectedAt is when the agent collected the event; ReceivedAt when
	// the server accepted its batch.
	CollectedAt time.Time `json:"collected_at"`
	ReceivedAt  time.Time `json:"received_at"`
	// Key and Op are set for stateful events only (op upsert or delete).
	Key string `json:"key,omitempty"`
	Op  string `json:"op,omitempty"`
	// Payload is the payload when it is JSON (encoding json and valid
	// JSON); otherwise PayloadB64 holds its bytes in standard base64.
	Payload    json.RawMessage `json:"payload,omitempty"`
	PayloadB64 string          `json:"payload_b64,omitempty"`
}

// EventsSkipped is the data of a "skipped" event of GET
// /api/v1/events/stream: the client read too slowly, and the server left
// out this many matching events after the ones it sent before.
type EventsSkipped struct {
	Skipped int `json:"skipped"`
}

// EventFilter selects the events TailEvents follows; empty fields match
// every event.
type EventFilter struct {
	// AgentID keeps the events of one agent.
	AgentID string
	// Module keeps the events of one module.
	Module string
}

// TailHandlers receive what TailEvents reads. Nil handlers are skipped; a
// handler that returns an error ends TailEvents with that error.
type TailHandlers struct {
	// Open is called once the server answered: every event it accepts
	// from then on is sent.
	Open func() error
	// Event is called with each event, in the order the server accepted
	// them.
	Event func(Event) error
	// Skipped is called with the number of events the server left out
	// because the client read too slowly.
	Skipped func(n int) error
}

// ErrTailEnded is wrapped by the error of TailEvents when the server ended
// the stream (it is shutting down) or the stream went silent.
var ErrTailEnded = errors.New("event stream ended")

// TailEvents follows GET /api/v1/events/stream, a Server-Sent Events
// stream of the events the server node accepts from now on, until ctx
// ends (it then returns ctx's error) or a handler fails. A server node
// sends the events of its own ingest only: behind a load balancer, a tail
// sees the agents that push to the node it reached.
//
// The stream is not bound by the client's Timeout; it is taken for broken
// when it stays silent (no event, no keep-alive) for twice that, or a
// minute, whichever is longer. An end or a silence returns an error that
// wraps ErrTailEnded; a non-2xx answer is an *APIError (404 from a server
// without the route or for an unknown agent).
func (c *Client) TailEvents(ctx context.Context, f EventFilter, h TailHandlers) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := max(2*c.http.Timeout, minStreamIdle)
	timer := time.AfterFunc(idle, func() { cancel(errStreamIdle) })
	defer timer.Stop()

	q := url.Values{}
	if f.AgentID != "" {
		q.Set("agent", f.AgentID)
	}
	if f.Module != "" {
		q.Set("module", f.Module)
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/events/stream", q, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	// The client's Timeout would cut the stream: the idle timer stands in.
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		switch {
		case context.Cause(ctx) == errStreamIdle:
			return fmt.Errorf("follow events: no answer in %v: %w", idle, ErrTailEnded)
		case ctx.Err() != nil:
			return context.Cause(ctx)
		}
		return describeTransportError(c.base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp.StatusCode, data)
	}
	if h.Open != nil {
		if err := h.Open(); err != nil {
			return err
		}
	}

	events := newEventReader(&idleReader{r: resp.Body, t: timer, d: idle})
	for {
		ev, err := events.next()
		switch {
		case err == nil:
		case context.Cause(ctx) == errStreamIdle:
			return fmt.Errorf("follow events: nothing received for %v: %w", idle, ErrTailEnded)
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err == io.EOF:
			return fmt.Errorf("follow events: the server closed the stream: %w", ErrTailEnded)
		default:
			return fmt.Errorf("follow events: %w", err)
		}
		switch ev.name {
		case "event":
			var e Event
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				return fmt.Errorf("follow events: decode event: %w", err)
			}
			if h.Event != nil {
				if err := h.Event(e); err != nil {
					return err
				}
			}
		case "skipped":
			var s EventsSkipped
			if err := json.Unmarshal([]byte(ev.data), &s); err != nil {
				return fmt.Errorf("follow events: decode skipped: %w", err)
			}
			if h.Skipped != nil && s.Skipped > 0 {
				if err := h.Skipped(s.Skipped); err != nil {
					return err
				}
			}
		}
		// Other events belong to a later version of the API.
	}
}
