package stdout_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sink/stdout"
	"github.com/tetherhq/tether/server/sinktest"
)

// lockedBuffer is a bytes.Buffer that the test may read while the sink
// writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (tether.Sink, sinktest.Reader) {
		var buf lockedBuffer
		return stdout.New(&buf), func(t *testing.T) []map[string]any {
			recs, err := ndjson.Decode(bytes.NewReader(buf.bytes()))
			if err != nil {
				t.Fatal(err)
			}
			return recs
		}
	})
}

func TestFlushes(t *testing.T) {
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 1<<20)
	s := stdout.New(w)
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 1, 2)); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("%d lines reached the underlying writer, want 2", n)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteError(t *testing.T) {
	s := stdout.New(failingWriter{})
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 1, 1)); err == nil {
		t.Fatal("Write to a broken writer returned nil")
	}
	s.Close()
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 1, 1)); !errors.Is(err, stdout.ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}
