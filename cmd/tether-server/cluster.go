package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/pgnotify"
	"github.com/tetherhq/tether/server/postgres"
)

// nodeNotifier wakes the long-polls of a node's agents.
type nodeNotifier interface {
	tether.Notifier
	// Waiting returns the number of polls waiting on this node.
	Waiting() int
	Close() error
}

// openNotifier returns the Notifier of a node. With a PostgreSQL store
// (cfg.Store is a postgres:// URL) it is the cluster's, over LISTEN/NOTIFY
// on that database (server/pgnotify): an order created through any node
// wakes the poll its agent holds on any other. Otherwise the node is alone
// and it is in-process (server/notify). Call joinNotifier once the comms
// service exists, and Close it after the listeners.
func openNotifier(ctx context.Context, cfg Config, log *slog.Logger) (nodeNotifier, error) {
	if !postgres.IsURL(cfg.Store) {
		return localHub{notify.NewHub()}, nil
	}
	n, err := pgnotify.New(ctx, cfg.Store, pgnotify.Options{
		Channel: notifyChannel(cfg.Store),
		Log:     log.With("component", "cluster-notify"),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster notifications: %w", err)
	}
	return n, nil
}

// joinNotifier lets a cluster notifier drop what the comms service cached
// of agents and configurations when another node changed them, and exports
// the state of its listening connection as metrics.
func joinNotifier(n nodeNotifier, svc *comms.Service, mx *metrics.Metrics) {
	pg, ok := n.(*pgnotify.Notifier)
	if !ok {
		return
	}
	pg.SetCaches(svc)
	mx.Gauge("tether_cluster_listening", "1 while this node listens to the other nodes' notifications (PostgreSQL LISTEN), else 0.", func() float64 {
		if pg.Listening() {
			return 1
		}
		return 0
	})
	mx.Gauge("tether_cluster_reconnects", "Times this node re-established its connection listening to the other nodes.", func() float64 {
		return float64(pg.Reconnects())
	})
}

// notifyChannel is the notification channel of the nodes of a store:
// pgnotify.DefaultChannel, or with the store's schema (search_path) after
// it, so that clusters kept in different schemas of one database do not
// hear each other.
func notifyChannel(storeURL string) string {
	u, err := url.Parse(storeURL)
	if err != nil {
		return pgnotify.DefaultChannel
	}
	schema := u.Query().Get("search_path")
	if schema == "" {
		return pgnotify.DefaultChannel
	}
	var b strings.Builder
	b.WriteString(pgnotify.DefaultChannel + "_")
	for _, r := range strings.ToLower(schema) {
		if b.Len() == 63 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// localHub is the in-process notifier of a node alone.
type localHub struct{ *notify.Hub }

func (localHub) Close() error { return nil }

// lockArchive is the PostgreSQL advisory lock under which the nodes of a
// store archive finished orders, one node at a time ("Tthr", then a
// number of tether-server's own, apart from the store's locks).
const lockArchive int64 = 0x54746872_00000101

// exclusive returns a function that runs f only while this node holds the
// advisory lock key on the store's database, so that one node of a
// cluster at a time does what f does; when another node holds it, it
// returns nil without running f. It is nil for a store no other node
// shares.
func exclusive(store tether.Store, key int64) func(context.Context, func(context.Context) error) error {
	db, ok := store.(*postgres.DB)
	if !ok {
		return nil
	}
	return func(ctx context.Context, f func(context.Context) error) error {
		conn, err := db.Pool().Acquire(ctx)
		if err != nil {
			return fmt.Errorf("take the cluster lock: %w", err)
		}
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil || !got {
			conn.Release()
			if err != nil {
				return fmt.Errorf("take the cluster lock: %w", err)
			}
			return nil // another node is at it
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key); err != nil {
				// The lock must not stay with a connection of the pool:
				// end the session, which releases it.
				_ = conn.Hijack().Close(ctx)
				return
			}
			conn.Release()
		}()
		return f(ctx)
	}
}
