package mgmt_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/live"
	"github.com/tetherhq/tether/server/mgmt"
)

// doStatus is do for routes that may answer an endless event stream: the
// body of a stream is not read (the connection is closed), and is nil.
func (e *env) doStatus(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(e.request(t, method, path, token, body))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp.StatusCode, nil
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, data
}

// sse is one Server-Sent Event.
type sse struct {
	name string
	data string
}

// openStream opens an event stream with plain HTTP, checks that it is one,
// and returns its events on a channel closed when the stream ends, and a
// function that ends it.
func (e *env) openStream(t *testing.T, path, token string) (<-chan sse, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req := e.request(t, "GET", path, token, nil)
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		t.Fatalf("%s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("%s: status %d, content type %q; want 200 text/event-stream: %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	stop := func() { cancel(); resp.Body.Close() }
	t.Cleanup(stop)
	out := make(chan sse, 1000)
	go func() {
		defer close(out)
		readSSE(resp.Body, func(ev sse) { out <- ev })
	}()
	return out, stop
}

// readSSE calls fn with each event of an event stream (as the server
// writes them: "event:" and one "data:" line), until the stream ends.
func readSSE(r io.Reader, fn func(sse)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	var ev sse
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name != "" || ev.data != "" {
				fn(ev)
			}
			ev = sse{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		default:
			return fmt.Errorf("unexpected line %q", line)
		}
	}
	return sc.Err()
}

// awaitEvents reads n events of the stream, failing after a deadline, and
// decodes them.
func awaitEvents(t *testing.T, events <-chan sse, n int) []api.Event {
	t.Helper()
	var out []api.Event
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case ev, open := <-events:
			if !open {
				t.Fatalf("the stream ended after %d events, want %d", len(out), n)
			}
			if ev.name != "event" {
				t.Fatalf("event %q (%s), want event", ev.name, ev.data)
			}
			var e api.Event
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				t.Fatalf("decode %s: %v", ev.data, err)
			}
			out = append(out, e)
		case <-deadline:
			t.Fatalf("received %d events, want %d", len(out), n)
		}
	}
	return out
}

func eventIDs(events []api.Event) string {
	var ids []string
	for _, e := range events {
		ids = append(ids, e.EventID)
	}
	return strings.Join(ids, " ")
}

// testBatch returns a batch of the agent with events of the modules.
func testBatch(agent string, seq uint64, modules ...string) *tether.Batch {
	b := &tether.Batch{AgentID: agent, AgentName: "name-" + agent[:4], Groups: []string{"web"}, Sequence: seq,
		ReceivedAt: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)}
	for i, m := range modules {
		b.Events = append(b.Events, tether.Event{ID: fmt.Sprintf("e-%d-%d", seq, i), Module: m, Type: "line",
			CollectedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Payload: []byte(`{"line": "x"}`), Encoding: tether.EncodingJSON})
	}
	return b
}

func publish(t *testing.T, h *live.Hub, b *tether.Batch) {
	t.Helper()
	if err := h.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func TestEventStream(t *testing.T) {
	srvHub := live.New(live.Options{})
	e := newEnvWith(t, func(o *mgmt.Options) { o.Events = srvHub })
	ctx := context.Background()
	a1, a2 := uuid.NewString(), uuid.NewString()
	for _, id := range []string{a1, a2} {
		if err := e.store.RegisterAgent(ctx, &tether.Agent{ID: id, Name: id[:4], EnrolledAt: time.Now()}, "", time.Now()); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	viewer := e.tokens[tether.RoleViewer]
	all, _ := e.openStream(t, "/api/v1/events/stream", viewer)
	one, _ := e.openStream(t, "/api/v1/events/stream?agent="+a1, viewer)
	logs, _ := e.openStream(t, "/api/v1/events/stream?module=log&agent="+a2, viewer)

	publish(t, srvHub, testBatch(a1, 1, "log", "inventory"))
	publish(t, srvHub, testBatch(a2, 1, "log"))
	stateful := testBatch(a2, 2, "inventory", "log")
	stateful.Stateful = true
	stateful.Events[0].Key, stateful.Events[0].Op = "pkg/openssl", tether.StateUpsert
	stateful.Events[1].Key, stateful.Events[1].Op = "file/a", tether.StateDelete
	stateful.Events[1].Payload, stateful.Events[1].Encoding = []byte{0xff, 0x01}, tether.EncodingProtobuf
	publish(t, srvHub, stateful)

	if got := eventIDs(awaitEvents(t, all, 5)); got != "e-1-0 e-1-1 e-1-0 e-2-0 e-2-1" {
		t.Errorf("unfiltered stream: %s", got)
	}
	got := awaitEvents(t, one, 2)
	if eventIDs(got) != "e-1-0 e-1-1" || got[0].AgentID != a1 || got[1].Module != "inventory" {
		t.Errorf("stream of agent 1: %+v", got)
	}
	got = awaitEvents(t, logs, 2)
	if eventIDs(got) != "e-1-0 e-2-1" {
		t.Fatalf("log stream of agent 2: %s", eventIDs(got))
	}
	first, del := got[0], got[1]
	if first.Key != "" || first.Op != "" || string(first.Payload) != `{"line":"x"}` || first.PayloadB64 != "" ||
		first.Sequence != 1 || first.AgentName != "name-"+a2[:4] || strings.Join(first.Groups, ",") != "web" ||
		!first.CollectedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || first.Encoding != "json" {
		t.Errorf("stateless event: %+v", first)
	}
	if del.Key != "file/a" || del.Op != "delete" || del.Payload != nil || del.PayloadB64 != "/wE=" || del.Encoding != "protobuf" {
		t.Errorf("stateful protobuf event: %+v", del)
	}

	// The node shuts down: the hub closes and the streams end.
	srvHub.Close()
	for _, s := range []<-chan sse{all, one, logs} {
		select {
		case ev, open := <-s:
			if open {
				t.Errorf("event %+v after the hub closed", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a stream did not end when the hub closed")
		}
	}
	status, body := e.doStatus(t, "GET", "/api/v1/events/stream", viewer, nil)
	if status != http.StatusServiceUnavailable {
		t.Errorf("stream of a closed hub: %d %s, want 503", status, body)
	}
}

func TestEventStreamEndsWhenClosing(t *testing.T) {
	closing := make(chan struct{})
	e := newEnvWith(t, func(o *mgmt.Options) { o.Closing = closing; o.ProgressKeepAlive = 50 * time.Millisecond })
	s, _ := e.openStream(t, "/api/v1/events/stream", e.tokens[tether.RoleOperator])
	time.Sleep(120 * time.Millisecond) // some keep-alives go by, unseen
	close(closing)
	select {
	case ev, open := <-s:
		if open {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end when the node started closing")
	}
}

func TestEventStreamNotSupported(t *testing.T) {
	e := newEnvWith(t, func(o *mgmt.Options) { o.Events = nil })
	status, body := e.doStatus(t, "GET", "/api/v1/events/stream", e.tokens[tether.RoleAdmin], nil)
	if status != http.StatusNotImplemented || !bytes.Contains(body, []byte("not_supported")) {
		t.Errorf("status %d %s, want 501 not_supported", status, body)
	}
}

// exerciseEvents runs the event stream part of the OpenAPI scenario with
// two enrolled agents, and closes the env's hub at its end.
func exerciseEvents(t *testing.T, c *checker, agent1, agent2 string) {
	t.Helper()
	viewer := c.e.tokens[tether.RoleViewer]
	for _, ec := range []struct {
		call
		code, field string
	}{
		{call{method: "GET", path: "/api/v1/events/stream?agent=x", token: viewer, want: 400, invalid: true}, "invalid", "agent"},
		{call{method: "GET", path: "/api/v1/events/stream?module=Log!", token: viewer, want: 400, invalid: true}, "invalid", "module"},
		{call{method: "GET", path: "/api/v1/events/stream?agent=" + uuid.NewString(), token: viewer, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/events/stream", token: c.e.tokens[tether.RoleRegistrar], want: 403}, "forbidden", ""},
	} {
		t.Run(fmt.Sprintf("%d %s %s", ec.want, ec.method, ec.path), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}

	// Four streams: the env's hub takes no more.
	all := c.watchEvents(t, "/api/v1/events/stream", viewer)
	one := c.watchEvents(t, "/api/v1/events/stream?agent="+agent1+"&module=log", c.e.tokens[tether.RoleOperator])
	c.watchEvents(t, "/api/v1/events/stream?module=inventory", c.e.tokens[tether.RoleAdmin])
	c.watchEvents(t, "/api/v1/events/stream?agent="+agent2, viewer)
	wantError(t, c.do(t, call{method: "GET", path: "/api/v1/events/stream", token: viewer, want: 429}), "exhausted", "")

	// One batch at a time, each read before the next is written: nothing
	// is skipped.
	b := testBatch(agent1, 1, "log", "inventory")
	b.Events[1].Payload, b.Events[1].Encoding = []byte("\x08\x96\x01"), tether.EncodingProtobuf
	publish(t, c.e.events, b)
	awaitSSE(t, all, "event", 2)
	if got := awaitSSE(t, one, "event", 1); !strings.Contains(got[0], `"event_id":"e-1-0"`) {
		t.Errorf("filtered stream: %s", got)
	}
	st := testBatch(agent2, 7, "inventory")
	st.Stateful, st.Events[0].Key, st.Events[0].Op = true, "pkg/bash", tether.StateUpsert
	publish(t, c.e.events, st)
	awaitSSE(t, all, "event", 1)

	// A burst the streams cannot keep up with (their queue holds one
	// event): some are skipped, and the streams say so.
	deadline := time.Now().Add(10 * time.Second)
	for seq := uint64(10); ; seq++ {
		publish(t, c.e.events, testBatch(agent1, seq, "log"))
		if seq%50 == 0 && drainUntil(all, "skipped") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no skipped event after a burst")
		}
	}
	c.e.events.Close()
	c.waitStreams(t)
}

// awaitSSE reads events of a stream until n named name arrived, and returns
// their data.
func awaitSSE(t *testing.T, s <-chan sse, name string, n int) []string {
	t.Helper()
	var out []string
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case ev, open := <-s:
			if !open {
				t.Fatalf("the stream ended before %d %s events", n, name)
			}
			if ev.name == name {
				out = append(out, ev.data)
			}
		case <-deadline:
			t.Fatalf("received %d %s events, want %d", len(out), name, n)
		}
	}
	return out
}

// drainUntil reads the events waiting on s and reports whether one was
// named name.
func drainUntil(s <-chan sse, name string) bool {
	for {
		select {
		case ev, open := <-s:
			if !open {
				return false
			}
			if ev.name == name {
				return true
			}
		default:
			return false
		}
	}
}

// watchEvents opens an event stream of GET /api/v1/events/stream and reads
// it in the background: each event must be an "event" whose data matches
// the Event schema or a "skipped" whose data matches EventsSkipped. The
// events are sent on the returned channel, closed when the stream ends;
// the request and the whole answer are then validated against the
// document. waitStreams waits for the end of every stream watched.
func (c *checker) watchEvents(t *testing.T, path, token string) <-chan sse {
	t.Helper()
	req := c.e.request(t, "GET", path, token, nil)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s: not in the OpenAPI document: %v", path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: c.opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		t.Errorf("%s: request does not match the document: %v", path, err)
	}
	events, _ := c.e.openStream(t, path, token)
	schemas := map[string]string{"event": "Event", "skipped": "EventsSkipped"}
	out := make(chan sse, 10000)
	done := make(chan struct{})
	c.mu.Lock()
	c.streams = append(c.streams, done)
	c.mu.Unlock()
	go func() {
		defer close(done)
		defer close(out)
		var body bytes.Buffer
		for ev := range events {
			fmt.Fprintf(&body, "event: %s\ndata: %s\n\n", ev.name, ev.data)
			schema := c.doc.Components.Schemas[schemas[ev.name]]
			if schema == nil {
				t.Errorf("%s: unexpected event %q", path, ev.name)
				continue
			}
			var v any
			if err := json.Unmarshal([]byte(ev.data), &v); err != nil {
				t.Errorf("%s: event data %q: %v", path, ev.data, err)
			} else if err := schema.Value.VisitJSON(v); err != nil {
				t.Errorf("%s: %s data %s does not match the %s schema: %v", path, ev.name, ev.data, schemas[ev.name], err)
			}
			out <- ev
		}
		h := http.Header{"Content-Type": []string{"text/event-stream"}}
		resp := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: http.StatusOK, Header: h, Options: c.opts}
		if err := openapi3filter.ValidateResponse(context.Background(), resp.SetBodyBytes(body.Bytes())); err != nil {
			t.Errorf("%s: response does not match the document: %v", path, err)
		}
		c.mark(route.Method + " " + route.Path)
	}()
	return out
}

// waitStreams waits until every stream watchEvents opened ended.
func (c *checker) waitStreams(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	streams := c.streams
	c.mu.Unlock()
	for _, done := range streams {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("an event stream did not end")
		}
	}
}
