package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) tokensCommand() *cobra.Command {
	cmd := group("enrollment-tokens", "Create, list and revoke enrollment tokens",
		`An enrollment token lets 'tether-agent enroll' register agents and nothing
else. It may be limited to a number of uses and a lifetime, and the agents it
enrolls join its groups.`, "enrollment-token", "et")
	cmd.AddCommand(a.tokensCreateCommand(), a.tokensListCommand(), a.tokensRevokeCommand())
	return cmd
}

func (a *app) tokensCreateCommand() *cobra.Command {
	var (
		groups []string
		ttl    string
		uses   int
		name   string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an enrollment token and print it once",
		Long: `Create an enrollment token. Its secret is shown only in this answer: store it
or hand it to the installer now. With -o json the answer is the token object;
its "token" field holds the secret.`,
		Example: `  tetherctl enrollment-tokens create --group linux --group prod --ttl 24h --uses 50
  tetherctl enrollment-tokens create --ttl 0 --name golden-image -o json | jq -r .token`,
		Args: argsUsage(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringArrayVar(&groups, "group", nil, "`GROUP` the enrolled agents join (repeatable)")
	f.StringVar(&ttl, "ttl", "", "lifetime as a Go duration (24h, 30m); 0: never expires (default 24h)")
	f.IntVar(&uses, "uses", 0, "how many agents it may enroll (0: unlimited)")
	f.StringVar(&name, "name", "", "a label for people")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		if ttl != "" && ttl != "0" {
			if d, err := time.ParseDuration(ttl); err != nil || d < 0 {
				return usagef("--ttl %q: want a duration such as 24h or 30m, or 0", ttl)
			}
		}
		if uses < 0 {
			return usagef("--uses %d: want 0 (unlimited) or more", uses)
		}
		tok, err := c.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{
			Name: name, Groups: groups, TTL: ttl, MaxUses: uses,
		})
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
		maxUses := "unlimited"
		if tok.MaxUses > 0 {
			maxUses = strconv.Itoa(tok.MaxUses)
		}
		if err := fields(a.stdout,
			"ID", tok.ID,
			"Name", tok.Name,
			"Groups", joinOr(tok.Groups),
			"Uses", maxUses,
			"Expires", expires,
		); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "\nToken (shown only now):\n  %s\n\nEnroll an agent with:\n  %s\n", tok.Token, a.enrollHint(tok.Token))
		return nil
	})
	return cmd
}

// enrollHint is the command line that enrolls an agent with token.
func (a *app) enrollHint(token string) string {
	ca := a.caCert
	if ca == "" {
		ca = "CA.crt"
	}
	return fmt.Sprintf("tether-agent enroll --server %s --token %s --ca-cert %s", a.server, token, ca)
}

func (a *app) tokensListCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List enrollment tokens",
		Long:    "List enrollment tokens (never their secrets). Only active ones unless --all.",
		Example: `  tetherctl enrollment-tokens list
  tetherctl enrollment-tokens list --all -o json`,
		Args: argsUsage(cobra.NoArgs),
	}
	cmd.Flags().BoolVar(&all, "all", false, "include revoked, expired and used-up tokens")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		list, err := c.ListEnrollmentTokens(ctx, all)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "ID", "NAME", "STATUS", "GROUPS", "USES", "EXPIRES", "CREATED")
		for _, tok := range list.Items {
			uses := strconv.Itoa(tok.Uses) + "/"
			if tok.MaxUses > 0 {
				uses += strconv.Itoa(tok.MaxUses)
			} else {
				uses += "∞"
			}
			expires := "never"
			if tok.ExpiresAt != nil {
				expires = agoPtr(tok.ExpiresAt)
			}
			t.row(tok.ID, tok.Name, tok.Status, joinOr(tok.Groups), uses, expires, ago(tok.CreatedAt))
		}
		return t.flush()
	})
	return cmd
}

func (a *app) tokensRevokeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an enrollment token",
		Long:    "Revoke an enrollment token: it enrolls no more agents. Agents it enrolled stay.",
		Example: `  tetherctl enrollment-tokens revoke 9b1c…`,
		Args:    argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		if err := c.RevokeEnrollmentToken(ctx, args[0]); err != nil {
			return err
		}
		return a.done("enrollment token", args[0], "revoked")
	})
	return cmd
}

// done reports that an entity changed: a sentence, or with -o json an
// object {"id": …, "status": …}.
func (a *app) done(kind, id, status string) error {
	if a.jsonOut() {
		return a.printJSON(map[string]string{"id": id, "status": status})
	}
	_, err := fmt.Fprintf(a.stdout, "%s %s %s\n", kind, id, status)
	return err
}
