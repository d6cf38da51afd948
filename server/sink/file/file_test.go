package file_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sinktest"
)

// readDir decodes every event file of dir, in name order.
func readDir(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var all []map[string]any
	for _, name := range eventFiles(t, dir) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ndjson.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		all = append(all, recs...)
	}
	return all
}

var nameRE = regexp.MustCompile(`^events-\d{8}T\d{6}Z-\d{6,}\.ndjson$`)

func eventFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !nameRE.MatchString(e.Name()) {
			t.Fatalf("unexpected file %s", e.Name())
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (tether.Sink, sinktest.Reader) {
		dir := t.TempDir()
		s, err := file.Open(dir, file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s, func(t *testing.T) []map[string]any { return readDir(t, dir) }
	})
}

func TestConformanceRotating(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (tether.Sink, sinktest.Reader) {
		dir := t.TempDir()
		s, err := file.Open(dir, file.Options{MaxFileBytes: 2048})
		if err != nil {
			t.Fatal(err)
		}
		return s, func(t *testing.T) []map[string]any { return readDir(t, dir) }
	})
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "events")
	s, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, want 0700", fi.Mode().Perm())
	}
	names := eventFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("files = %v, want one", names)
	}
	fi, _ = os.Stat(filepath.Join(dir, names[0]))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	const limit = 4096
	s, err := file.Open(dir, file.Options{MaxFileBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	for seq := range uint64(40) {
		b := sinktest.NewBatch("a", seq+1, 3)
		if err := s.Write(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	// One batch larger than the limit goes into a file of its own.
	big := sinktest.NewBatch("a", 100, 1)
	big.Events[0].Payload = []byte(`"` + strings.Repeat("x", 2*limit) + `"`)
	if err := s.Write(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	names := eventFiles(t, dir)
	if len(names) < 5 {
		t.Fatalf("%d files, want rotation: %v", len(names), names)
	}
	for i, name := range names {
		fi, _ := os.Stat(filepath.Join(dir, name))
		data, _ := os.ReadFile(filepath.Join(dir, name))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("%s does not end with a newline", name)
		}
		if i < len(names)-1 && fi.Size() > limit {
			t.Errorf("%s is %d bytes, over the %d limit", name, fi.Size(), limit)
		}
		if fi.Size() == 0 {
			t.Errorf("%s is empty", name)
		}
	}
	recs := readDir(t, dir)
	if len(recs) != 40*3+1 || recs[len(recs)-1]["event_id"] != "a-100-0" {
		t.Errorf("read %d records", len(recs))
	}
}

func TestReopenStartsNewFile(t *testing.T) {
	dir := t.TempDir()
	s, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 1, 2)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	first := eventFiles(t, dir)
	// Simulate a crash in the middle of a write.
	f, _ := os.OpenFile(filepath.Join(dir, first[0]), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"agent_id":"a","eve`)
	f.Close()

	s, err = file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 2, 1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	names := eventFiles(t, dir)
	if len(names) != 2 || names[0] != first[0] {
		t.Fatalf("files = %v, want %s and a new one", names, first[0])
	}
	recs, err := ndjson.Decode(mustOpen(t, filepath.Join(dir, names[1])))
	if err != nil || len(recs) != 1 {
		t.Fatalf("new file: %d records, %v", len(recs), err)
	}
}

func TestNamesFollowClockAndSeq(t *testing.T) {
	dir := t.TempDir()
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("X", -7200))
	opts := file.WithHooks(file.Options{MaxFileBytes: 1}, func() time.Time { return clock }, func(name string) (file.Handle, error) {
		return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	})
	// A file from another run with a high seq: the next ones follow it.
	os.WriteFile(filepath.Join(dir, "events-20250101T000000Z-000041.ndjson"), nil, 0o600)
	s, err := file.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Write(context.Background(), sinktest.NewBatch("a", 1, 1))
	s.Write(context.Background(), sinktest.NewBatch("a", 2, 1))
	s.Close()
	got := strings.Join(eventFiles(t, dir), " ")
	want := "events-20250101T000000Z-000041.ndjson events-20260304T070607Z-000042.ndjson events-20260304T070607Z-000043.ndjson"
	if got != want {
		t.Errorf("files = %s\nwant    %s", got, want)
	}
}

// failingFile writes half of the data and fails when failWrite is set, and
// fails Truncate when failTruncate is set.
type failingFile struct {
	*os.File
	failWrite, failTruncate *atomic.Bool
}

func (f failingFile) WriteAt(p []byte, off int64) (int, error) {
	if f.failWrite.Load() {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, syscall.ENOSPC
	}
	return f.File.WriteAt(p, off)
}

func (f failingFile) Truncate(size int64) error {
	if f.failTruncate.Load() {
		return syscall.EIO
	}
	return f.File.Truncate(size)
}

func TestFailedWriteIsRolledBack(t *testing.T) {
	for _, truncateFails := range []bool{false, true} {
		t.Run(map[bool]string{false: "truncate works", true: "truncate fails"}[truncateFails], func(t *testing.T) {
			dir := t.TempDir()
			var failWrite, failTruncate atomic.Bool
			failTruncate.Store(truncateFails)
			opts := file.WithHooks(file.Options{}, time.Now, func(name string) (file.Handle, error) {
				f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return nil, err
				}
				return failingFile{f, &failWrite, &failTruncate}, nil
			})
			s, err := file.Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			if err := s.Write(ctx, sinktest.NewBatch("a", 1, 2)); err != nil {
				t.Fatal(err)
			}
			failWrite.Store(true)
			err = s.Write(ctx, sinktest.NewBatch("a", 2, 5))
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Write on a full disk: %v, want ENOSPC", err)
			}
			failWrite.Store(false)
			if err := s.Write(ctx, sinktest.NewBatch("a", 3, 1)); err != nil {
				t.Fatal(err)
			}
			names := eventFiles(t, dir)
			if truncateFails {
				// The damaged file is left behind and the write goes on
				// in a new file.
				if len(names) != 2 {
					t.Fatalf("files = %v, want 2", names)
				}
				recs := readGood(t, filepath.Join(dir, names[1]))
				if len(recs) != 1 || recs[0]["event_id"] != "a-3-0" {
					t.Errorf("new file holds %v", recs)
				}
				return
			}
			if len(names) != 1 {
				t.Fatalf("files = %v, want 1", names)
			}
			var ids []string
			for _, r := range readDir(t, dir) {
				ids = append(ids, r["event_id"].(string))
			}
			if got := strings.Join(ids, " "); got != "a-1-0 a-1-1 a-3-0" {
				t.Errorf("events = %s, want the batches before and after the failure", got)
			}
		})
	}
}

func readGood(t *testing.T, path string) []map[string]any {
	t.Helper()
	recs, err := ndjson.Decode(mustOpen(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return recs
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestWriteAfterCloseIsErrClosed(t *testing.T) {
	s, err := file.Open(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 1, 1)); !errors.Is(err, file.ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func BenchmarkWrite(b *testing.B) {
	s, err := file.Open(b.TempDir(), file.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := sinktest.NewBatch("a", 1, 100)
	b.ResetTimer()
	for b.Loop() {
		if err := s.Write(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
}
