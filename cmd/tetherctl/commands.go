package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) commandsCommand() *cobra.Command {
	cmd := group("commands", "Send commands to agents, groups or the server; follow and cancel them",
		`A command asks for an action (restart, get-config, …; see 'tetherctl actions
list') on a target: one agent, every agent of a group at that moment, or the
server itself. The server expands it into one order per agent (one for the
server); each order goes pending → sent → success | failure, and fails by
itself ("timed out") when its time window ends, or "cancelled" when the
command or the order is cancelled.`,
		"command", "cmd")
	cmd.AddCommand(a.commandsSendCommand(), a.commandsListCommand(), a.commandsShowCommand(), a.commandsCancelCommand())
	return cmd
}

// maxOrderRows is how many orders a table lists in full; beyond, it lists
// the failed ones only.
const maxOrderRows = 50

func (a *app) commandsSendCommand() *cobra.Command {
	var (
		agent    string
		grp      string
		toServer bool
		kv       []string
		argsJSON string
		timeout  string
		wait     bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "send (--agent ID | --group NAME | --to-server) ACTION",
		Short: "Send a command to an agent, a group or the server",
		Long: `Send a command to one target, named by exactly one of --agent ID, --group
NAME (one order per agent in the group now) or --to-server (an action the
server runs itself, such as rotate-signing-key or reload-config; the flag is
not --server, which names the API's URL).

The action's arguments are a JSON object built from the --arg KEY=VALUE flags
(values are strings) and then --args-json, whose keys override those of
--arg. 'tetherctl actions list' shows the built-in actions and their
arguments.

--timeout here is the orders' time window (a Go duration from 1s to 24h,
default 5m on the server), not the time limit of the API calls.

With --wait, tetherctl follows the command's progress live: on a terminal a
bar on stderr (finished/total, successes, failures), otherwise one line on
stderr per change (at most one a second). It then prints the orders (with
many orders, only the failed ones) and exits 0 when all succeeded, 3 when any
failed. With -o json it prints the final command object with every order,
each with its order_id, status and result. Interrupting the wait does not
cancel the command ('tetherctl commands cancel ID' does).`,
		Example: `  tetherctl commands send --agent 3f2c… restart
  tetherctl commands send --group web restart --wait
  tetherctl commands send --group linux active-response --arg command=block-ip --args-json '{"args":["203.0.113.7"]}' --timeout 1m --wait
  tetherctl commands send --to-server rotate-signing-key --wait
  tetherctl commands send --agent 3f2c… get-config --wait -o json | jq '.orders[0].result.data'`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "target the agent `ID`")
	f.StringVar(&grp, "group", "", "target every agent in group `NAME`")
	f.BoolVar(&toServer, "to-server", false, "target the server itself (server actions)")
	f.StringArrayVar(&kv, "arg", nil, "action argument `KEY=VALUE`, a string (repeatable)")
	f.StringVar(&argsJSON, "args-json", "", "action arguments as a JSON `OBJECT`; overrides --arg keys")
	f.StringVar(&timeout, "timeout", "", "orders' time window, as a `DURATION` (default 5m)")
	f.BoolVar(&wait, "wait", false, "follow the progress until every order finished; exit 3 if one failed")
	f.DurationVar(&interval, "interval", time.Second, "with --wait, when the server has no progress stream, poll every `DURATION`")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		target, err := sendTarget(cmd, agent, grp, toServer)
		if err != nil {
			return err
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
		return a.sendCommand(ctx, c, api.CreateCommandRequest{
			Target:  target,
			Action:  api.Action{Name: args[0], Args: actionArgs},
			Timeout: timeout,
		}, wait, interval)
	})
	return cmd
}

// sendCommand creates a command and prints it; with wait, it follows the
// command's progress to its end as 'commands send --help' describes, and
// returns an exit-3 error when an order failed.
func (a *app) sendCommand(ctx context.Context, c *api.Client, req api.CreateCommandRequest, wait bool, interval time.Duration) error {
	created, err := c.CreateCommand(ctx, req)
	if err != nil {
		return err
	}
	total := created.Progress().Total
	if !wait {
		if a.jsonOut() {
			return a.printJSON(created)
		}
		fmt.Fprintf(a.stdout, "command %s created: %d order(s) for %s\n", created.ID, total, targetString(created.Target))
		return a.commandOrders(created)
	}
	if !a.jsonOut() {
		fmt.Fprintf(a.stdout, "command %s created, waiting for %d order(s)\n", created.ID, total)
	}
	bar := newProgress(a.stderr)
	final, err := c.WaitCommand(ctx, created.ID, interval, func(p api.Progress) {
		bar.update(p.Success+p.Failure, p.Total, p.Success, p.Failure)
	})
	bar.done()
	var we *api.WaitError
	if errors.As(err, &we) {
		return fmt.Errorf("%v; the command goes on: follow it with 'tetherctl commands show %s', stop it with 'tetherctl commands cancel %s'", err, created.ID, created.ID)
	}
	if err != nil {
		return err
	}
	if a.jsonOut() {
		err = a.printJSON(final)
	} else {
		err = a.commandOrders(final)
	}
	if err != nil {
		return err
	}
	return failedOrders(final)
}

// sendTarget returns the target of exactly one of the target flags.
func sendTarget(cmd *cobra.Command, agent, grp string, toServer bool) (api.Target, error) {
	flags := cmd.Flags()
	var set []string
	for _, name := range []string{"agent", "group", "to-server"} {
		if flags.Changed(name) {
			set = append(set, "--"+name)
		}
	}
	switch {
	case len(set) == 0:
		return api.Target{}, usagef("no target: give exactly one of --agent ID, --group NAME or --to-server (see '%s --help')", cmd.CommandPath())
	case len(set) > 1:
		return api.Target{}, usagef("%s: give exactly one target (see '%s --help')", strings.Join(set, " and "), cmd.CommandPath())
	}
	switch {
	case flags.Changed("agent"):
		if agent == "" {
			return api.Target{}, usagef("--agent: empty agent id")
		}
		return api.Target{Type: "agent", ID: agent}, nil
	case flags.Changed("group"):
		if grp == "" {
			return api.Target{}, usagef("--group: empty group name")
		}
		return api.Target{Type: "group", ID: grp}, nil
	}
	if !toServer {
		return api.Target{}, usagef("--to-server=false names no target: give --agent ID, --group NAME or --to-server")
	}
	return api.Target{Type: "server"}, nil
}

// targetString shows a target as TYPE/ID, or "server".
func targetString(t api.Target) string {
	if t.ID == "" {
		return t.Type
	}
	return t.Type + "/" + t.ID
}

// commandOrders prints the orders of c: every one when they are few, else
// the failed ones and a hint to list them all.
func (a *app) commandOrders(c *api.Command) error {
	if len(c.Orders) <= maxOrderRows {
		return a.ordersTable(c.Orders)
	}
	var failed []api.Order
	for _, o := range c.Orders {
		if o.Status == api.StatusFailure {
			failed = append(failed, o)
		}
	}
	p := c.Progress()
	fmt.Fprintf(a.stdout, "%d orders: %d pending, %d sent, %d success, %d failure (list them with 'tetherctl orders list --command %s')\n",
		p.Total, p.Pending, p.Sent, p.Success, p.Failure, c.ID)
	if len(failed) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout, "\nFailed orders:")
	return a.ordersTable(failed)
}

// failedOrders returns an exit-3 error when some order of c failed.
func failedOrders(c *api.Command) error {
	p := c.Progress()
	if p.Failure == 0 {
		return nil
	}
	if p.Total == 1 && len(c.Orders) == 1 {
		o := c.Orders[0]
		msg := "order " + o.OrderID + " failed"
		if o.Result != nil && o.Result.Message != "" {
			msg += ": " + o.Result.Message
		}
		return &exitError{code: exitFailed, err: fmt.Errorf("%s", msg)}
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("%d of %d orders failed", p.Failure, p.Total)}
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

// ordersTable lists orders for a command: the command is known.
func (a *app) ordersTable(orders []api.Order) error {
	t := newTable(a.stdout, "ORDER", "AGENT", "STATUS", "CODE", "MESSAGE", "FINISHED")
	for _, o := range orders {
		code, msg := resultCells(o)
		t.row(o.OrderID, orderAgent(o), o.Status, code, msg, agoPtr(o.FinishedAt))
	}
	return t.flush()
}

// resultCells are the code and shortened message of o's result.
func resultCells(o api.Order) (code, msg string) {
	if o.Result == nil {
		return "", ""
	}
	return strconv.Itoa(o.Result.Code), truncate(o.Result.Message, 60)
}

// orderAgent is the agent of o, or "(server)" for a server order.
func orderAgent(o api.Order) string {
	if o.AgentID == "" {
		return "(server)"
	}
	return o.AgentID
}

func (a *app) commandsListCommand() *cobra.Command {
	var q api.CommandQuery
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List commands, newest first, with their order counts",
		Long: `List commands, newest first, one page at a time, with the number of their
orders in each status. When there are more, the table ends with the --cursor
value of the next page (with -o json: the "next" field).`,
		Example: `  tetherctl commands list --agent 3f2c…
  tetherctl commands list --status failure --limit 20 -o json
  tetherctl commands list --cursor eyJ0…`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringVar(&q.AgentID, "agent", "", "only commands with an order for agent `ID`")
	f.StringVar(&q.Status, "status", "", "only commands with an order in `STATUS`: pending, sent, success or failure")
	f.IntVar(&q.Limit, "limit", 0, "at most `N` commands (default: the server's)")
	f.StringVar(&q.Cursor, "cursor", "", "continue a list: the next-page `CURSOR` of the previous one")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		if err := checkStatus(q.Status); err != nil {
			return err
		}
		if err := checkLimit(q.Limit); err != nil {
			return err
		}
		list, err := c.ListCommands(ctx, q)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ID", "ACTION", "TARGET", "STATUS", "TOTAL", "PENDING", "SENT", "SUCCESS", "FAILURE", "USER", "CREATED")
		for _, cm := range list.Items {
			p := cm.Progress()
			t.row(cm.ID, cm.Action.Name, targetString(cm.Target), cm.Status, strconv.Itoa(p.Total),
				strconv.Itoa(p.Pending), strconv.Itoa(p.Sent), strconv.Itoa(p.Success), strconv.Itoa(p.Failure),
				cm.User, ago(cm.CreatedAt))
		}
		if err := t.flush(); err != nil {
			return err
		}
		a.nextPage("--cursor", list.Next)
		return nil
	})
	return cmd
}

// checkLimit checks a --limit flag.
func checkLimit(n int) error {
	if n < 0 {
		return usagef("--limit %d: want a positive number", n)
	}
	return nil
}

// checkStatus checks an order status flag.
func checkStatus(status string) error {
	switch status {
	case "", api.StatusPending, api.StatusSent, api.StatusSuccess, api.StatusFailure:
		return nil
	}
	return usagef("--status %q: want pending, sent, success or failure", status)
}

func (a *app) commandsCancelCommand() *cobra.Command {
	var order string
	cmd := &cobra.Command{
		Use:   "cancel (ID | --order ORDER_ID)",
		Short: "Cancel a command's unfinished orders, or one order",
		Long: `Cancel every order of command ID that has not finished, or with --order the
one order ORDER_ID: each fails with "cancelled", and an agent that has not
started it skips it. Finished orders keep their result. It prints how many
orders were cancelled (with -o json: {"cancelled": N}).`,
		Example: `  tetherctl commands cancel 7d0e…
  tetherctl commands cancel --order 91ab…
  tetherctl commands cancel 7d0e… -o json | jq .cancelled`,
		Args: argsUsage(cobra.MaximumNArgs(1)),
	}
	cmd.Flags().StringVar(&order, "order", "", "cancel only the order `ORDER_ID`")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		byOrder := cmd.Flags().Changed("order")
		if byOrder == (len(args) == 1) {
			return usagef("give a command ID or --order ORDER_ID, not both nor neither (see '%s --help')", cmd.CommandPath())
		}
		var (
			res  *api.CancelResponse
			what string
			err  error
		)
		if byOrder {
			if order == "" {
				return usagef("--order: empty order id")
			}
			res, err = c.CancelOrder(ctx, order)
			what = "order " + order
		} else {
			res, err = c.CancelCommand(ctx, args[0])
			what = "command " + args[0]
		}
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(res)
		}
		if res.Cancelled == 0 {
			_, err = fmt.Fprintf(a.stdout, "%s: nothing to cancel, every order had finished\n", what)
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s: %d order(s) cancelled\n", what, res.Cancelled)
		return err
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
			"Target", targetString(cm.Target),
			"Status", cm.Status,
			"Orders", orderCounts(cm.Progress()),
			"Timeout", cm.Timeout,
			"User", cm.User,
			"Source", cm.Source,
			"Created", stamp(cm.CreatedAt),
		); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout)
		if err := a.ordersTable(cm.Orders); err != nil {
			return err
		}
		if cm.Total > len(cm.Orders) {
			fmt.Fprintf(a.stdout, "(%d of %d orders shown; list them all with 'tetherctl orders list --command %s --all')\n", len(cm.Orders), cm.Total, cm.ID)
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

// orderCounts summarises p: "3 (1 pending, 2 success)".
func orderCounts(p api.Progress) string {
	var parts []string
	for _, c := range []struct {
		n    int
		name string
	}{{p.Pending, "pending"}, {p.Sent, "sent"}, {p.Success, "success"}, {p.Failure, "failure"}} {
		if c.n > 0 {
			parts = append(parts, strconv.Itoa(c.n)+" "+c.name)
		}
	}
	if len(parts) == 0 {
		return strconv.Itoa(p.Total)
	}
	return strconv.Itoa(p.Total) + " (" + strings.Join(parts, ", ") + ")"
}
