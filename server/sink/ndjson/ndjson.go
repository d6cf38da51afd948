// Package ndjson is the one encoding of event batches as newline-delimited
// JSON that Tether's sinks write (rotated files, stdout): one JSON object per
// event, enriched with its batch's agent, groups, sequence and receive time.
//
// A line looks like this (wrapped here):
//
//	{"agent_id":"3f2c…","agent_name":"web-1","groups":["linux"],"sequence":42,
//	 "event_id":"e-1","module":"inventory","type":"package","encoding":"json",
//	 "collected_at":"2026-01-02T03:04:05.123456789Z","received_at":"…",
//	 "key":"openssl","op":"upsert","payload":{"version":"3.0.2"}}
//
// key and op are present for stateful events only. A payload whose encoding
// is json and whose bytes are valid UTF-8 JSON is embedded as a JSON value
// (compacted onto one line, otherwise unchanged); any other payload is
// written as "payload_b64", standard base64 with padding, so a line is always
// one valid JSON object whatever bytes the agent sent.
package ndjson

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether"
)

// Record is one line: an event with its batch's context. Field names are
// the file format; readers may decode lines into it.
type Record struct {
	AgentID     string   `json:"agent_id"`
	AgentName   string   `json:"agent_name"`
	Groups      []string `json:"groups"`
	Sequence    uint64   `json:"sequence"`
	EventID     string   `json:"event_id"`
	Module      string   `json:"module"`
	Type        string   `json:"type"`
	Encoding    string   `json:"encoding"`
	CollectedAt string   `json:"collected_at"`
	ReceivedAt  string   `json:"received_at"`
	// Key and Op are set for stateful events only.
	Key *string `json:"key,omitempty"`
	Op  *string `json:"op,omitempty"`
	// Exactly one of Payload and PayloadB64 is set.
	Payload    json.RawMessage `json:"payload,omitempty"`
	PayloadB64 *string         `json:"payload_b64,omitempty"`
}

// AppendBatch appends b's events to dst, one line each, and returns the
// extended slice. A batch without events appends nothing.
func AppendBatch(dst []byte, b *tether.Batch) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	groups := b.Groups
	if groups == nil {
		groups = []string{}
	}
	for i := range b.Events {
		ev := &b.Events[i]
		r := Record{
			AgentID:     b.AgentID,
			AgentName:   b.AgentName,
			Groups:      groups,
			Sequence:    b.Sequence,
			EventID:     ev.ID,
			Module:      ev.Module,
			Type:        ev.Type,
			Encoding:    string(ev.Encoding),
			CollectedAt: timestamp(ev.CollectedAt),
			ReceivedAt:  timestamp(b.ReceivedAt),
		}
		if b.Stateful {
			key, op := ev.Key, string(ev.Op)
			r.Key, r.Op = &key, &op
		}
		// Encode ends each object with a newline and compacts Payload,
		// which checks it is JSON on the way: a payload that is not is
		// written in base64 instead (Encode writes nothing when it fails).
		if ev.Encoding == tether.EncodingJSON && len(ev.Payload) > 0 && utf8.Valid(ev.Payload) {
			r.Payload = ev.Payload
			if enc.Encode(&r) == nil {
				continue
			}
			r.Payload = nil
		}
		s := base64.StdEncoding.EncodeToString(ev.Payload)
		r.PayloadB64 = &s
		if err := enc.Encode(&r); err != nil {
			return dst, fmt.Errorf("encode event %q: %w", ev.ID, err)
		}
	}
	return buf.Bytes(), nil
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// MaxLine is the longest line Decode accepts.
const MaxLine = 64 << 20

// Decode reads NDJSON lines from r into generic objects (numbers as
// json.Number, so sequences keep their precision). Empty lines are skipped;
// a line that is not one JSON object is an error.
func Decode(r io.Reader) ([]map[string]any, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	var out []map[string]any
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			return out, fmt.Errorf("line %d: %w", n, err)
		}
		if obj == nil || dec.More() {
			return out, fmt.Errorf("line %d: not one JSON object", n)
		}
		out = append(out, obj)
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	return out, nil
}
