package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tetherhq/tether/client"
)

// Record is one event waiting in the outbox: a stateless event, or a state
// change when Stateful is set.
type Record struct {
	Stateful bool         `json:"stateful,omitempty"`
	Event    client.Event `json:"event"`
	// Key and Delete are those of a state change.
	Key    string `json:"key,omitempty"`
	Delete bool   `json:"delete,omitempty"`
}

// On disk, an outbox record is (all integers unsigned varints unless said
// otherwise):
//
//	version  1 byte, recordV1
//	flags    1 byte: flagStateful, flagDelete, flagProtobuf, flagTime
//	id, module, type, key   each a length then that many bytes
//	collected_at            if flagTime: Unix seconds (a zig-zag varint), then
//	                        nanoseconds (< 1e9)
//	payload                 a length then that many bytes; nothing follows
//
// Records written before this format are JSON objects (they start with
// '{') and are still read.
const (
	recordV1 = 1

	flagStateful = 1 << 0
	flagDelete   = 1 << 1
	flagProtobuf = 1 << 2
	flagTime     = 1 << 3
	knownFlags   = flagStateful | flagDelete | flagProtobuf | flagTime

	// maxRecordField bounds each length read from disk, so that a corrupt
	// length is refused before anything is allocated for it.
	maxRecordField = 64 << 20
)

// encodeRecord returns the on-disk form of r.
func encodeRecord(r Record) []byte {
	e := r.Event
	n := 2 + 5*binary.MaxVarintLen64 + len(e.ID) + len(e.Module) + len(e.Type) + len(r.Key) + len(e.Payload) + binary.MaxVarintLen64
	b := make([]byte, 0, n)
	var flags byte
	if r.Stateful {
		flags |= flagStateful
	}
	if r.Delete {
		flags |= flagDelete
	}
	if e.Protobuf {
		flags |= flagProtobuf
	}
	if !e.CollectedAt.IsZero() {
		flags |= flagTime
	}
	b = append(b, recordV1, flags)
	for _, s := range []string{e.ID, e.Module, e.Type, r.Key} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if flags&flagTime != 0 {
		b = binary.AppendVarint(b, e.CollectedAt.Unix())
		b = binary.AppendUvarint(b, uint64(e.CollectedAt.Nanosecond()))
	}
	b = binary.AppendUvarint(b, uint64(len(e.Payload)))
	return append(b, e.Payload...)
}

var errCorruptRecord = errors.New("corrupt outbox record")

// decodeRecord reads a record written by encodeRecord, or the JSON form of
// earlier versions. It never panics: bytes it cannot read are an error.
func decodeRecord(v []byte) (Record, error) {
	var r Record
	if len(v) > 0 && v[0] == '{' {
		if err := json.Unmarshal(v, &r); err != nil {
			return Record{}, fmt.Errorf("%w: %v", errCorruptRecord, err)
		}
		return r, nil
	}
	if len(v) < 2 || v[0] != recordV1 {
		return Record{}, fmt.Errorf("%w: unknown format", errCorruptRecord)
	}
	flags := v[1]
	if flags&^knownFlags != 0 {
		return Record{}, fmt.Errorf("%w: unknown flags %#x", errCorruptRecord, flags)
	}
	d := decoder{b: v[2:]}
	r.Stateful, r.Delete, r.Event.Protobuf = flags&flagStateful != 0, flags&flagDelete != 0, flags&flagProtobuf != 0
	r.Event.ID = string(d.field())
	r.Event.Module = string(d.field())
	r.Event.Type = string(d.field())
	r.Key = string(d.field())
	if flags&flagTime != 0 {
		sec, nsec := d.varint(), d.uvarint()
		if nsec >= 1e9 {
			d.fail("bad time")
		}
		r.Event.CollectedAt = time.Unix(sec, int64(nsec)).UTC()
	}
	if p := d.field(); len(p) > 0 {
		r.Event.Payload = append([]byte(nil), p...)
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the payload", errCorruptRecord, len(d.b))
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

// recordHead is what the outbox's bookkeeping needs of a record: its kind
// and, for a state change, the document it is about.
type recordHead struct {
	stateful bool
	stateKey string // module NUL key, for a state change
}

// decodeHead reads only the kind and the state key of a record.
func decodeHead(v []byte) (recordHead, error) {
	if len(v) > 0 && v[0] == '{' {
		r, err := decodeRecord(v)
		if err != nil {
			return recordHead{}, err
		}
		return headOf(r), nil
	}
	if len(v) < 2 || v[0] != recordV1 || v[1]&^knownFlags != 0 {
		return recordHead{}, fmt.Errorf("%w: unknown format", errCorruptRecord)
	}
	h := recordHead{stateful: v[1]&flagStateful != 0}
	if !h.stateful {
		return h, nil
	}
	d := decoder{b: v[2:]}
	d.field() // id
	module := d.field()
	d.field() // type
	key := d.field()
	if d.err != nil {
		return recordHead{}, d.err
	}
	h.stateKey = string(module) + "\x00" + string(key)
	return h, nil
}

func headOf(r Record) recordHead {
	if !r.Stateful {
		return recordHead{}
	}
	return recordHead{stateful: true, stateKey: r.Event.Module + "\x00" + r.Key}
}

// decoder reads varint-framed fields; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) field() []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > maxRecordField || n > uint64(len(d.b)-k) {
		d.fail("bad field length")
		return nil
	}
	f := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return f
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Varint(d.b)
	if k <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errCorruptRecord, what)
	}
}
