package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tetherhq/tether/api"
)

// streamChunks answers with an event stream written in chunks, each one
// flushed on its own, and records the request.
func streamChunks(t *testing.T, seen *http.Request, chunks ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*seen = *r.Clone(context.Background())
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for _, c := range chunks {
			io.WriteString(w, c)
			w.(http.Flusher).Flush()
		}
	})
}

func TestWatchProgress(t *testing.T) {
	var req http.Request
	c := newClient(t, streamChunks(t, &req,
		": keep-alive\n\n",
		"event: progress\ndata: {\"request_id\":\"c1\",\"total\":3,\"pending\":3}\n\n",
		": keep-alive\n",
		// a line split between two writes, CRLF line ends, multi-line data
		"event: progress\r\ndata: {\"request_id\":\"c1\",\"to",
		"tal\":3,\r\ndata:\"success\":1,\"sent\":2}\r\n\r\n",
		// an event of another kind is skipped
		"event: hello\ndata: {\"total\":99,\"done\":true}\n\n",
		// a stream event without a name is a "message"
		"data: {\"request_id\":\"c1\",\"total\":3,\"success\":2,\"failure\":1,\"done\":true}\n\n",
		"data: {\"total\":42}\n\n",
	))
	var got []api.Progress
	last, err := c.WatchProgress(context.Background(), "c 1", func(p api.Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Progress{
		{RequestID: "c1", Total: 3, Pending: 3},
		{RequestID: "c1", Total: 3, Sent: 2, Success: 1},
		{RequestID: "c1", Total: 3, Success: 2, Failure: 1, Done: true},
	}
	if len(got) != len(want) {
		t.Fatalf("events = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if last != want[2] {
		t.Errorf("last = %+v", last)
	}
	if req.URL.EscapedPath() != "/api/v1/commands/c%201/progress" || req.Header.Get("Accept") != "text/event-stream" ||
		req.Header.Get("Authorization") != "Bearer tok" {
		t.Errorf("request = %s %v", req.URL.EscapedPath(), req.Header)
	}
}

func TestWatchProgressEndsEarly(t *testing.T) {
	var req http.Request
	c := newClient(t, streamChunks(t, &req,
		"event: progress\ndata: {\"total\":2,\"sent\":2}\n\n",
		// an event cut by the end of the stream is dropped
		"event: progress\ndata: {\"total\":2,\"success\":2,\"done\":true}\n",
	))
	last, err := c.WatchProgress(context.Background(), "c1", nil)
	if !errors.Is(err, api.ErrStreamEnded) {
		t.Fatalf("err = %v, want ErrStreamEnded", err)
	}
	if last.Sent != 2 || last.Done {
		t.Errorf("last = %+v, want the first event", last)
	}
}

func TestWatchProgressErrors(t *testing.T) {
	rec := &recorder{status: 404, answer: `{"error":{"code":"not_found","message":"command \"c1\" not found"}}`}
	c := newClient(t, rec)
	_, err := c.WatchProgress(context.Background(), "c1", nil)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" {
		t.Errorf("404: err = %v", err)
	}

	var req http.Request
	c = newClient(t, streamChunks(t, &req, "event: progress\ndata: {\"total\":\n\n"))
	if _, err := c.WatchProgress(context.Background(), "c1", nil); err == nil || !strings.Contains(err.Error(), "decode event") {
		t.Errorf("bad JSON: err = %v", err)
	}

	c = newClient(t, streamChunks(t, &req, "data: "+strings.Repeat("x", 2<<20)+"\n\n"))
	if _, err := c.WatchProgress(context.Background(), "c1", nil); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long line: err = %v", err)
	}
}

func TestWatchProgressContextEnds(t *testing.T) {
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "event: progress\ndata: {\"total\":1,\"pending\":1}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	last, err := c.WatchProgress(ctx, "c1", func(api.Progress) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, api.ErrStreamEnded) {
		t.Errorf("a cancelled watch is not an ended stream: %v", err)
	}
	if last.Pending != 1 {
		t.Errorf("last = %+v", last)
	}
}

// bodyClient returns a client whose every answer is 200 with body, read
// through wrap.
func bodyClient(t testing.TB, body string, wrap func(io.Reader) io.Reader) *api.Client {
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: 200,
			Header:     http.Header{"Content-Type": {"text/event-stream"}},
			Body:       io.NopCloser(wrap(strings.NewReader(body))),
			Request:    r,
		}, nil
	})
	c, err := api.New(api.Options{Server: "https://tether.test", Token: "tok", HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestWatchProgressLineEnds(t *testing.T) {
	tests := []struct {
		name, body string
		want       api.Progress
		wantErr    bool
	}{
		{name: "LF", body: "data: {\"total\":1,\"done\":true}\n\n", want: api.Progress{Total: 1, Done: true}},
		{name: "CR", body: "data: {\"total\":1,\"done\":true}\r\r", want: api.Progress{Total: 1, Done: true}},
		{name: "CRLF", body: "data: {\"total\":1,\"done\":true}\r\n\r\n", want: api.Progress{Total: 1, Done: true}},
		{name: "BOM", body: "\ufeffdata: {\"total\":1,\"done\":true}\n\n", want: api.Progress{Total: 1, Done: true}},
		{name: "no space", body: "event:progress\ndata:{\"total\":1,\"done\":true}\n\n", want: api.Progress{Total: 1, Done: true}},
		{name: "id and retry ignored", body: "id: 7\nretry: 10\ndata: {\"total\":1,\"done\":true}\n\n", want: api.Progress{Total: 1, Done: true}},
		{name: "comments only", body: ": keep-alive\n: keep-alive\n", wantErr: true},
		{name: "no blank line", body: "data: {\"total\":1,\"done\":true}", wantErr: true},
		{name: "empty", body: "", wantErr: true},
		{name: "blank after event name only", body: "event: progress\n\ndata: {\"done\":true}\n\n", want: api.Progress{Done: true}},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			wrap := func(r io.Reader) io.Reader { return r }
			if oneByte {
				name += "/one byte at a time"
				wrap = iotest.OneByteReader
			}
			t.Run(name, func(t *testing.T) {
				c := bodyClient(t, tt.body, wrap)
				got, err := c.WatchProgress(context.Background(), "c1", nil)
				if tt.wantErr {
					if !errors.Is(err, api.ErrStreamEnded) {
						t.Errorf("err = %v, want ErrStreamEnded", err)
					}
					return
				}
				if err != nil || got != tt.want {
					t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
				}
			})
		}
	}
}

func FuzzWatchProgress(f *testing.F) {
	f.Add("event: progress\ndata: {\"total\":1,\"done\":true}\n\n")
	f.Add(": keep-alive\r\ndata: {\"total\":\r\ndata: 2}\r\n\r\ndata: {\"done\":true}\r\r")
	f.Add("data\n\ndata:\n\nevent\n:\n\r\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := bodyClient(t, body, func(r io.Reader) io.Reader { return r })
		var n int
		last, err := c.WatchProgress(ctx, "c1", func(api.Progress) { n++ })
		if err == nil && (!last.Done || n == 0) {
			t.Errorf("no error, but last = %+v after %d events", last, n)
		}
		if err != nil && last.Done {
			t.Errorf("error %v after the done event", err)
		}
	})
}
