package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) agentsUpgradeCommand() *cobra.Command {
	var (
		agent, grp string
		file, name string
		version    string
		timeout    string
		rollback   string
		wait       bool
		interval   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "upgrade (--agent ID | --group NAME) --file BINARY --version VERSION",
		Short: "Upload an agent binary and upgrade an agent or a group to it",
		Long: `Upgrade one agent (--agent ID) or every agent of a group (--group NAME) to the
agent binary BINARY, which is VERSION.

tetherctl first uploads BINARY like 'tetherctl files upload' (not when the
server already holds its bytes), then sends the built-in action upgrade with
the file's version, SHA-256, name and the server's signature. Each agent
downloads the file from the comms listener, checks its digest and the
signature with the release key it pinned at enrollment, swaps its binary and
restarts, rolling back when the new one does not come back: when it does not
reach the server within --rollback-after (default 2m), or fails to start.

--timeout, --wait and --interval are those of 'tetherctl commands send': the
orders' time window (default 5m on the server), following the progress live,
and exit code 3 when an upgrade failed.`,
		Example: `  tetherctl agents upgrade --agent 3f2c… --file ./tether-agent --version 2.1.0 --wait
  tetherctl agents upgrade --group linux-amd64 --file dist/tether-agent-linux-amd64 --version 2.1.0 --timeout 30m --wait
  tetherctl agents upgrade --group canary --file ./tether-agent --version 2.1.0 -o json | jq -r .id`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "upgrade the agent `ID`")
	f.StringVar(&grp, "group", "", "upgrade every agent in group `NAME`")
	f.StringVar(&file, "file", "", "the agent `BINARY` to upload")
	f.StringVar(&name, "name", "", "store the binary under `NAME` (default: the file's base name)")
	f.StringVar(&version, "version", "", "the `VERSION` of the binary, reported by the agents once upgraded")
	f.StringVar(&timeout, "timeout", "", "orders' time window, as a `DURATION` (default 5m)")
	f.StringVar(&rollback, "rollback-after", "", "roll back when the new binary has not reached the server within `DURATION` (1s to 24h; agents' default 2m)")
	f.BoolVar(&wait, "wait", false, "follow the progress until every order finished; exit 3 if one failed")
	f.DurationVar(&interval, "interval", time.Second, "with --wait, when the server has no progress stream, poll every `DURATION`")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		flags := cmd.Flags()
		if flags.Changed("agent") == flags.Changed("group") {
			return usagef("give exactly one of --agent ID or --group NAME (see '%s --help')", cmd.CommandPath())
		}
		target, err := sendTarget(cmd, agent, grp, false)
		if err != nil {
			return err
		}
		switch {
		case file == "":
			return usagef("--file BINARY is required (see '%s --help')", cmd.CommandPath())
		case version == "":
			return usagef("--version VERSION is required (see '%s --help')", cmd.CommandPath())
		}
		if timeout != "" {
			if d, err := time.ParseDuration(timeout); err != nil || d <= 0 {
				return usagef("--timeout %q: want a duration such as 10m", timeout)
			}
		}
		if rollback != "" {
			if d, err := time.ParseDuration(rollback); err != nil || d < time.Second || d > 24*time.Hour {
				return usagef("--rollback-after %q: want a duration from 1s to 24h, such as 5m", rollback)
			}
		}
		if interval <= 0 {
			return usagef("--interval %v: want a positive duration", interval)
		}
		stored, uploaded, err := a.upload(ctx, c, file, name)
		if err != nil {
			return err
		}
		if !a.jsonOut() {
			what := "uploaded"
			if !uploaded {
				what = "already on the server"
			}
			fmt.Fprintf(a.stdout, "file %s (%s, %s) %s\n", stored.Name, stored.SHA256, humanBytes(stored.Size), what)
		}
		fields := map[string]string{
			"version": version, "sha256": stored.SHA256, "file": stored.Name, "signature": stored.Signature,
		}
		if rollback != "" {
			fields["rollback_after"] = rollback
		}
		args, err := json.Marshal(fields)
		if err != nil {
			return fmt.Errorf("encode arguments: %w", err)
		}
		return a.sendCommand(ctx, c, api.CreateCommandRequest{
			Target:  target,
			Action:  api.Action{Name: "upgrade", Args: args},
			Timeout: timeout,
		}, wait, interval)
	})
	return cmd
}
