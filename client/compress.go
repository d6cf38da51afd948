package client

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"
)

// Request compressions a Client can send (Config.Compression).
const (
	CompressionZstd = "zstd"
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// compression kinds, the index of Client.svcs.
const (
	sendNone = iota
	sendGzip
	sendZstd
	sendKinds
)

const (
	// compressMinBytes: smaller requests go uncompressed.
	compressMinBytes = 1 << 10
	// zstdWindow is the zstd window of requests: a batch is at most a few
	// MiB, and a small window keeps the encoder's memory small.
	zstdWindow = 1 << 20
	// zstdRetryAfter is how long a client that found a server without
	// zstd sends gzip before trying zstd again.
	zstdRetryAfter = time.Hour
	// maxZstdResponse bounds the memory a zstd answer may take to decode.
	maxZstdResponse = 64 << 20
)

func compressionKind(name string) (int, error) {
	switch strings.ToLower(name) {
	case "", CompressionZstd:
		return sendZstd, nil
	case CompressionGzip:
		return sendGzip, nil
	case CompressionNone, "identity":
		return sendNone, nil
	}
	return 0, fmt.Errorf("compression %q: want zstd, gzip or none", name)
}

// compressionOptions are the connect client options of one kind: every
// client accepts zstd and gzip answers, and sends requests of at least
// compressMinBytes with the kind's compression.
func compressionOptions(kind int) []connect.ClientOption {
	opts := []connect.ClientOption{
		connect.WithAcceptCompression(CompressionZstd, newZstdDecompressor, newZstdCompressor),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	switch kind {
	case sendZstd:
		opts = append(opts, connect.WithSendCompression(CompressionZstd))
	case sendGzip:
		opts = append(opts, connect.WithSendGzip())
	}
	return opts
}

func newZstdCompressor() connect.Compressor {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow),
		zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic(fmt.Sprintf("zstd encoder: %v", err)) // only on invalid options
	}
	return e
}

// zstdDecompressor is a zstd.Decoder that connect-go can pool: its Close
// keeps it usable (zstd.Decoder's Close would end it for good).
type zstdDecompressor struct{ d *zstd.Decoder }

func newZstdDecompressor() connect.Decompressor {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxZstdResponse),
		zstd.WithDecoderMaxWindow(8<<20))
	if err != nil {
		panic(fmt.Sprintf("zstd decoder: %v", err))
	}
	return &zstdDecompressor{d: d}
}

func (z *zstdDecompressor) Read(p []byte) (int, error) { return z.d.Read(p) }
func (z *zstdDecompressor) Reset(r io.Reader) error    { return z.d.Reset(r) }
func (z *zstdDecompressor) Close() error               { return nil }

// sendCompression picks the kind of the next request: the configured one,
// but gzip for a while after a server refused zstd.
type sendCompression struct {
	kind        atomic.Int32
	noZstdUntil atomic.Int64 // Unix nanoseconds
}

func (s *sendCompression) current(now time.Time) int {
	k := int(s.kind.Load())
	if k == sendZstd && now.UnixNano() < s.noZstdUntil.Load() {
		return sendGzip
	}
	return k
}

// refused records that the server did not take a zstd request.
func (s *sendCompression) refused(now time.Time) {
	s.noZstdUntil.Store(now.Add(zstdRetryAfter).UnixNano())
}
