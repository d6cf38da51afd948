package comms

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/server/metrics"
)

// Compression of request and response bodies. Agents compress their pushes
// with zstd (or gzip, which every gRPC and Connect client has); answers are
// compressed only when larger than compressMinBytes, with what the call
// used.
const (
	compressMinBytes = 1 << 10
	// maxZstdWindow is the largest zstd window accepted: what the zstd
	// levels 1 to 19 and Go encoders use. A frame that asks for more is
	// refused before anything is allocated for it.
	maxZstdWindow = 8 << 20
)

// compressionOptions registers zstd and gzip with decompressors that stop
// at limit decompressed bytes: a body that decompresses to more is refused
// with INVALID_ARGUMENT after at most limit bytes were produced, however
// much more it holds (connect-go's own limit reads a compressed body to
// its end to report its size, which a zip bomb makes endless).
func compressionOptions(limit int64, m *metrics.Metrics) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCompression("gzip",
			func() connect.Decompressor { return newCappedDecompressor(&gzipReader{}, limit, m) },
			func() connect.Compressor { return gzip.NewWriter(nil) },
		),
		connect.WithCompression("zstd",
			func() connect.Decompressor { return newCappedDecompressor(newZstdReader(limit), limit, m) },
			func() connect.Compressor { return newZstdWriter() },
		),
		connect.WithCompressMinBytes(compressMinBytes),
	}
}

// resetReader is a decompressor that can be reused for another stream.
type resetReader interface {
	io.Reader
	Reset(io.Reader) error
}

// capped counts the bytes a reader produced, and fails with err() once
// they pass max.
type capped struct {
	max, n int64
	err    func() error
}

// read reads from r into p, at most one byte more than the cap allows:
// that byte tells a stream over the cap from one that ends at it.
func (c *capped) read(r io.Reader, p []byte) (int, error) {
	if room := c.max - c.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return 0, c.err()
	}
	return n, err
}

// tooLarge is the error of a request over a size limit: INVALID_ARGUMENT,
// as the same request can never succeed (agents retry RESOURCE_EXHAUSTED,
// the code connect-go gives it).
func tooLarge(what string, max int64) error {
	return connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("%s larger than %d bytes: send smaller batches", what, max))
}

// bodyLimit fails the reading of a request body past its cap.
type bodyLimit struct {
	io.ReadCloser
	capped
}

func (b *bodyLimit) Read(p []byte) (int, error) { return b.read(b.ReadCloser, p) }

// cappedDecompressor fails with INVALID_ARGUMENT once its stream produced
// more than max bytes, or when a zstd frame asks for a window over
// maxZstdWindow. It reads no further: a zip bomb costs the server the
// decompression of max bytes.
type cappedDecompressor struct {
	d resetReader
	capped
}

func newCappedDecompressor(d resetReader, max int64, m *metrics.Metrics) *cappedDecompressor {
	return &cappedDecompressor{d: d, capped: capped{max: max, err: func() error {
		m.Rejected("comms", "decompress", connect.CodeInvalidArgument.String())
		return tooLarge("decompressed request body", max)
	}}}
}

func (c *cappedDecompressor) Read(p []byte) (int, error) {
	n, err := c.read(c.d, p)
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return 0, c.err()
	case errors.Is(err, zstd.ErrWindowSizeExceeded):
		return 0, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("zstd window larger than %d bytes: compress with a smaller window (zstd levels 1 to 19)", maxZstdWindow))
	}
	return n, err
}

func (c *cappedDecompressor) Reset(r io.Reader) error {
	c.n = 0
	return c.d.Reset(r)
}

// Close keeps the decoder for reuse: connect-go pools decompressors.
func (c *cappedDecompressor) Close() error { return nil }

// gzipReader is a gzip.Reader that may be reset before its first stream.
type gzipReader struct{ r *gzip.Reader }

func (g *gzipReader) Read(p []byte) (int, error) {
	if g.r == nil {
		return 0, io.ErrUnexpectedEOF
	}
	return g.r.Read(p)
}

func (g *gzipReader) Reset(r io.Reader) error {
	if g.r == nil {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		g.r = zr
		return nil
	}
	return g.r.Reset(r)
}

// zstdReader is a zstd.Decoder made to decode one stream at a time in the
// calling goroutine. Its memory is bounded by its window (at most
// maxZstdWindow) and by what it decodes in one go from a small body (at
// most max bytes, or the window when larger: frames of any size may
// declare a window of maxZstdWindow).
type zstdReader struct{ d *zstd.Decoder }

func newZstdReader(limit int64) *zstdReader {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(max(limit, maxZstdWindow))),
		zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		panic(fmt.Sprintf("zstd decoder: %v", err)) // only on invalid options
	}
	return &zstdReader{d: d}
}

func (z *zstdReader) Read(p []byte) (int, error) { return z.d.Read(p) }
func (z *zstdReader) Reset(r io.Reader) error    { return z.d.Reset(r) }
func newZstdWriter() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		panic(fmt.Sprintf("zstd encoder: %v", err))
	}
	return e
}
