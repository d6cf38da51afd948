package pgnotify

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/notify"
)

// DefaultChannel is the notification channel of Options.Channel.
const DefaultChannel = "tether_notify"

// Defaults of Options.
const (
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 10 * time.Second
	DefaultPingInterval = 30 * time.Second
	DefaultMaxPending   = 100_000
)

const (
	// connectTimeout bounds a connection attempt when the connection
	// string sets no connect_timeout.
	connectTimeout = 10 * time.Second
	// pingTimeout bounds the check of an idle listening connection.
	pingTimeout = 5 * time.Second
	// closeGrace is how long Close lets the sender deliver what is pending.
	closeGrace = 2 * time.Second
)

// Options configure a Notifier. The zero value is the defaults.
type Options struct {
	// Channel is the notification channel; every node of a cluster uses
	// the same (DefaultChannel when empty). 1 to 63 characters
	// [a-z0-9_], starting with a letter.
	Channel string
	// Log receives losses and recoveries of the connections
	// (slog.Default() when nil).
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts to
	// reconnect: it starts at MinBackoff and doubles up to MaxBackoff,
	// with jitter.
	MinBackoff, MaxBackoff time.Duration
	// PingInterval is how often a listening connection that received
	// nothing is checked, so that one the network dropped without a word
	// is found and replaced.
	PingInterval time.Duration
	// MaxPending bounds the agent ids waiting to be sent to the other
	// nodes (while the database cannot be reached, say). Past it they are
	// replaced by one message that wakes every poll of every node.
	MaxPending int
}

// Caches is what a node caches of the store (comms.Service): the notifier
// drops entries when another node says it changed them. Its methods must
// not tell other nodes in turn.
type Caches interface {
	// DropAgent drops the cached record of an agent.
	DropAgent(agentID string)
	// DropConfigs drops the cached configuration versions.
	DropConfigs()
	// DropAll drops everything cached.
	DropAll()
}

// Notifier is a tether.ChangeNotifier over PostgreSQL LISTEN/NOTIFY for the
// server nodes that share one database. Create it with New and stop it
// with Close.
type Notifier struct {
	o       Options
	node    string
	config  *pgx.ConnConfig
	hub     *notify.Hub
	caches  atomic.Pointer[Caches]
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{} // closed by Close: send what is pending, then stop
	sent    chan struct{} // closed when the sender stopped
	kick    chan struct{}
	closing sync.Once

	listening  atomic.Bool
	reconnects atomic.Int64

	mu      sync.Mutex
	pending pending
}

var _ tether.ChangeNotifier = (*Notifier)(nil)

// pending is what waits to be sent to the other nodes.
type pending struct {
	wake   map[string]struct{}
	agents map[string]struct{}
	config bool
	all    bool
}

// New connects to the database at connString (a PostgreSQL URL or
// key=value string, as pgx reads it), listens on the channel and returns
// the notifier. It fails when the database cannot be reached within ctx;
// later losses of the connection are repaired in the background.
func New(ctx context.Context, connString string, o Options) (*Notifier, error) {
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if !validChannel(o.Channel) {
		return nil, fmt.Errorf("notification channel %q: want 1 to 63 characters [a-z0-9_], starting with a letter", o.Channel)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	// pgxpool's parser, so that a store URL with pool settings
	// (pool_max_conns) is read as the store reads it.
	pc, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("notification database: %w", err)
	}
	config := pc.ConnConfig
	n := &Notifier{
		o: o, node: newNode(), config: config, hub: notify.NewHub(),
		done: make(chan struct{}), sent: make(chan struct{}), kick: make(chan struct{}, 1),
	}
	n.log = o.Log.With("component", "pgnotify", "node", n.node)
	conn, err := n.listen(ctx)
	if err != nil {
		return nil, err
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(2)
	go n.listenLoop(conn)
	go n.sendLoop()
	return n, nil
}

// SetCaches sets the caches that messages from other nodes drop entries
// of. Call it once the comms service exists; until then no message drops
// anything (nothing is cached yet).
func (n *Notifier) SetCaches(c Caches) { n.caches.Store(&c) }

// Node returns this notifier's id, carried in its messages (and in the
// application_name of its connections: "tether-listen <node>" and
// "tether-notify <node>").
func (n *Notifier) Node() string { return n.node }

// Subscribe implements tether.Notifier for the polls this node holds.
func (n *Notifier) Subscribe(agentID string) (<-chan struct{}, func()) {
	return n.hub.Subscribe(agentID)
}

// Notify wakes the polls of the agents held by this node at once, and by
// the other nodes as soon as the database delivers the notification.
func (n *Notifier) Notify(agentIDs ...string) {
	if len(agentIDs) == 0 {
		return
	}
	n.hub.Notify(agentIDs...)
	n.queue(func(p *pending) {
		for _, id := range agentIDs {
			p.wake[id] = struct{}{}
		}
	})
}

// AgentChanged implements tether.ChangeNotifier: the other nodes drop
// their cached records of the agents.
func (n *Notifier) AgentChanged(agentIDs ...string) {
	if len(agentIDs) == 0 {
		return
	}
	n.queue(func(p *pending) {
		for _, id := range agentIDs {
			p.agents[id] = struct{}{}
		}
	})
}

// ConfigChanged implements tether.ChangeNotifier: the other nodes drop
// their cached configuration versions.
func (n *Notifier) ConfigChanged() {
	n.queue(func(p *pending) { p.config = true })
}

// Waiting returns the number of polls waiting on this node (for metrics).
func (n *Notifier) Waiting() int { return n.hub.Waiting() }

// Generation and NotifiedSince are the local hub's (notify.Hub): the other
// nodes' notifications reach it, and a lost connection ends in NotifyAll.
func (n *Notifier) Generation() uint64 { return n.hub.Generation() }

// NotifiedSince: see Generation.
func (n *Notifier) NotifiedSince(agentID string, gen uint64) bool {
	return n.hub.NotifiedSince(agentID, gen)
}

// Listening reports whether the listening connection is up: while it is
// not, notifications from other nodes are missed, and once it is back
// every waiting poll of this node looks at the store again.
func (n *Notifier) Listening() bool { return n.listening.Load() }

// Reconnects returns how many times the listening connection was
// re-established.
func (n *Notifier) Reconnects() int64 { return n.reconnects.Load() }

// Close sends what is pending (for up to two seconds), then closes the
// connections. Polls that are waiting are not woken.
func (n *Notifier) Close() error {
	n.closing.Do(func() {
		close(n.done)
		t := time.NewTimer(closeGrace)
		select {
		case <-n.sent:
		case <-t.C:
		}
		t.Stop()
		n.cancel()
		n.wg.Wait()
	})
	return nil
}

// queue records what to send and wakes the sender. Past MaxPending ids,
// everything pending becomes one "all" message.
func (n *Notifier) queue(add func(*pending)) {
	n.mu.Lock()
	p := &n.pending
	if p.wake == nil {
		p.wake, p.agents = map[string]struct{}{}, map[string]struct{}{}
	}
	add(p)
	if len(p.wake)+len(p.agents) > n.o.MaxPending {
		clear(p.wake)
		clear(p.agents)
		p.all = true
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// take returns the payloads of what is pending, in the order the other
// nodes must act on them (drops before wake-ups), and empties it.
func (n *Notifier) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := &n.pending
	var out []string
	if p.all {
		out = append(out, encode(n.node, kindAll, nil)...)
	} else {
		if p.config {
			out = append(out, encode(n.node, kindConfig, nil)...)
		}
		out = append(out, encode(n.node, kindAgent, keys(p.agents))...)
		out = append(out, encode(n.node, kindWake, keys(p.wake))...)
	}
	clear(p.wake)
	clear(p.agents)
	p.config, p.all = false, false
	return out
}

func keys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// sendLoop sends what is queued, one batch of payloads per round trip, and
// retries with backoff while the database cannot be reached.
func (n *Notifier) sendLoop() {
	defer n.wg.Done()
	defer close(n.sent)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	var out []string
	failures := 0
	for {
		if len(out) == 0 {
			out = n.take()
		}
		if len(out) == 0 {
			select {
			case <-n.kick:
				continue
			case <-n.done:
				// Close: send what was queued before it, then stop.
				if out = n.take(); len(out) == 0 {
					return
				}
			case <-n.ctx.Done():
				return
			}
		}
		err := n.send(&conn, out)
		if err == nil {
			if failures > 0 {
				n.log.Info("notifications reach the database again", "failures", failures)
			}
			out, failures = nil, 0
			continue
		}
		if n.ctx.Err() != nil {
			return
		}
		if conn != nil {
			closeConn(conn)
			conn = nil
		}
		if failures == 0 {
			n.log.Warn("cannot send notifications to the other nodes: retrying", "err", err)
		} else {
			n.log.Debug("cannot send notifications", "err", err, "failures", failures)
		}
		if !sleep(n.ctx, n.backoff(failures)) {
			return
		}
		failures++
	}
}

// send delivers the payloads in one round trip, connecting first if
// needed.
func (n *Notifier) send(conn **pgx.Conn, payloads []string) error {
	ctx, cancel := context.WithTimeout(n.ctx, connectTimeout)
	defer cancel()
	if *conn == nil || (*conn).IsClosed() {
		c, err := n.connect(ctx, "tether-notify")
		if err != nil {
			return err
		}
		*conn = c
	}
	b := &pgx.Batch{}
	for _, p := range payloads {
		b.Queue("SELECT pg_notify($1, $2)", n.o.Channel, p)
	}
	if err := (*conn).SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// listenLoop receives notifications on conn and, when it is lost,
// connects again with backoff, then wakes every waiting poll of this node
// (catch-up: notifications sent in between were missed).
func (n *Notifier) listenLoop(conn *pgx.Conn) {
	defer n.wg.Done()
	for {
		err := n.receive(conn)
		n.listening.Store(false)
		closeConn(conn)
		if n.ctx.Err() != nil {
			return
		}
		n.log.Warn("lost the connection that listens to the other nodes: reconnecting", "err", err)
		for attempt := 0; ; attempt++ {
			if !sleep(n.ctx, n.backoff(attempt)) {
				return
			}
			if conn, err = n.listen(n.ctx); err == nil {
				break
			}
			if n.ctx.Err() != nil {
				return
			}
			n.log.Debug("cannot listen to the other nodes", "err", err, "attempt", attempt+1)
		}
		n.reconnects.Add(1)
		n.log.Info("listening to the other nodes again: every waiting poll looks at the store")
		n.catchUp()
	}
}

// listen opens the listening connection.
func (n *Notifier) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := n.connect(ctx, "tether-listen")
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.o.Channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("listen: %w", err)
	}
	n.listening.Store(true)
	return conn, nil
}

// receive handles notifications until the connection fails or the
// notifier closes. A connection idle for PingInterval is pinged.
func (n *Notifier) receive(conn *pgx.Conn) error {
	for {
		ctx, cancel := context.WithTimeout(n.ctx, n.o.PingInterval)
		note, err := conn.WaitForNotification(ctx)
		cancel()
		switch {
		case err == nil:
			n.handle(note.Payload)
			continue
		case n.ctx.Err() != nil:
			return n.ctx.Err()
		case !pgconn.Timeout(err):
			return err
		}
		ctx, cancel = context.WithTimeout(n.ctx, pingTimeout)
		err = conn.Ping(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// handle acts on a notification from the database.
func (n *Notifier) handle(payload string) {
	m := decode(payload)
	if m.node == n.node {
		return // acted on locally when sent
	}
	if !m.known {
		n.log.Debug("unreadable notification: every waiting poll looks at the store", "payload", truncate(payload, 64))
		n.catchUp()
		return
	}
	switch m.kind {
	case kindWake:
		n.hub.Notify(m.ids...)
	case kindAgent:
		if c := n.caches.Load(); c != nil {
			for _, id := range m.ids {
				(*c).DropAgent(id)
			}
		}
	case kindConfig:
		if c := n.caches.Load(); c != nil {
			(*c).DropConfigs()
		}
	case kindAll:
		n.catchUp()
	}
}

// catchUp drops every cached record and wakes every waiting poll: each
// looks at the store again, so none waits for the end of its window for
// something it was not told.
func (n *Notifier) catchUp() {
	if c := n.caches.Load(); c != nil {
		(*c).DropAll()
	}
	n.hub.NotifyAll()
}

// connect opens a connection named "<role> <node>" (application_name).
func (n *Notifier) connect(ctx context.Context, role string) (*pgx.Conn, error) {
	cfg := n.config.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = role + " " + n.node
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the notification database: %w", err)
	}
	return conn, nil
}

// backoff is the wait before the attempt after failures failures: from
// MinBackoff doubling up to MaxBackoff, with up to half of it at random.
func (n *Notifier) backoff(failures int) time.Duration {
	d := n.o.MinBackoff << min(failures, 30)
	if d > n.o.MaxBackoff || d <= 0 {
		d = n.o.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// newNode returns a random node id: nodeLen characters of nodeAlphabet.
func newNode() string {
	b := make([]byte, nodeLen)
	_, _ = crand.Read(b)
	for i := range b {
		b[i] = nodeAlphabet[int(b[i])%len(nodeAlphabet)]
	}
	return string(b)
}

func validChannel(s string) bool {
	if s == "" || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
