// Package natsjs is the event sink that publishes every event to a NATS
// JetStream stream, one message per event.
//
// # Messages
//
// An event of module M goes to the subject "<prefix>.<M>" (prefix
// "tether.events" by default). A module name is one subject token: a '.'
// in it, or any byte outside a-z A-Z 0-9 '_' '-', becomes '_' (module
// "acme.scan" publishes to "tether.events.acme_scan"); the exact name is
// in the body and in the Tether-Module header.
//
// The body is the event's NDJSON line, byte for byte what the file sink
// writes (see server/sink/ndjson): one JSON object with the batch's agent,
// groups, sequence and receive time, ended by a newline, so concatenated
// bodies are an NDJSON stream. The headers repeat what a consumer filters
// on without decoding the body: Tether-Agent-Id, Tether-Sequence,
// Tether-Event-Id, Tether-Module and Tether-Type, and Nats-Msg-Id.
//
// # Exactly once
//
// Nats-Msg-Id is "<agent id>/<batch sequence>/<index of the event in the
// batch>". A batch an agent sends again after a failure has the same agent,
// sequence and events, so its messages have the same ids, and the stream
// drops every message whose id it stored within its duplicate window
// (StreamConfig.Duplicates, 2 minutes by default): a retry stores only
// what the earlier attempts did not. Batches that no agent sent (archived
// orders, tether.Batch.ID "") carry no Nats-Msg-Id.
//
// Write returns nil only once the stream acknowledged every message of the
// batch: it publishes them all asynchronously, then waits for every
// acknowledgement, for at most Options.PublishTimeout. Any failure (a
// refused or lost acknowledgement, a disconnection, the timeout) is
// returned, the agent is not answered, and the whole batch comes back
// later; the messages the stream did store are dropped as duplicates then.
//
// The server's own exactly-once delivery (server/ingest) records a batch
// as pending before writing it to the sinks and as delivered after, and a
// resend of a delivered batch is written nowhere. So the stream is given a
// batch again only when its delivery was cut short: a node crash (the
// agent resends at once, to any node) or a sink failure (the agent backs
// off, up to 30 seconds). Both come back within the duplicate window, and
// each event is then stored once. A delivery cut short and completed only
// after more than the window (JetStream unreachable for longer than it)
// may store the events acknowledged before the cut a second time, with
// the same Nats-Msg-Id, Tether-Agent-Id and Tether-Event-Id: at most one
// batch per agent per outage.
//
// The sink is not a tether.HeldSink. Held would have to find the messages
// of one batch in the stream: JetStream looks messages up by subject, not
// by id or header, so it would scan every message stored since the batch
// was first accepted, and after an outage every agent's pending batch
// would scan that same, growing, tail. The duplicate window gives the same
// answer for free in the cases that matter; and a HeldSink is handed only
// the events it lacks, which would shift the indexes that the message ids
// are made of.
//
// # Stream
//
// Open uses the stream named Options.Stream ("TETHER_EVENTS") and creates
// it when it does not exist: subjects "<prefix>.>", file storage, limits
// retention (the oldest messages are discarded past Options.MaxAge or
// Options.MaxBytes), Options.Replicas replicas and a duplicate window of
// Options.DedupWindow. An existing stream is used as it is, never changed:
// Open checks that it takes the sink's subjects and logs its duplicate
// window.
package natsjs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
)

// Defaults of Options.
const (
	DefaultURL            = "nats://127.0.0.1:4222"
	DefaultStream         = "TETHER_EVENTS"
	DefaultSubjectPrefix  = "tether.events"
	DefaultDedupWindow    = 2 * time.Minute
	DefaultPublishTimeout = 10 * time.Second
	DefaultMaxAge         = 30 * 24 * time.Hour
	DefaultReplicas       = 1
)

// Headers of every message.
const (
	HeaderAgentID  = "Tether-Agent-Id"
	HeaderSequence = "Tether-Sequence"
	HeaderEventID  = "Tether-Event-Id"
	HeaderModule   = "Tether-Module"
	HeaderType     = "Tether-Type"
)

// maxPending bounds the messages published and not yet acknowledged, over
// all the batches being written; a Write past it waits for room.
const maxPending = 16384

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("nats sink: closed")

// Options configure a Sink. The zero value connects to DefaultURL without
// credentials.
type Options struct {
	// URLs are the NATS servers (nats://, tls://, ws://, wss://); the
	// client connects to one and fails over to the others.
	URLs []string
	// Stream is the JetStream stream; SubjectPrefix the start of every
	// subject ("<prefix>.<module>").
	Stream        string
	SubjectPrefix string
	// PublishTimeout bounds a Write: all of a batch's acknowledgements must
	// arrive within it.
	PublishTimeout time.Duration

	// DedupWindow, Replicas, MaxAge and MaxBytes configure the stream when
	// Open creates it. MaxAge 0 is DefaultMaxAge, a negative MaxAge keeps
	// messages whatever their age; MaxBytes 0 sets no size limit.
	DedupWindow time.Duration
	Replicas    int
	MaxAge      time.Duration
	MaxBytes    int64

	// CAFile is the CA to verify the servers with (PEM; default: the
	// system's). CertFile and KeyFile are a client certificate, for servers
	// that verify clients.
	CAFile, CertFile, KeyFile string
	// At most one way to authenticate: a credentials file (user JWT and
	// NKey seed), a user and password, or a token.
	CredsFile      string
	User, Password string
	Token          string
	// Name is the connection's name, shown by the server's monitoring
	// (default "tether-server").
	Name string
	// Log receives connection changes (default slog.Default()).
	Log *slog.Logger
}

func (o *Options) setDefaults() {
	if len(o.URLs) == 0 {
		o.URLs = []string{DefaultURL}
	}
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	switch {
	case o.MaxAge == 0:
		o.MaxAge = DefaultMaxAge
	case o.MaxAge < 0:
		o.MaxAge = 0 // JetStream's "no limit"
	}
	if o.Name == "" {
		o.Name = "tether-server"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

func (o *Options) validate() error {
	switch {
	case !validStream(o.Stream):
		return fmt.Errorf("stream %q: want letters, digits, '_' or '-'", o.Stream)
	case !validPrefix(o.SubjectPrefix):
		return fmt.Errorf("subject prefix %q: want tokens of letters, digits, '_' or '-' separated by '.'", o.SubjectPrefix)
	case o.PublishTimeout < 0, o.DedupWindow < 0, o.MaxBytes < 0, o.Replicas < 0:
		return errors.New("negative publish timeout, dedup window, max bytes or replicas")
	case o.MaxAge > 0 && o.DedupWindow > o.MaxAge:
		return fmt.Errorf("dedup window %s is longer than max age %s", o.DedupWindow, o.MaxAge)
	case (o.CertFile == "") != (o.KeyFile == ""):
		return errors.New("client certificate: set both the certificate and the key file, or neither")
	case o.Password != "" && o.User == "":
		return errors.New("password without a user")
	}
	n := 0
	for _, set := range []bool{o.CredsFile != "", o.User != "", o.Token != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("set one of credentials file, user and password, token")
	}
	return nil
}

// Sink publishes event batches to a JetStream stream. It is safe for
// concurrent use.
type Sink struct {
	o      Options
	nc     *nats.Conn
	js     jetstream.JetStream
	window time.Duration // the stream's duplicate window

	mu     sync.RWMutex // held for reading by Writes, for writing by Close
	closed bool

	// afterPublish, when set (by tests), is called after each message
	// of a Write was published, with its index.
	afterPublish func(i int)
}

var _ tether.Sink = (*Sink)(nil)

// Open connects to NATS and makes sure the stream exists (see the package
// comment). The connection then reconnects by itself for as long as the
// sink is open; Writes fail while it is down.
func Open(ctx context.Context, o Options) (*Sink, error) {
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("nats sink: %w", err)
	}
	opts, err := connectOptions(&o)
	if err != nil {
		return nil, fmt.Errorf("nats sink: %w", err)
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("nats sink: connect to %s: %w", strings.Join(o.URLs, ", "), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(o.PublishTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats sink: %w", err)
	}
	s := &Sink{o: o, nc: nc, js: js}
	if s.window, err = s.ensureStream(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats sink: %w", err)
	}
	return s, nil
}

func connectOptions(o *Options) ([]nats.Option, error) {
	log := o.Log
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		// No buffering while disconnected: a publish fails at once, and the
		// batch comes back with the agent's retry.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats sink: disconnected; event pushes fail until it reconnects", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats sink: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats sink: connection error", "err", err)
		}),
	}
	if o.CAFile != "" || o.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s: no PEM certificate in it", o.CAFile)
			}
		}
		if o.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case o.CredsFile != "":
		if _, err := os.Stat(o.CredsFile); err != nil {
			return nil, fmt.Errorf("credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	return opts, nil
}

// DedupWindow returns the duplicate window of the stream the sink
// publishes to.
func (s *Sink) DedupWindow() time.Duration { return s.window }

// Write publishes b's events, one message each, and returns once the
// stream acknowledged all of them.
func (s *Sink) Write(ctx context.Context, b *tether.Batch) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nats sink: %w", err)
	}
	if len(b.Events) == 0 {
		return nil
	}
	msgs, err := s.messages(b)
	if err != nil {
		return fmt.Errorf("nats sink: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.PublishTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	id := b.ID()
	for i, m := range msgs {
		wait := time.Until(deadline)
		if err := ctx.Err(); err != nil || wait <= 0 {
			return s.timeout(ctx, b, len(futures), len(msgs))
		}
		opts := []jetstream.PublishOpt{jetstream.WithExpectStream(s.o.Stream), jetstream.WithStallWait(wait)}
		if id != "" {
			opts = append(opts, jetstream.WithMsgID(id+"/"+strconv.Itoa(i)))
		}
		f, err := s.js.PublishMsgAsync(m, opts...)
		if err != nil {
			return fmt.Errorf("nats sink: publish event %d of %d: %w", i+1, len(msgs), err)
		}
		futures = append(futures, f)
		if s.afterPublish != nil {
			s.afterPublish(i)
		}
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("nats sink: event %d of %d not acknowledged: %w", i+1, len(msgs), err)
		case <-ctx.Done():
			return s.timeout(ctx, b, i, len(msgs))
		}
	}
	return nil
}

// timeout is the error of a Write whose context ended with acked of n
// events acknowledged.
func (s *Sink) timeout(ctx context.Context, b *tether.Batch, acked, n int) error {
	err := context.Cause(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("nats sink: %d of %d events acknowledged within %s: %w", acked, n, s.o.PublishTimeout, err)
	}
	return fmt.Errorf("nats sink: %d of %d events acknowledged: %w", acked, n, err)
}

// messages returns the messages of b's events. It fails, before anything
// is published, when one is larger than the server takes.
func (s *Sink) messages(b *tether.Batch) ([]*nats.Msg, error) {
	msgs := make([]*nats.Msg, len(b.Events))
	one := *b
	seq := strconv.FormatUint(b.Sequence, 10)
	limit := s.nc.MaxPayload()
	for i := range b.Events {
		ev := &b.Events[i]
		one.Events = b.Events[i : i+1]
		line, err := ndjson.AppendBatch(nil, &one)
		if err != nil {
			return nil, err
		}
		m := nats.NewMsg(s.o.SubjectPrefix + "." + subjectToken(ev.Module))
		m.Data = line
		m.Header.Set(HeaderAgentID, b.AgentID)
		m.Header.Set(HeaderSequence, seq)
		m.Header.Set(HeaderEventID, ev.ID)
		m.Header.Set(HeaderModule, ev.Module)
		m.Header.Set(HeaderType, ev.Type)
		if size := int64(len(line) + headerSize(m.Header)); limit > 0 && size > limit {
			return nil, fmt.Errorf("event %q: message of %d bytes is over the NATS server's max_payload (%d): raise max_payload", ev.ID, size, limit)
		}
		msgs[i] = m
	}
	return msgs, nil
}

// headerSize returns about the size of h on the wire, the Nats-Msg-Id and
// Nats-Expected-Stream headers added at publish included.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n") + 200
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// Close waits for the Writes under way, makes later ones fail with
// ErrClosed and closes the connection.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.nc.Close()
	return nil
}

// subjectToken makes a module name one subject token: '.' and every byte
// outside a-z A-Z 0-9 '_' '-' become '_'.
func subjectToken(module string) string {
	if module == "" {
		return "_"
	}
	b := []byte(module)
	for i, c := range b {
		if !tokenByte(c) {
			b[i] = '_'
		}
	}
	return string(b)
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func validStream(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !tokenByte(name[i]) {
			return false
		}
	}
	return true
}

func validPrefix(prefix string) bool {
	for tok := range strings.SplitSeq(prefix, ".") {
		if !validStream(tok) {
			return false
		}
	}
	return true
}
