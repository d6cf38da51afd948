package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set with -ldflags "-X main.version=…".
var version = ""

// Version returns the build's version: the linker-stamped one, else the
// module version, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// exitError carries an exit code through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the command line and returns the exit code: 0 on success, 1 on
// failure, 2 on a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(ctx, stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case isUsageError(err):
		fmt.Fprintf(stderr, "tether-server: %v\nRun 'tether-server --help' for usage.\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "tether-server: %v\n", err)
	return 1
}

type usageError struct{ error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "tether-server",
		Short: "Tether server node: comms API for agents, management API for people and tools",
		Long: `tether-server runs a Tether server node.

Agents connect to the comms API (default :7443, gRPC / gRPC-Web / Connect over
TLS) to push events and long-poll for commands. People, tetherctl and
dashboards use the management API (default :7444, REST + JSON under /api/v1).

Start here:
  tether-server dev                      # a server and one enrolled agent, for a first look
  tether-server run --data-dir /var/lib/tether-server`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(stdout, stderr), newDevCmd(stdout, stderr), newMigrateCmd(stdout), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(stdout, Version())
			return nil
		},
	})
	return root
}

// serverFlags are the flags run and dev share.
type serverFlags struct {
	configFile, dataDir, store, commsAddr, apiAddr, debugAddr, logLevel string
	maxConns, maxPolls                                                  int
	set                                                                 *pflag.FlagSet // to tell which flags were given
}

func (f *serverFlags) register(cmd *cobra.Command, dataDirHelp string) {
	fl := cmd.Flags()
	f.registerStore(cmd, dataDirHelp)
	fl.StringVar(&f.commsAddr, "comms-addr", "", "comms API listen address, HOST:PORT (default \":7443\")")
	fl.StringVar(&f.apiAddr, "api-addr", "", "management API listen address, HOST:PORT (default \":7444\")")
	fl.StringVar(&f.debugAddr, "debug-addr", "", "serve Go's runtime profiles (net/http/pprof) on HOST:PORT, plain HTTP without\nauthentication: keep it on loopback, e.g. 127.0.0.1:6060 (default off)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	fl.IntVar(&f.maxConns, "max-connections", 0, "most agent connections the comms listener serves at once; past it, each request of a\n"+
		"new connection is answered UNAVAILABLE with a retry delay, then the connection is closed\n"+
		"(default 0: automatic, the open-file limit less 1024 kept for the node's own files, less 5%)")
	fl.IntVar(&f.maxPolls, "max-waiting-polls", 0, "most polls waiting at once on this node; past it, a poll with nothing to deliver is\n"+
		"answered RESOURCE_EXHAUSTED with a retry delay (default 0: the max-connections value)")
	f.set = fl
}

// registerStore registers the flags that choose the data directory and the
// store.
func (f *serverFlags) registerStore(cmd *cobra.Command, dataDirHelp string) {
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", dataDirHelp)
	fl.StringVar(&f.store, "store", "", "PostgreSQL URL of the store the nodes of a cluster share, postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full\n(default: SQLite in the data directory)")
	fl.StringVar(&f.configFile, "config", "", "YAML configuration file (keys: see docs/operations.md)")
}

// config merges defaults, the file, then flags, and validates the result.
func (f *serverFlags) config() (Config, error) {
	cfg := defaultConfig()
	if f.configFile != "" {
		if err := readConfigFile(&cfg, f.configFile); err != nil {
			return cfg, err
		}
		cfg.path = f.configFile
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{
		{f.dataDir, &cfg.DataDir}, {f.store, &cfg.Store}, {f.commsAddr, &cfg.CommsAddr}, {f.apiAddr, &cfg.APIAddr}, {f.debugAddr, &cfg.DebugAddr}, {f.logLevel, &cfg.LogLevel},
	} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	if f.set != nil && f.set.Changed("max-connections") {
		cfg.MaxConnections = f.maxConns
	}
	if f.set != nil && f.set.Changed("max-waiting-polls") {
		cfg.MaxWaitingPolls = f.maxPolls
	}
	return cfg, cfg.validate()
}

// newLogger returns the node's logger. Its level lives in cfg.level, so
// reload-config can change it while running.
func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	cfg.level = new(slog.LevelVar)
	cfg.level.Set(level)
	opts := &slog.HandlerOptions{Level: cfg.level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newRunCmd(stdout, stderr io.Writer) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a server node",
		Long: `Run a server node until SIGINT or SIGTERM.

The first start initialises the data directory: a SQLite database
(tether.db), a certificate authority and server certificate (tls/ca.crt,
tls/ca.key, tls/server.crt, tls/server.key), JWT signing keys (in the
database), a release-signing key (release.key), and an admin API token,
written to DATA/admin.token (mode 0600) and printed once. Later starts on the
same directory keep all of it.

The nodes of a cluster share one PostgreSQL store instead (--store
postgres://…, or store: in the configuration file): the first node to start
creates the CA, the signing keys, the release-signing key and the admin
token in the store (the admin token is written to that node's data
directory); every node writes the CA certificate to DATA/tls/ca.crt and
issues its own server certificate. Each node applies the schema migrations
the store lacks at start (see also 'tether-server migrate').

A node limits the agent connections it serves (--max-connections; by
default, what the open-file limit allows) and the polls waiting on it
(--max-waiting-polls): past them, agents are told to come back later or go
to another node (UNAVAILABLE, RESOURCE_EXHAUSTED, with a retry delay)
rather than the node running out of file descriptors or memory. See
"Limits that protect a node" in docs/operations.md.

Configuration comes from defaults, then --config FILE (YAML), then flags.`,
		Example: `  tether-server run --data-dir /var/lib/tether-server
  tether-server run --store 'postgres://tether@db.example.com/tether?sslmode=verify-full'
  tether-server run --data-dir ./data --comms-addr 127.0.0.1:7443 --api-addr 127.0.0.1:7444
  tether-server run --config /etc/tether/server.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			log := newLogger(&cfg, stderr)
			node, err := startNode(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			if node.FirstStart && node.AdminToken != "" {
				fmt.Fprintf(stdout, "Initialised %s.\nAdmin API token (also in %s/%s, mode 0600; not shown again):\n  %s\n",
					cfg.DataDir, cfg.DataDir, adminTokenFile, node.AdminToken)
			}
			fmt.Fprintf(stdout, "Comms API:      %s\nManagement API: %s\nCA certificate: %s\n", node.CommsURL, node.APIURL, node.CACertFile)
			return waitAndStop(cmd.Context(), node, log)
		},
	}
	f.register(cmd, "data directory (default /var/lib/tether-server)")
	return cmd
}

// waitAndStop serves until ctx ends or the node fails, then shuts down.
func waitAndStop(ctx context.Context, node *Node, log *slog.Logger) error {
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-node.Err():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return errors.Join(serveErr, node.Shutdown(sctx))
}

func newMigrateCmd(stdout io.Writer) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the store's schema, and print its version",
		Long: `Apply the schema migrations the store lacks, then print the schema version.

The store is the one run would use: the SQLite database of the data directory,
or the PostgreSQL database of --store (or store: in --config). run applies the
migrations too, at every start; migrate lets an operator upgrade the schema
first, for example before rolling a new version out to the nodes of a cluster.
Nodes (and migrate) applying migrations at once wait for each other: each
migration is applied once, in a transaction of its own.`,
		Example: `  tether-server migrate --data-dir /var/lib/tether-server
  tether-server migrate --store 'postgres://tether@db.example.com/tether?sslmode=verify-full'
  tether-server migrate --config /etc/tether/server.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			store, latest, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			v, err := store.SchemaVersion(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: schema version %d (this tether-server's latest: %d)\n", storeName(cfg), v, latest)
			return nil
		},
	}
	f.registerStore(cmd, "data directory, for the SQLite store (default /var/lib/tether-server)")
	return cmd
}
