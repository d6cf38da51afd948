package modules

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	pluginv1 "github.com/tetherhq/tether/gen/tether/plugin/v1"
	"github.com/tetherhq/tether/plugin"
	"google.golang.org/protobuf/proto"
)

// FuzzReadPlugin: a plugin's standard output is untrusted. Whatever its
// bytes, the agent's reader ends with nil or an error, never a panic, and
// every event it queues passes the limits the server checks, so that no
// batch is refused because of a plugin.
func FuzzReadPlugin(f *testing.F) {
	var seed []byte
	for _, m := range []*pluginv1.PluginMessage{
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Sequence: 1, Type: "alert", Payload: []byte(`{"a":1}`)}}},
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Type: "state", Key: "k", Payload: []byte(`{}`)}}},
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Type: "bin", Payload: []byte{0xff, 0}, Encoding: pluginv1.PayloadEncoding_PAYLOAD_ENCODING_PROTOBUF}}},
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Type: "gone", Key: "k", Delete: true}}},
		{Message: &pluginv1.PluginMessage_Event{Event: &pluginv1.Event{Type: "bad", Payload: []byte(`{`)}}},
		{Message: &pluginv1.PluginMessage_Log{Log: &pluginv1.Log{Message: "hello"}}},
	} {
		b, _ := proto.Marshal(m)
		seed = plugin.AppendFrame(seed, b)
	}
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 2, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		out := make(chan pluginEvent, 16)
		var refused atomic.Uint64
		log := slog.New(slog.DiscardHandler)
		go func() {
			defer close(out)
			_ = readPlugin(bytes.NewReader(data), "fuzz", log, &refused, out)
		}()
		for ev := range out {
			r := ev.rec
			e := r.Event
			switch {
			case e.Module != "fuzz" || e.ID == "" || e.CollectedAt.IsZero():
				t.Fatalf("bad event %+v", e)
			case e.Type == "" || len(e.Type) > 128 || !utf8.ValidString(e.Type):
				t.Fatalf("bad type %q", e.Type)
			case len(e.Payload) > 1<<20:
				t.Fatalf("payload of %d bytes", len(e.Payload))
			case !e.Protobuf && len(e.Payload) > 0 && !json.Valid(e.Payload):
				t.Fatalf("invalid JSON payload %q", e.Payload)
			case r.Stateful != (r.Key != ""), len(r.Key) > 256, !utf8.ValidString(r.Key):
				t.Fatalf("bad key %+v", r)
			case r.Stateful && !r.Delete && (e.Protobuf || len(e.Payload) == 0):
				t.Fatalf("an upsert without a JSON document: %+v", r)
			}
		}
	})
}
