package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/live"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/mgmt"
	"github.com/tetherhq/tether/server/pki"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/natsjs"
	"github.com/tetherhq/tether/server/tlslisten"
)

// adminTokenFile is where the bootstrap admin token is written, 0600.
const adminTokenFile = "admin.token"

// keyRefresh is how often a node reads the signing keys again, to sign
// with a key another node added.
const keyRefresh = 30 * time.Second

// Node is a running server node.
type Node struct {
	// CommsURL and APIURL are the listeners' URLs (with the real ports when
	// the configuration asked for :0).
	CommsURL string
	APIURL   string
	// DebugURL is the debug listener's URL (http://HOST:PORT), when
	// debug_addr is set.
	DebugURL string
	// CACertFile is the CA agents and tools must trust.
	CACertFile string
	// AdminToken is the bootstrap admin token (read from DATA/admin.token).
	AdminToken string
	// FirstStart is true when this start initialised the data directory
	// (it created the bootstrap admin token).
	FirstStart bool

	log     *slog.Logger
	cfg     Config
	store   tether.Store
	keys    *authn.Keyring
	sink    *file.Sink
	nats    *natsjs.Sink
	live    *live.Hub // accepted batches, for people following them
	servers []*http.Server
	debug   *http.Server // debug_addr's, closed with the resources
	closing chan struct{}
	ready   atomic.Bool
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	errc    chan error

	// notifier wakes long-polls: in-process, or across the nodes of a
	// PostgreSQL store (cluster.go).
	notifier nodeNotifier
}

// startNode initialises the data directory if needed and starts serving.
// Stop it with Shutdown.
func startNode(ctx context.Context, cfg Config, log *slog.Logger) (n *Node, err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	limits, err := resolveNodeLimits(cfg)
	if err != nil {
		return nil, err
	}
	n = &Node{log: log, cfg: cfg, closing: make(chan struct{}), errc: make(chan error, 4)}
	partial := n // the return statements below set n to nil on failure
	defer func() {
		if err != nil {
			partial.closeResources()
		}
	}()

	if err := n.serveDebug(); err != nil {
		return nil, err
	}
	if n.store, _, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	tlsCert, caFile, err := n.setupTLS(ctx)
	if err != nil {
		return nil, err
	}
	n.CACertFile = caFile
	keys, err := authn.NewKeyring(ctx, n.store, time.Duration(cfg.TokenTTL))
	if err != nil {
		return nil, err
	}
	n.keys = keys
	if n.AdminToken, err = n.bootstrapAdmin(ctx); err != nil {
		return nil, err
	}
	releaseKey, err := n.releaseKey(ctx)
	if err != nil {
		return nil, err
	}
	fileStore, err := files.Open(filepath.Join(cfg.DataDir, "files"), releaseKey, files.Options{MaxBytes: cfg.Files.MaxBytes})
	if err != nil {
		return nil, err
	}
	if cfg.Events.Files {
		if n.sink, err = file.Open(filepath.Join(cfg.DataDir, "events"), file.Options{
			MaxFileBytes: cfg.Events.MaxFileBytes, MaxFileAge: time.Duration(cfg.Events.MaxFileAge),
			Uncompressed: !cfg.Events.Compress, MaxAge: time.Duration(cfg.Events.Retention),
			MaxTotalBytes: cfg.Events.MaxTotalBytes, Log: log.With("component", "event-files"),
		}); err != nil {
			return nil, fmt.Errorf("open event files: %w", err)
		}
	}
	if err := n.openNATS(ctx); err != nil {
		return nil, err
	}
	// Last among the sinks: it sees the batches the durable sinks took.
	n.live = live.New(live.Options{})

	commsLn, err := net.Listen("tcp", cfg.CommsAddr)
	if err != nil {
		return nil, fmt.Errorf("comms_addr: %w (is another server running? choose another with --comms-addr)", err)
	}
	apiLn, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		commsLn.Close()
		return nil, fmt.Errorf("api_addr: %w (is another server running? choose another with --api-addr)", err)
	}
	n.CommsURL = listenerURL(commsLn)
	n.APIURL = listenerURL(apiLn)
	_, commsPort, _ := net.SplitHostPort(commsLn.Addr().String())

	hub, err := openNotifier(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	n.notifier = hub
	seen := presence.New(n.store, log)
	mx := metrics.New()
	mx.Gauge("tether_polls_waiting", "Long-polls held open by this node.", func() float64 { return float64(hub.Waiting()) })
	mx.OrdersByStatus(n.store.CountOrders)
	mx.Gauge("tether_event_streams", "Event streams (tetherctl events tail) open on this node.", func() float64 { return float64(n.live.Subscribers()) })
	svc := comms.New(comms.Options{
		Store: n.store, Sinks: append(n.eventSinks(), n.live), Notifier: hub, Keys: keys, Presence: seen,
		Log: log.With("api", "comms"), PollWait: time.Duration(cfg.PollWait), MaxPollWait: time.Duration(cfg.MaxPollWait),
		MaxBodyBytes: cfg.MaxBodyBytes, Closing: n.closing, Metrics: mx, Files: fileStore,
		Limits: cfg.Ingest.limits(), MaxWaitingPolls: limits.maxPolls,
	})
	joinNotifier(hub, svc, mx)
	api := mgmt.New(mgmt.Options{
		Store: n.store, Commands: &command.Manager{Store: n.store, Notifier: hub, Metrics: mx}, Notifier: hub,
		Metrics: mx.Handler(), Closing: n.closing, Files: fileStore, Events: n.live,
		Presence: seen, Log: log.With("api", "management"), PollWindow: time.Duration(cfg.PollWait),
		CommsURLs: cfg.CommsURLs, CommsPort: commsPort, AgentChanged: svc.Forget, ConfigChanged: svc.ForgetConfigs,
		Ready: func(context.Context) error {
			if !n.ready.Load() {
				return errors.New("not serving")
			}
			return nil
		},
	})

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.goBackground(func() { command.RunSweeper(bg, n.store, time.Duration(cfg.SweepInterval), log, mx) })
	n.goBackground(func() { seen.Run(bg, 5*time.Second) })
	// A signing key another node added signs this node's tokens too.
	n.goBackground(func() { keys.Run(bg, keyRefresh) })
	runner := &command.ServerRunner{Store: n.store, Handlers: n.serverHandlers(), Log: log.With("component", "server-orders"), Metrics: mx}
	n.goBackground(func() { runner.Run(bg) })
	archiver := &command.Archiver{Store: n.store, Sinks: n.eventSinks(), Retention: time.Duration(cfg.OrderRetention),
		Interval: time.Duration(cfg.RetentionInterval), Log: log.With("component", "retention"),
		Exclusive: exclusive(n.store, lockArchive)} // one node of a cluster at a time
	n.goBackground(func() { archiver.Run(bg) })

	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{tlsCert}}
	n.serve(limits.listen(commsLn, tlsConf, mx, log), svc.Handler(), tlsConf, "comms")
	n.serve(apiLn, api, tlsConf, "management")
	n.ready.Store(true)
	log.Info("tether-server started", "comms", n.CommsURL, "api", n.APIURL, "data_dir", cfg.DataDir, "store", storeName(cfg))
	return n, nil
}

func (n *Node) goBackground(f func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
}

func (n *Node) serve(ln net.Listener, h http.Handler, tlsConf *tls.Config, name string) {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	tlsConf = tlsConf.Clone()
	tlsConf.NextProtos = []string{"h2", "http/1.1"}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf.Clone(),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Duration(n.cfg.MaxPollWait),
		ErrorLog:          slog.NewLogLogger(n.log.With("listener", name).Handler(), slog.LevelDebug),
		HTTP2: &http.HTTP2Config{
			// A connection keeps a read buffer as large as the largest
			// frame it received, for its whole life: with the default
			// (1 MiB), an agent that pushed one large batch would pin as
			// much. 16 KiB is HTTP/2's own default, and HAProxy's.
			MaxReadFrameSize: 16 << 10,
		},
	}
	n.servers = append(n.servers, srv)
	// Handshakes on goroutines of their own: a connection's goroutine
	// then holds 8 KiB of stack rather than 16 (see server/tlslisten).
	ln = tlslisten.New(ln, tlsConf, tlslisten.Options{HandshakeTimeout: srv.ReadHeaderTimeout, Log: n.log.With("listener", name)})
	n.goBackground(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.errc <- fmt.Errorf("%s listener: %w", name, err)
		}
	})
}

// Err returns a channel that receives a fatal serving error.
func (n *Node) Err() <-chan error { return n.errc }

// Shutdown stops accepting requests, releases waiting polls, lets running
// requests finish (up to ctx), then flushes and closes everything.
func (n *Node) Shutdown(ctx context.Context) error {
	n.ready.Store(false)
	close(n.closing)
	var errs []error
	for _, s := range n.servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			s.Close()
		}
	}
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	errs = append(errs, n.closeResources())
	return errors.Join(errs...)
}

func (n *Node) closeResources() error {
	var errs []error
	if n.debug != nil {
		errs = append(errs, n.debug.Close())
	}
	if n.live != nil {
		errs = append(errs, n.live.Close())
	}
	if n.sink != nil {
		errs = append(errs, n.sink.Close())
	}
	if n.nats != nil {
		errs = append(errs, n.nats.Close())
	}
	if n.notifier != nil {
		errs = append(errs, n.notifier.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// shared reports whether the node's store is one that several nodes share
// (PostgreSQL): the CA and the release-signing key are kept in it then,
// rather than in files of the data directory.
func (n *Node) shared() bool { return n.cfg.Store != "" }

// setupTLS returns the server certificate and the path of the CA file
// agents must trust: the operator's, or a generated CA. A single node keeps
// its CA in DATA/tls; the nodes of a shared store share the CA the first
// of them created in the store, and write its certificate to DATA/tls.
func (n *Node) setupTLS(ctx context.Context) (tls.Certificate, string, error) {
	dir := filepath.Join(n.cfg.DataDir, "tls")
	if n.cfg.TLS.CertFile != "" {
		cert, err := pki.LoadServerCert(n.cfg.TLS.CertFile, n.cfg.TLS.KeyFile)
		return cert, n.cfg.TLS.CAFile, err
	}
	var (
		ca  *pki.CA
		err error
	)
	if n.shared() {
		ca, err = pki.EnsureSharedCA(ctx, n.store, dir, "Tether CA")
	} else {
		ca, err = pki.EnsureCA(dir, "Tether CA")
	}
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("certificate authority: %w", err)
	}
	cert, err := pki.EnsureServerCert(ca, dir, pki.HostNames(n.cfg.PublicNames...))
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("server certificate: %w", err)
	}
	return cert, filepath.Join(dir, pki.CACertFile), nil
}

// releaseKey returns the release-signing key: DATA/release.key for a
// single node, the store's for the nodes of a shared store.
func (n *Node) releaseKey(ctx context.Context) (ed25519.PrivateKey, error) {
	if n.shared() {
		return files.EnsureSharedKey(ctx, n.store, n.cfg.DataDir)
	}
	return files.EnsureKey(n.cfg.DataDir)
}

// bootstrapAdmin creates the first admin token when the store has none and
// writes it to DATA/admin.token (0600); otherwise it reads that file. Of
// nodes starting at once on a new store, one creates the token (and has
// the file); the others find it there.
func (n *Node) bootstrapAdmin(ctx context.Context) (string, error) {
	path := filepath.Join(n.cfg.DataDir, adminTokenFile)
	admins, err := n.store.Tokens(ctx, tether.TokenFilter{Role: tether.RoleAdmin, IncludeRevoked: true})
	if err != nil {
		return "", fmt.Errorf("look up admin tokens: %w", err)
	}
	if len(admins) > 0 {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", nil // the operator removed the file: fine
		}
		return string(bytes.TrimSpace(b)), nil
	}
	secret, tok := authn.NewAPIToken()
	// The bootstrap token is the first administrator's: a person's.
	tok.Name, tok.Role, tok.Kind, tok.CreatedAt = "admin", tether.RoleAdmin, tether.KindUser, time.Now().UTC()
	if err := os.WriteFile(path+".tmp", []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	created, err := n.store.CreateFirstAdmin(ctx, tok)
	if err != nil || !created {
		os.Remove(path + ".tmp")
	}
	if err != nil {
		return "", fmt.Errorf("create admin token: %w", err)
	}
	if !created {
		n.log.Info("another node created the bootstrap admin token: it is in the admin.token file of that node's data directory")
		return "", nil
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	n.FirstStart = true
	return secret, nil
}

// listenerURL returns https://HOST:PORT for a listener, with 127.0.0.1 for
// a wildcard address.
func listenerURL(ln net.Listener) string {
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}
