package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

// tokenRoles and tokenKinds are what tokens create accepts.
var (
	tokenRoles = []string{"admin", "operator", "viewer"}
	tokenKinds = []string{api.KindUser, api.KindService}
)

// minTokenTTL is the shortest --ttl the server accepts.
const minTokenTTL = time.Minute

func (a *app) apiTokensCommand() *cobra.Command {
	cmd := group("tokens", "Create, list and revoke the API tokens of people and services (admin only)",
		`Every call to the management API carries a token. Its role says what it may
do, its kind says who holds it:

  role      admin     everything, and alone manages these tokens
            operator  agents, groups, commands, files, enrollment tokens
            viewer    reads agents, commands, state and files
  kind      user      a person: give each person a token of their own
            service   automation: a script, a pipeline, a dashboard

A command sent with a token records the token's name as its user and the
token's kind as its source, so a person's actions can be told from a
script's. Only an admin token may create, list or revoke tokens; the last
usable admin token cannot be revoked.

Enrollment tokens, which agents use to register, are managed with
'tetherctl enrollment-tokens'.`, "token")
	cmd.Example = `  tetherctl tokens create --name alice --role operator --kind user --ttl 2160h
  tetherctl tokens create --name ci-deploy --role operator --kind service -o json | jq -r .token
  tetherctl tokens list
  tetherctl tokens revoke 9b1c…`
	cmd.AddCommand(a.apiTokensCreateCommand(), a.apiTokensListCommand(), a.apiTokensRevokeCommand())
	return cmd
}

func (a *app) apiTokensCreateCommand() *cobra.Command {
	var name, role, kind, ttl string
	cmd := &cobra.Command{
		Use:   "create --name NAME --role ROLE --kind user|service [--ttl DURATION]",
		Short: "Create an API token for a person or a service and print it once",
		Long: `Create an API token. Its secret is shown only in this answer: hand it to the
person, or store it in the script's secret store, now. With -o json the
answer is the token object; its "token" field holds the secret.

--name says whose token it is: commands sent with it record it as their user.
--role is admin, operator or viewer; --kind is user (a person) or service
(automation). Without --ttl (or with --ttl 0) the token never expires;
otherwise it stops working after that long (at least 1m).`,
		Example: `  # a person
  tetherctl tokens create --name alice@example.com --role operator --kind user --ttl 2160h
  # a script that sends commands
  tetherctl tokens create --name ci-deploy --role operator --kind service -o json | jq -r .token > deploy.token
  # a dashboard that only reads
  tetherctl tokens create --name grafana --role viewer --kind service`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "`NAME`: whose token it is (required); recorded as the user of its commands")
	f.StringVar(&role, "role", "", "`ROLE`: admin, operator or viewer (required)")
	f.StringVar(&kind, "kind", "", "`KIND`: user (a person) or service (automation) (required)")
	f.StringVar(&ttl, "ttl", "", "lifetime as a Go `DURATION` (720h, 90m), at least 1m; 0 or absent: never expires")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		switch {
		case name == "":
			return usagef("--name is required: whose token it is, such as alice or ci-deploy")
		case role == "":
			return usagef("--role is required: admin, operator or viewer")
		case !slices.Contains(tokenRoles, role):
			return usagef("--role %q: want admin, operator or viewer (enrollment tokens: tetherctl enrollment-tokens create)", role)
		case kind == "":
			return usagef("--kind is required: user (a person) or service (automation)")
		case !slices.Contains(tokenKinds, kind):
			return usagef("--kind %q: want user or service", kind)
		}
		if ttl != "" && ttl != "0" {
			if d, err := time.ParseDuration(ttl); err != nil || d < minTokenTTL {
				return usagef("--ttl %q: want a duration of at least 1m such as 720h, or 0", ttl)
			}
		}
		tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: name, Role: role, Kind: kind, TTL: ttl})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(tok)
		}
		expires := "never"
		if tok.ExpiresAt != nil {
			expires = stampPtr(tok.ExpiresAt)
		}
		if err := fields(a.stdout,
			"ID", tok.ID,
			"Name", tok.Name,
			"Role", tok.Role,
			"Kind", tok.Kind,
			"Expires", expires,
		); err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "\nToken (shown only now):\n  %s\n\nUse it with --token-file FILE, --token TOKEN or TETHER_TOKEN; revoke it with:\n  tetherctl tokens revoke %s\n",
			tok.Token, tok.ID)
		return err
	})
	return cmd
}

func (a *app) apiTokensListCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the API tokens of people and services",
		Long: `List the API tokens of people and services, never their secrets: active ones
unless --all. Enrollment tokens are listed by 'tetherctl enrollment-tokens list'.`,
		Example: `  tetherctl tokens list
  tetherctl tokens list --all -o json | jq -r '.items[] | select(.kind == "service") | .name'`,
		Args: argsUsage(cobra.NoArgs),
	}
	cmd.Flags().BoolVar(&all, "all", false, "include revoked and expired tokens")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		list, err := c.ListTokens(ctx, all)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ID", "NAME", "ROLE", "KIND", "STATUS", "EXPIRES", "CREATED", "CREATED BY")
		for _, tok := range list.Items {
			expires := "never"
			if tok.ExpiresAt != nil {
				expires = agoPtr(tok.ExpiresAt)
			}
			by := tok.CreatedBy
			if by == "" {
				by = "-"
			}
			t.row(tok.ID, tok.Name, tok.Role, tok.Kind, tok.Status, expires, ago(tok.CreatedAt), by)
		}
		return t.flush()
	})
	return cmd
}

func (a *app) apiTokensRevokeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token",
		Long: `Revoke an API token: its next call is refused. Commands it sent stay, with its
name as their user. The server refuses to revoke the last usable admin token:
create another admin token first.`,
		Example: `  tetherctl tokens revoke 9b1c…
  tetherctl tokens list -o json | jq -r '.items[] | select(.name == "alice") | .id' | xargs -n1 tetherctl tokens revoke`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if err := c.RevokeToken(ctx, args[0]); err != nil {
			return err
		}
		return a.done("token", args[0], "revoked")
	})
	return cmd
}
