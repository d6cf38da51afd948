package integration_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tests of this file follow a log file with a real agent and a real
// server, kill one or the other with SIGKILL while lines are written and
// the file is rotated, and check that the server's sink holds every line
// exactly once.

// logLine is line n as the tests write it: numbered, about 100 bytes.
func logLine(n int) string {
	return fmt.Sprintf("line %07d 2026-01-02T03:04:05Z host app[42]: request served in 12ms, status 200, bytes 5120", n)
}

// lineCounts counts, per line number, the logcollector lines in the
// server's file sink (open and closed files, not compressed), reading the
// files as a stream; it skips a last line still being written. Other
// events are ignored; a line that is not one the tests write fails.
func lineCounts(t *testing.T, dataDir string, total int) []int32 {
	t.Helper()
	counts := make([]int32, total)
	files, _ := filepath.Glob(filepath.Join(dataDir, "events", "*.ndjson"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReaderSize(fh, 1<<20)
		for {
			b, err := r.ReadSlice('\n')
			if err == io.EOF {
				break // a partial last line, or the end
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if !bytes.Contains(b, []byte(`"module":"logcollector"`)) {
				continue
			}
			var e struct {
				Module  string `json:"module"`
				Payload struct {
					Line string `json:"line"`
				} `json:"payload"`
			}
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("%s: bad line %q: %v", f, b, err)
			}
			n := -1
			if f := strings.Fields(e.Payload.Line); len(f) > 1 {
				n, _ = strconv.Atoi(f[1])
			}
			if e.Module != "logcollector" || n < 0 || n >= total || e.Payload.Line != logLine(n) {
				t.Fatalf("%s: unexpected line %q", f, e.Payload.Line)
			}
			counts[n]++
		}
		fh.Close()
	}
	return counts
}

// checkLines fails unless lines 0 to upTo-1 are each in the sink exactly
// once; it returns how many lines the sink holds.
func checkLines(t *testing.T, counts []int32, upTo int) int {
	t.Helper()
	var dup, missing []int
	held := 0
	for n, c := range counts {
		if c > 0 {
			held++
		}
		if c > 1 {
			dup = append(dup, n)
		}
		if n < upTo && c == 0 {
			missing = append(missing, n)
		}
	}
	if len(dup) > 0 || len(missing) > 0 {
		t.Fatalf("%d lines stored more than once (%v…), %d missing (%v…)", len(dup), head(dup), len(missing), head(missing))
	}
	return held
}

// awaitAllLines waits until the sink holds lines 0 to n-1, and checks
// them. It reads the sink once a second: it may hold hundreds of MB.
func awaitAllLines(t *testing.T, dataDir string, n, total int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		counts := lineCounts(t, dataDir, total)
		if !slices.Contains(counts[:n], 0) {
			checkLines(t, counts, n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %d lines in the sink: %d there", d, n, n-countZero(counts[:n]))
		}
		time.Sleep(time.Second)
	}
}

func countZero(s []int32) int {
	z := 0
	for _, c := range s {
		if c == 0 {
			z++
		}
	}
	return z
}

// logWriter appends numbered lines to a file, renaming the file away
// (rename-and-create rotation) when asked.
type logWriter struct {
	t    *testing.T
	path string
	f    *os.File
	w    *bufio.Writer
	next int
	rot  int
}

func newLogWriter(t *testing.T, path string) *logWriter {
	lw := &logWriter{t: t, path: path}
	lw.open()
	t.Cleanup(func() { lw.f.Close() })
	return lw
}

func (lw *logWriter) open() {
	f, err := os.OpenFile(lw.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		lw.t.Fatal(err)
	}
	lw.f, lw.w = f, bufio.NewWriterSize(f, 1<<20)
}

// write appends n lines in one write.
func (lw *logWriter) write(n int) {
	for range n {
		lw.w.WriteString(logLine(lw.next))
		lw.w.WriteByte('\n')
		lw.next++
	}
	if err := lw.w.Flush(); err != nil {
		lw.t.Fatal(err)
	}
}

// rotate renames the file to PATH.N and creates a new one, as logrotate
// does without copytruncate; the writer then writes to the new file.
func (lw *logWriter) rotate() {
	lw.rot++
	if err := os.Rename(lw.path, fmt.Sprintf("%s.%d", lw.path, lw.rot)); err != nil {
		lw.t.Fatal(err)
	}
	// Lines written between the rename and the reopen land in the old file.
	lw.write(10)
	lw.f.Close()
	lw.open()
}

// copyTruncate copies the file to PATH.N and truncates it in place, as
// logrotate's copytruncate does; the writer keeps its (O_APPEND) file.
func (lw *logWriter) copyTruncate() {
	lw.rot++
	b, err := os.ReadFile(lw.path)
	if err != nil {
		lw.t.Fatal(err)
	}
	if err := os.WriteFile(fmt.Sprintf("%s.%d", lw.path, lw.rot), b, 0o644); err != nil {
		lw.t.Fatal(err)
	}
	if err := os.Truncate(lw.path, 0); err != nil {
		lw.t.Fatal(err)
	}
}

// fastServer restarts s with a configuration for volume: no rate limit
// per agent, one uncompressed sink file.
func fastServer(t *testing.T, s *server) *server {
	t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.done
	cfg := "poll_wait: 5s\nevents: {max_file_bytes: 8589934592, compress: false}\n" +
		"ingest: {agent_events_per_sec: 10000000, agent_bytes_per_sec: 10000000000}\n"
	if err := os.WriteFile(filepath.Join(filepath.Dir(s.dataDir), "server.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return restartServer(t, s)
}

// TestMillionLogLinesThroughServerKills writes 1,000,000 lines to a log
// file, rotating it twice, while the server is killed with SIGKILL and
// started again three times: the sink holds every line exactly once.
func TestMillionLogLinesThroughServerKills(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a million log lines")
	}
	const total = 1_000_000
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	s = fastServer(t, s)
	log := filepath.Join(t.TempDir(), "app.log")
	writeAgentConfig(t, a.dir, fmt.Sprintf("logcollector:\n  files: [{path: %q, start_at: beginning}]\n", log))
	lw := newLogWriter(t, log)
	p := a.start(t, "")

	// The writer: 1,000,000 lines in about 30 s, rotated at a third and
	// two thirds.
	started := time.Now()
	written := make(chan struct{})
	go func() {
		defer close(written)
		for lw.next < total {
			lw.write(min(4000, total-lw.next))
			if lw.rot < 2 && lw.next >= (lw.rot+1)*333_000 {
				lw.rotate()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	// The server dies three times while lines are written and sent.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for range 3 {
		time.Sleep(time.Duration(3000+rng.IntN(4000)) * time.Millisecond)
		_ = s.cmd.Process.Kill()
		<-s.done
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		s = restartServer(t, s)
	}
	<-written
	t.Logf("%d lines written in %v", lw.next, time.Since(started).Round(time.Millisecond))
	awaitAllLines(t, s.dataDir, lw.next, lw.next, 5*time.Minute)
	t.Logf("every line in the sink %v after the first was written, through 3 server SIGKILLs and %d rotations",
		time.Since(started).Round(time.Millisecond), lw.rot)
	stopAgent(p)
	checkLines(t, lineCounts(t, s.dataDir, lw.next), lw.next)
	if st := statusFile(a.dir); st["dropped_events"] != 0.0 {
		t.Fatalf("agent status: %v", st)
	}
}

// TestLogLinesSurviveAgentSIGKILL kills the agent with SIGKILL again and
// again while it follows a log file that is written and rotated (renamed,
// also while the agent is down; then copied and truncated): the sink holds
// every line exactly once.
func TestLogLinesSurviveAgentSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping log lines under repeated SIGKILL")
	}
	const total = 250_000 // at most
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	s = fastServer(t, s)
	log := filepath.Join(t.TempDir(), "app.log")
	// Small batches, so that kills land between a batch's sending and its
	// acknowledgement too.
	writeAgentConfig(t, a.dir, fmt.Sprintf("batch_max_events: 500\nbatch_interval: 20ms\noutbox_fsync_window: 20ms\n"+
		"logcollector:\n  files: [{path: %q, start_at: beginning}]\n  poll_interval: 50ms\n", log))
	lw := newLogWriter(t, log)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))

	written := make(chan struct{})
	go func() {
		defer close(written)
		for lw.next < 180_000 {
			lw.write(1000)
			if lw.next >= (lw.rot+1)*40_000 {
				lw.rotate()
			}
			time.Sleep(40 * time.Millisecond)
		}
	}()
	kills := 0
	var p *proc
	var runs []*proc
	for {
		p = a.start(t, "")
		runs = append(runs, p)
		select {
		case <-written:
		case <-time.After(time.Duration(400+rng.IntN(1200)) * time.Millisecond):
			_ = p.cmd.Process.Kill() // SIGKILL
			<-p.done
			kills++
			// Down for a while: a rotation may happen meanwhile.
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			continue
		}
		break
	}
	awaitAllLines(t, s.dataDir, lw.next, total, 3*time.Minute)

	// copytruncate, once the agent has read everything (what it had not
	// read yet would be in the copy only), then more lines and a kill.
	lw.copyTruncate()
	lw.write(10_000)
	time.Sleep(300 * time.Millisecond)
	_ = p.cmd.Process.Kill()
	<-p.done
	kills++
	lw.write(10_000)
	p = a.start(t, "")
	awaitAllLines(t, s.dataDir, lw.next, total, 3*time.Minute)
	stopAgent(p)
	checkLines(t, lineCounts(t, s.dataDir, total), lw.next)
	finished := 0
	for _, r := range runs {
		finished += strings.Count(r.Output(), "finishing a rotated file followed before the restart")
	}
	t.Logf("%d SIGKILLs, %d rotations (%d files finished after a restart); %d lines each stored once", kills, lw.rot, finished, lw.next)
}
