package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunSynthetic draws the synthetic reports of testdata (made-up
// numbers, not measurements) and checks that both plots are well-formed
// SVG holding what they should.
func TestRunSynthetic(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "synthetic-*.json"))
	if len(files) == 0 {
		t.Fatal("no testdata/synthetic-*.json")
	}
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(append([]string{"-o", dir}, files...), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for name, want := range map[string][]string{
		"memory-per-agent.svg": {"agents connected", "server RSS (MiB)", "Tether", "baseline", "30 KiB", "stroke-dasharray"},
		"command-latency.svg":  {"latency (ms", "synthetic-10k (n=200)", "synthetic-100k (n=200)", "p50", "p99"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		wellFormed(t, name, b)
		for _, w := range want {
			if !bytes.Contains(b, []byte(w)) {
				t.Errorf("%s: no %q", name, w)
			}
		}
	}
}

// TestRunNothingToPlot fails on reports that hold neither memory nor
// latency samples, and skips a plot whose data is missing.
func TestRunNothingToPlot(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	latOnly := filepath.Join(dir, "latency-only.json")
	os.WriteFile(empty, []byte(`{"label":"x","unknown_field":{"a":1}}`), 0o644)
	os.WriteFile(latOnly, []byte(`{"agents":10,"command_latency":{"samples_ms":[1,2,3]}}`), 0o644)
	if err := run([]string{"-o", dir, empty}, io.Discard); err == nil {
		t.Error("no error for a report with nothing to plot")
	}
	var out bytes.Buffer
	if err := run([]string{"-o", dir, latOnly}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "memory-per-agent.svg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("memory plot written without memory figures: %v", err)
	}
	if !strings.Contains(out.String(), "memory-per-agent.svg: no data") {
		t.Errorf("output does not say the memory plot was skipped: %q", out.String())
	}
}

func wellFormed(t *testing.T, name string, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", name, err)
		}
	}
}
