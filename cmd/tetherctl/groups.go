package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) groupsCommand() *cobra.Command {
	cmd := group("groups", "Create, list, show and delete groups; set their configuration",
		`A group is a named set of agents with a centralized configuration: one YAML
mapping that its agents merge into the configuration they get from the
server. Changing it notifies the group's connected agents, which apply it
without restarting. Agents join groups when they enroll (the enrollment
token's groups) or with 'tetherctl agents set-groups'. A command can target
every agent of a group: 'tetherctl commands send --group NAME'.`,
		"group")
	cmd.AddCommand(a.groupsCreateCommand(), a.groupsListCommand(), a.groupsShowCommand(),
		a.groupsSetConfigCommand(), a.groupsDeleteCommand())
	return cmd
}

// readConfig reads a configuration file, or the standard input for "-".
func (a *app) readConfig(path string) (string, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		b, err = io.ReadAll(a.stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", usagef("--config-file: %v", err)
	}
	return string(b), nil
}

func (a *app) groupsCreateCommand() *cobra.Command {
	var description, configFile string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a group",
		Long: `Create a group, with a description and a YAML configuration (a mapping,
read from --config-file, or from the standard input with --config-file -).`,
		Example: `  tetherctl groups create web --description "front-end servers"
  tetherctl groups create web --config-file web.yaml
  printf 'log_level: debug\n' | tetherctl groups create debug --config-file -`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.Flags().StringVar(&description, "description", "", "a description for people")
	cmd.Flags().StringVar(&configFile, "config-file", "", "the group's YAML configuration `FILE` (- for stdin)")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		req := api.CreateGroupRequest{Name: args[0], Description: description}
		if configFile != "" {
			cfg, err := a.readConfig(configFile)
			if err != nil {
				return err
			}
			req.Config = cfg
		}
		g, err := c.CreateGroup(ctx, req)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(g)
		}
		_, err = fmt.Fprintf(a.stdout, "group %s created (configuration version %s)\n", g.Name, g.Version)
		return err
	})
	return cmd
}

func (a *app) groupsListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List groups",
		Example: `  tetherctl groups list
  tetherctl groups list -o json | jq -r '.items[] | select(.members == 0) | .name'`,
		Args: argsUsage(cobra.NoArgs),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		list, err := c.ListGroups(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "NAME", "MEMBERS", "VERSION", "DESCRIPTION", "UPDATED")
		for _, g := range list.Items {
			t.row(g.Name, strconv.Itoa(g.Members), g.Version, truncate(g.Description, 60), ago(g.UpdatedAt))
		}
		return t.flush()
	})
	return cmd
}

func (a *app) groupsShowCommand() *cobra.Command {
	var configOnly bool
	cmd := &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a group and its configuration",
		Long: `Show a group and its YAML configuration as it was written. With --config,
print only the configuration, ready to edit and give back to set-config.`,
		Example: `  tetherctl groups show web
  tetherctl groups show web --config > web.yaml && vi web.yaml && tetherctl groups set-config web --config-file web.yaml
  tetherctl groups show web -o json | jq -r .version`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.Flags().BoolVar(&configOnly, "config", false, "print only the YAML configuration")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if configOnly && a.jsonOut() {
			return usagef("--config prints YAML: drop -o json, or use -o json | jq -r .config")
		}
		g, err := c.GetGroup(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(g)
		}
		if configOnly {
			_, err := io.WriteString(a.stdout, withNewline(g.Config))
			return err
		}
		if err := fields(a.stdout,
			"Name", g.Name,
			"Description", g.Description,
			"Members", strconv.Itoa(g.Members),
			"Version", g.Version,
			"Created", stamp(g.CreatedAt),
			"Updated", stamp(g.UpdatedAt),
		); err != nil {
			return err
		}
		if strings.TrimSpace(g.Config) == "" {
			_, err = fmt.Fprintln(a.stdout, "\nConfiguration: none")
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "\nConfiguration:\n%s", withNewline(g.Config))
		return err
	})
	return cmd
}

// withNewline ends a non-empty s with a newline.
func withNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

func (a *app) groupsSetConfigCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "set-config NAME --config-file FILE",
		Short: "Replace a group's configuration",
		Long: `Replace a group's YAML configuration with the mapping in FILE (- reads the
standard input; an empty file clears it). The group's connected agents are
notified and apply it without restarting. It prints the new version.`,
		Example: `  tetherctl groups set-config web --config-file web.yaml
  tetherctl groups show web --config | sed 's/info/debug/' | tetherctl groups set-config web --config-file -`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.Flags().StringVar(&configFile, "config-file", "", "the new YAML configuration `FILE` (- for stdin; required)")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if configFile == "" {
			return usagef("--config-file is required (see '%s --help')", cmd.CommandPath())
		}
		cfg, err := a.readConfig(configFile)
		if err != nil {
			return err
		}
		g, err := c.UpdateGroup(ctx, args[0], api.UpdateGroupRequest{Config: &cfg})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(g)
		}
		_, err = fmt.Fprintf(a.stdout, "group %s configuration set: version %s, %d member(s)\n", g.Name, g.Version, g.Members)
		return err
	})
	return cmd
}

func (a *app) groupsDeleteCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a group",
		Long:    "Delete a group: its agents leave it and lose its configuration. Orders already created stay.",
		Example: `  tetherctl groups delete web`,
		Args:    argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if err := c.DeleteGroup(ctx, args[0]); err != nil {
			return err
		}
		return a.done("group", args[0], "deleted")
	})
	return cmd
}
