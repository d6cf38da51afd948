// Package file is the event sink that writes rotated NDJSON files into a
// directory: the single-node default, zero setup.
//
// Files are named events-<UTC yyyymmddThhmmssZ>-<seq>.ndjson, where seq
// counts up across the directory's files, so sorting names sorts files in
// the order they were written. A file ends at a batch boundary once it
// reaches Options.MaxFileBytes, or at the first write or check after it was
// opened Options.MaxFileAge ago; a batch is never split between files. The
// line format is that of package server/sink/ndjson.
//
// Each Write appends its whole batch with one write and fsyncs before
// returning (batches written at the same time share the write and the
// fsync). A write that fails (a full disk) is cut back off the file, so a
// file never holds part of a batch; the sink never appends to a file it did
// not create, so a restart after a crash starts a new file instead of
// continuing one that may end in a partial line (Open cuts such a line off:
// it belongs to a batch that was never acknowledged).
//
// In the background, closed files are compressed with zstd into
// <name>.ndjson.zst (a standard zstd frame: zstdcat reads it), and
// retention deletes the oldest closed files (Options.MaxAge,
// Options.MaxTotalBytes). Compression writes <name>.ndjson.zst.tmp, syncs
// it, renames it into place and only then removes the plain file, so a
// crash at any point leaves the plain file or the complete compressed one,
// never only a part: Open removes a leftover .tmp (the plain file is still
// there and is compressed again) and a plain file whose compressed copy is
// complete.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
)

// Defaults of Options.
const (
	// DefaultMaxFileBytes is the size at which a file is rotated by default.
	DefaultMaxFileBytes = 64 << 20
	// DefaultMaxFileAge is the age at which a file holding events is
	// rotated by default.
	DefaultMaxFileAge = time.Hour
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("file sink: closed")

// Options configure a Sink.
type Options struct {
	// MaxFileBytes is the size after which the next batch goes into a new
	// file (default DefaultMaxFileBytes).
	MaxFileBytes int64
	// MaxFileAge is how long a file that holds events stays open: the
	// next write after it, or the background check (at most a minute
	// later), closes it (default DefaultMaxFileAge). An empty file is kept
	// open however old.
	MaxFileAge time.Duration
	// Uncompressed keeps closed files as plain NDJSON; by default they are
	// compressed with zstd in the background.
	Uncompressed bool
	// MaxAge deletes closed files whose last write is older than this (0:
	// no age limit).
	MaxAge time.Duration
	// MaxTotalBytes deletes the oldest closed files while the directory's
	// event files take more than this many bytes on disk (0: no limit).
	// The open file is never deleted, so the directory may hold up to one
	// file of MaxFileBytes more than the limit.
	MaxTotalBytes int64
	// Log receives the errors of background work (compression, retention),
	// which is retried at the next check (default slog.Default()).
	Log *slog.Logger

	// now is the clock of file names, ages and retention (tests).
	now func() time.Time
	// create opens a new file (tests inject failures).
	create func(name string) (handle, error)
	// tick is how often the background work checks ages and retention
	// (tests).
	tick time.Duration
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

	// qmu guards the batches waiting for a group commit (see Write).
	qmu     sync.Mutex
	queue   []*pendingWrite
	writing bool // a Write is committing the queue

	mu     sync.Mutex
	f      handle    // nil before the first file and after a failed rollback
	size   int64     // bytes of f that hold whole batches
	opened time.Time // when f was created
	seq    uint64    // seq of the last file created
	closed bool
	// damaged holds the files given up after a failed write that could
	// not be cut back, by name, with the size of their whole batches: the
	// background work cuts them back before anything else.
	damaged map[string]int64

	wake    chan struct{}   // a file was closed: tidy up (buffer of one)
	tidyReq chan chan error // run one pass of background work now (tests)
	stop    context.CancelFunc
	done    chan struct{} // closed when the background work ended
}

var _ tether.Sink = (*Sink)(nil)

// Open creates dir (mode 0700) if needed, repairs what a crash may have
// left in it (see the package comment), and returns a sink that writes
// into a new file in it. Files closed before, by this sink or an earlier
// one, are compressed and expired in the background.
func Open(dir string, opts Options) (*Sink, error) {
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxFileAge <= 0 {
		opts.MaxFileAge = DefaultMaxFileAge
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.create == nil {
		opts.create = func(name string) (handle, error) {
			return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if opts.tick <= 0 {
		opts.tick = min(max(opts.MaxFileAge/4, time.Second), time.Minute)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	seq, err := recoverDir(dir)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	s := &Sink{dir: dir, opts: opts, seq: seq, damaged: map[string]int64{},
		wake: make(chan struct{}, 1), tidyReq: make(chan chan error), done: make(chan struct{})}
	if err := s.rotate(); err != nil {
		if s.f != nil {
			s.f.Close() // created, but its directory entry was not synced
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.run(ctx)
	return s, nil
}

// Dir returns the sink's directory.
func (s *Sink) Dir() string { return s.dir }

// rotate closes the current file, if any, and creates the next one.
// Callers hold s.mu (or own s).
func (s *Sink) rotate() error {
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		select {
		case s.wake <- struct{}{}:
		default:
		}
		if err != nil {
			return fmt.Errorf("file sink: close: %w", err)
		}
	}
	for range 100 {
		s.seq++
		now := s.opts.now()
		name := filepath.Join(s.dir, Name(now, s.seq))
		f, err := s.opts.create(name)
		if errors.Is(err, os.ErrExist) {
			continue // another process wrote here; take the next seq
		}
		if err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
		s.f, s.size, s.opened = f, 0, now
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
		return nil
	}
	return fmt.Errorf("file sink: no free file name in %s", s.dir)
}

// syncDir makes the creation, renaming or removal of files in dir
// durable.
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
// reached its size or age limit, and returns once they are synced to disk.
// A failed write leaves no trace in the file.
//
// Writes are committed in groups: the batches that arrive while a write
// and its fsync run are appended together by the next one, with one fsync
// for all of them, so that many agents' batches do not wait for each
// other's fsync in turn.
func (s *Sink) Write(ctx context.Context, b *tether.Batch) error {
	data, err := ndjson.AppendBatch(nil, b)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if len(data) == 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return ErrClosed
		}
		return nil
	}
	w := &pendingWrite{data: data, done: make(chan error, 1)}
	s.qmu.Lock()
	s.queue = append(s.queue, w)
	lead := !s.writing
	s.writing = true
	s.qmu.Unlock()
	if lead {
		s.commitQueued()
	}
	return <-w.done
}

// pendingWrite is one batch's lines waiting for a group commit.
type pendingWrite struct {
	data []byte
	done chan error // receives the outcome, once
}

// maxGroupCommitBytes bounds the bytes one group commit appends (more wait
// for the next).
const maxGroupCommitBytes = 16 << 20

// commitQueued writes the queued batches group by group until none is
// left; one Write at a time runs it.
func (s *Sink) commitQueued() {
	for {
		s.qmu.Lock()
		n, size := 0, 0
		for n < len(s.queue) && (n == 0 || size+len(s.queue[n].data) <= maxGroupCommitBytes) {
			size += len(s.queue[n].data)
			n++
		}
		if n == 0 {
			s.writing = false
			s.qmu.Unlock()
			return
		}
		group := s.queue[:n:n]
		if n == len(s.queue) {
			s.queue = nil // let the array go
		} else {
			s.queue = s.queue[n:]
		}
		s.qmu.Unlock()
		s.append(group)
	}
}

// append writes the lines of group at the end of the current file, with
// one write and one fsync for all the batches that fit in it (and the same
// again in the next file for the others: a batch is never split between
// files), and tells each Write its outcome.
func (s *Sink) append(group []*pendingWrite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(group) > 0 {
		if s.closed {
			for _, w := range group {
				w.done <- ErrClosed
			}
			return
		}
		if s.f == nil || (s.size > 0 && (s.size+int64(len(group[0].data)) > s.opts.MaxFileBytes || s.old())) {
			if err := s.rotate(); err != nil {
				for _, w := range group {
					w.done <- err
				}
				return
			}
		}
		// The batches that fit in this file (at least one).
		n, size := 1, int64(len(group[0].data))
		for n < len(group) && s.size+size+int64(len(group[n].data)) <= s.opts.MaxFileBytes {
			size += int64(len(group[n].data))
			n++
		}
		err := s.writeSynced(group[:n], size)
		for _, w := range group[:n] {
			w.done <- err
		}
		group = group[n:]
	}
}

// writeSynced appends the lines of ws (size bytes in all) to the current
// file with one write, then fsyncs it. Callers hold s.mu.
func (s *Sink) writeSynced(ws []*pendingWrite, size int64) error {
	data := ws[0].data
	if len(ws) > 1 {
		data = make([]byte, 0, size)
		for _, w := range ws {
			data = append(data, w.data...)
		}
	}
	_, err := s.f.WriteAt(data, s.size)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		name := filepath.Base(s.f.Name())
		s.rollback()
		return fmt.Errorf("file sink: write %s: %w", name, err)
	}
	s.size += size
	return nil
}

// old reports whether the current file reached its age limit. Callers
// hold s.mu.
func (s *Sink) old() bool {
	return s.opts.now().Sub(s.opened) >= s.opts.MaxFileAge
}

// rotateIfOld closes the current file if it holds events and reached its
// age limit, so that it is compressed and expired even when no more
// events come.
func (s *Sink) rotateIfOld() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.f == nil || s.size == 0 || !s.old() {
		return
	}
	if err := s.rotate(); err != nil {
		// The next Write tries again.
		s.opts.Log.Warn("event files: rotate", "dir", s.dir, "err", err)
	}
}

// current returns the name of the open file ("" when there is none).
func (s *Sink) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ""
	}
	return filepath.Base(s.f.Name())
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
	s.damaged[filepath.Base(s.f.Name())] = s.size
	s.f.Close()
	s.f = nil
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// repair cuts a file given up after a failed write back to its whole
// batches. It reports false when the file is not (yet) repaired.
func (s *Sink) repair(base string) (bool, error) {
	s.mu.Lock()
	size, ok := s.damaged[base]
	s.mu.Unlock()
	if !ok {
		return true, nil
	}
	path := filepath.Join(s.dir, base)
	err := os.Truncate(path, size)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			err = f.Sync()
			f.Close()
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	s.mu.Lock()
	delete(s.damaged, base)
	s.mu.Unlock()
	return true, nil
}

// Close closes the current file (removing it when it holds no events) and
// stops the background work: a compression under way is abandoned, and
// done at the next Open. Later Writes return ErrClosed; closing again
// returns nil.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var err error
	if s.f != nil {
		name := s.f.Name()
		err = s.f.Close()
		s.f = nil
		if err == nil && s.size == 0 {
			if err = os.Remove(name); err == nil {
				err = syncDir(s.dir)
			}
		}
	}
	s.mu.Unlock()
	s.stop()
	<-s.done
	if err != nil {
		return fmt.Errorf("file sink: close: %w", err)
	}
	return nil
}
