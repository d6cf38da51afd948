package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tetherhq/tether/api"
)

func TestTailEvents(t *testing.T) {
	var req http.Request
	c := newClient(t, streamChunks(t, &req,
		": keep-alive\n\n",
		`event: event`+"\n"+`data: {"agent_id":"a1","agent_name":"web-1","groups":["web"],"sequence":7,"event_id":"e1","module":"log","type":"line","encoding":"json","collected_at":"2026-01-02T03:04:05Z","received_at":"2026-01-02T03:04:06Z","payload":{"line":"hi"}}`+"\n\n",
		"event: skipped\ndata: {\"skipped\":12}\n\n",
		// an event of a later version of the API is ignored
		"event: hello\ndata: {}\n\n",
		`event: event`+"\n"+`data: {"agent_id":"a1","agent_name":"web-1","groups":[],"sequence":8,"event_id":"e2","module":"inventory","type":"package","encoding":"protobuf","collected_at":"2026-01-02T03:04:07Z","received_at":"2026-01-02T03:04:08Z","key":"k","op":"delete","payload_b64":"AQI="}`+"\n\n",
	))
	var (
		opened  bool
		events  []api.Event
		skipped []int
	)
	err := c.TailEvents(context.Background(), api.EventFilter{AgentID: "a1", Module: "log"}, api.TailHandlers{
		Open:    func() error { opened = true; return nil },
		Event:   func(e api.Event) error { events = append(events, e); return nil },
		Skipped: func(n int) error { skipped = append(skipped, n); return nil },
	})
	if !errors.Is(err, api.ErrTailEnded) {
		t.Errorf("err = %v, want ErrTailEnded when the server ends the stream", err)
	}
	if !opened {
		t.Error("Open was not called")
	}
	if len(events) != 2 || events[0].EventID != "e1" || string(events[0].Payload) != `{"line":"hi"}` || events[0].Sequence != 7 ||
		!events[0].CollectedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) ||
		events[1].Op != "delete" || events[1].PayloadB64 != "AQI=" {
		t.Errorf("events = %+v", events)
	}
	if len(skipped) != 1 || skipped[0] != 12 {
		t.Errorf("skipped = %v, want [12]", skipped)
	}
	if req.URL.Path != "/api/v1/events/stream" || req.URL.Query().Get("agent") != "a1" || req.URL.Query().Get("module") != "log" ||
		req.Header.Get("Accept") != "text/event-stream" || req.Header.Get("Authorization") != "Bearer tok" {
		t.Errorf("request = %s %v", req.URL, req.Header)
	}
}

func TestTailEventsHandlerError(t *testing.T) {
	var req http.Request
	c := newClient(t, streamChunks(t, &req,
		`event: event`+"\n"+`data: {"event_id":"e1"}`+"\n\n",
		`event: event`+"\n"+`data: {"event_id":"e2"}`+"\n\n",
	))
	stop := errors.New("stop")
	n := 0
	err := c.TailEvents(context.Background(), api.EventFilter{}, api.TailHandlers{
		Event: func(api.Event) error { n++; return stop },
	})
	if err != stop || n != 1 {
		t.Errorf("err = %v after %d events, want the handler's error after 1", err, n)
	}
	if req.URL.RawQuery != "" {
		t.Errorf("query %q, want none without a filter", req.URL.RawQuery)
	}
}

func TestTailEventsCancel(t *testing.T) {
	started := make(chan struct{})
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if err := c.TailEvents(ctx, api.EventFilter{}, api.TailHandlers{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestTailEventsAPIError(t *testing.T) {
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		w.Write([]byte(`{"error":{"code":"not_found","message":"agent \"x\" not found"}}`))
	}))
	err := c.TailEvents(context.Background(), api.EventFilter{AgentID: "x"}, api.TailHandlers{
		Open: func() error { t.Error("Open called on an error"); return nil },
	})
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" {
		t.Errorf("err = %#v, want a 404 APIError", err)
	}
}
