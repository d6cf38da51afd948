// Benchplot draws SVG plots from the JSON reports of the load program
// (tether-loadtest -o json), one report per file:
//
//	go run ./scripts/benchplot -o docs/img results/*.json
//
// It writes, when the reports hold what they need:
//
//   - memory-per-agent.svg: the server's RSS against the agents connected,
//     a point per report, for Tether and for the baseline (a bare Go HTTP/2
//     server, from a report's "baseline" object or a report whose target is
//     "baseline"), with the 30 KiB per agent target as a dashed line from
//     Tether's first point;
//   - command-latency.svg: the distribution (CDF) of single-command
//     latencies, a curve per report with samples (its baseline's dashed,
//     in the same colour), p50 and p99 marked on each (computed from the
//     samples drawn, nearest rank).
//
// Only the standard library: the SVG is written by hand.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	out := fs.String("o", "docs/img", "directory to write the SVG files into")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: benchplot [-o dir] report.json...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("no report given")
	}
	var reports []report
	for _, f := range fs.Args() {
		r, err := readReport(f)
		if err != nil {
			return err
		}
		reports = append(reports, r)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	plots := []struct {
		name string
		draw func([]report) ([]byte, bool)
	}{
		{"memory-per-agent.svg", memoryPlot},
		{"command-latency.svg", latencyPlot},
	}
	wrote := 0
	for _, p := range plots {
		svg, ok := p.draw(reports)
		if !ok {
			fmt.Fprintf(stdout, "%s: no data in the reports, skipped\n", p.name)
			continue
		}
		path := filepath.Join(*out, p.name)
		if err := os.WriteFile(path, svg, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", path)
		wrote++
	}
	if wrote == 0 {
		return fmt.Errorf("nothing to plot in %d report(s)", len(reports))
	}
	return nil
}
