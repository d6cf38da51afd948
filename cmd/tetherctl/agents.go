package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) agentsCommand() *cobra.Command {
	cmd := group("agents", "List, show, remove and upgrade agents; read their state",
		"Agents are the enrolled endpoints. Their status is active, disconnected or enrolled (never connected).",
		"agent")
	cmd.AddCommand(a.agentsListCommand(), a.agentsShowCommand(), a.agentsDeleteCommand(), a.agentsStateCommand(),
		a.agentsSetGroupsCommand(), a.agentsUpgradeCommand())
	return cmd
}

func (a *app) agentsListCommand() *cobra.Command {
	var q api.AgentQuery
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List agents",
		Long: `List agents, one page at a time. When there are more, the table ends with
the --after value of the next page (with -o json: the "next" field).`,
		Example: `  tetherctl agents list --status disconnected
  tetherctl agents list --group linux --name web- --limit 50
  tetherctl agents list -o json | jq -r '.items[] | [.id, .name, .status] | @tsv'`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringVar(&q.Status, "status", "", "only agents in `STATUS`: active, disconnected or enrolled")
	f.StringVar(&q.Group, "group", "", "only agents in `GROUP`")
	f.StringVar(&q.Name, "name", "", "only agents whose name starts with `PREFIX`")
	f.IntVar(&q.Limit, "limit", 0, "at most `N` agents (default: the server's page size)")
	f.StringVar(&q.After, "after", "", "start after this agent (the next-page value of the previous list)")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		switch q.Status {
		case "", "active", "disconnected", "enrolled":
		default:
			return usagef("--status %q: want active, disconnected or enrolled", q.Status)
		}
		if err := checkLimit(q.Limit); err != nil {
			return err
		}
		list, err := c.ListAgents(ctx, q)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ID", "NAME", "STATUS", "GROUPS", "OS/ARCH", "VERSION", "LAST SEEN")
		for _, ag := range list.Items {
			t.row(ag.ID, ag.Name, ag.Status, joinOr(ag.Groups), osArch(ag), ag.Version, agoPtr(ag.LastSeen))
		}
		if err := t.flush(); err != nil {
			return err
		}
		a.nextPage("--after", list.Next)
		return nil
	})
	return cmd
}

func osArch(ag api.Agent) string {
	if ag.OS == "" && ag.Arch == "" {
		return ""
	}
	return ag.OS + "/" + ag.Arch
}

func (a *app) agentsShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "show ID",
		Aliases: []string{"get"},
		Short:   "Show one agent",
		Example: `  tetherctl agents show 3f2c…
  tetherctl agents show 3f2c… -o json`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		ag, err := c.GetAgent(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(ag)
		}
		return fields(a.stdout,
			"ID", ag.ID,
			"Name", ag.Name,
			"Status", ag.Status,
			"Groups", joinOr(ag.Groups),
			"Hostname", ag.Hostname,
			"OS/Arch", osArch(*ag),
			"Version", ag.Version,
			"Enrolled", stamp(ag.EnrolledAt),
			"Last seen", stampPtr(ag.LastSeen),
		)
	})
	return cmd
}

func (a *app) agentsDeleteCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete ID",
		Aliases: []string{"rm"},
		Short:   "Remove an agent",
		Long: `Remove an agent from the registry. Its credentials stop working within
seconds; the agent must enroll again to come back.`,
		Example: `  tetherctl agents delete 3f2c…`,
		Args:    argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if err := c.DeleteAgent(ctx, args[0]); err != nil {
			return err
		}
		return a.done("agent", args[0], "deleted")
	})
	return cmd
}

func (a *app) agentsStateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state ID [MODULE]",
		Short: "Show an agent's state documents",
		Long: `Show the latest state documents an agent reported (inventory, health…), of
every module or of one. The table shortens documents; -o json gives them whole.`,
		Example: `  tetherctl agents state 3f2c…
  tetherctl agents state 3f2c… inventory -o json | jq '.items[].doc'`,
		Args: argsUsage(cobra.RangeArgs(1, 2)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		module := ""
		if len(args) == 2 {
			module = args[1]
		}
		st, err := c.AgentState(ctx, args[0], module)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(st)
		}
		t := newTable(a.stdout, "MODULE", "KEY", "UPDATED", "DOC")
		for _, e := range st.Items {
			t.row(e.Module, e.Key, ago(e.UpdatedAt), truncate(compactJSON(e.Doc), 80))
		}
		return t.flush()
	})
	return cmd
}

func (a *app) agentsSetGroupsCommand() *cobra.Command {
	var none bool
	cmd := &cobra.Command{
		Use:   "set-groups ID (GROUP... | --none)",
		Short: "Set the groups of an agent",
		Long: `Replace the groups of an agent with GROUP... (the full list, not an
addition), or with none with --none. The agent gets the configuration of its
new groups without restarting.`,
		Example: `  tetherctl agents set-groups 3f2c… web linux
  tetherctl agents set-groups 3f2c… --none
  tetherctl agents set-groups 3f2c… $(tetherctl agents show 3f2c… -o json | jq -r '.groups[]') db`,
		Args: argsUsage(cobra.MinimumNArgs(1)),
	}
	cmd.Flags().BoolVar(&none, "none", false, "remove the agent from every group")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		groups := args[1:]
		switch {
		case none && len(groups) > 0:
			return usagef("--none and groups %q are exclusive", groups)
		case !none && len(groups) == 0:
			return usagef("give the agent's groups, or --none to remove it from every group (see '%s --help')", cmd.CommandPath())
		}
		ag, err := c.SetAgentGroups(ctx, args[0], api.SetAgentGroupsRequest{Groups: groups})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(ag)
		}
		if len(ag.Groups) == 0 {
			_, err = fmt.Fprintf(a.stdout, "agent %s is in no group\n", ag.ID)
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "agent %s groups: %s\n", ag.ID, joinOr(ag.Groups))
		return err
	})
	return cmd
}
