package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/tetherhq/tether/client"
	bolt "go.etcd.io/bbolt"
)

// Defaults of the outbox's limits (SetLimits).
const (
	// DefaultOutboxMaxBytes bounds the records the outbox holds.
	DefaultOutboxMaxBytes = 1 << 30
	// DefaultFsyncWindow is the longest an Append waits for other appends
	// to share its commit.
	DefaultFsyncWindow = 100 * time.Millisecond
)

const (
	// groupBytes: a group of appends this large is committed without
	// waiting for the rest of the window.
	groupBytes = 4 << 20
	// maxQueued: AppendAsync blocks while this much waits for a commit.
	maxQueued = 4 * groupBytes
	// dropReportEvery is how often, at most, the outbox reports the
	// events it dropped with an "events_dropped" event.
	dropReportEvery = time.Second
	// recordOverhead is counted for every record besides its encoded
	// value: its key in the outbox bucket.
	recordOverhead = 8
	// reportReserve is more than the stored size of an events_dropped
	// event.
	reportReserve = 512
)

// ErrClosed is returned by Append once the store is closed.
var ErrClosed = errors.New("outbox closed")

// Batch is a run of outbox records of one kind, under a batch sequence
// number that was persisted before the batch is handed out.
type Batch struct {
	Seq      uint64
	Stateful bool
	Records  []Record
	// Bytes is the records' stored size.
	Bytes int
}

// pendingBatch is the persisted form of the batch being sent.
type pendingBatch struct {
	Seq      uint64 `json:"seq"`
	Stateful bool   `json:"stateful"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
}

// OutboxStats are the outbox's counters.
type OutboxStats struct {
	// Records and Bytes are what the outbox holds now: records and their
	// stored size (the bound MaxBytes applies to Bytes).
	Records  int
	Bytes    int64
	MaxBytes int64
	// Dropped counts the stateless events dropped, ever, because the
	// outbox was full; Compacted the state changes deleted then because a
	// newer change of the same (module, key) was waiting.
	Dropped   uint64
	Compacted uint64
	// Unreadable counts records found corrupt on disk and deleted.
	Unreadable uint64
	// DeadLetters counts batches the server refused as invalid.
	DeadLetters uint64
}

// Outbox is the durable queue of events waiting to be acknowledged by the
// server. Records keep the order they were appended in.
//
// Appends are group-committed: the appends that arrive while a commit is
// under way, or within the fsync window after the previous commit started,
// share one bbolt transaction and so one fsync. Append returns once its
// records are on disk; under a steady flow the disk sees at most one commit
// per window.
//
// The outbox is bounded (SetLimits): when the records would pass MaxBytes,
// a commit first deletes the state changes that a newer change of the same
// (module, key) replaces, then drops the oldest stateless events; state
// changes are never dropped. Drops are counted, and reported by a stateless
// event of module "agent", type "events_dropped". The batch being sent is
// never touched.
type Outbox struct {
	db *bolt.DB

	maxBytes atomic.Int64
	window   atomic.Int64 // time.Duration

	mu      sync.Mutex
	queue   []*appendReq
	queued  int
	drained *sync.Cond // the committer took the queue, or the outbox closed
	closed  bool
	wake    chan struct{} // an append was queued, or a shrink is due
	full    chan struct{} // the queue passed groupBytes
	stop    chan struct{}
	stopped chan struct{}

	appended chan struct{} // records were committed (for the sender)

	n, bytes                      atomic.Int64
	dead, dropped, compacted, bad atomic.Uint64
	hasPending, unreported        atomic.Bool
	pubMu                         sync.Mutex
	pubTx                         int

	// Owned by the committer goroutine.
	lastStart  time.Time
	lastReport time.Time
}

type appendReq struct {
	recs  [][]byte
	heads []recordHead
	size  int
	meta  map[string][]byte
	done  chan error
}

func newOutbox(db *bolt.DB) *Outbox {
	o := &Outbox{
		db:       db,
		wake:     make(chan struct{}, 1),
		full:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
		appended: make(chan struct{}, 1),
	}
	o.drained = sync.NewCond(&o.mu)
	o.maxBytes.Store(DefaultOutboxMaxBytes)
	o.window.Store(int64(DefaultFsyncWindow))
	return o
}

// outboxState is the outbox's persisted bookkeeping, read and written in
// every transaction that changes the outbox.
type outboxState struct {
	records, bytes                           uint64
	dropped, reported, compacted, unreadable uint64
	pend                                     *pendingBatch
	// txid is the transaction that read or wrote the state.
	txid int
}

var (
	keyOutboxRecords = []byte("outbox_records")
	keyOutboxBytes   = []byte("outbox_bytes")
	keyDropped       = []byte("dropped_events")
	keyDropReported  = []byte("dropped_reported")
	keyCompacted     = []byte("compacted_events")
	keyUnreadable    = []byte("unreadable_records")
)

func readState(tx *bolt.Tx) (outboxState, error) {
	meta := tx.Bucket(bucketMeta)
	s := outboxState{
		txid:       tx.ID(),
		records:    fromBe64(meta.Get(keyOutboxRecords)),
		bytes:      fromBe64(meta.Get(keyOutboxBytes)),
		dropped:    fromBe64(meta.Get(keyDropped)),
		reported:   fromBe64(meta.Get(keyDropReported)),
		compacted:  fromBe64(meta.Get(keyCompacted)),
		unreadable: fromBe64(meta.Get(keyUnreadable)),
	}
	if v := meta.Get(keyPendingBatch); v != nil {
		var p pendingBatch
		if err := json.Unmarshal(v, &p); err != nil {
			return s, fmt.Errorf("decode pending batch: %w", err)
		}
		s.pend = &p
	}
	return s, nil
}

func (s *outboxState) write(meta *bolt.Bucket) error {
	for _, kv := range []struct {
		k []byte
		v uint64
	}{
		{keyOutboxRecords, s.records}, {keyOutboxBytes, s.bytes}, {keyDropped, s.dropped},
		{keyDropReported, s.reported}, {keyCompacted, s.compacted}, {keyUnreadable, s.unreadable},
	} {
		if err := meta.Put(kv.k, be64(kv.v)); err != nil {
			return err
		}
	}
	if s.pend == nil {
		return meta.Delete(keyPendingBatch)
	}
	v, err := json.Marshal(s.pend)
	if err != nil {
		return err
	}
	return meta.Put(keyPendingBatch, v)
}

func (s *outboxState) inPending(seq uint64) bool {
	return s.pend != nil && seq >= s.pend.First && seq <= s.pend.Last
}

// publish copies the persisted counters to the in-memory ones; call it
// after the transaction that produced s committed. A state older than the
// one published last is ignored.
func (o *Outbox) publish(s outboxState) {
	o.pubMu.Lock()
	defer o.pubMu.Unlock()
	if s.txid < o.pubTx {
		return
	}
	o.pubTx = s.txid
	o.unreported.Store(s.dropped > s.reported)
	o.n.Store(int64(s.records))
	o.bytes.Store(int64(s.bytes))
	o.dropped.Store(s.dropped)
	o.compacted.Store(s.compacted)
	o.bad.Store(s.unreadable)
	o.hasPending.Store(s.pend != nil)
}

// load reads the counters, computing them (and the index of state keys)
// once for an outbox written by a version that did not keep them.
func (o *Outbox) load() error {
	var s outboxState
	err := o.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var err error
		if s, err = readState(tx); err != nil {
			return err
		}
		o.dead.Store(fromBe64(meta.Get(keyDeadLetters)))
		if meta.Get(keyOutboxBytes) != nil {
			return nil
		}
		s.records, s.bytes = 0, 0
		b, keys, sup := tx.Bucket(bucketOutbox), tx.Bucket(bucketStateKeys), tx.Bucket(bucketSuperseded)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			s.records++
			s.bytes += uint64(len(v) + recordOverhead)
			h, err := decodeHead(v)
			if err != nil || !h.stateful {
				continue // an unreadable record is dealt with when it is read
			}
			if err := index(keys, sup, &s, h.stateKey, fromBe64(k)); err != nil {
				return err
			}
		}
		return s.write(meta)
	})
	if err != nil {
		return fmt.Errorf("load outbox: %w", err)
	}
	o.publish(s)
	go o.run()
	if s.dropped > s.reported {
		o.signal(o.wake) // report drops not reported before a stop
	}
	return nil
}

// index makes seq the latest change of stateKey and marks the one it
// replaces, if any and not being sent, as superseded.
func index(keys, sup *bolt.Bucket, s *outboxState, stateKey string, seq uint64) error {
	k := []byte(stateKey)
	if old := keys.Get(k); old != nil && !s.inPending(fromBe64(old)) {
		if err := sup.Put(bytes.Clone(old), nil); err != nil {
			return err
		}
	}
	return keys.Put(k, be64(seq))
}

// SetLimits sets the outbox's bound in bytes and its fsync window (zero:
// commit each group as soon as the previous commit ends). Values below
// zero keep the current ones. A bound lower than what is held applies at
// once.
func (o *Outbox) SetLimits(maxBytes int64, window time.Duration) {
	if maxBytes > 0 {
		o.maxBytes.Store(maxBytes)
		if o.bytes.Load() > maxBytes {
			o.signal(o.wake)
		}
	}
	if window >= 0 {
		o.window.Store(int64(window))
	}
}

// Len is the number of records waiting.
func (o *Outbox) Len() int { return int(o.n.Load()) }

// Stats returns the outbox's counters.
func (o *Outbox) Stats() OutboxStats {
	return OutboxStats{
		Records: o.Len(), Bytes: o.bytes.Load(), MaxBytes: o.maxBytes.Load(),
		Dropped: o.dropped.Load(), Compacted: o.compacted.Load(), Unreadable: o.bad.Load(),
		DeadLetters: o.dead.Load(),
	}
}

// Pending reports whether a batch was handed out by Next and is neither
// acknowledged nor dropped yet.
func (o *Outbox) Pending() bool { return o.hasPending.Load() }

// Appended is signalled after records were committed.
func (o *Outbox) Appended() <-chan struct{} { return o.appended }

func (o *Outbox) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Append adds records at the end of the outbox. It returns once they are
// on disk (fsynced), which may take up to the fsync window: a producer of
// many small records should append them together (or from more than one
// goroutine) rather than one call per record at a time.
func (o *Outbox) Append(recs ...Record) error { return o.AppendWith(recs, nil) }

// AppendWith adds records at the end of the outbox and, in the same
// transaction, sets the module keys in meta (a nil value deletes the key):
// either all of it is on disk afterwards or none of it. A module that reads
// a source keeps its position there (for example a file offset), so that a
// crash neither loses nor repeats what it read. Read the keys back with
// Meta. Records may be empty. Like Append, it returns once on disk.
func (o *Outbox) AppendWith(recs []Record, meta map[string][]byte) error {
	return <-o.AppendAsync(recs, meta)
}

// AppendAsync queues records and meta keys for the next group commit, like
// AppendWith, but returns without waiting for the disk; the channel
// receives the commit's outcome (nil once on disk). It blocks only while
// more than maxQueued bytes wait for a commit. Appends keep the order they
// were queued in.
//
// A crash before the commit loses the queued records together with their
// meta keys: a module that keeps its read position in meta reads them
// again after a restart, so nothing is lost; a module that cannot read its
// source again should use AppendWith.
func (o *Outbox) AppendAsync(recs []Record, meta map[string][]byte) <-chan error {
	done := make(chan error, 1)
	if len(recs) == 0 && len(meta) == 0 {
		done <- nil
		return done
	}
	for k := range meta {
		if k == "" || len(k) > bolt.MaxKeySize {
			done <- fmt.Errorf("append to outbox: meta key of %d bytes: want 1 to %d", len(k), bolt.MaxKeySize)
			return done
		}
	}
	r := &appendReq{meta: meta, done: done, recs: make([][]byte, len(recs)), heads: make([]recordHead, len(recs))}
	for i, rec := range recs {
		r.recs[i] = encodeRecord(rec)
		r.heads[i] = headOf(rec)
		r.size += len(r.recs[i]) + recordOverhead
	}
	o.mu.Lock()
	for o.queued >= maxQueued && !o.closed {
		o.drained.Wait()
	}
	if o.closed {
		o.mu.Unlock()
		done <- ErrClosed
		return done
	}
	o.queue = append(o.queue, r)
	o.queued += r.size
	big := o.queued >= groupBytes
	o.mu.Unlock()
	o.signal(o.wake)
	if big {
		o.signal(o.full)
	}
	return done
}

// run is the committer: it commits queued appends in groups until the
// outbox is closed, then commits what is left.
func (o *Outbox) run() {
	defer close(o.stopped)
	var report <-chan time.Time // a drop report is due
	for {
		stopping := false
		select {
		case <-o.wake:
		case <-report:
			report = nil
		case <-o.stop:
			stopping = true
		}
		if w := time.Duration(o.window.Load()); !stopping && w > 0 {
			if wait := time.Until(o.lastStart.Add(w)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-o.full:
				case <-o.stop:
					stopping = true
				}
				t.Stop()
			}
		}
		select {
		case <-o.full: // consumed with this group
		default:
		}
		o.mu.Lock()
		reqs := o.queue
		o.queue, o.queued = nil, 0
		o.drained.Broadcast()
		o.mu.Unlock()
		now := time.Now()
		due := len(reqs) > 0 || o.bytes.Load() > o.maxBytes.Load() ||
			(o.unreported.Load() && now.Sub(o.lastReport) >= dropReportEvery)
		if !due {
			if stopping {
				return
			}
			continue
		}
		o.lastStart = now
		s, reported, err := o.commit(reqs, now)
		if err == nil {
			o.publish(s)
			if reported {
				o.lastReport = now
			}
			if s.dropped > s.reported && report == nil {
				report = time.After(time.Until(o.lastReport.Add(dropReportEvery)))
			}
		} else {
			err = fmt.Errorf("append to outbox: %w", err)
		}
		for _, r := range reqs {
			r.done <- err
		}
		if err == nil && s.records > 0 && (len(reqs) > 0 || reported) {
			o.signal(o.appended)
		}
		if stopping {
			return
		}
	}
}

// commit writes a group of appends in one transaction, enforces the bound
// and reports drops when one is due.
func (o *Outbox) commit(reqs []*appendReq, now time.Time) (s outboxState, reported bool, err error) {
	maxBytes := uint64(o.maxBytes.Load())
	err = o.db.Update(func(tx *bolt.Tx) error {
		reported = false
		meta := tx.Bucket(bucketMeta)
		var err error
		if s, err = readState(tx); err != nil {
			return err
		}
		b, keys, sup := tx.Bucket(bucketOutbox), tx.Bucket(bucketStateKeys), tx.Bucket(bucketSuperseded)
		b.FillPercent = 0.95 // keys only grow: keep pages full
		mb := tx.Bucket(bucketModuleMeta)
		put := func(v []byte, h recordHead) error {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(be64(seq), v); err != nil {
				return err
			}
			s.records++
			s.bytes += uint64(len(v) + recordOverhead)
			if h.stateful {
				return index(keys, sup, &s, h.stateKey, seq)
			}
			return nil
		}
		for _, r := range reqs {
			for k, v := range r.meta {
				if v == nil {
					err = mb.Delete([]byte(k))
				} else {
					err = mb.Put([]byte(k), v)
				}
				if err != nil {
					return err
				}
			}
			for i, v := range r.recs {
				if err := put(v, r.heads[i]); err != nil {
					return err
				}
			}
		}
		if s.bytes > maxBytes {
			// Leave room for the drop report, so that reporting does not
			// itself make the next commit drop an event.
			if err := shrink(tx, &s, maxBytes-min(maxBytes/2, reportReserve)); err != nil {
				return err
			}
		}
		if s.dropped > s.reported && now.Sub(o.lastReport) >= dropReportEvery {
			rec, err := dropReport(s.dropped-s.reported, s.dropped, maxBytes, now)
			if err != nil {
				return err
			}
			if err := put(encodeRecord(rec), recordHead{}); err != nil {
				return err
			}
			s.reported, reported = s.dropped, true
		}
		return s.write(meta)
	})
	return s, reported, err
}

// dropReport is the "events_dropped" event.
func dropReport(n, total, maxBytes uint64, now time.Time) (Record, error) {
	payload, err := json.Marshal(map[string]any{
		"dropped":          n,
		"total":            total,
		"reason":           "outbox full",
		"outbox_max_bytes": maxBytes,
	})
	if err != nil {
		return Record{}, err
	}
	return Record{Event: client.Event{ID: uuid.NewString(), Module: "agent", Type: "events_dropped", CollectedAt: now.UTC(), Payload: payload}}, nil
}

// shrink brings the outbox under maxBytes: first it deletes superseded
// state changes, then the oldest stateless events. The pending batch is
// left alone; state changes are never dropped.
func shrink(tx *bolt.Tx, s *outboxState, maxBytes uint64) error {
	b, sup := tx.Bucket(bucketOutbox), tx.Bucket(bucketSuperseded)
	var del [][]byte
	c := sup.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if !s.inPending(fromBe64(k)) {
			del = append(del, bytes.Clone(k))
		}
	}
	for _, k := range del {
		if v := b.Get(k); v != nil {
			s.bytes -= uint64(len(v) + recordOverhead)
			s.records--
			s.compacted++
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if err := sup.Delete(k); err != nil {
			return err
		}
	}
	if s.bytes <= maxBytes {
		return nil
	}
	del = del[:0]
	var freed uint64
	c = b.Cursor()
	for k, v := c.First(); k != nil && s.bytes-freed > maxBytes; k, v = c.Next() {
		if s.inPending(fromBe64(k)) {
			continue
		}
		h, err := decodeHead(v)
		if err == nil && h.stateful {
			continue
		}
		del = append(del, bytes.Clone(k))
		freed += uint64(len(v) + recordOverhead)
	}
	for _, k := range del {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	s.bytes -= freed
	s.records -= uint64(len(del))
	s.dropped += uint64(len(del))
	return nil
}

// close commits what is queued and stops the committer.
func (o *Outbox) close() {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	o.drained.Broadcast()
	o.mu.Unlock()
	close(o.stop)
	<-o.stopped
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
// Otherwise the new batch is the longest run of records of the same kind
// (stateless or stateful) at the head of the outbox, of at most maxEvents
// records and maxBytes stored bytes (but at least one record), and it gets
// the next batch sequence number, persisted before Next returns. Records
// found unreadable are deleted and counted (Stats.Unreadable).
func (o *Outbox) Next(maxEvents, maxBytes int) (*Batch, error) {
	maxEvents = max(maxEvents, 1)
	var out *Batch
	var s outboxState
	err := o.db.Update(func(tx *bolt.Tx) error {
		out = nil
		meta, b, keys, sup := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox), tx.Bucket(bucketStateKeys), tx.Bucket(bucketSuperseded)
		var err error
		if s, err = readState(tx); err != nil {
			return err
		}
		var bad [][]byte
		if p := s.pend; p != nil {
			batch := &Batch{Seq: p.Seq, Stateful: p.Stateful}
			c := b.Cursor()
			for k, v := c.Seek(be64(p.First)); k != nil && fromBe64(k) <= p.Last; k, v = c.Next() {
				r, err := decodeRecord(v)
				if err != nil {
					bad = append(bad, bytes.Clone(k))
					continue
				}
				batch.Records = append(batch.Records, r)
				batch.Bytes += len(v) + recordOverhead
			}
			if err := deleteUnreadable(b, keys, sup, &s, bad); err != nil {
				return err
			}
			if len(batch.Records) > 0 {
				out = batch
				return s.write(meta)
			}
			s.pend = nil
			bad = bad[:0]
		}
		p := pendingBatch{}
		batch := &Batch{}
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(batch.Records) < maxEvents; k, v = c.Next() {
			r, err := decodeRecord(v)
			if err != nil {
				bad = append(bad, bytes.Clone(k))
				continue
			}
			size := len(v) + recordOverhead
			if len(batch.Records) == 0 {
				p.First, p.Stateful = fromBe64(k), r.Stateful
			} else if r.Stateful != p.Stateful || batch.Bytes+size > maxBytes {
				break
			}
			p.Last = fromBe64(k)
			batch.Records = append(batch.Records, r)
			batch.Bytes += size
		}
		if err := deleteUnreadable(b, keys, sup, &s, bad); err != nil {
			return err
		}
		if len(batch.Records) > 0 {
			p.Seq = fromBe64(meta.Get(keyBatchSeq)) + 1
			if err := meta.Put(keyBatchSeq, be64(p.Seq)); err != nil {
				return err
			}
			s.pend = &p
			batch.Seq, batch.Stateful = p.Seq, p.Stateful
			out = batch
		}
		return s.write(meta)
	})
	if err != nil {
		return nil, fmt.Errorf("next outbox batch: %w", err)
	}
	o.publish(s)
	return out, nil
}

// deleteUnreadable deletes records that cannot be decoded: they can never
// be sent, and left in place they would stop the queue.
func deleteUnreadable(b, keys, sup *bolt.Bucket, s *outboxState, ks [][]byte) error {
	for _, k := range ks {
		if err := deleteRecord(b, keys, sup, s, k); err != nil {
			return err
		}
		s.unreadable++
	}
	return nil
}

// deleteRecord deletes one record and its bookkeeping.
func deleteRecord(b, keys, sup *bolt.Bucket, s *outboxState, k []byte) error {
	v := b.Get(k)
	if v == nil {
		return nil
	}
	if h, err := decodeHead(v); err == nil && h.stateful {
		if cur := keys.Get([]byte(h.stateKey)); bytes.Equal(cur, k) {
			if err := keys.Delete([]byte(h.stateKey)); err != nil {
				return err
			}
		}
	}
	s.records--
	s.bytes -= uint64(len(v) + recordOverhead)
	if err := sup.Delete(k); err != nil {
		return err
	}
	return b.Delete(k)
}

// Ack deletes the pending batch's records: the server acknowledged them.
func (o *Outbox) Ack(batch *Batch) error { return o.remove(batch, false) }

// Drop deletes the pending batch's records without delivery (the server
// refused them as invalid) and counts it in DeadLetters.
func (o *Outbox) Drop(batch *Batch) error { return o.remove(batch, true) }

func (o *Outbox) remove(batch *Batch, drop bool) error {
	var s outboxState
	dead := uint64(0)
	err := o.db.Update(func(tx *bolt.Tx) error {
		dead = 0
		meta, b, keys, sup := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox), tx.Bucket(bucketStateKeys), tx.Bucket(bucketSuperseded)
		var err error
		if s, err = readState(tx); err != nil {
			return err
		}
		p := s.pend
		if p == nil {
			return nil
		}
		if p.Seq != batch.Seq {
			return fmt.Errorf("batch %d is not the pending batch (%d)", batch.Seq, p.Seq)
		}
		// Collect first: deleting while iterating a bbolt cursor skips keys.
		var ks [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(be64(p.First)); k != nil && fromBe64(k) <= p.Last; k, _ = c.Next() {
			ks = append(ks, bytes.Clone(k))
		}
		for _, k := range ks {
			if err := deleteRecord(b, keys, sup, &s, k); err != nil {
				return err
			}
		}
		if drop {
			dead = fromBe64(meta.Get(keyDeadLetters)) + 1
			if err := meta.Put(keyDeadLetters, be64(dead)); err != nil {
				return err
			}
		}
		s.pend = nil
		return s.write(meta)
	})
	if err != nil {
		return fmt.Errorf("remove batch %d from outbox: %w", batch.Seq, err)
	}
	o.publish(s)
	if dead > 0 {
		o.dead.Store(dead)
	}
	return nil
}

// LastSeq is the last batch sequence number handed out.
func (o *Outbox) LastSeq() uint64 {
	var n uint64
	_ = o.db.View(func(tx *bolt.Tx) error {
		n = fromBe64(tx.Bucket(bucketMeta).Get(keyBatchSeq))
		return nil
	})
	return n
}
