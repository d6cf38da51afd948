package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const (
	tailEvent1 = `{"agent_id":"a-1","agent_name":"web-1","groups":["web"],"sequence":4,"event_id":"e1","module":"logcollector","type":"line","encoding":"json","collected_at":"2026-01-02T03:04:05.5Z","received_at":"2026-01-02T03:04:06Z","payload":{"line":"sshd: accepted"}}`
	tailEvent2 = `{"agent_id":"a-2","agent_name":"","groups":[],"sequence":9,"event_id":"e2","module":"inventory","type":"package","encoding":"protobuf","collected_at":"2026-01-02T03:04:07Z","received_at":"2026-01-02T03:04:08Z","key":"openssl","op":"upsert","payload_b64":"CJYBEgA="}`
)

// tailServer serves an event stream: the events, then it stays open until
// the client leaves, or ends at once when end is true. It records the
// query of each request.
func tailServer(t *testing.T, end bool) (*httptest.Server, string, *[]string) {
	t.Helper()
	var (
		mu      sync.Mutex
		queries []string
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		if r.URL.Path != "/api/v1/events/stream" {
			w.WriteHeader(404)
			return
		}
		if r.URL.Query().Get("agent") == "missing" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"not_found","message":"agent \"missing\" not found"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "event: event\ndata: "+tailEvent1+"\n\n: keep-alive\n\nevent: skipped\ndata: {\"skipped\":40}\n\nevent: event\ndata: "+tailEvent2+"\n\n")
		w.(http.Flusher).Flush()
		if !end {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, ca, &queries
}

// runTail runs tetherctl events tail against srv until the output shows
// want, then cancels it as Ctrl-C does, and returns its exit code and
// outputs.
func runTail(t *testing.T, srv *httptest.Server, ca, want string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		args := append([]string{"--server", srv.URL, "--ca-cert", ca, "--token", "secret", "events", "tail"}, args...)
		done <- runIO(ctx, args, strings.NewReader(""), &stdout, &stderr, func(string) string { return "" })
	}()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(stdout.String(), want) {
		select {
		case code := <-done:
			return code, stdout.String(), stderr.String()
		case <-deadline:
			t.Fatalf("no %q in the output:\n%s\n%s", want, stdout.String(), stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel() // Ctrl-C
	select {
	case code := <-done:
		return code, stdout.String(), stderr.String()
	case <-time.After(20 * time.Second):
		t.Fatal("tail did not stop after Ctrl-C")
	}
	return 0, "", ""
}

func TestEventsTailTable(t *testing.T) {
	srv, ca, queries := tailServer(t, false)
	code, out, errOut := runTail(t, srv, ca, "openssl", "--agent", "a-1", "--module", "logcollector")
	if code != exitOK {
		t.Fatalf("exit %d after Ctrl-C, want 0: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"COLLECTED             AGENT             MODULE          TYPE        DATA",
		`2026-01-02T03:04:05Z  web-1             logcollector    line        {"line":"sshd: accepted"}`,
		"2026-01-02T03:04:07Z  a-2               inventory       package     upsert openssl (5 bytes of protobuf)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("table output:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	if !strings.Contains(errOut, "Following the events") || !strings.Contains(errOut, "40 events skipped") {
		t.Errorf("stderr: %s", errOut)
	}
	if (*queries)[0] != "agent=a-1&module=logcollector" {
		t.Errorf("query %q", (*queries)[0])
	}
}

func TestEventsTailJSON(t *testing.T) {
	srv, ca, _ := tailServer(t, false)
	code, out, _ := runTail(t, srv, ca, `"e2"`, "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d after Ctrl-C, want 0", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("output: %s; want one JSON line per event", out)
	}
	for i, want := range []string{tailEvent1, tailEvent2} {
		var got, exp map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		json.Unmarshal([]byte(want), &exp)
		g, _ := json.Marshal(got)
		e, _ := json.Marshal(exp)
		if !bytes.Equal(g, e) {
			t.Errorf("line %d = %s\nwant %s", i, g, e)
		}
	}
}

func TestEventsTailEnds(t *testing.T) {
	srv, ca, _ := tailServer(t, true)
	code, _, errOut := runTail(t, srv, ca, "never shown")
	if code != exitFailure || !strings.Contains(errOut, "shutting down") {
		t.Errorf("a stream the server ended: exit %d, %s; want 1 and a reason", code, errOut)
	}
	code, _, errOut = runTail(t, srv, ca, "never shown", "--agent", "missing")
	if code != exitFailure || !strings.Contains(errOut, `agent "missing" not found (not_found)`) {
		t.Errorf("an unknown agent: exit %d, %s", code, errOut)
	}
	code, _, errOut = runTail(t, srv, ca, "never shown", "extra")
	if code != exitUsage {
		t.Errorf("an argument: exit %d, %s; want 2", code, errOut)
	}
}
