package plugin_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/tetherhq/tether/gen/tether/plugin/v1"
	"github.com/tetherhq/tether/plugin"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := plugin.NewWriter(&buf)
	msgs := []*pluginv1.PluginMessage{
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Sequence: 1, Type: "tick", Payload: []byte(`{"n":1}`)}}},
		{},
		{Message: &pluginv1.PluginMessage_Log{Log: &pluginv1.Log{Level: pluginv1.LogLevel_LOG_LEVEL_WARN, Message: "hello"}}},
	}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(&buf)
	for i, want := range msgs {
		var got pluginv1.PluginMessage
		if err := plugin.ReadMessage(r, &got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("message %d: got %v, want %v", i, &got, want)
		}
	}
	if err := plugin.ReadMessage(r, &pluginv1.PluginMessage{}); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"cut header", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"cut body", []byte{0, 0, 0, 5, 1, 2}, io.ErrUnexpectedEOF},
		{"too large", []byte{0, 0x20, 0, 1}, plugin.ErrFrameTooLarge},
		{"huge", []byte{0xff, 0xff, 0xff, 0xff}, plugin.ErrFrameTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := plugin.ReadFrame(bytes.NewReader(c.in), nil, 0)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	b, err := plugin.ReadFrame(bytes.NewReader([]byte{0, 0, 0, 0}), nil, 0)
	if err != nil || len(b) != 0 {
		t.Fatalf("zero-length frame: %q, %v", b, err)
	}
}

// FuzzReadPluginMessages: a plugin's standard output is untrusted bytes.
// Reading frames and decoding them must end in messages or an error, never
// a panic, never a frame over the limit, and never more bytes consumed than
// given.
func FuzzReadPluginMessages(f *testing.F) {
	var seed []byte
	for _, m := range []*pluginv1.PluginMessage{
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Sequence: 7, Type: "alert", Key: "k", Payload: []byte(`{"a":1}`)}}},
		{Message: &pluginv1.PluginMessage_Log{Log: &pluginv1.Log{Message: "x"}}},
	} {
		b, _ := proto.Marshal(m)
		seed = plugin.AppendFrame(seed, b)
	}
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 3, 0x0a, 0x01})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for {
			b, err := plugin.ReadFrame(r, buf, 0)
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, plugin.ErrFrameTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(b) > plugin.MaxFrameBytes {
				t.Fatalf("frame of %d bytes", len(b))
			}
			buf = b
			var m pluginv1.PluginMessage
			if proto.Unmarshal(b, &m) != nil {
				continue
			}
			// A decoded message re-encodes.
			if _, err := proto.Marshal(&m); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}
