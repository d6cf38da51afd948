// Package sinktest is the conformance suite every tether.Sink passes: the
// same test bodies run against the file sink, the stdout sink and any sink
// added later (NATS JetStream, Kafka…).
//
// A sink's test opens a fresh sink and a Reader that returns what the sink
// durably holds, as event records with the field names of
// server/sink/ndjson (agent_id, event_id, sequence, payload or
// payload_b64, …):
//
//	func TestConformance(t *testing.T) {
//		sinktest.Run(t, func(t *testing.T) (tether.Sink, sinktest.Reader) {
//			dir := t.TempDir()
//			s, err := file.Open(dir, file.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s, func(t *testing.T) []map[string]any { return readDir(t, dir) }
//		})
//	}
//
// A sink that stores batches in another shape (one message per batch,
// protobuf…) converts them to records in its Reader. A sink that is a
// tether.HeldSink is also checked for what its Held finds. The suite closes every
// sink it opens; Readers may be called before and after Close.
//
// RunStorage adds the tests of what outlives one sink: a storage reopened
// by a new sink (a restarted server) keeps what was written and takes more,
// and retention, for sinks that bound what they keep, deletes whole
// batches, oldest first, never the newest.
package sinktest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether"
)

// Reader returns every event record the sink durably holds so far, decoded
// with numbers as json.Number (json.Decoder.UseNumber; ndjson.Decode does
// so). Records of one agent must come in the order they were written;
// records of different agents may interleave.
type Reader func(t *testing.T) []map[string]any

// Opener returns a new, empty sink and its Reader.
type Opener func(t *testing.T) (tether.Sink, Reader)

// Run runs the conformance suite against the sinks open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s tether.Sink, read Reader)
	}{
		{"SingleBatch", testSingleBatch},
		{"Stateful", testStateful},
		{"Payloads", testPayloads},
		{"EmptyBatch", testEmptyBatch},
		{"ManyBatches", testManyBatches},
		{"ConcurrentWriters", testConcurrentWriters},
		{"LargeEvent", testLargeEvent},
		{"CanceledContext", testCanceledContext},
		{"WriteAfterClose", testWriteAfterClose},
		{"Held", testHeld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, read := open(t)
			var once sync.Once
			closeSink := func() error {
				var err error
				once.Do(func() { err = s.Close() })
				return err
			}
			t.Cleanup(func() { closeSink() })
			tt.fn(t, &closer{Sink: s, close: closeSink}, read)
		})
	}
}

// closer lets a test close the sink while the cleanup closes it at most
// once more.
type closer struct {
	tether.Sink
	close func() error
}

func (c *closer) Close() error { return c.close() }

var (
	collected = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	received  = time.Date(2026, 1, 2, 3, 4, 6, 987654321, time.UTC)
)

// NewBatch returns a stateless batch of n JSON events with ids
// "<agent>-<seq>-<i>".
func NewBatch(agent string, seq uint64, n int) *tether.Batch {
	b := &tether.Batch{
		AgentID: agent, AgentName: "name-" + agent, Groups: []string{"g1", "g2"},
		Sequence: seq, ReceivedAt: received,
	}
	for i := range n {
		b.Events = append(b.Events, tether.Event{
			ID:          fmt.Sprintf("%s-%d-%d", agent, seq, i),
			Module:      "log",
			Type:        "line",
			CollectedAt: collected.Add(time.Duration(i) * time.Millisecond),
			Payload:     fmt.Appendf(nil, `{"i": %d, "msg": "line %d of batch %d"}`, i, i, seq),
			Encoding:    tether.EncodingJSON,
		})
	}
	return b
}

func write(t *testing.T, s tether.Sink, b *tether.Batch) {
	t.Helper()
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatalf("Write(batch %s/%d): %v", b.AgentID, b.Sequence, err)
	}
}

func testSingleBatch(t *testing.T, s tether.Sink, read Reader) {
	b := NewBatch("agent-1", 1, 3)
	write(t, s, b)
	recs := read(t)
	if len(recs) != 3 {
		t.Fatalf("read %d records, want 3", len(recs))
	}
	for i, r := range recs {
		checkRecord(t, r, b, i)
	}
}

func testStateful(t *testing.T, s tether.Sink, read Reader) {
	b := NewBatch("agent-1", 9, 2)
	b.Stateful = true
	b.Events[0].Key, b.Events[0].Op = "pkg/openssl", tether.StateUpsert
	b.Events[1].Key, b.Events[1].Op, b.Events[1].Payload = "pkg/bash", tether.StateDelete, []byte(`{}`)
	write(t, s, b)
	recs := read(t)
	if len(recs) != 2 {
		t.Fatalf("read %d records, want 2", len(recs))
	}
	for i, r := range recs {
		checkRecord(t, r, b, i)
	}
}

func testPayloads(t *testing.T, s tether.Sink, read Reader) {
	b := NewBatch("agent-1", 2, 0)
	for i, p := range []struct {
		enc     tether.PayloadEncoding
		payload string
	}{
		{tether.EncodingJSON, "{\n  \"nested\": {\"a\": [1, 2.5e10, null, true]},\n  \"html\": \"<&>\"\n}\n"},
		{tether.EncodingJSON, `"just a string"`},
		{tether.EncodingJSON, `12345678901234567890123`},
		{tether.EncodingJSON, `{"broken": `},
		{tether.EncodingJSON, "\"\xff\xfe\""},
		{tether.EncodingJSON, ""},
		{tether.EncodingProtobuf, "\x08\x96\x01\x12\x00\n\"\xff"},
		{tether.EncodingProtobuf, `{"looks":"like json"}`},
	} {
		b.Events = append(b.Events, tether.Event{
			ID: fmt.Sprintf("p-%d", i), Module: "m\nodule \"quoted\"", Type: "t", CollectedAt: collected,
			Payload: []byte(p.payload), Encoding: p.enc,
		})
	}
	write(t, s, b)
	recs := read(t)
	if len(recs) != len(b.Events) {
		t.Fatalf("read %d records, want %d", len(recs), len(b.Events))
	}
	for i, r := range recs {
		checkRecord(t, r, b, i)
	}
}

func testEmptyBatch(t *testing.T, s tether.Sink, read Reader) {
	write(t, s, NewBatch("agent-1", 1, 0))
	if recs := read(t); len(recs) != 0 {
		t.Fatalf("empty batch: read %d records", len(recs))
	}
	b := NewBatch("agent-1", 2, 1)
	write(t, s, b)
	recs := read(t)
	if len(recs) != 1 {
		t.Fatalf("read %d records, want 1", len(recs))
	}
	checkRecord(t, recs[0], b, 0)
}

func testManyBatches(t *testing.T, s tether.Sink, read Reader) {
	var batches []*tether.Batch
	for seq := range uint64(50) {
		b := NewBatch("agent-1", seq+1, 1+int(seq%7))
		batches = append(batches, b)
		write(t, s, b)
	}
	checkAll(t, read(t), batches)
}

func testConcurrentWriters(t *testing.T, s tether.Sink, read Reader) {
	const writers, perWriter = 8, 25
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		batches []*tether.Batch
		errs    = make(chan error, writers*perWriter)
	)
	for w := range writers {
		wg.Go(func() {
			for seq := range uint64(perWriter) {
				b := NewBatch(fmt.Sprintf("agent-%d", w), seq+1, 1+int(seq%5))
				if err := s.Write(context.Background(), b); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				batches = append(batches, b)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Write: %v", err)
	}
	checkAll(t, read(t), batches)
}

func testLargeEvent(t *testing.T, s tether.Sink, read Reader) {
	b := NewBatch("agent-1", 1, 1)
	big := make([]byte, 0, 1<<20)
	big = append(big, `{"blob":"`...)
	big = append(big, bytes.Repeat([]byte("x"), 1<<20-20)...)
	big = append(big, `"}`...)
	b.Events[0].Payload = big
	write(t, s, b)
	recs := read(t)
	if len(recs) != 1 {
		t.Fatalf("read %d records, want 1", len(recs))
	}
	checkRecord(t, recs[0], b, 0)
}

func testCanceledContext(t *testing.T, s tether.Sink, read Reader) {
	write(t, s, NewBatch("agent-1", 1, 2))
	before := len(read(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Write(ctx, NewBatch("agent-1", 2, 3))
	if err == nil {
		t.Fatal("Write with a canceled context returned nil")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a canceled context: %v, want an error that wraps context.Canceled", err)
	}
	if after := len(read(t)); after != before {
		t.Fatalf("Write with a canceled context stored %d records", after-before)
	}
	// The sink still works.
	b := NewBatch("agent-1", 3, 1)
	write(t, s, b)
	recs := read(t)
	if len(recs) != before+1 {
		t.Fatalf("read %d records, want %d", len(recs), before+1)
	}
	checkRecord(t, recs[before], b, 0)
}

func testWriteAfterClose(t *testing.T, s tether.Sink, read Reader) {
	b := NewBatch("agent-1", 1, 2)
	write(t, s, b)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Write(context.Background(), NewBatch("agent-1", 2, 1)); err == nil {
		t.Fatal("Write after Close returned nil")
	}
	recs := read(t)
	if len(recs) != 2 {
		t.Fatalf("after Close: read %d records, want 2", len(recs))
	}
	for i, r := range recs {
		checkRecord(t, r, b, i)
	}
}

// checkAll checks that recs hold every event of batches exactly once, and
// that each agent's events come in the order they were written.
func checkAll(t *testing.T, recs []map[string]any, batches []*tether.Batch) {
	t.Helper()
	type ref struct {
		b *tether.Batch
		i int
	}
	want := map[string]ref{}
	order := map[string][]string{} // agent → event ids in write order
	total := 0
	for _, b := range batches {
		for i, ev := range b.Events {
			want[ev.ID] = ref{b, i}
			order[b.AgentID] = append(order[b.AgentID], ev.ID)
			total++
		}
	}
	if len(recs) != total {
		t.Errorf("read %d records, want %d", len(recs), total)
	}
	seen := map[string]bool{}
	got := map[string][]string{}
	for _, r := range recs {
		id, _ := r["event_id"].(string)
		w, ok := want[id]
		if !ok {
			t.Fatalf("unexpected record %v", r)
		}
		if seen[id] {
			t.Fatalf("event %s stored twice", id)
		}
		seen[id] = true
		checkRecord(t, r, w.b, w.i)
		got[w.b.AgentID] = append(got[w.b.AgentID], id)
	}
	for agent, ids := range order {
		if strings.Join(got[agent], " ") != strings.Join(ids, " ") {
			t.Errorf("agent %s: events out of order or missing:\n got %v\nwant %v", agent, got[agent], ids)
		}
	}
}

// checkRecord checks that r is the record of event i of b.
func checkRecord(t *testing.T, r map[string]any, b *tether.Batch, i int) {
	t.Helper()
	ev := b.Events[i]
	str := func(key, want string) {
		t.Helper()
		if got, ok := r[key].(string); !ok || got != want {
			t.Errorf("event %s: %s = %#v, want %q", ev.ID, key, r[key], want)
		}
	}
	str("agent_id", b.AgentID)
	str("agent_name", b.AgentName)
	str("event_id", ev.ID)
	str("module", ev.Module)
	str("type", ev.Type)
	str("collected_at", ev.CollectedAt.UTC().Format(time.RFC3339Nano))
	str("received_at", b.ReceivedAt.UTC().Format(time.RFC3339Nano))
	if got := fmt.Sprint(r["sequence"]); got != fmt.Sprint(b.Sequence) {
		t.Errorf("event %s: sequence = %v, want %d", ev.ID, r["sequence"], b.Sequence)
	}
	groups, _ := json.Marshal(r["groups"])
	wantGroups, _ := json.Marshal(b.Groups)
	if b.Groups == nil {
		wantGroups = []byte("[]")
	}
	if !bytes.Equal(groups, wantGroups) {
		t.Errorf("event %s: groups = %s, want %s", ev.ID, groups, wantGroups)
	}
	if b.Stateful {
		str("key", ev.Key)
		str("op", string(ev.Op))
	} else {
		for _, k := range []string{"key", "op"} {
			if _, ok := r[k]; ok {
				t.Errorf("stateless event %s has %q", ev.ID, k)
			}
		}
	}
	checkPayload(t, r, ev)
}

// checkPayload checks that a JSON payload is embedded as the same JSON
// value and that any other payload is in payload_b64, byte for byte.
func checkPayload(t *testing.T, r map[string]any, ev tether.Event) {
	t.Helper()
	p, hasPayload := r["payload"]
	b64, hasB64 := r["payload_b64"]
	if hasPayload == hasB64 {
		t.Errorf("event %s: want exactly one of payload and payload_b64, got %v", ev.ID, r)
		return
	}
	if hasB64 {
		if ev.Encoding == tether.EncodingJSON && isJSON(ev.Payload) {
			t.Errorf("event %s: valid JSON payload written as payload_b64", ev.ID)
		}
		s, _ := b64.(string)
		got, err := base64.StdEncoding.DecodeString(s)
		if err != nil || !bytes.Equal(got, ev.Payload) {
			t.Errorf("event %s: payload_b64 %q does not decode to %q", ev.ID, truncate(s), truncate(string(ev.Payload)))
		}
		return
	}
	if ev.Encoding != tether.EncodingJSON {
		t.Errorf("event %s: %s payload embedded as JSON", ev.ID, ev.Encoding)
		return
	}
	got, err1 := canonical(p)
	want, err2 := canonicalBytes(ev.Payload)
	if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
		t.Errorf("event %s: payload = %s, want %s (%v, %v)", ev.ID, truncate(string(got)), truncate(string(want)), err1, err2)
	}
}

func isJSON(b []byte) bool {
	_, err := canonicalBytes(b)
	return err == nil && json.Valid(b) && utf8.Valid(b)
}

// canonicalBytes re-encodes JSON with sorted keys and exact numbers.
func canonicalBytes(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return canonical(v)
}

func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
