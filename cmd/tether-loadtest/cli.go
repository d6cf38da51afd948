package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the run could not be carried out
	exitUsage   = 2 // the command line is wrong
)

// version is stamped with -ldflags "-X main.version=…".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}

// usageError is a command-line mistake (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

const rootLong = `tether-loadtest simulates N agents in one process. Each has its own
identity (it enrolls them itself), its own JWT and, by default, its own TLS
connection, and speaks the real protocol through Tether's client library:
it authenticates, long-polls for commands, answers every order at once with
a result, and optionally pushes events. Meanwhile it sends commands through
the management API and measures, from the outside, what the server did.

A run has these phases:
  1. identities: enroll --agents agents (at --enroll-rate), or reuse those of
     --identities FILE when it holds enough for this server;
  2. ramp-up: connect the agents at --connect-rate, until the server holds
     a waiting poll for each (progress on stderr);
  3. window (--duration): single commands at --command-rate to random
     agents, events at --events-per-second per agent; the server's CPU is
     measured over the window, its RSS at the end (--server-pid);
  4. fan-out (--fanout): one command to the group of all the agents, timed
     to the first and last delivery and the last result;
  5. with --baseline, phases 2 to 4 again against a bare Go HTTP/2 server
     (no authentication, no storage, the same TLS) started by this program,
     and every figure also as a ratio to it.

Limits of one process: each connection is a file descriptor, in this
process and in the server's. Past the open-file limit (ulimit -n), spread
the agents over --agents-per-connection > 1 (each agent still has its own
identity and token; K agents share one TLS connection), or run several
load programs. --source-ips spreads connections over several loopback
addresses, past the 28,000 or so ephemeral ports of one address.

Reports: -o table (default) for people, -o json for scripts and for
scripts/benchplot; --report-file also writes the JSON to a file.`

const rootExample = `  # a dev server: tether-server dev (prints its admin token and CA)
  tether-loadtest --server https://127.0.0.1:7444 --token $(cat DATA/admin.token) \
      --ca-cert DATA/tls/ca.crt --agents 1000 --duration 30s --command-rate 20 \
      --server-pid $(pgrep -f 'tether-server') --fanout

  # ingest: 1,000 agents at 200 events/s each, 200-byte events
  tether-loadtest ... --agents 1000 --events-per-second 200 --event-size 200 --duration 60s

  # 17,000 idle agents, a connection each (stay under ulimit -n, the server's too), against the baseline
  tether-loadtest ... --agents 17000 --source-ips 127.0.0.2-127.0.0.9 --baseline -o json

  # 100,000 agents, 6 per TLS connection (start the server with --max-waiting-polls 110000)
  tether-loadtest ... --agents 100000 --agents-per-connection 6 --fanout --fanout-timeout 5m`

// run executes the program with args and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := defaultOptions()
	root := rootCommand(&o, stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "tether-loadtest: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func rootCommand(o *options, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tether-loadtest",
		Short:         "Simulate a fleet of agents against a Tether server and report what it sustained",
		Long:          rootLong,
		Example:       rootExample,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return &usageError{err}
			}
			return runLoad(cmd.Context(), *o, stdout, stderr)
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v (see '%s --help')", err, cmd.CommandPath())
	})
	f := root.Flags()
	f.StringVar(&o.server, "server", o.server, "management API URL of the server under test (enrollment, commands)")
	f.StringVar(&o.commsURL, "comms-url", "", "comms API URL the agents use (default: what enrollment hands out)")
	f.StringVar(&o.token, "token", "", "admin API token (for example the contents of DATA/admin.token)")
	f.StringVar(&o.caCert, "ca-cert", "", "PEM file of the CA that signed the server's certificates (DATA/tls/ca.crt)")
	f.IntVar(&o.agents, "agents", o.agents, "number of simulated agents")
	f.IntVar(&o.perConn, "agents-per-connection", o.perConn, "agents sharing one TLS connection (1: each its own)")
	f.DurationVar(&o.duration, "duration", o.duration, "length of the measured window, after the ramp-up")
	f.DurationVar(&o.settle, "settle", o.settle, "pause between the ramp-up and the window, for the server to settle")
	f.Float64Var(&o.enrollRate, "enroll-rate", o.enrollRate, "enrollments per second (0: as fast as the server answers)")
	f.Float64Var(&o.connectRate, "connect-rate", o.connectRate, "agents connecting per second during the ramp-up (0: all at once)")
	f.DurationVar(&o.rampTimeout, "ramp-timeout", o.rampTimeout, "give up waiting for every agent to hold a poll after this long")
	f.Float64Var(&o.eventsPerSec, "events-per-second", 0, "events each agent pushes per second during the window (0: none)")
	f.IntVar(&o.eventSize, "event-size", o.eventSize, "payload bytes per event (a JSON object)")
	f.DurationVar(&o.batchInterval, "batch-interval", o.batchInterval, "how often each agent pushes its batch of events")
	f.DurationVar(&o.pollWait, "poll-wait", o.pollWait, "long-poll wait each agent asks for")
	f.Float64Var(&o.commandRate, "command-rate", o.commandRate, "single commands per second to random agents during the window (0: none)")
	f.BoolVar(&o.fanout, "fanout", false, "after the window, send one command to the group of all the agents and time it")
	f.DurationVar(&o.fanoutTimeout, "fanout-timeout", o.fanoutTimeout, "how long to wait for every result of the fan-out")
	f.StringVar(&o.group, "group", o.group, "group the simulated agents are enrolled in (created when missing)")
	f.StringVar(&o.sourceIPs, "source-ips", "", "local addresses to connect from, a range (127.0.0.2-127.0.0.50) or a comma list")
	f.StringVar(&o.identities, "identities", "", "file of enrolled identities to reuse, and to add newly enrolled ones to (JSON lines, 0600)")
	f.BoolVar(&o.enrollOnly, "enroll-only", false, "enroll the identities missing from --identities, then stop (prepares later runs)")
	f.IntVar(&o.serverPID, "server-pid", 0, "pid of the server process, to report its RSS and CPU (same machine)")
	f.BoolVar(&o.baseline, "baseline", false, "run the same traffic against a bare Go HTTP/2 server too, and report ratios")
	f.StringVarP(&o.output, "output", "o", o.output, "report format: table or json")
	f.StringVar(&o.reportFile, "report-file", "", "also write the JSON report to this file")
	f.StringVar(&o.label, "label", "", "name of this run in the report (default: from the agent count)")
	root.AddCommand(baselineCommand(stdout))
	return root
}

// noArgs refuses arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (see '%s --help')", args[0], cmd.CommandPath())
	}
	return nil
}

// options are the command line of a run.
type options struct {
	server, commsURL, token, caCert string

	agents        int
	perConn       int
	duration      time.Duration
	settle        time.Duration
	enrollRate    float64
	connectRate   float64
	rampTimeout   time.Duration
	eventsPerSec  float64
	eventSize     int
	batchInterval time.Duration
	pollWait      time.Duration
	commandRate   float64
	fanout        bool
	fanoutTimeout time.Duration
	group         string
	sourceIPs     string
	identities    string
	enrollOnly    bool
	serverPID     int
	baseline      bool
	output        string
	reportFile    string
	label         string
}

func defaultOptions() options {
	return options{
		server:        "https://127.0.0.1:7444",
		agents:        100,
		perConn:       1,
		duration:      30 * time.Second,
		settle:        5 * time.Second,
		enrollRate:    0,
		connectRate:   2000,
		rampTimeout:   10 * time.Minute,
		eventSize:     200,
		batchInterval: time.Second,
		pollWait:      50 * time.Second,
		commandRate:   10,
		fanoutTimeout: 2 * time.Minute,
		group:         "loadtest",
		output:        "table",
	}
}

func (o *options) validate() error {
	switch {
	case o.token == "":
		return errors.New("--token is required: an admin API token (DATA/admin.token of the server)")
	case o.agents < 1:
		return fmt.Errorf("--agents %d: want 1 or more", o.agents)
	case o.perConn < 1 || o.perConn > 200:
		return fmt.Errorf("--agents-per-connection %d: want 1 to 200 (the server allows a few hundred streams per connection)", o.perConn)
	case o.duration < 0, o.settle < 0:
		return errors.New("--duration and --settle must not be negative")
	case o.eventsPerSec < 0, o.commandRate < 0, o.enrollRate < 0, o.connectRate < 0:
		return errors.New("rates must not be negative")
	case o.eventSize < 16 || o.eventSize > 1<<20:
		return fmt.Errorf("--event-size %d: want 16 to 1048576 bytes", o.eventSize)
	case o.batchInterval < 10*time.Millisecond:
		return fmt.Errorf("--batch-interval %s: want 10ms or more", o.batchInterval)
	case o.pollWait < time.Second:
		return fmt.Errorf("--poll-wait %s: want 1s or more", o.pollWait)
	case o.output != "table" && o.output != "json":
		return fmt.Errorf("-o %q: want table or json", o.output)
	case o.group == "":
		return errors.New("--group must not be empty")
	}
	if o.enrollOnly && o.identities == "" {
		return errors.New("--enroll-only needs --identities FILE to keep what it enrolls")
	}
	if _, err := parseSourceIPs(o.sourceIPs); err != nil {
		return fmt.Errorf("--source-ips: %w", err)
	}
	return nil
}
