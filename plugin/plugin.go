// Package plugin is the tether-agent plugin protocol for plugins written in
// Go (and the agent's own side of it): length-prefixed protobuf frames over
// a plugin's standard input and output. The messages are those of
// tether.plugin.v1 (proto/tether/plugin/v1/plugin.proto, generated in
// gen/tether/plugin/v1); docs/modules.md describes the protocol for
// plugins written in other languages.
//
// A frame is a 4-byte big-endian length followed by that many bytes of one
// serialized message. A plugin reads AgentMessage frames from os.Stdin and
// writes PluginMessage frames to os.Stdout:
//
//	in := bufio.NewReader(os.Stdin)
//	var start pluginv1.AgentMessage
//	if err := plugin.ReadMessage(in, &start); err != nil { … }
//	out := plugin.NewWriter(os.Stdout)
//	out.Write(&pluginv1.PluginMessage{Message: &pluginv1.PluginMessage_Event{…}})
//
// This package links only the generated protocol code and protobuf.
package plugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"
)

// MaxFrameBytes is the largest message a frame may carry (2 MiB). The agent
// stops reading from a plugin that sends a longer one.
const MaxFrameBytes = 2 << 20

// ErrFrameTooLarge is returned by ReadFrame for a frame whose length is
// over the limit; the stream cannot be read further.
var ErrFrameTooLarge = errors.New("plugin frame larger than the limit")

// ReadFrame reads one frame from r and returns its message bytes, reusing
// buf when it is large enough. It returns io.EOF when r ends before a frame
// starts, io.ErrUnexpectedEOF when it ends inside one, and an error wrapping
// ErrFrameTooLarge when the frame announces more than max bytes (max ≤ 0:
// MaxFrameBytes), without reading them.
func ReadFrame(r io.Reader, buf []byte, max int) ([]byte, error) {
	if max <= 0 {
		max = MaxFrameBytes
	}
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// AppendFrame appends msg as one frame to dst.
func AppendFrame(dst, msg []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(msg)))
	return append(dst, msg...)
}

// ReadMessage reads one frame from r and unmarshals it into m. Errors are
// those of ReadFrame, or a decoding error for bytes that are not m.
func ReadMessage(r io.Reader, m proto.Message) error {
	b, err := ReadFrame(r, nil, MaxFrameBytes)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("decode plugin frame: %w", err)
	}
	return nil
}

// Writer writes messages as frames, one whole frame per Write call on the
// underlying writer; it is safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write marshals m and writes it as one frame.
func (w *Writer) Write(m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode plugin frame: %w", err)
	}
	if len(b) > MaxFrameBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, len(b), MaxFrameBytes)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = AppendFrame(w.buf[:0], b)
	_, err = w.w.Write(w.buf)
	return err
}
