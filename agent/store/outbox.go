package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tetherhq/tether/client"
	bolt "go.etcd.io/bbolt"
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

// Batch is a run of outbox records of one kind, under a batch sequence
// number that was persisted before the batch is handed out.
type Batch struct {
	Seq      uint64
	Stateful bool
	Records  []Record
}

// pendingBatch is the persisted form of the batch being sent.
type pendingBatch struct {
	Seq      uint64 `json:"seq"`
	Stateful bool   `json:"stateful"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
}

// Outbox is the durable queue of events waiting to be acknowledged by the
// server. Records keep the order they were appended in.
type Outbox struct {
	db   *bolt.DB
	n    atomic.Int64
	dead atomic.Uint64 // copy of keyDeadLetters
}

func (o *Outbox) load() error {
	return o.db.View(func(tx *bolt.Tx) error {
		o.n.Store(int64(tx.Bucket(bucketOutbox).Stats().KeyN))
		o.dead.Store(fromBe64(tx.Bucket(bucketMeta).Get(keyDeadLetters)))
		return nil
	})
}

// Len is the number of records waiting.
func (o *Outbox) Len() int { return int(o.n.Load()) }

// Append adds records at the end of the outbox, in one transaction.
func (o *Outbox) Append(recs ...Record) error { return o.AppendWith(recs, nil) }

// AppendWith adds records at the end of the outbox and, in the same
// transaction, sets the module keys in meta (a nil value deletes the key):
// either all of it is on disk afterwards or none of it. A module that reads
// a source keeps its position there (for example a file offset), so that a
// crash neither loses nor repeats what it read. Read the keys back with
// Meta. Records may be empty.
func (o *Outbox) AppendWith(recs []Record, meta map[string][]byte) error {
	if len(recs) == 0 && len(meta) == 0 {
		return nil
	}
	err := o.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketModuleMeta)
		for k, v := range meta {
			if k == "" {
				return errors.New("empty meta key")
			}
			var err error
			if v == nil {
				err = mb.Delete([]byte(k))
			} else {
				err = mb.Put([]byte(k), v)
			}
			if err != nil {
				return err
			}
		}
		b := tx.Bucket(bucketOutbox)
		for _, r := range recs {
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(be64(seq), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append to outbox: %w", err)
	}
	o.n.Add(int64(len(recs)))
	return nil
}

// Meta returns the value of a key set with AppendWith, or nil.
func (o *Outbox) Meta(key string) ([]byte, error) {
	var v []byte
	err := o.db.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketModuleMeta).Get([]byte(key)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox meta %q: %w", key, err)
	}
	return v, nil
}

// MetaPrefix returns the keys set with AppendWith that start with prefix,
// and their values.
func (o *Outbox) MetaPrefix(prefix string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketModuleMeta).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			out[string(k)] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox meta %q*: %w", prefix, err)
	}
	return out, nil
}

// Next returns the batch to send, or nil when the outbox is empty. When a
// batch was handed out and not acknowledged (or dropped) yet — even before
// a restart — the same batch with the same sequence number is returned.
// Otherwise the new batch is the longest run of at most max records of the
// same kind (stateless or stateful) at the head of the outbox, and it gets
// the next batch sequence number, persisted before Next returns.
func (o *Outbox) Next(max int) (*Batch, error) {
	if max < 1 {
		max = 1
	}
	var out *Batch
	err := o.db.Update(func(tx *bolt.Tx) error {
		meta, b := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox)
		if v := meta.Get(keyPendingBatch); v != nil {
			var p pendingBatch
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode pending batch: %w", err)
			}
			recs, err := readRange(b, p.First, p.Last)
			if err != nil {
				return err
			}
			if len(recs) > 0 {
				out = &Batch{Seq: p.Seq, Stateful: p.Stateful, Records: recs}
				return nil
			}
			if err := meta.Delete(keyPendingBatch); err != nil {
				return err
			}
		}
		var p pendingBatch
		c := b.Cursor()
		var recs []Record
		for k, v := c.First(); k != nil && len(recs) < max; k, v = c.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode outbox record %d: %w", fromBe64(k), err)
			}
			if len(recs) == 0 {
				p.First, p.Stateful = fromBe64(k), r.Stateful
			} else if r.Stateful != p.Stateful {
				break
			}
			p.Last = fromBe64(k)
			recs = append(recs, r)
		}
		if len(recs) == 0 {
			return nil
		}
		p.Seq = fromBe64(meta.Get(keyBatchSeq)) + 1
		if err := meta.Put(keyBatchSeq, be64(p.Seq)); err != nil {
			return err
		}
		v, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if err := meta.Put(keyPendingBatch, v); err != nil {
			return err
		}
		out = &Batch{Seq: p.Seq, Stateful: p.Stateful, Records: recs}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("next outbox batch: %w", err)
	}
	return out, nil
}

func readRange(b *bolt.Bucket, first, last uint64) ([]Record, error) {
	var recs []Record
	c := b.Cursor()
	for k, v := c.Seek(be64(first)); k != nil && fromBe64(k) <= last; k, v = c.Next() {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("decode outbox record %d: %w", fromBe64(k), err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// Ack deletes the pending batch's records: the server acknowledged them.
func (o *Outbox) Ack(batch *Batch) error { return o.remove(batch, false) }

// Drop deletes the pending batch's records without delivery (the server
// refused them as invalid) and counts it in DeadLetters.
func (o *Outbox) Drop(batch *Batch) error { return o.remove(batch, true) }

func (o *Outbox) remove(batch *Batch, drop bool) error {
	removed, dead := 0, uint64(0)
	err := o.db.Update(func(tx *bolt.Tx) error {
		removed, dead = 0, 0
		meta, b := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox)
		v := meta.Get(keyPendingBatch)
		if v == nil {
			return nil
		}
		var p pendingBatch
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("decode pending batch: %w", err)
		}
		if p.Seq != batch.Seq {
			return fmt.Errorf("batch %d is not the pending batch (%d)", batch.Seq, p.Seq)
		}
		// Collect first: deleting while iterating a bbolt cursor skips keys.
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(be64(p.First)); k != nil && fromBe64(k) <= p.Last; k, _ = c.Next() {
			keys = append(keys, k)
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
			removed++
		}
		if drop {
			dead = fromBe64(meta.Get(keyDeadLetters)) + 1
			if err := meta.Put(keyDeadLetters, be64(dead)); err != nil {
				return err
			}
		}
		return meta.Delete(keyPendingBatch)
	})
	if err != nil {
		return fmt.Errorf("remove batch %d from outbox: %w", batch.Seq, err)
	}
	o.n.Add(-int64(removed))
	if dead > 0 {
		o.dead.Store(dead)
	}
	return nil
}

// DeadLetters is how many batches were dropped as invalid, ever.
func (o *Outbox) DeadLetters() uint64 { return o.dead.Load() }

// LastSeq is the last batch sequence number handed out.
func (o *Outbox) LastSeq() uint64 {
	var n uint64
	_ = o.db.View(func(tx *bolt.Tx) error {
		n = fromBe64(tx.Bucket(bucketMeta).Get(keyBatchSeq))
		return nil
	})
	return n
}
