package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the API or the transport failed
	exitUsage   = 2 // the command line is wrong
	exitFailed  = 3 // --wait saw an order fail
)

// version is stamped with -ldflags "-X main.version=…".
var version = ""

const defaultServer = "https://127.0.0.1:7444"

const rootLong = `tetherctl drives a Tether server through its management API: it manages
the API tokens of people and services, creates enrollment tokens, lists and
removes agents, reads their state, manages groups and their configuration,
sends commands to an agent, a group or the server (optionally following
their progress live), cancels them, lists their orders, and uploads the
files agents download (agent upgrades).

Connection:
  --server, --token or --token-file, and --ca-cert say where and who.
  When a flag is not given, its environment variable is used:
    TETHER_SERVER   management API URL (default ` + defaultServer + `)
    TETHER_TOKEN    API token
    TETHER_CA_CERT  PEM file of the CA that signed the server's certificate
                    (a server's DIR/tls/ca.crt); default: the system roots

Output:
  -o table (default) prints aligned columns for people; -o json prints the
  API's JSON objects, one document per call, for scripts (for example with jq).

Exit codes:
  0  success
  1  the server answered an error, or it could not be reached
  2  usage error: unknown command or flag, bad value, missing token
  3  commands send --wait, agents upgrade --wait: at least one order failed`

const rootExample = `  export TETHER_SERVER=https://tether.example.com:7444
  export TETHER_TOKEN=$(cat ~/.tether/token)
  export TETHER_CA_CERT=~/.tether/ca.crt

  tetherctl enrollment-tokens create --group linux --ttl 24h
  tetherctl agents list --status active
  tetherctl commands send --agent 3f2c… restart --wait
  tetherctl commands send --group web restart --wait
  tetherctl orders list --status failure --since 1h
  tetherctl agents upgrade --group web --file ./tether-agent --version 2.1.0 --wait
  tetherctl agents list -o json | jq -r '.items[].id'`

// app holds the global flags and what every command needs.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	server    string
	token     string
	tokenFile string
	caCert    string
	output    string
	timeout   time.Duration
}

// exitError carries an exit code with the error that caused it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usagef returns a usage error (exit code 2).
func usagef(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// run executes tetherctl with args and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIO(ctx, args, os.Stdin, stdout, stderr, os.Getenv)
}

// runIO is run with its standard input and environment (read through
// getenv) given.
func runIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "tetherctl: %s\n", oneLine(err.Error()))
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// Errors that did not come through a command's action are cobra's own:
	// unknown commands, bad flags, wrong argument counts.
	return exitUsage
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tetherctl",
		Short:         "Manage a Tether fleet through the management API",
		Long:          rootLong,
		Example:       rootExample,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.resolve(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v (see '%s --help')", err, cmd.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", defaultServer, "management API `URL` (env TETHER_SERVER)")
	pf.StringVar(&a.token, "token", "", "bearer `TOKEN` for the API (env TETHER_TOKEN)")
	pf.StringVar(&a.tokenFile, "token-file", "", "read the API token from `FILE`")
	pf.StringVar(&a.caCert, "ca-cert", "", "trust the CA certificates in PEM `FILE` (env TETHER_CA_CERT)")
	pf.StringVarP(&a.output, "output", "o", "table", "`FORMAT` of the output: table or json")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "time limit of each API call, as a `DURATION`")

	root.AddCommand(a.apiTokensCommand(), a.tokensCommand(), a.agentsCommand(), a.groupsCommand(), a.commandsCommand(),
		a.ordersCommand(), a.actionsCommand(), a.filesCommand(), a.eventsCommand())
	return root
}

// resolve applies environment fallbacks and checks the global flags.
func (a *app) resolve(cmd *cobra.Command) error {
	flags := cmd.Flags()
	fallback := func(name string, dst *string, env string) {
		if !flags.Changed(name) {
			if v := a.getenv(env); v != "" {
				*dst = v
			}
		}
	}
	fallback("server", &a.server, "TETHER_SERVER")
	fallback("ca-cert", &a.caCert, "TETHER_CA_CERT")
	if !flags.Changed("token") && !flags.Changed("token-file") {
		a.token = a.getenv("TETHER_TOKEN")
	}
	switch a.output {
	case "table", "json":
	default:
		return usagef("--output %q: want table or json", a.output)
	}
	if a.timeout <= 0 {
		return usagef("--timeout %v: want a positive duration", a.timeout)
	}
	return nil
}

// client returns an API client for the global flags. A missing token is a
// usage error.
func (a *app) client() (*api.Client, error) {
	token := a.token
	if a.tokenFile != "" {
		if token != "" {
			return nil, usagef("--token and --token-file are exclusive")
		}
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, usagef("--token-file: %v", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, usagef("--token-file %s is empty", a.tokenFile)
		}
	}
	if token == "" {
		return nil, usagef("no API token: pass --token TOKEN or --token-file FILE, or set TETHER_TOKEN")
	}
	c, err := api.New(api.Options{Server: a.server, Token: token, CACertFile: a.caCert, Timeout: a.timeout})
	if err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}

// action wraps a command's body: the errors it returns are API or transport
// failures (exit 1) unless they already carry an exit code.
func (a *app) action(fn func(ctx context.Context, c *api.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.client()
		if err != nil {
			return err
		}
		err = fn(cmd.Context(), c, args)
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			return err
		}
		return &exitError{code: exitFailure, err: describe(err)}
	}
}

// describe makes an API error a one-line reason.
func describe(err error) error {
	var ae *api.APIError
	if !errors.As(err, &ae) {
		return err
	}
	msg := ae.Error()
	if ae.Code != "" {
		msg += " (" + ae.Code + ")"
	}
	return errors.New(msg)
}

// group returns a command that only holds subcommands.
func group(use, short, long string, aliases ...string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Aliases: aliases,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q (see '%s --help')", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
}

// argsUsage wraps an argument validator so that its errors are usage errors.
func argsUsage(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usagef("%v (see '%s --help')", err, cmd.CommandPath())
		}
		return nil
	}
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
