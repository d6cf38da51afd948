package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) commandsCommand() *cobra.Command {
	cmd := group("commands", "Send commands to agents and follow their orders",
		`A command asks agents to run an action (restart, get-config, …). The server
expands it into one order per agent; each order goes pending → sent →
success | failure, and fails by itself when its time window ends.`,
		"command", "cmd")
	cmd.AddCommand(a.commandsSendCommand(), a.commandsListCommand(), a.commandsShowCommand())
	return cmd
}

func (a *app) commandsSendCommand() *cobra.Command {
	var (
		agent    string
		kv       []string
		argsJSON string
		timeout  string
		wait     bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "send --agent ID ACTION",
		Short: "Send a command to an agent",
		Long: `Send a command to an agent. Its arguments are a JSON object built from the
--arg KEY=VALUE flags (values are strings) and then --args-json, whose keys
override those of --arg.

--timeout here is the orders' time window (a Go duration from 1s to 24h,
default 5m on the server), not the time limit of the API call.

With --wait, tetherctl polls until every order finished, shows progress on
stderr, prints the orders and exits 0 when all succeeded, 3 when any failed.
With -o json it prints the command object, each order with its order_id,
status and result.`,
		Example: `  tetherctl commands send --agent 3f2c… restart
  tetherctl commands send --agent 3f2c… active-response --arg name=block-ip --arg ip=10.0.0.7 --wait
  tetherctl commands send --agent 3f2c… set-config --args-json '{"log_level":"debug"}' --timeout 2m --wait -o json`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "`ID` of the target agent (required)")
	f.StringArrayVar(&kv, "arg", nil, "action argument `KEY=VALUE`, a string (repeatable)")
	f.StringVar(&argsJSON, "args-json", "", "action arguments as a JSON `OBJECT`; overrides --arg keys")
	f.StringVar(&timeout, "timeout", "", "orders' time window, as a `DURATION` (default 5m)")
	f.BoolVar(&wait, "wait", false, "wait until every order finished; exit 3 if one failed")
	f.DurationVar(&interval, "interval", 250*time.Millisecond, "with --wait, poll every `DURATION`")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if agent == "" {
			return usagef("--agent is required (see '%s --help')", cmd.CommandPath())
		}
		if timeout != "" {
			if d, err := time.ParseDuration(timeout); err != nil || d <= 0 {
				return usagef("--timeout %q: want a duration such as 30s or 5m", timeout)
			}
		}
		if interval <= 0 {
			return usagef("--interval %v: want a positive duration", interval)
		}
		actionArgs, err := buildArgs(kv, argsJSON)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		created, err := c.CreateCommand(ctx, api.CreateCommandRequest{
			Target:  api.Target{Type: "agent", ID: agent},
			Action:  api.Action{Name: args[0], Args: actionArgs},
			Timeout: timeout,
		})
		if err != nil {
			return err
		}
		if !wait {
			if a.jsonOut() {
				return a.printJSON(created)
			}
			fmt.Fprintf(a.stdout, "command %s created\n", created.ID)
			return a.ordersTable(created.Orders)
		}
		if !a.jsonOut() {
			fmt.Fprintf(a.stdout, "command %s created, waiting for %d order(s)\n", created.ID, len(created.Orders))
		}
		bar := newProgress(a.stderr)
		cmdDone, err := c.WaitCommand(ctx, created.ID, interval, func(p api.Progress) {
			bar.update(p.Success+p.Failure, p.Total, p.Success, p.Failure)
		})
		bar.done()
		if err != nil {
			return err
		}
		if a.jsonOut() {
			err = a.printJSON(cmdDone)
		} else {
			err = a.ordersTable(cmdDone.Orders)
		}
		if err != nil {
			return err
		}
		return failedOrders(cmdDone)
	})
	return cmd
}

// failedOrders returns an exit-3 error when some order of c failed.
func failedOrders(c *api.Command) error {
	_, _, failure := c.Tally()
	if failure == 0 {
		return nil
	}
	if len(c.Orders) == 1 {
		o := c.Orders[0]
		msg := "order " + o.OrderID + " failed"
		if o.Result != nil && o.Result.Message != "" {
			msg += ": " + o.Result.Message
		}
		return &exitError{code: exitFailed, err: fmt.Errorf("%s", msg)}
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("%d of %d orders failed", failure, len(c.Orders))}
}

// buildArgs makes the action's arguments: a JSON object of the KEY=VALUE
// strings of kv, overridden key by key by the object argsJSON. It returns
// nil when there are none.
func buildArgs(kv []string, argsJSON string) (json.RawMessage, error) {
	obj := map[string]json.RawMessage{}
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--arg %q: want KEY=VALUE", s)
		}
		if k == "" {
			return nil, fmt.Errorf("--arg %q: empty key", s)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("--arg %q: %v", s, err)
		}
		obj[k] = b
	}
	if strings.TrimSpace(argsJSON) != "" {
		var extra map[string]json.RawMessage
		if err := json.Unmarshal([]byte(argsJSON), &extra); err != nil || extra == nil {
			return nil, fmt.Errorf("--args-json: want a JSON object such as '{\"key\":\"value\"}'")
		}
		for k, v := range extra {
			obj[k] = v
		}
	}
	if len(obj) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	return b, nil
}

func (a *app) ordersTable(orders []api.Order) error {
	t := newTable(a.stdout, "ORDER", "AGENT", "STATUS", "CODE", "MESSAGE", "FINISHED")
	for _, o := range orders {
		code, msg := "", ""
		if o.Result != nil {
			code, msg = strconv.Itoa(o.Result.Code), truncate(o.Result.Message, 60)
		}
		t.row(o.OrderID, o.AgentID, o.Status, code, msg, agoPtr(o.FinishedAt))
	}
	return t.flush()
}

func (a *app) commandsListCommand() *cobra.Command {
	var q api.CommandQuery
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List commands, newest first",
		Example: `  tetherctl commands list --agent 3f2c…
  tetherctl commands list --status failure --limit 20 -o json`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringVar(&q.AgentID, "agent", "", "only commands with an order for agent `ID`")
	f.StringVar(&q.Status, "status", "", "only commands with an order in `STATUS`: pending, sent, success or failure")
	f.IntVar(&q.Limit, "limit", 0, "at most `N` commands (default: the server's)")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		switch q.Status {
		case "", api.StatusPending, api.StatusSent, api.StatusSuccess, api.StatusFailure:
		default:
			return usagef("--status %q: want pending, sent, success or failure", q.Status)
		}
		if q.Limit < 0 {
			return usagef("--limit %d: want a positive number", q.Limit)
		}
		list, err := c.ListCommands(ctx, q)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ID", "ACTION", "TARGET", "STATUS", "USER", "CREATED")
		for _, cm := range list.Items {
			t.row(cm.ID, cm.Action.Name, cm.Target.Type+"/"+cm.Target.ID, cm.Status, cm.User, ago(cm.CreatedAt))
		}
		return t.flush()
	})
	return cmd
}

func (a *app) commandsShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "show ID",
		Aliases: []string{"get"},
		Short:   "Show a command and its orders",
		Example: `  tetherctl commands show 7d0e…
  tetherctl commands show 7d0e… -o json | jq '.orders[] | {order_id, status, result}'`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		cm, err := c.GetCommand(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(cm)
		}
		if err := fields(a.stdout,
			"ID", cm.ID,
			"Action", cm.Action.Name,
			"Args", compactJSON(cm.Action.Args),
			"Target", cm.Target.Type+"/"+cm.Target.ID,
			"Status", cm.Status,
			"Timeout", cm.Timeout,
			"User", cm.User,
			"Created", stamp(cm.CreatedAt),
		); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout)
		if err := a.ordersTable(cm.Orders); err != nil {
			return err
		}
		for _, o := range cm.Orders {
			if o.Result != nil && len(bytes.TrimSpace(o.Result.Data)) > 0 {
				fmt.Fprintf(a.stdout, "\n%s data: %s\n", o.OrderID, compactJSON(o.Result.Data))
			}
		}
		return nil
	})
	return cmd
}
