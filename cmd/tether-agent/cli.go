package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tetherhq/tether/agent"
)

// version is set at build time with -ldflags "-X main.version=1.2.3".
var version = "dev"

// Version returns the stamped version, else the module version from the
// build information.
func Version() string {
	if version != "dev" && version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// reexec replaces the process with a fresh copy of the binary (after a
// restart order). A variable so tests can replace it.
var reexec = func() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, os.Environ())
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

type usageError struct{ error }

// Run runs the tether-agent command line with args (without the program
// name) and returns the process's exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "tether-agent: "+err.Error())
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "tether-agent",
		Short: "Tether endpoint agent",
		Long: `tether-agent connects this host to a Tether server: it enrolls once, then
runs, sending events (inventory, logs, ...) through a durable on-disk outbox
and executing the orders the server sends it.

Everything it keeps lives in its data directory (default ` + agent.DefaultDataDir + `).`,
		Example: `  tether-agent enroll --server https://tether.example.com:7444 --token TOKEN --ca-cert ca.crt
  tether-agent run
  tether-agent status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newEnroll(stdout), newRun(stderr), newStatus(stdout), newVersion(stdout))
	return root
}

func newEnroll(stdout io.Writer) *cobra.Command {
	var opts agent.EnrollOptions
	cmd := &cobra.Command{
		Use:   "enroll --server URL --token TOKEN --ca-cert FILE",
		Short: "Register this host with a Tether server",
		Long: `enroll registers this installation with a Tether server's management API
using an enrollment token, and stores the agent's identity (id and key, mode
0600) and a copy of the CA certificate in the data directory.

The installation's id is generated once; enrolling again (for instance with a
new token or another server address) keeps it and proves it with the key
already held. The token is only needed for enrolling: it is not stored.`,
		Example: `  # Enroll with the CA the server created on its first start:
  tether-agent enroll --server https://tether.example.com:7444 \
      --token tet_enr_... --ca-cert /tmp/tether-ca.crt

  # Behind a load balancer that exposes the comms API elsewhere:
  tether-agent enroll --server https://mgmt.example.com:7444 --token T \
      --ca-cert ca.crt --comms-url https://agents.example.com:443 --name web-01

  # Straight to the nodes of a cluster, no load balancer:
  tether-agent enroll --server https://node1.example.com:7444 --token T --ca-cert ca.crt \
      --comms-url https://node1.example.com:7443,https://node2.example.com:7443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Version = Version()
			ident, err := agent.Enroll(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "enrolled as %s (id %s)\ncomms API: %v\nidentity stored in %s; start the agent with: tether-agent run\n",
				ident.Name, ident.AgentID, ident.CommsURLs, opts.DataDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Server, "server", "", "management API URL, for example https://HOST:7444 (required)")
	f.StringVar(&opts.Token, "token", "", "enrollment token (required)")
	f.StringVar(&opts.CACertFile, "ca-cert", "", "PEM file of the CA that signs the server's certificates (default: the system roots)")
	f.StringSliceVar(&opts.CommsURLs, "comms-url", nil, "comms API URL to use instead of those the server advertises, for example https://HOST:7443; repeat it (or separate with commas) for several: the agent spreads over them and fails over")
	f.StringVar(&opts.DataDir, "data-dir", agent.DefaultDataDir, "data directory")
	f.StringVar(&opts.Name, "name", "", "display name of this agent (default: the host name)")
	_ = cmd.MarkFlagRequired("server")
	_ = cmd.MarkFlagRequired("token")
	return cmd
}

func newRun(stderr io.Writer) *cobra.Command {
	var dataDir, configFile string
	var upgradeCheck bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent (in the foreground, until stopped)",
		Long: `run connects to the comms API with the identity stored by enroll and runs
until it receives SIGINT or SIGTERM: it keeps one long-poll open for orders,
executes them in order, and sends queued events. Logs go to stderr as JSON.

The local configuration is read from DATA_DIR/agent.yaml (optional) or from
--config. Keys:
  poll_wait: 50s          how long the server may hold a poll (1s to 5m)
  batch_max_events: 1000  a batch goes when this many events wait (1 to 10000),
  batch_max_bytes: 1MiB   or this many bytes (1KiB to 4MiB),
  batch_interval: 1s      or when the oldest has waited this long (10ms to 1m)
  outbox_max_bytes: 1GiB  bound of the event outbox (1MiB to 1TiB); when full,
                          the oldest stateless events are dropped and counted
  outbox_fsync_window: 100ms  longest an event append waits to share a disk
                          commit (0s to 1s)
  rate_limit_events: 0    most events sent per second (0: no limit)
  rate_limit_bytes: 0     most event bytes sent per second (0: no limit)
  compression: zstd       zstd, gzip or none
  log_level: info         debug, info, warn or error
  active_response:
    bin_dirs: [/opt/ar]   absolute directories whose executables the
                          active-response action may run, besides
                          DATA_DIR/active-response/bin (local file only)
  logcollector:           files to follow, across rotation
    files: [{path: /var/log/*.log, start_at: end}]
    max_line_bytes: 65536 longer lines are sent in parts
    poll_interval: 250ms
  inventory: {enabled: true, interval: 1h, resend_every: 24h}
  health: {enabled: true, interval: 1m}
  plugins:                child processes speaking tether.plugin.v1 frames
    - {name: NAME, command: EXECUTABLE, args: [], config: {}}
                          EXECUTABLE: a name in DATA_DIR/plugins, or an
                          absolute path (local file only)
The module keys (logcollector, inventory, health, plugins) are described in
docs/modules.md.

Exit status: 0 when stopped by a signal, 1 on error (including when the
server says the agent was removed or disabled).`,
		Example: `  tether-agent run
  tether-agent run --data-dir /srv/tether-agent --config /etc/tether/agent.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := new(slog.LevelVar)
			logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
			opts := agent.RunOptions{
				DataDir:    dataDir,
				ConfigFile: configFile,
				Logger:     logger,
				LogLevel:   level,
				Version:    Version(),
			}
			if upgradeCheck {
				return agent.UpgradeCheck(cmd.Context(), opts, cmd.OutOrStdout())
			}
			// Upgrades (agent/upgrade.go): a new binary on probation counts
			// its starts, and the previous one is put back when it fails.
			err := agent.UpgradeStarting(dataDir, Version(), logger)
			if err == nil {
				err = agent.Run(cmd.Context(), opts)
				err = agent.UpgradeStopped(dataDir, Version(), err, logger)
			}
			if errors.Is(err, agent.ErrRestart) {
				logger.Info("re-executing the agent")
				if err := reexec(); err != nil {
					return fmt.Errorf("restart: %w", err)
				}
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "data directory")
	cmd.Flags().StringVar(&configFile, "config", "", "configuration file (default DATA_DIR/agent.yaml, optional)")
	cmd.Flags().BoolVar(&upgradeCheck, "upgrade-check", false, "check that this binary starts and reaches the server, print its version as JSON and exit (run by upgrades)")
	_ = cmd.Flags().MarkHidden("upgrade-check")
	return cmd
}

func newStatus(stdout io.Writer) *cobra.Command {
	var dataDir, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the agent on this host is doing",
		Long: `status reads the status file the running agent rewrites every few seconds
and the identity stored by enroll. It works while the agent runs.

Exit status: 0 when the agent is running, 1 otherwise (not enrolled, not
running, or stopped).`,
		Example: `  tether-agent status
  tether-agent status -o json | jq .queued_events`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", output)}
			}
			ident, err := agent.LoadIdentity(dataDir)
			if err != nil {
				return err
			}
			st, err := agent.ReadStatus(dataDir)
			if err != nil && !errors.Is(err, agent.ErrNoStatus) {
				return err
			}
			now := time.Now()
			running := err == nil && !st.Stale(now)
			if st.AgentID == "" {
				st = agent.Status{AgentID: ident.AgentID, Name: ident.Name, Server: ident.Server, State: "never run"}
			} else if !running && st.State == "running" {
				st.State = "not running"
			}
			if output == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return err
				}
			} else {
				printStatus(stdout, st, now)
			}
			if !running {
				return errors.New("agent is not running")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "data directory")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printStatus(w io.Writer, st agent.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.DateTime), now.Sub(t).Round(time.Second))
	}
	conn := "no"
	if st.Connected {
		conn = "yes"
	} else if st.LastError != "" {
		conn = "no: " + st.LastError
	}
	lastPoll := ago(st.LastPollAt)
	if st.LastPollAt.IsZero() && st.Connected {
		lastPoll = "none yet (a poll is open)"
	}
	rows := [][2]string{
		{"Agent", fmt.Sprintf("%s (%s)", st.Name, st.AgentID)},
		{"State", st.State},
		{"Server", st.Server},
		{"Comms URL", st.CommsURL},
		{"Connected", conn},
		{"Last poll answer", lastPoll},
		{"Queued events", queued(st)},
		{"Dropped events", fmt.Sprintf("%d (outbox full; %d state changes compacted)", st.DroppedEvents, st.CompactedEvents)},
		{"Pending orders", fmt.Sprint(st.PendingOrders)},
		{"Pending results", fmt.Sprint(st.PendingResults)},
		{"Dead-letter batches", fmt.Sprint(st.DeadLetterBatches)},
		{"Config version", st.ConfigVersion},
		{"Started", ago(st.StartedAt)},
		{"PID", fmt.Sprint(st.PID)},
		{"Version", st.Version},
	}
	if st.ConfigError != "" {
		rows = append(rows, [2]string{"Config error", st.ConfigError})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	tw.Flush()
	if len(st.Orders) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDER\tACTION\tSTATE\tSINCE\tUSER")
	for _, o := range st.Orders {
		since := o.ReceivedAt
		if !o.StartedAt.IsZero() {
			since = o.StartedAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.ID, o.Action, o.State, ago(since), o.User)
	}
	tw.Flush()
	if st.PendingOrders > len(st.Orders) {
		fmt.Fprintf(w, "… and %d more\n", st.PendingOrders-len(st.Orders))
	}
}

func newVersion(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent's version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(stdout, "tether-agent "+Version())
		},
	}
}

// queued describes what the outbox holds against its bound.
func queued(st agent.Status) string {
	s := fmt.Sprint(st.QueuedEvents)
	if st.OutboxMaxBytes > 0 {
		s += fmt.Sprintf(" (%.1f of %.0f MiB)", float64(st.QueuedBytes)/(1<<20), float64(st.OutboxMaxBytes)/(1<<20))
	}
	if st.UnreadableEvents > 0 {
		s += fmt.Sprintf("; %d found unreadable and deleted", st.UnreadableEvents)
	}
	return s
}
