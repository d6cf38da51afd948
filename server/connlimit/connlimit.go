// Package connlimit bounds the connections a listener holds open, so that
// a server at its limit tells its clients to go elsewhere instead of
// running out of file descriptors or memory.
//
// A Listener serves up to Max connections at once. Past Max a connection
// is still accepted, for a short while (Grace): every request it carries
// is answered by the Refuse handler (an error that says why, and when to
// come back), then it is closed. Past Ceiling, a connection is closed as
// soon as it is accepted, unanswered. Each connection counts from its
// accept until its Close.
package connlimit

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/server/metrics"
)

// DefaultGrace is the default of Options.Grace.
const DefaultGrace = 10 * time.Second

// Options configure a Listener.
type Options struct {
	// Max is the most connections served at once (at least 1).
	Max int
	// Ceiling is the most connections held at once, those past Max being
	// turned away included; past it a connection is closed at accept. It
	// is at least Max (a Ceiling of Max closes every connection past Max
	// unanswered).
	Ceiling int
	// Refuse answers each request of a connection past Max. The listener
	// sets "Connection: close" on the answer, so an HTTP/1 connection is
	// closed after it and an HTTP/2 one is sent GOAWAY.
	Refuse http.Handler
	// TLSConfig, when set, is the TLS configuration the connections past
	// Max are served with (that of the server the listener is for).
	TLSConfig *tls.Config
	// Grace is how long a connection past Max is kept at most
	// (DefaultGrace when zero).
	Grace time.Duration
	// Metrics, when set, counts the connections refused.
	Metrics *metrics.Metrics
	// Log, when set, receives the errors of the connections turned away
	// (at debug level).
	Log *slog.Logger
}

// Listener is a net.Listener that applies Options. Its Accept returns
// only the connections it serves.
type Listener struct {
	net.Listener
	o Options

	served atomic.Int64 // connections Accept returned, not closed yet
	held   atomic.Int64 // served, and those being turned away

	away      *chanListener
	srv       *http.Server
	closeOnce sync.Once
	closeErr  error
}

// Listen wraps ln. Close the Listener (not ln) to stop it.
func Listen(ln net.Listener, o Options) *Listener {
	o.Max = max(o.Max, 1)
	o.Ceiling = max(o.Ceiling, o.Max)
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{Listener: ln, o: o, away: newChanListener(ln.Addr())}
	refuse := o.Refuse
	if refuse == nil {
		refuse = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "too many connections", http.StatusServiceUnavailable)
		})
	}
	l.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			refuse.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: o.Grace,
		IdleTimeout:       o.Grace,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}
	if o.TLSConfig != nil {
		l.srv.TLSConfig = o.TLSConfig.Clone()
		go l.srv.ServeTLS(l.away, "", "") // returns once closed
	} else {
		go l.srv.Serve(l.away) // returns once closed
	}
	return l
}

// Open returns the number of connections served now (those turned away
// not included).
func (l *Listener) Open() int { return int(l.served.Load()) }

// Held returns the number of connections held now: those served and
// those being turned away.
func (l *Listener) Held() int { return int(l.held.Load()) }

// Max returns the most connections served at once.
func (l *Listener) Max() int { return l.o.Max }

// Ceiling returns the most connections held at once.
func (l *Listener) Ceiling() int { return l.o.Ceiling }

// Accept waits for a connection it may serve and returns it. Connections
// past Max are turned away meanwhile.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		switch {
		case l.held.Load() >= int64(l.o.Ceiling):
			c.Close()
			l.o.Metrics.ConnRefused("closed")
		case l.served.Load() >= int64(l.o.Max):
			l.turnAway(c)
			l.o.Metrics.ConnRefused("answered")
		default:
			l.served.Add(1)
			l.held.Add(1)
			return &conn{Conn: c, release: func() { l.served.Add(-1); l.held.Add(-1) }}, nil
		}
	}
}

// turnAway hands c to the server that refuses its requests, and closes it
// after Grace at the latest.
func (l *Listener) turnAway(c net.Conn) {
	l.held.Add(1)
	ac := &conn{Conn: c, release: func() { l.held.Add(-1) }}
	time.AfterFunc(l.o.Grace, func() { ac.Close() })
	if !l.away.push(ac) {
		ac.Close()
	}
}

// Close closes the underlying listener and the connections being turned
// away. The connections served are the server's to close.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.Listener.Close()
		l.srv.Close()
		l.away.Close()
	})
	return l.closeErr
}

// conn is a connection counted until its first Close.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NetConn returns the connection accepted, as tls.Conn's NetConn does.
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// chanListener is a net.Listener whose connections are pushed to it.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

// push queues c for Accept; false when the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		for {
			select {
			case c := <-l.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
