package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) actionsCommand() *cobra.Command {
	cmd := group("actions", "Describe the built-in actions and their arguments",
		`Built-in actions are those the server knows: it checks their arguments when a
command is created. Other action names (plugin actions) go to agents
unchecked.`,
		"action")
	cmd.AddCommand(a.actionsListCommand(), a.actionsShowCommand())
	return cmd
}

func (a *app) actionsListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the built-in actions and their arguments",
		Long: `List the built-in actions: where each runs (an agent, or the server: send it
with --to-server) and its arguments, as NAME:TYPE, a * marking the required
ones. 'tetherctl actions show NAME' describes each argument.`,
		Example: `  tetherctl actions list
  tetherctl actions list -o json | jq -r '.items[] | select(.target == "server") | .name'`,
		Args: argsUsage(cobra.NoArgs),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		list, err := c.ListActions(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ACTION", "RUNS ON", "ARGUMENTS", "DESCRIPTION")
		for _, ac := range list.Items {
			var args []string
			for _, arg := range ac.Args {
				s := arg.Name
				if arg.Required {
					s += "*"
				}
				args = append(args, s+":"+arg.Type)
			}
			t.row(ac.Name, ac.Target, strings.Join(args, " "), truncate(oneLine(ac.Doc), 70))
		}
		return t.flush()
	})
	return cmd
}

func (a *app) actionsShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Describe a built-in action and each of its arguments",
		Example: `  tetherctl actions show upgrade
  tetherctl actions show active-response -o json`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		list, err := c.ListActions(ctx)
		if err != nil {
			return err
		}
		var spec *api.ActionSpec
		for i := range list.Items {
			if list.Items[i].Name == args[0] {
				spec = &list.Items[i]
			}
		}
		if spec == nil {
			return fmt.Errorf("%q is not a built-in action (see 'tetherctl actions list'); agents may still know it as a plugin action", args[0])
		}
		if a.jsonOut() {
			return a.printJSON(spec)
		}
		if err := fields(a.stdout, "Action", spec.Name, "Runs on", spec.Target, "Description", oneLine(spec.Doc)); err != nil {
			return err
		}
		if len(spec.Args) == 0 {
			_, err := fmt.Fprintln(a.stdout, "\nNo arguments.")
			return err
		}
		fmt.Fprintln(a.stdout)
		t := newTable(a.stdout, "ARGUMENT", "TYPE", "REQUIRED", "DESCRIPTION")
		for _, arg := range spec.Args {
			req := "no"
			if arg.Required {
				req = "yes"
			}
			t.row(arg.Name, arg.Type, req, oneLine(arg.Doc))
		}
		return t.flush()
	})
	return cmd
}
