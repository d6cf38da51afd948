// Package file is the event sink that writes rotated NDJSON files into a
// directory: the single-node default, zero setup.
//
// Files are named events-<UTC yyyymmddThhmmssZ>-<seq>.ndjson, where seq
// counts up across the directory's files, so sorting names sorts files in
// the order they were written. A file ends at a batch boundary once it
// reaches Options.MaxFileBytes; a batch is never split between files. The
// line format is that of package server/sink/ndjson.
//
// Each Write appends its whole batch with one write and fsyncs before
// returning. A write that fails (a full disk) is cut back off the file, so a
// file never holds part of a batch; the sink never appends to a file it did
// not create, so a restart after a crash starts a new file instead of
// continuing one that may end in a partial line.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
)

// DefaultMaxFileBytes is the size at which a file is rotated by default.
const DefaultMaxFileBytes = 64 << 20

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("file sink: closed")

// Options configure a Sink.
type Options struct {
	// MaxFileBytes is the size after which the next batch goes into a new
	// file (default DefaultMaxFileBytes).
	MaxFileBytes int64

	// now is the clock of file names (tests).
	now func() time.Time
	// create opens a new file (tests inject failures).
	create func(name string) (handle, error)
}

// handle is the part of *os.File the sink uses.
type handle interface {
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
	Name() string
}

// Sink writes event batches to NDJSON files in a directory. It is safe for
// concurrent use.
type Sink struct {
	dir  string
	opts Options

	mu     sync.Mutex
	f      handle // nil before the first file and after a failed rollback
	size   int64  // bytes of f that hold whole batches
	seq    uint64 // seq of the last file created
	closed bool
}

var _ tether.Sink = (*Sink)(nil)

// Open creates dir (mode 0700) if needed and returns a sink that writes
// into a new file in it.
func Open(dir string, opts Options) (*Sink, error) {
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.create == nil {
		opts.create = func(name string) (handle, error) {
			return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	seq, err := lastSeq(dir)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	s := &Sink{dir: dir, opts: opts, seq: seq}
	if err := s.rotate(); err != nil {
		if s.f != nil {
			s.f.Close() // created, but its directory entry was not synced
		}
		return nil, err
	}
	return s, nil
}

// Dir returns the sink's directory.
func (s *Sink) Dir() string { return s.dir }

const (
	prefix     = "events-"
	suffix     = ".ndjson"
	timeLayout = "20060102T150405Z"
)

// lastSeq returns the highest seq of the event files in dir.
func lastSeq(dir string) (uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var last uint64
	for _, e := range entries {
		if seq, ok := parseName(e.Name()); ok && seq > last {
			last = seq
		}
	}
	return last, nil
}

// parseName returns the seq of a file named by the sink.
func parseName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, suffix)
	if !ok {
		return 0, false
	}
	stamp, seqStr, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	if _, err := time.Parse(timeLayout, stamp); err != nil {
		return 0, false
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	return seq, err == nil
}

// Name returns the name of the file with a given time and seq.
func Name(t time.Time, seq uint64) string {
	return fmt.Sprintf("%s%s-%06d%s", prefix, t.UTC().Format(timeLayout), seq, suffix)
}

// rotate closes the current file, if any, and creates the next one.
// Callers hold s.mu (or own s).
func (s *Sink) rotate() error {
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		if err != nil {
			return fmt.Errorf("file sink: close: %w", err)
		}
	}
	for range 100 {
		s.seq++
		name := filepath.Join(s.dir, Name(s.opts.now(), s.seq))
		f, err := s.opts.create(name)
		if errors.Is(err, os.ErrExist) {
			continue // another process wrote here; take the next seq
		}
		if err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
		s.f, s.size = f, 0
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
		return nil
	}
	return fmt.Errorf("file sink: no free file name in %s", s.dir)
}

// syncDir makes the creation of a file in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Write appends b's events to the current file, rotating first if the file
// reached its size limit, and returns once they are synced to disk. A
// failed write leaves no trace in the file.
func (s *Sink) Write(ctx context.Context, b *tether.Batch) error {
	data, err := ndjson.AppendBatch(nil, b)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if len(data) == 0 {
		return nil
	}
	if s.f == nil || (s.size > 0 && s.size+int64(len(data)) > s.opts.MaxFileBytes) {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	_, err = s.f.WriteAt(data, s.size)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		name := filepath.Base(s.f.Name())
		s.rollback()
		return fmt.Errorf("file sink: write %s: %w", name, err)
	}
	s.size += int64(len(data))
	return nil
}

// rollback cuts a failed write off the current file. When that fails too,
// the file is given up (it may end in a partial line) and the next write
// goes into a new one.
func (s *Sink) rollback() {
	if err := s.f.Truncate(s.size); err == nil {
		if err := s.f.Sync(); err == nil {
			return
		}
	}
	s.f.Close()
	s.f = nil
}

// Close closes the current file. Later Writes return ErrClosed; closing
// again returns nil.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("file sink: close: %w", err)
	}
	return nil
}
