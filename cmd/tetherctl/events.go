package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) eventsCommand() *cobra.Command {
	cmd := group("events", "Follow the events agents send",
		`Agents send events (log lines, inventory changes, health documents) to the
server, which stores them in its event sinks (by default, files in its data
directory: see the operations guide). 'events tail' follows them live.`,
		"event")
	cmd.AddCommand(a.eventsTailCommand())
	return cmd
}

// tailFormat is the format of the table rows of events tail: they are
// printed as they come, so in fixed-width columns.
const tailFormat = "%-20s  %-16s  %-14s  %-10s  %s\n"

func (a *app) eventsTailCommand() *cobra.Command {
	var filter api.EventFilter
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow the events the server accepts, live",
		Long: `Follow, live, the events the server accepts from agents, once its event
sinks stored them: those of every agent, or of one agent (--agent) or one
module (--module), or both. Events accepted before tail started are not
shown; the event files are the record of those. Stop with Ctrl-C (exit 0).

A server node shows the events of its own ingest only: in a cluster behind
a load balancer, run one tail per node (--server https://NODE:7444) to see
every agent. An event an agent sent again after a failure may show twice.

When tail reads more slowly than events come (a slow terminal or pipe), the
server leaves some out rather than slow the agents down, and tail says on
stderr how many it missed.

Output: one line per event: when the agent collected it (UTC), the agent's
name, module, type, and the payload (stateful events: the operation and key
first; a payload that is not JSON shows as its size). -o json prints each
event as one JSON object per line (NDJSON), with every field and the whole
payload ("payload", or "payload_b64" for bytes that are not JSON), for jq or
a file.`,
		Example: `  tetherctl events tail
  tetherctl events tail --agent 3f2c0000-0000-4000-8000-000000000001
  tetherctl events tail --module logcollector -o json | jq -r .payload.line
  tetherctl events tail --module inventory -o json > inventory.ndjson`,
		Args: argsUsage(cobra.NoArgs),
	}
	cmd.Flags().StringVar(&filter.AgentID, "agent", "", "show the events of the agent with this `ID` only")
	cmd.Flags().StringVar(&filter.Module, "module", "", "show the events of the module `NAME` only")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		err := c.TailEvents(ctx, filter, api.TailHandlers{
			Open: func() error {
				fmt.Fprintf(a.stderr, "Following the events %s accepts (Ctrl-C to stop).\n", a.server)
				if !a.jsonOut() {
					_, err := fmt.Fprintf(a.stdout, tailFormat, "COLLECTED", "AGENT", "MODULE", "TYPE", "DATA")
					return err
				}
				return nil
			},
			Event: a.printEvent,
			Skipped: func(n int) error {
				fmt.Fprintf(a.stderr, "tetherctl: %d events skipped: they came faster than this output was read\n", n)
				return nil
			},
		})
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil // Ctrl-C
		}
		if errors.Is(err, api.ErrTailEnded) {
			return fmt.Errorf("%w (the server may be shutting down: run tail again)", err)
		}
		return err
	})
	return cmd
}

// printEvent prints one event as a table row or a JSON line.
func (a *app) printEvent(e api.Event) error {
	if a.jsonOut() {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		_, err = a.stdout.Write(append(b, '\n'))
		return err
	}
	data := ""
	switch {
	case e.Payload != nil:
		data = compactJSON(e.Payload)
	case e.PayloadB64 != "":
		data = fmt.Sprintf("(%d bytes of %s)", len(e.PayloadB64)*3/4-strings.Count(e.PayloadB64, "="), e.Encoding)
	}
	if e.Op != "" {
		data = strings.TrimSpace(e.Op + " " + e.Key + " " + data)
	}
	agent := e.AgentName
	if agent == "" {
		agent = e.AgentID
	}
	row := []string{e.CollectedAt.UTC().Format("2006-01-02T15:04:05Z"), truncate(agent, 16), truncate(e.Module, 14),
		truncate(e.Type, 10), truncate(data, 200)}
	for i, c := range row {
		row[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
		if row[i] == "" {
			row[i] = "-"
		}
	}
	_, err := fmt.Fprintf(a.stdout, tailFormat, row[0], row[1], row[2], row[3], row[4])
	return err
}
