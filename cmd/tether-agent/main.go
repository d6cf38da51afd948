// Command tether-agent is Tether's endpoint agent: it enrolls once with a
// Tether server, then runs, sending events through a durable outbox and
// executing the orders the server sends it.
//
// main only handles signals and the exit code; the commands are in Run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
