package store

import (
	"bytes"
	"testing"
	"time"

	"github.com/tetherhq/tether/client"
)

// FuzzDecodeRecord: outbox records are read back from disk, where a torn
// or corrupted file may hold any bytes. Decoding never panics, and a record
// that decodes encodes back to a record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	at := time.Date(2026, 11, 23, 18, 0, 0, 123, time.UTC)
	for _, r := range []Record{
		{Event: client.Event{ID: "e1", Module: "logcollector", Type: "line", CollectedAt: at, Payload: []byte(`{"line":"x"}`)}},
		{Stateful: true, Key: "pkg/bash", Event: client.Event{ID: "e2", Module: "inventory", Type: "package", Payload: []byte(`{}`)}},
		{Stateful: true, Delete: true, Key: "k", Event: client.Event{ID: "e3", Module: "m", Protobuf: true, Payload: []byte{0x08, 0x01}}},
	} {
		f.Add(encodeRecord(r))
	}
	f.Add([]byte(`{"stateful":true,"event":{"id":"a","module":"m","type":"t","collected_at":"2026-01-01T00:00:00Z","payload":"e30="},"key":"k"}`))
	f.Add([]byte{recordV1, 0xff})
	f.Add([]byte{recordV1, flagTime, 0, 0, 0, 0, 0x80})
	f.Add([]byte{recordV1, flagTime, 0, 0, 0, 0, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f, 0})
	f.Add([]byte{recordV1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		h, herr := decodeHead(data)
		if err != nil {
			return
		}
		if herr != nil {
			t.Fatalf("record decodes but its head does not: %v", herr)
		}
		if h != headOf(r) {
			t.Fatalf("head %+v, record head %+v", h, headOf(r))
		}
		again, err := decodeRecord(encodeRecord(r))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again.Stateful != r.Stateful || again.Delete != r.Delete || again.Key != r.Key ||
			again.Event.ID != r.Event.ID || again.Event.Module != r.Event.Module || again.Event.Type != r.Event.Type ||
			again.Event.Protobuf != r.Event.Protobuf || !again.Event.CollectedAt.Equal(r.Event.CollectedAt) ||
			!bytes.Equal(again.Event.Payload, r.Event.Payload) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, again)
		}
	})
}
