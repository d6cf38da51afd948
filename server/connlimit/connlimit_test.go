package connlimit_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/server/connlimit"
	"github.com/tetherhq/tether/server/metrics"
)

// await polls cond until it holds, for up to 10 s.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serve runs an HTTP server answering "ok" behind a Listener.
func serve(t *testing.T, o connlimit.Options) *connlimit.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := connlimit.Listen(ln, o)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l
}

// get sends a request on a connection of its own and returns the
// answer, its body and the connection (closed at the end of the test).
func get(t *testing.T, addr string) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, max(resp.ContentLength, 0)))
	return resp, string(b), c
}

// closedUnanswered reports whether the server closes c without a byte.
func closedUnanswered(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET))
}

// TestPastMaxAnsweredPastCeilingClosed: Max connections are served;
// past Max a connection's request gets the Refuse answer, and the
// connection is closed; past Ceiling, a connection is closed unanswered;
// closing a served connection makes room.
func TestPastMaxAnsweredPastCeilingClosed(t *testing.T) {
	mx := metrics.New()
	l := serve(t, connlimit.Options{Max: 2, Ceiling: 3, Metrics: mx, Refuse: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "full", http.StatusServiceUnavailable)
	})})
	addr := l.Addr().String()
	var served []net.Conn
	for range 2 {
		resp, body, c := get(t, addr)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("within the limit: %d %q", resp.StatusCode, body)
		}
		served = append(served, c)
	}
	if l.Open() != 2 {
		t.Fatalf("Open = %d, want 2", l.Open())
	}

	resp, body, _ := get(t, addr)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "full") || resp.Header.Get("Retry-After") != "7" || !resp.Close {
		t.Fatalf("past the limit: %d %q %v, close %v", resp.StatusCode, body, resp.Header, resp.Close)
	}
	await(t, "the refused connection closed", func() bool { return l.Held() == 2 })

	// A connection past Max that sends nothing is held (up to Grace)...
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	await(t, "the connection held", func() bool { return l.Held() == 3 })
	// ...so the next one is past the ceiling: closed unanswered.
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if !closedUnanswered(t, over) {
		t.Fatal("past the ceiling: not closed at once")
	}
	held.Close()
	await(t, "the held connection closed", func() bool { return l.Held() == 2 })

	// A served connection closes: room for one more.
	served[0].Close()
	await(t, "the served connection closed", func() bool { return l.Open() == 1 })
	if resp, body, _ := get(t, addr); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after a connection closed: %d %q", resp.StatusCode, body)
	}

	rec := httptest.NewRecorder()
	mx.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`tether_comms_connections_refused_total{how="answered"} 2`, `tether_comms_connections_refused_total{how="closed"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestCloseReleasesOnce: a connection counts until its first Close, and
// only once however often it is closed; closing one makes room.
func TestCloseReleasesOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := connlimit.Listen(ln, connlimit.Options{Max: 1, Ceiling: 1})
	defer l.Close()
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	first := <-accepted
	if nc, ok := first.(interface{ NetConn() net.Conn }); !ok {
		t.Fatal("no NetConn")
	} else if _, ok := nc.NetConn().(*net.TCPConn); !ok {
		t.Fatalf("NetConn is a %T, want the accepted *net.TCPConn", nc.NetConn())
	}
	if l.Open() != 1 {
		t.Fatalf("Open = %d, want 1", l.Open())
	}
	// Ceiling 1: the next is closed unanswered, and not accepted.
	if !closedUnanswered(t, dial()) {
		t.Fatal("past the ceiling: not closed")
	}
	first.Close()
	first.Close()
	if l.Open() != 0 {
		t.Fatalf("Open = %d after two Close, want 0", l.Open())
	}
	dial()
	second := <-accepted
	second.Close()
	dial()
	third := <-accepted
	if l.Open() != 1 {
		t.Fatalf("Open = %d, want 1", l.Open())
	}
	third.Close()
	l.Close()
	if _, ok := <-accepted; ok {
		t.Fatal("Accept returned a connection after Close")
	}
}

// TestGraceClosesIdleConnections: a connection past Max that sends
// nothing is closed after Grace.
func TestGraceClosesIdleConnections(t *testing.T) {
	l := serve(t, connlimit.Options{Max: 1, Ceiling: 10, Grace: 200 * time.Millisecond})
	get(t, l.Addr().String())
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if !closedUnanswered(t, c) {
		t.Fatal("not closed")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %s, before the grace", d)
	}
}
