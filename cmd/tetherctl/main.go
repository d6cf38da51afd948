// Command tetherctl is a command-line client of Tether's management API:
// enrollment tokens, agents, agent state and commands, with table or JSON
// output and exit codes that scripts can rely on (see `tetherctl --help`).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
