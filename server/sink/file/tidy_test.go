package file_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sinktest"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// writeBatches writes batches seq from..to of agent "a", 3 events each.
func writeBatches(t *testing.T, s tether.Sink, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if err := s.Write(context.Background(), sinktest.NewBatch("a", seq, 3)); err != nil {
			t.Fatal(err)
		}
	}
}

func tidy(t *testing.T, s *file.Sink) {
	t.Helper()
	if err := file.Tidy(s); err != nil {
		t.Fatalf("tidy: %v", err)
	}
}

// sequences returns the batch sequences of recs, each once, in order.
func sequences(recs []map[string]any) []uint64 {
	var out []uint64
	for _, r := range recs {
		seq, _ := strconv.ParseUint(fmt.Sprint(r["sequence"]), 10, 64)
		if len(out) == 0 || out[len(out)-1] != seq {
			out = append(out, seq)
		}
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for seq := from; seq <= to; seq++ {
		out = append(out, seq)
	}
	return out
}

func TestCompressesClosedFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := file.Open(dir, file.Options{MaxFileBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writeBatches(t, s, 1, 40)
	tidy(t, s)
	names := eventFiles(t, dir)
	if len(names) < 5 {
		t.Fatalf("files = %v, want rotation", names)
	}
	for i, name := range names {
		last := i == len(names)-1
		if last != strings.HasSuffix(name, ".ndjson") {
			t.Errorf("%s: want every closed file compressed, and the open one plain", name)
		}
		fi, _ := os.Stat(filepath.Join(dir, name))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	if got := sequences(readDir(t, dir)); !equal(got, span(1, 40)) {
		t.Errorf("sequences read back: %v", got)
	}

	// The compressed files are standard zstd: zstdcat reads them.
	zstdcat, err := exec.LookPath("zstdcat")
	if err != nil {
		t.Skip("no zstdcat here")
	}
	args := []string{}
	for _, name := range names {
		args = append(args, filepath.Join(dir, name))
	}
	out, err := exec.Command(zstdcat, append([]string{"-f"}, args...)...).Output()
	if err != nil {
		t.Fatalf("zstdcat: %v", err)
	}
	recs, err := ndjson.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("decode zstdcat output: %v", err)
	}
	if got := sequences(recs); !equal(got, span(1, 40)) {
		t.Errorf("sequences read by zstdcat: %v", got)
	}
}

func equal(a, b []uint64) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func TestCompressedCopyKeepsTime(t *testing.T) {
	dir := t.TempDir()
	s, err := file.Open(dir, file.Options{MaxFileBytes: 1, Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	writeBatches(t, s, 1, 2)
	s.Close()
	names := eventFiles(t, dir)
	old := time.Now().Add(-72 * time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, names[0]), old, old); err != nil {
		t.Fatal(err)
	}
	s, err = file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tidy(t, s)
	fi, err := os.Stat(filepath.Join(dir, names[0]+".zst"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(old) {
		t.Errorf("compressed copy's time %v, want the plain file's %v", fi.ModTime(), old)
	}
}

func TestRotatesByAge(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s, err := file.Open(dir, file.WithClock(file.Options{MaxFileAge: time.Hour, Uncompressed: true}, c.now, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writeBatches(t, s, 1, 1)
	c.add(30 * time.Minute)
	writeBatches(t, s, 2, 2)
	if n := len(eventFiles(t, dir)); n != 1 {
		t.Fatalf("%d files after 30 minutes, want 1", n)
	}
	c.add(31 * time.Minute)
	writeBatches(t, s, 3, 3)
	if n := len(eventFiles(t, dir)); n != 2 {
		t.Fatalf("%d files after 61 minutes, want 2", n)
	}
	// No more events: the background check closes the file all the same.
	c.add(2 * time.Hour)
	tidy(t, s)
	names := eventFiles(t, dir)
	if len(names) != 3 {
		t.Fatalf("files = %v, want the idle file closed and a new one", names)
	}
	if fi, _ := os.Stat(filepath.Join(dir, names[2])); fi.Size() != 0 {
		t.Errorf("the new file holds %d bytes", fi.Size())
	}
	// An empty file is not closed, however old.
	c.add(5 * time.Hour)
	tidy(t, s)
	if n := len(eventFiles(t, dir)); n != 3 {
		t.Errorf("%d files: an empty file was rotated", n)
	}
	if got := sequences(readDir(t, dir)); !equal(got, span(1, 3)) {
		t.Errorf("sequences: %v", got)
	}
}

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	s, err := file.Open(dir, file.Options{MaxFileBytes: 1, MaxAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writeBatches(t, s, 1, 6) // one file each
	tidy(t, s)
	names := segmentFiles(t, dir)
	if len(names) != 6 {
		t.Fatalf("files = %v, want 6", names)
	}
	// The first three were last written two days ago.
	old := time.Now().Add(-48 * time.Hour)
	for _, name := range names[:3] {
		if err := os.Chtimes(filepath.Join(dir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	tidy(t, s)
	if got := sequences(readDir(t, dir)); !equal(got, span(4, 6)) {
		t.Errorf("sequences left: %v, want 4 to 6", got)
	}
	// The open file is never deleted, however old.
	names = segmentFiles(t, dir)
	for _, name := range names {
		os.Chtimes(filepath.Join(dir, name), old, old)
	}
	tidy(t, s)
	if got := segmentFiles(t, dir); len(got) != 1 || got[0] != names[len(names)-1] {
		t.Errorf("files = %v, want the open one %s", got, names[len(names)-1])
	}
}

func TestRetentionByTotalBytes(t *testing.T) {
	for _, uncompressed := range []bool{false, true} {
		t.Run(fmt.Sprint("uncompressed=", uncompressed), func(t *testing.T) {
			dir := t.TempDir()
			const limit = 20 << 10
			s, err := file.Open(dir, file.Options{MaxFileBytes: 4096, MaxTotalBytes: limit, Uncompressed: uncompressed})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			writeBatches(t, s, 1, 400)
			tidy(t, s)
			var total int64
			for _, name := range eventFiles(t, dir) {
				fi, _ := os.Stat(filepath.Join(dir, name))
				total += fi.Size()
			}
			if total > limit {
				t.Errorf("%d bytes left, over the %d limit", total, limit)
			}
			got := sequences(readDir(t, dir))
			if len(got) == 0 || len(got) == 400 || !equal(got, span(got[0], 400)) {
				t.Errorf("sequences left: %v, want the newest ones", got)
			}
		})
	}
}

func TestRecoversInterruptedCompression(t *testing.T) {
	dir := t.TempDir()
	s, err := file.Open(dir, file.Options{MaxFileBytes: 1, Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	writeBatches(t, s, 1, 4) // one file each
	s.Close()
	names := eventFiles(t, dir)
	if len(names) != 4 {
		t.Fatalf("files = %v", names)
	}
	path := func(i int) string { return filepath.Join(dir, names[i]) }
	compressed := func(i int) []byte {
		data, err := os.ReadFile(path(i))
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := zstd.NewWriter(nil)
		return enc.EncodeAll(data, nil)
	}
	// 0: killed while compressing: half a compressed copy in its .tmp.
	z := compressed(0)
	os.WriteFile(path(0)+".zst.tmp", z[:len(z)/2], 0o600)
	// 1: killed after the rename, before the plain file was removed.
	os.WriteFile(path(1)+".zst", compressed(1), 0o600)
	// 2: killed in the middle of a write: a partial line.
	f, _ := os.OpenFile(path(2), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"agent_id":"a","seq`)
	f.Close()
	// 3: killed at the start of a compression: an empty .tmp.
	os.WriteFile(path(3)+".zst.tmp", nil, 0o600)

	s, err = file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tidy(t, s)
	got := eventFiles(t, dir)
	for i := range 4 {
		if !slicesContains(got, names[i]+".zst") || slicesContains(got, names[i]) || slicesContains(got, names[i]+".zst.tmp") {
			t.Errorf("file %d: files %v, want only %s.zst", i, got, names[i])
		}
	}
	if seqs := sequences(readDir(t, dir)); !equal(seqs, span(1, 4)) {
		t.Errorf("sequences: %v, want each batch once", seqs)
	}
}

func slicesContains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// TestCompressionSurvivesKill kills, with SIGKILL, a process that writes
// batches while its closed files are compressed in the background, three
// times, then checks that every acknowledged batch is in the directory
// once, in files that read to the end.
func TestCompressionSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	acked := map[uint64]bool{}
	next := uint64(1)
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$")
		cmd.Env = append(os.Environ(), "TETHER_KILL_HELPER_DIR="+dir, "TETHER_KILL_HELPER_FROM="+strconv.FormatUint(next, 10))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan uint64)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if seq, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
					lines <- seq
				}
			}
		}()
		// Kill once the helper acknowledged some batches, at a moment
		// that differs from round to round.
		want := uint64(150 + 100*round)
		n := uint64(0)
		for seq := range lines {
			acked[seq] = true
			next = max(next, seq+1)
			if n++; n == want {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		cmd.Wait()
		if n < want {
			t.Fatalf("round %d: the helper stopped after %d batches", round, n)
		}
		next++ // a batch written but not acknowledged may be on disk
	}

	s, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tidy(t, s)
	for _, name := range eventFiles(t, dir) {
		if strings.HasSuffix(name, ".tmp") {
			t.Errorf("%s left after recovery", name)
		}
	}
	seen := map[uint64]int{}
	for _, seq := range sequences(readDir(t, dir)) {
		seen[seq]++
	}
	for seq := range acked {
		if seen[seq] != 1 {
			t.Errorf("acknowledged batch %d is stored %d times", seq, seen[seq])
		}
	}
	for seq, n := range seen {
		if n != 1 {
			t.Errorf("batch %d stored %d times", seq, n)
		}
	}
	t.Logf("%d batches acknowledged, %d stored", len(acked), len(seen))
}

// TestKillHelper is the process TestCompressionSurvivesKill kills: it
// writes batches into small files, compressed in the background, and
// prints the sequence of each batch once Write returned.
func TestKillHelper(t *testing.T) {
	dir := os.Getenv("TETHER_KILL_HELPER_DIR")
	if dir == "" {
		t.Skip("run by TestCompressionSurvivesKill")
	}
	from, _ := strconv.ParseUint(os.Getenv("TETHER_KILL_HELPER_FROM"), 10, 64)
	s, err := file.Open(dir, file.Options{MaxFileBytes: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for seq := from; ; seq++ {
		b := sinktest.NewBatch("a", seq, 3)
		// Larger payloads make compressions long enough to be cut.
		for i := range b.Events {
			b.Events[i].Payload = fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, seq, strings.Repeat(strconv.FormatUint(seq*uint64(i+7), 36), 200))
		}
		if err := s.Write(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		fmt.Println(seq)
	}
}
