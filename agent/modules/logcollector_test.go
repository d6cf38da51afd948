package modules_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/modules"
)

func logConfig(paths ...string) modules.Config {
	c := noModules()
	c.LogCollector.PollInterval = 20 * time.Millisecond
	for _, p := range paths {
		c.LogCollector.Files = append(c.LogCollector.Files, modules.LogFile{Path: p, StartAt: "end"})
	}
	return c
}

// awaitFiles waits until the log collector keeps the state of n files:
// from then on, what is written to them is sent.
func awaitFiles(t *testing.T, s *sink, n int) {
	t.Helper()
	await(t, 5*time.Second, fmt.Sprintf("%d file states", n), func() bool {
		kv, _ := s.MetaPrefix("logcollector/file/")
		return len(kv) == n
	})
}

// awaitLines waits until the sink holds n lines of the log collector and
// returns them.
func awaitLines(t *testing.T, s *sink, n int) []line {
	t.Helper()
	var got []line
	await(t, 20*time.Second, fmt.Sprintf("%d lines", n), func() bool {
		got = lines(t, s.drain(t))
		return len(got) >= n
	})
	time.Sleep(100 * time.Millisecond) // and no more
	got = lines(t, s.drain(t))
	if len(got) != n {
		t.Fatalf("got %d lines, want %d: %q", len(got), n, texts(got))
	}
	return got
}

func TestLogCollectorLinesOffsetsAndLongLines(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "before the agent\n")
	cfg := logConfig(filepath.Join(dir, "*.log"))
	cfg.LogCollector.MaxLineBytes = 1024
	startManager(t, dir, s, cfg, nil)
	// The file existed when the pattern was configured: start_at end.
	awaitFiles(t, s, 1)
	long := strings.Repeat("é", 1000) // 2000 bytes: two parts of at most 1024
	appendFile(t, log, "one\r\ntwo\n"+long+"\nthree, not fin")
	got := awaitLines(t, s, 4)
	off := int64(len("before the agent\n"))
	want := []line{
		{Path: log, Line: "one", Offset: off},
		{Path: log, Line: "two", Offset: off + 5},
		{Path: log, Line: strings.Repeat("é", 512), Offset: off + 9, Part: 1, More: true},
		{Path: log, Line: strings.Repeat("é", 488), Offset: off + 9 + 1024, Part: 2},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lines:\n got %+v\nwant %+v", got, want)
	}
	appendFile(t, log, "ished\n")
	got = awaitLines(t, s, 5)
	if l := got[4]; l.Line != "three, not finished" || l.Offset != off+9+2001 {
		t.Fatalf("last line %+v", l)
	}
}

func TestLogCollectorStartAtAndNewFiles(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	appendFile(t, filepath.Join(dir, "a.log"), "a1\n")
	appendFile(t, filepath.Join(dir, "b.txt"), "b1\n")
	cfg := logConfig(filepath.Join(dir, "*.log"))
	cfg.LogCollector.Files = append(cfg.LogCollector.Files, modules.LogFile{Path: filepath.Join(dir, "*.txt"), StartAt: "beginning"})
	startManager(t, dir, s, cfg, nil)
	if got := texts(awaitLines(t, s, 1)); got[0] != "b1" {
		t.Fatalf("got %q, want b1 (start_at beginning) only", got)
	}
	// A file that appears later is read from its beginning.
	appendFile(t, filepath.Join(dir, "c.log"), "c1\nc2\n")
	if got := texts(awaitLines(t, s, 3)); !slices.Equal(got[1:], []string{"c1", "c2"}) {
		t.Fatalf("got %q", got)
	}
}

// TestLogCollectorRenameRotation: the file is renamed (out of the pattern)
// and a new one created at its path; lines written to the old file after
// the rename, before it was read, are still sent; each line once.
func TestLogCollectorRenameRotation(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "")
	startManager(t, dir, s, logConfig(log), nil)
	awaitFiles(t, s, 1)
	var want []string
	write := func(path string, from, to int) {
		var b strings.Builder
		for i := from; i < to; i++ {
			fmt.Fprintf(&b, "line %d\n", i)
			want = append(want, fmt.Sprintf("line %d", i))
		}
		appendFile(t, path, b.String())
	}
	write(log, 0, 100)
	for r := 1; r <= 3; r++ {
		old := fmt.Sprintf("%s.%d", log, r)
		f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(log, old); err != nil {
			t.Fatal(err)
		}
		// The writer still holds the old file: its last lines go there.
		fmt.Fprintf(f, "late %d\n", r)
		want = append(want, fmt.Sprintf("late %d", r))
		f.Close()
		write(log, r*100, r*100+100)
		// Rotations further apart than the poll interval (a file created
		// and rotated away between two polls is not seen).
		awaitLines(t, s, len(want))
	}
	got := texts(awaitLines(t, s, len(want)))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("lines differ:\n got %q\nwant %q", got, want)
	}
	// The rotated files are closed and forgotten once quiet.
	await(t, 15*time.Second, "rotated files forgotten", func() bool {
		kv, _ := s.MetaPrefix("logcollector/file/")
		return len(kv) == 1
	})
}

// TestLogCollectorCopyTruncate: the file is copied and truncated in
// place; lines written after the truncation are read from offset 0.
func TestLogCollectorCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "")
	startManager(t, dir, s, logConfig(log), nil)
	awaitFiles(t, s, 1)
	appendFile(t, log, "first 1\nfirst 2\nfirst 3\n")
	awaitLines(t, s, 3)
	for r := range 3 {
		b, _ := os.ReadFile(log)
		if err := os.WriteFile(log+".1", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(log, 0); err != nil {
			t.Fatal(err)
		}
		// Written at once after the truncation, even longer than before.
		appendFile(t, log, fmt.Sprintf("after %d: a line longer than the first ones\nsecond\n", r))
		got := awaitLines(t, s, 5+2*r)
		if l := got[len(got)-2]; l.Offset != 0 || !strings.HasPrefix(l.Line, fmt.Sprintf("after %d:", r)) {
			t.Fatalf("after truncation %d: %+v", r, got)
		}
	}
}

// TestLogCollectorResumesWhereItStopped: a new run (the agent restarted)
// sends only what was written since, including lines written while it
// was stopped and a file rotated meanwhile.
func TestLogCollectorResumesWhereItStopped(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "")
	cfg := logConfig(log)
	_, stop := startManager(t, dir, s, cfg, nil)
	awaitFiles(t, s, 1)
	appendFile(t, log, "1\n2\n")
	awaitLines(t, s, 2)
	stop()
	appendFile(t, log, "3\n4\npart")
	// Rotated while stopped: renamed in the same directory, a new file.
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, log, "5\n")
	startManager(t, dir, s, cfg, nil)
	got := texts(awaitLines(t, s, 6))
	slices.Sort(got)
	if want := []string{"1", "2", "3", "4", "5", "part"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestLogCollectorReconfigured: files added and removed at run time.
func TestLogCollectorReconfigured(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	appendFile(t, a, "")
	m, _ := startManager(t, dir, s, logConfig(a), nil)
	awaitFiles(t, s, 1)
	appendFile(t, a, "a1\n")
	awaitLines(t, s, 1)
	m.Apply(logConfig(a, b))
	await(t, 5*time.Second, "b's pattern seen", func() bool {
		kv, _ := s.MetaPrefix("logcollector/glob/")
		return len(kv) == 2
	})
	appendFile(t, b, "b1\n") // b appears after its pattern was configured
	appendFile(t, a, "a2\n")
	awaitLines(t, s, 3)
	m.Apply(logConfig(b))
	appendFile(t, a, "a3\n")
	appendFile(t, b, "b2\n")
	got := texts(awaitLines(t, s, 4))
	if got[3] != "b2" {
		t.Fatalf("got %q", got)
	}
	m.Apply(noModules())
	if _, ok := m.Status()["logcollector"]; ok {
		t.Fatal("log collector still running with no files")
	}
}
