package ndjson_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
)

var (
	collected = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CET", 3600))
	received  = time.Date(2026, 1, 2, 2, 4, 6, 0, time.UTC)
)

func TestAppendBatchStateful(t *testing.T) {
	b := &tether.Batch{
		AgentID: "a-1", AgentName: "web-1", Groups: []string{"linux"}, Sequence: 18446744073709551615,
		Stateful: true, ReceivedAt: received,
		Events: []tether.Event{{
			ID: "e-1", Module: "inventory", Type: "package", CollectedAt: collected,
			Payload: []byte("{\n  \"version\": \"3.0 <b>\"\n}"), Encoding: tether.EncodingJSON,
			Key: "openssl", Op: tether.StateUpsert,
		}},
	}
	out, err := ndjson.AppendBatch([]byte("prefix\n"), b)
	if err != nil {
		t.Fatal(err)
	}
	want := `prefix
{"agent_id":"a-1","agent_name":"web-1","groups":["linux"],"sequence":18446744073709551615,"event_id":"e-1","module":"inventory","type":"package","encoding":"json","collected_at":"2026-01-02T02:04:05.123456789Z","received_at":"2026-01-02T02:04:06Z","key":"openssl","op":"upsert","payload":{"version":"3.0 <b>"}}
`
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func TestAppendBatchStateless(t *testing.T) {
	b := &tether.Batch{
		AgentID: "a-1", Sequence: 7, ReceivedAt: received,
		Events: []tether.Event{
			{ID: "e-1", Module: "log", Type: "line", CollectedAt: collected, Payload: []byte{0, 1, 0xff}, Encoding: tether.EncodingProtobuf},
			{ID: "e-2", Module: "log", Type: "line", CollectedAt: collected, Payload: []byte(`{"a":`), Encoding: tether.EncodingJSON},
			{ID: "e-3", Module: "log", Type: "line", CollectedAt: collected, Payload: nil, Encoding: tether.EncodingJSON},
			{ID: "e-4", Module: "log", Type: "line", CollectedAt: collected, Payload: []byte("\"\xff\""), Encoding: tether.EncodingJSON},
		},
	}
	out, err := ndjson.AppendBatch(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ndjson.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	wantB64 := []string{"AAH/", base64.StdEncoding.EncodeToString([]byte(`{"a":`)), "", "Iv8i"}
	for i, r := range recs {
		if _, ok := r["key"]; ok {
			t.Errorf("stateless record %d has a key", i)
		}
		if _, ok := r["op"]; ok {
			t.Errorf("stateless record %d has an op", i)
		}
		if _, ok := r["payload"]; ok {
			t.Errorf("record %d has a payload, want payload_b64", i)
		}
		if r["payload_b64"] != wantB64[i] {
			t.Errorf("record %d payload_b64 = %v, want %q", i, r["payload_b64"], wantB64[i])
		}
		if g, ok := r["groups"].([]any); !ok || len(g) != 0 {
			t.Errorf("groups = %#v, want []", r["groups"])
		}
	}
}

func TestAppendBatchEmpty(t *testing.T) {
	out, err := ndjson.AppendBatch(nil, &tether.Batch{AgentID: "a"})
	if err != nil || len(out) != 0 {
		t.Errorf("empty batch: %q, %v", out, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, in := range []string{"[1]\n", "{\"a\":1} {\"b\":2}\n", "nope\n", "null\n"} {
		if _, err := ndjson.Decode(strings.NewReader(in)); err == nil {
			t.Errorf("Decode(%q) = nil error", in)
		}
	}
}

// FuzzAppendBatch checks that whatever bytes and strings an agent sends,
// the output is one valid JSON object per event, on its own line, and the
// payload reads back unchanged.
func FuzzAppendBatch(f *testing.F) {
	f.Add([]byte(`{"a":1}`), true, "mod", "e1", false)
	f.Add([]byte("{\n\"a\" : [1, 2]\n}\n"), true, "mod", "e1", true)
	f.Add([]byte("\x00\xff\n\"}"), false, "m\nod", "e\"1", false)
	f.Add([]byte(`"\u2028<>&"`), true, "\xff", "", true)
	f.Add([]byte(""), true, "", "", false)
	f.Add([]byte("  42  "), true, "x", "y", false)
	f.Fuzz(func(t *testing.T, payload []byte, isJSON bool, module, id string, stateful bool) {
		enc := tether.EncodingProtobuf
		if isJSON {
			enc = tether.EncodingJSON
		}
		ev := tether.Event{ID: id, Module: module, Type: module, CollectedAt: collected, Payload: payload, Encoding: enc, Key: id, Op: tether.StateDelete}
		b := &tether.Batch{AgentID: id, AgentName: module, Groups: []string{module}, Stateful: stateful, ReceivedAt: received,
			Events: []tether.Event{ev, ev, ev}}
		out, err := ndjson.AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(out) {
			t.Fatalf("output is not UTF-8: %q", out)
		}
		if !bytes.HasSuffix(out, []byte("\n")) {
			t.Fatalf("output does not end with a newline: %q", out)
		}
		lines := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
		if len(lines) != len(b.Events) {
			t.Fatalf("%d lines for %d events: %q", len(lines), len(b.Events), out)
		}
		for _, line := range lines {
			if !json.Valid(line) {
				t.Fatalf("line is not valid JSON: %q", line)
			}
			var r ndjson.Record
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			if (r.Payload == nil) == (r.PayloadB64 == nil) {
				t.Fatalf("want exactly one of payload and payload_b64: %q", line)
			}
			if stateful != (r.Key != nil && r.Op != nil) {
				t.Fatalf("stateful %v, key %v op %v", stateful, r.Key, r.Op)
			}
			if r.PayloadB64 != nil {
				got, err := base64.StdEncoding.DecodeString(*r.PayloadB64)
				if err != nil || !bytes.Equal(got, payload) {
					t.Fatalf("payload_b64 %q does not decode to %q", *r.PayloadB64, payload)
				}
				continue
			}
			var want bytes.Buffer
			if err := json.Compact(&want, payload); err != nil {
				t.Fatalf("embedded a payload that is not JSON: %q", payload)
			}
			if !bytes.Equal(r.Payload, want.Bytes()) {
				t.Fatalf("payload = %q, want %q", r.Payload, want.Bytes())
			}
		}
	})
}
