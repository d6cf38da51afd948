package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) ordersCommand() *cobra.Command {
	cmd := group("orders", "List and show orders, the per-agent work of commands",
		`An order is one command's work for one agent (or for the server). The server
keeps finished orders for its retention period (default 7 days).`,
		"order")
	cmd.AddCommand(a.ordersListCommand(), a.ordersShowCommand())
	return cmd
}

func (a *app) ordersListCommand() *cobra.Command {
	var (
		q            api.OrderQuery
		since, until string
		all          bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List orders by command, agent, group, status, action and time",
		Long: `List orders, one page at a time; the filters combine. --group keeps the
orders of the agents that are in the group now. --since and --until take a
duration back from now (30m, 2h, 168h) or a time (2026-01-02T15:04:05Z, or
a date 2026-01-02, local midnight).

When there are more orders, the table ends with the --cursor value of the
next page (with -o json: the "next" field). --all follows the cursors to the
end and prints every order at once (--limit is then the page size).`,
		Example: `  tetherctl orders list --command 7d0e… --status failure
  tetherctl orders list --group web --action restart --since 1h
  tetherctl orders list --agent 3f2c… --since 2026-01-02 --until 2026-01-03
  tetherctl orders list --command 7d0e… --all -o json | jq -r '.items[] | select(.status == "failure") | .agent_id'`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringVar(&q.RequestID, "command", "", "only the orders of command `ID`")
	f.StringVar(&q.AgentID, "agent", "", "only the orders of agent `ID`")
	f.StringVar(&q.Group, "group", "", "only the orders of the agents in group `NAME`")
	f.StringVar(&q.Status, "status", "", "only orders in `STATUS`: pending, sent, success or failure")
	f.StringVar(&q.Action, "action", "", "only orders of action `NAME`")
	f.StringVar(&since, "since", "", "only orders created after `DURATION|TIME` (30m: 30 minutes ago)")
	f.StringVar(&until, "until", "", "only orders created before `DURATION|TIME`")
	f.IntVar(&q.Limit, "limit", 0, "at most `N` orders per page (default: the server's)")
	f.StringVar(&q.Cursor, "cursor", "", "continue a list: the next-page `CURSOR` of the previous one")
	f.BoolVar(&all, "all", false, "follow the cursors and list every order")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		if err := checkStatus(q.Status); err != nil {
			return err
		}
		if err := checkLimit(q.Limit); err != nil {
			return err
		}
		var err error
		if q.CreatedAfter, err = parseSince("--since", since); err != nil {
			return err
		}
		if q.CreatedBefore, err = parseSince("--until", until); err != nil {
			return err
		}
		var list *api.OrderList
		if all {
			var items []api.Order
			items, err = c.AllOrders(ctx, q)
			list = &api.OrderList{Items: items}
		} else {
			list, err = c.ListOrders(ctx, q)
		}
		if err != nil {
			return err
		}
		if list.Items == nil {
			list.Items = []api.Order{}
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ORDER", "COMMAND", "AGENT", "ACTION", "STATUS", "CODE", "MESSAGE", "CREATED", "FINISHED")
		for _, o := range list.Items {
			code, msg := resultCells(o)
			t.row(o.OrderID, o.RequestID, orderAgent(o), o.Action.Name, o.Status, code, msg, ago(o.CreatedAt), agoPtr(o.FinishedAt))
		}
		if err := t.flush(); err != nil {
			return err
		}
		a.nextPage("--cursor", list.Next)
		return nil
	})
	return cmd
}

// parseSince reads a --since or --until value: a duration back from now,
// an RFC 3339 time or a date (local midnight). "" is the zero time.
func parseSince(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("%s %q: want a positive duration (how long ago)", flag, s)
		}
		return now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("%s %q: want a duration such as 30m or 24h, a time such as 2026-01-02T15:04:05Z, or a date such as 2026-01-02", flag, s)
}

func (a *app) ordersShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "show ORDER_ID",
		Aliases: []string{"get"},
		Short:   "Show one order and its result",
		Example: `  tetherctl orders show 91ab…
  tetherctl orders show 91ab… -o json | jq .result.data`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		o, err := c.GetOrder(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(o)
		}
		code, msg := "", ""
		if o.Result != nil {
			code, msg = strconv.Itoa(o.Result.Code), o.Result.Message
		}
		if err := fields(a.stdout,
			"Order", o.OrderID,
			"Command", o.RequestID,
			"Agent", orderAgent(*o),
			"Action", o.Action.Name,
			"Args", compactJSON(o.Action.Args),
			"Status", o.Status,
			"Code", code,
			"Message", oneLine(msg),
			"Created", stamp(o.CreatedAt),
			"Sent", stampPtr(o.SentAt),
			"Finished", stampPtr(o.FinishedAt),
			"Times out", stamp(o.TimeoutAt),
			"Attempts", strconv.Itoa(o.Attempts),
		); err != nil {
			return err
		}
		if o.Result != nil && len(bytes.TrimSpace(o.Result.Data)) > 0 {
			fmt.Fprintf(a.stdout, "\nData: %s\n", compactJSON(o.Result.Data))
		}
		return nil
	})
	return cmd
}
