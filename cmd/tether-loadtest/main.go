// Command tether-loadtest simulates a fleet of agents against a Tether
// server, through the project's own client library, and reports what the
// server sustained: agents connected, command latency, group fan-out time,
// events accepted, errors by code, and the server's memory and CPU. With
// --baseline it runs the same traffic against a bare Go HTTP/2 server (no
// authentication, no storage, the same TLS) and reports each figure also
// as a ratio to it. See `tether-loadtest --help` and docs/benchmarks.md.
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
