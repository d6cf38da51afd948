// Package stdout is the event sink that writes NDJSON lines (the format of
// server/sink/ndjson) to an io.Writer, usually the server's standard
// output, for a log shipper or a container runtime to collect.
//
// Each batch is written with one Write call under a mutex, so lines of
// concurrent batches never interleave. Durability is the reader's: the sink
// returns once the writer accepted the bytes (and flushed them, when the
// writer has a Flush method). A failed write may leave part of a batch
// behind, which a writer to a pipe cannot take back.
package stdout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("stdout sink: closed")

// Sink writes event batches to an io.Writer. It is safe for concurrent use.
type Sink struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

var _ tether.Sink = (*Sink)(nil)

// New returns a sink that writes to w. Close does not close w.
func New(w io.Writer) *Sink {
	return &Sink{w: w}
}

// Write writes b's events, one line each.
func (s *Sink) Write(ctx context.Context, b *tether.Batch) error {
	data, err := ndjson.AppendBatch(nil, b)
	if err != nil {
		return fmt.Errorf("stdout sink: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stdout sink: %w", err)
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := s.w.Write(data); err != nil {
		return fmt.Errorf("stdout sink: %w", err)
	}
	if f, ok := s.w.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("stdout sink: flush: %w", err)
		}
	}
	return nil
}

// Close makes later Writes fail with ErrClosed. It does not close the
// writer.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
