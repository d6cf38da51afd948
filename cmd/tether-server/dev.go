package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/api"
)

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a server and one enrolled agent on this machine, for a first look",
		Long: `Run a complete Tether on this machine: a server node on loopback with a
SQLite database and event files in a data directory, and one agent enrolled to
it with a fresh enrollment token, running in the same process.

The data directory is temporary (removed on exit) unless --data-dir is given.
The URLs, the admin token and tetherctl commands to try are printed at start.`,
		Example: `  tether-server dev
  tether-server dev --data-dir ./dev-data --api-addr 127.0.0.1:8444 --comms-addr 127.0.0.1:8443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			temporary := f.dataDir == ""
			if temporary {
				dir, err := os.MkdirTemp("", "tether-dev-")
				if err != nil {
					return fmt.Errorf("create temporary data directory: %w", err)
				}
				defer os.RemoveAll(dir)
				f.dataDir = dir
			}
			if f.commsAddr == "" {
				f.commsAddr = "127.0.0.1:7443"
			}
			if f.apiAddr == "" {
				f.apiAddr = "127.0.0.1:7444"
			}
			cfg, err := f.config()
			if err != nil {
				return err
			}
			cfg.DataDir = filepath.Join(f.dataDir, "server")
			log := newLogger(&cfg, stderr)
			node, err := startNode(ctx, cfg, log.With("component", "server"))
			if err != nil {
				return err
			}
			agentDir := filepath.Join(f.dataDir, "agent")
			id, err := enrollDevAgent(ctx, node, agentDir)
			if err != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return errors.Join(err, node.Shutdown(sctx))
			}
			printDevBanner(stdout, node, id, f.dataDir, temporary)

			actx, stopAgent := context.WithCancel(ctx)
			agentDone := make(chan error, 1)
			go func() { agentDone <- runDevAgent(actx, agentDir, log.With("component", "agent")) }()
			err = waitAndStop(ctx, node, log)
			stopAgent()
			if aerr := <-agentDone; aerr != nil && !errors.Is(aerr, context.Canceled) {
				log.Warn("agent stopped", "err", aerr)
			}
			return err
		},
	}
	f.register(cmd, "data directory (default: a temporary directory removed on exit)")
	return cmd
}

// enrollDevAgent creates an enrollment token through the management API,
// as an operator would, and enrolls an agent with it.
func enrollDevAgent(ctx context.Context, node *Node, dir string) (string, error) {
	if id, err := agent.LoadIdentity(dir); err == nil {
		return id.AgentID, nil // a kept data directory: the agent is already enrolled
	}
	c, err := api.New(api.Options{Server: node.APIURL, Token: node.AdminToken, CACertFile: node.CACertFile})
	if err != nil {
		return "", err
	}
	tok, err := c.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{Name: "dev", Groups: []string{"dev"}, TTL: "10m", MaxUses: 1})
	if err != nil {
		return "", fmt.Errorf("create enrollment token: %w", err)
	}
	id, err := agent.Enroll(ctx, agent.EnrollOptions{
		Server: node.APIURL, Token: tok.Token, CACertFile: node.CACertFile, DataDir: dir, Version: Version(),
	})
	if err != nil {
		return "", fmt.Errorf("enroll the dev agent: %w", err)
	}
	return id.AgentID, nil
}

// runDevAgent runs the agent, restarting it in-process when an order asks
// it to restart.
func runDevAgent(ctx context.Context, dir string, log *slog.Logger) error {
	for {
		err := agent.Run(ctx, agent.RunOptions{DataDir: dir, Logger: log, Version: Version()})
		if !errors.Is(err, agent.ErrRestart) {
			return err
		}
		log.Info("agent restarting")
	}
}

func printDevBanner(w io.Writer, node *Node, agentID, dataDir string, temporary bool) {
	keep := "kept after exit"
	if temporary {
		keep = "temporary: removed on exit; pass --data-dir to keep it"
	}
	fmt.Fprintf(w, `
Tether is running.

  Management API  %s
  Comms API       %s
  CA certificate  %s
  Admin token     %s
  Data directory  %s (%s)
  Agent           %s (running in this process)

Try, in another terminal:

  export TETHER_SERVER=%s TETHER_CA_CERT=%s TETHER_TOKEN=%s
  tetherctl agents list
  tetherctl commands send --agent %s get-config --wait
  tetherctl agents state %s inventory

Stop with Ctrl-C.

`, node.APIURL, node.CommsURL, node.CACertFile, node.AdminToken, dataDir, keep, agentID,
		node.APIURL, node.CACertFile, node.AdminToken, agentID, agentID)
}
