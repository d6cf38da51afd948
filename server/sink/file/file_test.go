package file_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sinktest"
)

// readDir decodes every event file of dir in the order they were written,
// reading the compressed copy of a file when there is one and skipping
// compressions under way. A file that the background work compresses or
// deletes while readDir reads makes it start again.
func readDir(t *testing.T, dir string) []map[string]any {
	t.Helper()
	for attempt := 0; ; attempt++ {
		recs, err := tryReadDir(t, dir)
		if err == nil {
			return recs
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 100 {
			t.Fatal(err)
		}
	}
}

func tryReadDir(t *testing.T, dir string) ([]map[string]any, error) {
	t.Helper()
	var all []map[string]any
	for _, name := range segmentFiles(t, dir) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		recs, err := decodeFile(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		all = append(all, recs...)
	}
	return all, nil
}

// decodeFile decodes a plain or zstd-compressed event file.
func decodeFile(f *os.File) ([]map[string]any, error) {
	if !strings.HasSuffix(f.Name(), ".zst") {
		return ndjson.Decode(f)
	}
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	return ndjson.Decode(dec)
}

var nameRE = regexp.MustCompile(`^events-\d{8}T\d{6}Z-(\d{6,})\.ndjson(\.zst(\.tmp)?)?$`)

// eventFiles returns the names of the files in dir, sorted; anything not
// named like an event file fails the test.
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

// segmentFiles returns the file to read of each segment of dir, by seq:
// its compressed copy when there is one, else its plain file.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	bySeq := map[uint64]string{}
	for _, name := range eventFiles(t, dir) {
		if strings.HasSuffix(name, ".tmp") {
			continue
		}
		seq, _ := strconv.ParseUint(nameRE.FindStringSubmatch(name)[1], 10, 64)
		if prev, ok := bySeq[seq]; !ok || strings.HasSuffix(name, ".zst") {
			if ok && strings.TrimSuffix(name, ".zst") != prev {
				t.Fatalf("two files with seq %d: %s, %s", seq, prev, name)
			}
			bySeq[seq] = name
		}
	}
	seqs := make([]uint64, 0, len(bySeq))
	for seq := range bySeq {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	names := make([]string, len(seqs))
	for i, seq := range seqs {
		names[i] = bySeq[seq]
	}
	return names
}

func TestMain(m *testing.M) {
	// Retention logs each deletion at level info: keep the tests' output
	// for warnings.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts func() file.Options
	}{
		{"Default", func() file.Options { return file.Options{} }},
		{"RotatingBySize", func() file.Options { return file.Options{MaxFileBytes: 2048} }},
		{"RotatingBySizeUncompressed", func() file.Options { return file.Options{MaxFileBytes: 2048, Uncompressed: true} }},
		{"RotatingByAge", func() file.Options {
			// Every call of the clock moves it by a second: files are
			// closed every few writes.
			var ticks atomic.Int64
			start := time.Now()
			clock := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Second) }
			return file.WithClock(file.Options{MaxFileAge: 3 * time.Second}, clock, 0)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sinktest.Run(t, func(t *testing.T) (tether.Sink, sinktest.Reader) {
				dir := t.TempDir()
				s, err := file.Open(dir, tt.opts())
				if err != nil {
					t.Fatal(err)
				}
				return s, func(t *testing.T) []map[string]any { return readDir(t, dir) }
			})
		})
	}
}

func TestConformanceStorage(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts file.Options
	}{
		// 200 batches make about 60 files, of about 300 bytes once
		// compressed.
		{"MaxTotalBytes", file.Options{MaxFileBytes: 8 << 10, MaxTotalBytes: 12 << 10}},
		{"MaxTotalBytesUncompressed", file.Options{MaxFileBytes: 8 << 10, MaxTotalBytes: 12 << 10, Uncompressed: true}},
		// The open file is not closed by age in this test: it holds
		// the newest batches, which retention keeps.
		{"MaxAge", file.Options{MaxFileBytes: 16 << 10, MaxAge: time.Hour, MaxFileAge: 24 * time.Hour}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sinktest.RunStorage(t, func(t *testing.T) sinktest.Storage {
				dir := t.TempDir()
				var late atomic.Bool // the clock is two hours ahead
				clock := func() time.Time {
					if late.Load() {
						return time.Now().Add(2 * time.Hour)
					}
					return time.Now()
				}
				return sinktest.Storage{
					Open: func(t *testing.T) tether.Sink {
						s, err := file.Open(dir, file.WithClock(tt.opts, clock, 0))
						if err != nil {
							t.Fatal(err)
						}
						return s
					},
					Read: func(t *testing.T) []map[string]any { return readDir(t, dir) },
					Expire: func(t *testing.T, s tether.Sink) {
						if tt.opts.MaxAge > 0 {
							late.Store(true)
						}
						if err := file.Tidy(s.(*file.Sink)); err != nil {
							t.Fatalf("tidy: %v", err)
						}
					},
				}
			})
		})
	}
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
	s, err := file.Open(dir, file.Options{MaxFileBytes: limit, Uncompressed: true})
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
	opts := file.Options{Uncompressed: true}
	s, err := file.Open(dir, opts)
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

	s, err = file.Open(dir, opts)
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
	// The partial line, of a batch never acknowledged, was cut off.
	if recs := readGood(t, filepath.Join(dir, names[0])); len(recs) != 2 {
		t.Errorf("old file: %d records, want 2", len(recs))
	}
	if recs := readGood(t, filepath.Join(dir, names[1])); len(recs) != 1 {
		t.Fatalf("new file: %d records, want 1", len(recs))
	}
}

func TestCloseRemovesEmptyFile(t *testing.T) {
	dir := t.TempDir()
	for range 3 {
		s, err := file.Open(dir, file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if names := eventFiles(t, dir); len(names) != 0 {
		t.Errorf("files = %v, want none: no event was written", names)
	}
}

func TestNamesFollowClockAndSeq(t *testing.T) {
	dir := t.TempDir()
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("X", -7200))
	opts := file.WithHooks(file.Options{MaxFileBytes: 1}, func() time.Time { return clock }, func(name string) (file.Handle, error) {
		return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	})
	// A file from another run with a high seq: the next ones follow it.
	os.WriteFile(filepath.Join(dir, "events-20250101T000000Z-000041.ndjson"), []byte("{}\n"), 0o600)
	opts.Uncompressed = true
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
			opts := file.WithHooks(file.Options{Uncompressed: true}, time.Now, func(name string) (file.Handle, error) {
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
				// The background work cuts the damaged file back to
				// its whole batches once it can.
				failTruncate.Store(false)
				if err := file.Tidy(s); err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, r := range readGood(t, filepath.Join(dir, names[0])) {
					ids = append(ids, r["event_id"].(string))
				}
				if got := strings.Join(ids, " "); got != "a-1-0 a-1-1" {
					t.Errorf("damaged file holds %s, want only the batch before the failure", got)
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

// slowSyncFile holds its first Sync until release is closed, and counts
// Syncs.
type slowSyncFile struct {
	*os.File
	syncs   *atomic.Int32
	release chan struct{}
}

func (f slowSyncFile) Sync() error {
	if f.syncs.Add(1) == 1 {
		<-f.release
	}
	return f.File.Sync()
}

// TestConcurrentWritesShareAnFsync has many batches written while one
// write waits for its fsync: they are appended together with one more
// fsync, each whole, and each Write returns only once its batch is synced.
// With small files, the group is split at file boundaries, never a batch.
func TestConcurrentWritesShareAnFsync(t *testing.T) {
	t.Run("one file", func(t *testing.T) { testConcurrentWrites(t, 0) })
	t.Run("small files", func(t *testing.T) { testConcurrentWrites(t, 4000) })
}

func testConcurrentWrites(t *testing.T, maxFileBytes int64) {
	dir := t.TempDir()
	var syncs atomic.Int32
	release := make(chan struct{})
	opts := file.WithHooks(file.Options{Uncompressed: true, MaxFileBytes: maxFileBytes}, time.Now, func(name string) (file.Handle, error) {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		return slowSyncFile{f, &syncs, release}, nil
	})
	s, err := file.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- s.Write(ctx, sinktest.NewBatch("a", 1, 3)) }()
	for syncs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const n = 50
	var wg sync.WaitGroup
	var done atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Write(ctx, sinktest.NewBatch(fmt.Sprintf("b%d", i), 1, 4)); err != nil {
				t.Error(err)
			}
			done.Add(1)
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them queue behind the held fsync
	if d := done.Load(); d != 0 {
		t.Fatalf("%d writes returned before their fsync", d)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	names := eventFiles(t, dir)
	if got := syncs.Load(); maxFileBytes == 0 && got != 2 {
		t.Errorf("%d fsyncs for 1 + %d concurrent writes, want 2", got, n)
	} else if maxFileBytes > 0 && (len(names) < 3 || int(got) > len(names)+1) {
		t.Errorf("%d fsyncs over %d files; want one per file and the held one", got, len(names))
	}
	recs := readDir(t, dir)
	if len(recs) != 3+4*n {
		t.Errorf("%d events in the files, want %d", len(recs), 3+4*n)
	}
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if maxFileBytes > 0 && fi.Size() > maxFileBytes {
			t.Errorf("%s: %d bytes, over the %d-byte limit", name, fi.Size(), maxFileBytes)
		}
		for _, r := range readGood(t, filepath.Join(dir, name)) {
			if r["event_id"] == nil {
				t.Errorf("%s: a line without an event id: %v", name, r)
			}
		}
	}
}
