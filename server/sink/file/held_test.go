package file_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sinktest"
)

func held(t *testing.T, s *file.Sink, agent string, seq uint64, since time.Time) []string {
	t.Helper()
	h, err := s.Held(context.Background(), agent, seq, since)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range h {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func ids(b *tether.Batch, n int) []string {
	var out []string
	for _, e := range b.Events[:n] {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

func checkHeld(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: held %v, want %v", what, got, want)
	}
}

// TestHeld finds the events of a batch in plain and compressed files,
// leaves out a line cut short by a crash, and reads only recent files.
func TestHeld(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	s, err := file.Open(dir, file.Options{MaxFileBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var batches []*tether.Batch
	for seq := range uint64(20) { // several files
		b := sinktest.NewBatch("agent-1", seq+1, 5)
		batches = append(batches, b)
		if err := s.Write(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), sinktest.NewBatch("agent-2", seq+1, 3)); err != nil {
			t.Fatal(err)
		}
	}
	checkHeld(t, "batch 3", held(t, s, "agent-1", 3, start), ids(batches[2], 5))
	checkHeld(t, "batch 20", held(t, s, "agent-1", 20, start), ids(batches[19], 5))
	checkHeld(t, "unknown batch", held(t, s, "agent-1", 21, start), nil)
	checkHeld(t, "unknown agent", held(t, s, "agent-3", 3, start), nil)

	// Closed files are compressed in the background: still found.
	if err := file.Tidy(s); err != nil {
		t.Fatal(err)
	}
	if zst, _ := filepath.Glob(filepath.Join(dir, "*.zst")); len(zst) == 0 {
		t.Fatal("no file compressed")
	}
	checkHeld(t, "batch 3, compressed", held(t, s, "agent-1", 3, start), ids(batches[2], 5))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash in the middle of a write leaves whole lines of a batch and
	// a partial one: the whole lines are held, the partial one is not.
	torn := sinktest.NewBatch("agent-1", 21, 4)
	data, err := ndjson.AppendBatch(nil, torn)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	part := strings.Join(lines[:2], "") + lines[2][:len(lines[2])/2]
	path := filepath.Join(dir, file.Name(time.Now(), 999))
	if err := os.WriteFile(path, []byte(part), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkHeld(t, "torn batch", held(t, s, "agent-1", 21, start), ids(torn, 2))

	// Files last written before since (less a minute) are not read.
	old := time.Now().Add(-2 * time.Hour)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if err := os.Chtimes(filepath.Join(dir, e.Name()), old, old); err != nil {
			t.Fatal(err)
		}
	}
	checkHeld(t, "files older than since", held(t, s, "agent-1", 3, time.Now()), nil)
	checkHeld(t, "files at since", held(t, s, "agent-1", 3, old), ids(batches[2], 5))
}
