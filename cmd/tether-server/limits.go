package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/connlimit"
	"github.com/tetherhq/tether/server/metrics"
)

const (
	// fdReserve is how many of the open files a node keeps for everything
	// but agent connections: the database, event files, files being
	// downloaded, the management listener and its connections, NATS and
	// PostgreSQL connections (a quarter of the open-file limit, if less).
	fdReserve = 1024
	// defaultMaxConnections is max_connections when the open-file limit is
	// unknown (systems without one).
	defaultMaxConnections = 10_000
	// connRetryDelay is the base delay given to a connection past the
	// limit (the delay is between it and twice it).
	connRetryDelay = 15 * time.Second
)

// nodeLimits are the limits that protect a node, resolved from its
// configuration and its open-file limit.
type nodeLimits struct {
	// maxConns agent connections are served; up to ceiling are held,
	// those past maxConns being answered UNAVAILABLE.
	maxConns, ceiling int
	// maxPolls polls may wait at once.
	maxPolls int
	// fdLimit is the process's open-file limit (0: unknown); auto is true
	// when maxConns was derived from it.
	fdLimit int
	auto    bool
}

// overflow is how many connections past a limit n are held to be told
// to come back later: 5% of n, at least 16 and at most 1,000.
func overflow(n int) int { return min(1000, max(16, n/20)) }

// resolveLimits resolves the configured limits for a process that may
// open fdLimit files (0: unknown). max_connections 0 is automatic: what
// fdLimit leaves once fdReserve is kept, less the overflow. An explicit
// max_connections that fdLimit cannot hold is an error.
func resolveLimits(cfg Config, fdLimit int) (nodeLimits, error) {
	l := nodeLimits{maxConns: cfg.MaxConnections, maxPolls: cfg.MaxWaitingPolls, fdLimit: fdLimit}
	room := 0 // descriptors agent connections may take
	if fdLimit > 0 {
		room = fdLimit - min(fdReserve, fdLimit/4)
	}
	switch {
	case l.maxConns == 0 && room > 0:
		l.auto = true
		l.maxConns = max(1, room-overflow(room))
	case l.maxConns == 0:
		l.auto = true
		l.maxConns = defaultMaxConnections
	case room > 0 && l.maxConns > room:
		return nodeLimits{}, fmt.Errorf("max_connections: %d is more than this process may hold open: its open-file limit is %d, "+
			"less %d kept for the node's own files, leaves %d (raise the limit, e.g. LimitNOFILE= in the systemd unit, or lower max_connections; 0: automatic)",
			l.maxConns, fdLimit, fdLimit-room, room)
	}
	switch l.ceiling = l.maxConns + overflow(l.maxConns); {
	case room > 0 && l.auto:
		l.ceiling = room
	case room > 0:
		l.ceiling = min(l.ceiling, room)
	}
	if l.maxPolls == 0 {
		l.maxPolls = l.maxConns
	}
	return l, nil
}

// resolveNodeLimits resolves the limits of cfg for this process.
func resolveNodeLimits(cfg Config) (nodeLimits, error) {
	return resolveLimits(cfg, connlimit.FileLimit())
}

// listen wraps the comms listener in the connection limit: past it, a
// connection's requests are answered UNAVAILABLE, with a retry delay,
// then it is closed; past the ceiling it is closed at once.
// It logs the limits.
func (l nodeLimits) listen(ln net.Listener, tlsConf *tls.Config, mx *metrics.Metrics, log *slog.Logger) net.Listener {
	how := "configured"
	if l.auto {
		how = "automatic"
	}
	log.Info("node limits", "max_connections", l.maxConns, "max_connections_set", how, "open_file_limit", l.fdLimit,
		"connections_answered_up_to", l.ceiling, "max_waiting_polls", l.maxPolls)
	cl := connlimit.Listen(ln, connlimit.Options{
		Max: l.maxConns, Ceiling: l.ceiling, TLSConfig: tlsConf, Metrics: mx, Log: log.With("listener", "comms-over-limit"),
		Refuse: comms.Refusal(func() error {
			d := connRetryDelay + rand.N(connRetryDelay)
			return &tether.Error{Code: tether.EUNAVAILABLE, RetryAfter: d, Message: fmt.Sprintf(
				"this node holds its maximum of %d agent connections; retry later (in %s) or on another node", l.maxConns, d.Round(time.Second))}
		}),
	})
	mx.Gauge("tether_comms_connections", "Agent connections the comms listener serves now (those past max_connections, being turned away, not included).",
		func() float64 { return float64(cl.Open()) })
	mx.Gauge("tether_comms_connections_max", "The most agent connections the comms listener serves at once (max_connections).",
		func() float64 { return float64(l.maxConns) })
	mx.Gauge("tether_polls_waiting_max", "The most polls that wait at once on this node (max_waiting_polls).",
		func() float64 { return float64(l.maxPolls) })
	return cl
}
