// Package tlslisten is a TLS listener whose Accept returns connections
// with their handshake done, each handshake run in a goroutine of its own.
//
// http.Server.ServeTLS runs a connection's handshake on the goroutine that
// then serves it for its whole life. A TLS 1.3 handshake with a hybrid
// post-quantum key exchange grows that goroutine's stack to 16 KiB or
// more, and an HTTP/2 connection's serving loop, parked below net/http's
// frames, uses a little more than a quarter of 16 KiB: the garbage
// collector never shrinks it back. A server holding thousands of idle
// long-polls keeps 16 KiB per connection for nothing. Served through this
// listener (http.Server.Serve with a TLS configuration that offers "h2"),
// the connection's goroutine starts afresh after the handshake and stays
// at 8 KiB.
package tlslisten

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Options configure a Listener.
type Options struct {
	// HandshakeTimeout bounds a handshake (none when zero; http.Server
	// uses the least of its read, write and read-header timeouts).
	HandshakeTimeout time.Duration
	// Log receives failed handshakes, at debug level (none when nil).
	Log *slog.Logger
}

// Listener accepts connections from another listener and hands them out
// once their TLS handshake succeeded.
type Listener struct {
	inner net.Listener
	conf  *tls.Config
	o     Options

	ready chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	pending map[net.Conn]struct{} // handshakes under way
}

// New returns a listener serving conf's TLS on the connections of inner.
// It starts accepting at once; Close closes inner.
func New(inner net.Listener, conf *tls.Config, o Options) *Listener {
	l := &Listener{inner: inner, conf: conf, o: o, ready: make(chan net.Conn), errs: make(chan error),
		done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
	go l.run()
	return l
}

// run accepts connections until inner fails for good or l is closed.
// An error of inner is handed to Accept's caller, which paces the retries
// after a temporary one (http.Server.Serve waits up to a second).
func (l *Listener) run() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if isTemporary(err) {
				continue
			}
			return
		}
		go l.handshake(c)
	}
}

// isTemporary reports whether an Accept error is worth retrying, as
// http.Server.Serve decides it (too many open files, for example).
func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// handshake runs c's handshake, then waits for Accept to take it.
func (l *Listener) handshake(c net.Conn) {
	if !l.track(c, true) {
		c.Close()
		return
	}
	defer l.track(c, false)
	tc := tls.Server(c, l.conf)
	if d := l.o.HandshakeTimeout; d > 0 {
		_ = c.SetDeadline(time.Now().Add(d))
	}
	if err := tc.HandshakeContext(context.Background()); err != nil {
		reason := err.Error()
		// A plain HTTP request to a TLS port gets an answer it can read,
		// as from http.Server.
		if re, ok := errors.AsType[tls.RecordHeaderError](err); ok && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			reason = "client sent an HTTP request to an HTTPS server"
		}
		c.Close()
		if l.o.Log != nil {
			l.o.Log.Debug("TLS handshake error", "remote", c.RemoteAddr().String(), "err", reason)
		}
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.ready <- tc:
	case <-l.done:
		c.Close()
	}
}

// track adds or removes a connection whose handshake is under way; it
// refuses to add one once l is closed.
func (l *Listener) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !add {
		delete(l.pending, c)
		return true
	}
	if l.pending == nil {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

// Accept returns the next connection whose handshake is done, a
// *tls.Conn.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the inner listener and the connections whose handshake is
// under way. Connections already accepted are the caller's.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
		l.mu.Lock()
		pending := l.pending
		l.pending = nil
		l.mu.Unlock()
		for c := range pending {
			c.Close()
		}
	})
	return err
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// looksLikeHTTP reports whether a TLS record header looks like the start
// of a plain HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
