package store_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
	bolt "go.etcd.io/bbolt"
)

func stateless(id string) store.Record {
	return store.Record{Event: client.Event{ID: id, Module: "m", Type: "t", CollectedAt: time.Unix(1700000000, 0).UTC(), Payload: []byte(`{"x":"` + fmt.Sprintf("%0100d", 0) + `"}`)}}
}

func state(id, key string) store.Record {
	return store.Record{Stateful: true, Key: key, Event: client.Event{ID: id, Module: "inv", Type: "t", CollectedAt: time.Unix(1700000000, 0).UTC(), Payload: []byte(`{"v":"` + id + `"}`)}}
}

// drain takes every batch out of the outbox, acknowledging each, and
// returns the event ids in order.
func drain(t *testing.T, o *store.Outbox) []string {
	t.Helper()
	var ids []string
	for {
		b, err := o.Next(1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			return ids
		}
		for _, r := range b.Records {
			ids = append(ids, r.Event.ID)
		}
		if err := o.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOutboxGroupCommit appends from many goroutines at once: every record
// is stored once, each goroutine's records in its own order, and the
// appends shared far fewer commits than there were calls.
func TestOutboxGroupCommit(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	db.Outbox.SetLimits(-1, 20*time.Millisecond)
	const writers, each = 20, 25
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := db.Outbox.Append(stateless(fmt.Sprintf("%d-%d", w, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	ids := drain(t, db.Outbox)
	if len(ids) != writers*each {
		t.Fatalf("%d records, want %d", len(ids), writers*each)
	}
	next := make([]int, writers)
	for _, id := range ids {
		var w, i int
		fmt.Sscanf(id, "%d-%d", &w, &i)
		if i != next[w] {
			t.Fatalf("writer %d: record %d after %d", w, i, next[w]-1)
		}
		next[w]++
	}
	// 500 appends with one commit each would take at least 25 windows
	// per writer; grouped, each writer waits about one window per append.
	t.Logf("%d appends from %d goroutines in %v", writers*each, writers, elapsed)
}

// TestOutboxAppendAsync: appends queued without waiting keep their order
// and land together with their meta keys.
func TestOutboxAppendAsync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	var last <-chan error
	for i := range 100 {
		last = db.Outbox.AppendAsync([]store.Record{stateless(strconv.Itoa(i))}, map[string][]byte{"offset": []byte(strconv.Itoa(i))})
	}
	if err := <-last; err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Outbox.Meta("offset"); string(v) != "99" {
		t.Fatalf("offset = %q", v)
	}
	ids := drain(t, db.Outbox)
	for i, id := range ids {
		if id != strconv.Itoa(i) {
			t.Fatalf("ids = %v", ids)
		}
	}
	if len(ids) != 100 {
		t.Fatalf("%d ids", len(ids))
	}
	db.Close()
}

func TestOutboxAppendReturnsWhenDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	db.Outbox.SetLimits(-1, time.Second) // a long window: the first append still commits at once
	start := time.Now()
	if err := db.Outbox.Append(stateless("a")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Fatalf("a lone append waited %v", d)
	}
	done := make(chan error)
	go func() { done <- db.Outbox.Append(stateless("b")) }()
	select {
	case err := <-done:
		t.Fatalf("second append returned before its window: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	db.Close() // commits what is queued
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := db.Outbox.Append(stateless("c")); err == nil {
		t.Fatal("append after close succeeded")
	}
	db = open(t, path)
	defer db.Close()
	if ids := drain(t, db.Outbox); !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("ids = %v", ids)
	}
}

// TestOutboxFullDropsOldestStateless fills a small outbox: the oldest
// stateless events go first and are counted, state changes stay (compacted
// to the latest per key), the batch being sent is untouched, and an
// events_dropped event says how many were dropped.
func TestOutboxFullDropsOldestStateless(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	o := db.Outbox
	o.SetLimits(-1, 0)
	size := func(recs ...store.Record) int64 {
		before := o.Stats().Bytes
		if err := o.Append(recs...); err != nil {
			t.Fatal(err)
		}
		return o.Stats().Bytes - before
	}
	one := size(stateless("s0"))
	// s0 goes out in a batch that is not acknowledged yet.
	b, err := o.Next(1, 1<<20)
	if err != nil || b.Records[0].Event.ID != "s0" {
		t.Fatalf("batch %+v %v", b, err)
	}
	size(state("k1-a", "k1"), state("k2-a", "k2"))
	for i := 1; i < 10; i++ {
		size(stateless("s" + strconv.Itoa(i)))
	}
	size(state("k1-b", "k1"))
	st := o.Stats()
	if st.Records != 13 || st.Dropped != 0 {
		t.Fatalf("stats before the bound: %+v", st)
	}
	// Room for about 8 stateless events: k1-a is compacted away first,
	// then the oldest stateless ones (not s0, being sent) are dropped.
	o.SetLimits(8*one, -1)
	if err := o.Append(stateless("s10")); err != nil {
		t.Fatal(err)
	}
	st = o.Stats()
	if st.Bytes > 8*one+one || st.Compacted != 1 || st.Dropped == 0 {
		t.Fatalf("stats after the bound: %+v (one record is %d bytes)", st, one)
	}
	dropped := st.Dropped
	// The pending batch is intact and acknowledged as usual.
	b2, _ := o.Next(10, 1<<20)
	if b2.Seq != b.Seq || len(b2.Records) != 1 || b2.Records[0].Event.ID != "s0" {
		t.Fatalf("pending batch after the drop: %+v", b2)
	}
	if err := o.Ack(b2); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var report map[string]any
	for {
		b, err := o.Next(1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			break
		}
		for _, r := range b.Records {
			if r.Event.Type == "events_dropped" {
				if err := json.Unmarshal(r.Event.Payload, &report); err != nil {
					t.Fatal(err)
				}
				continue
			}
			ids = append(ids, r.Event.ID)
		}
		o.Ack(b)
	}
	// k2-a and k1-b stay, in order; the oldest stateless events went.
	var want []string
	want = append(want, "k2-a")
	for i := 1 + int(dropped); i < 10; i++ {
		want = append(want, "s"+strconv.Itoa(i))
	}
	want = append(want, "k1-b", "s10")
	if !slices.Equal(ids, want) {
		t.Fatalf("ids = %v, want %v", ids, want)
	}
	if report == nil || report["dropped"] != float64(dropped) || report["total"] != float64(dropped) || report["reason"] != "outbox full" {
		t.Fatalf("events_dropped = %v, want %d dropped", report, dropped)
	}
	if st := o.Stats(); st.Dropped != dropped {
		t.Fatalf("%d dropped after the first report, then %d: reporting made room by dropping", dropped, st.Dropped)
	}
	db.Close()
	db = open(t, path)
	defer db.Close()
	if st := db.Outbox.Stats(); st.Dropped != dropped || st.Compacted != 1 || st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("stats after reopening: %+v", st)
	}
}

// TestOutboxStateNeverDropped: a full outbox of distinct state documents
// keeps them all, beyond the bound, and drops new stateless events instead.
func TestOutboxStateNeverDropped(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	o := db.Outbox
	o.SetLimits(1000, 0)
	for i := range 30 {
		if err := o.Append(state(strconv.Itoa(i), "key"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Append(stateless("late")); err != nil {
		t.Fatal(err)
	}
	st := o.Stats()
	if st.Records != 31 || st.Dropped != 1 || st.Bytes <= 1000 {
		t.Fatalf("stats = %+v: want the 30 documents and the drop report kept, the late event dropped", st)
	}
	ids := drain(t, o)
	if len(ids) != 31 || slices.Contains(ids, "late") {
		t.Fatalf("ids = %v", ids)
	}
}

// TestOutboxOpensJSONRecords: records written by the previous format (JSON)
// are read, counted and sent.
func TestOutboxOpensJSONRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	writeLegacyOutbox(t, path, []store.Record{stateless("old1"), state("old2", "k")})
	db := open(t, path)
	defer db.Close()
	if st := db.Outbox.Stats(); st.Records != 2 || st.Bytes == 0 {
		t.Fatalf("stats = %+v", st)
	}
	if err := db.Outbox.Append(stateless("new")); err != nil {
		t.Fatal(err)
	}
	if ids := drain(t, db.Outbox); !slices.Equal(ids, []string{"old1", "old2", "new"}) {
		t.Fatalf("ids = %v", ids)
	}
}

// TestOutboxSkipsUnreadableRecords: a record that cannot be decoded is
// deleted and counted rather than stopping the queue.
func TestOutboxSkipsUnreadableRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	good, _ := json.Marshal(stateless("ok"))
	writeRawOutbox(t, path, [][]byte{[]byte("{torn"), good, {1, 0xff}})
	db := open(t, path)
	defer db.Close()
	if ids := drain(t, db.Outbox); !slices.Equal(ids, []string{"ok"}) {
		t.Fatalf("ids = %v", ids)
	}
	if st := db.Outbox.Stats(); st.Unreadable != 2 || st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestOutboxBatchBytes(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "agent.db"))
	defer db.Close()
	o := db.Outbox
	o.SetLimits(-1, 0)
	for i := range 10 {
		if err := o.Append(stateless(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	one := int(o.Stats().Bytes) / 10
	b, err := o.Next(1000, 3*one)
	if err != nil || len(b.Records) != 3 || b.Bytes != 3*one {
		t.Fatalf("batch of %d records, %d bytes (one: %d), %v", len(b.Records), b.Bytes, one, err)
	}
	o.Ack(b)
	// A record larger than the byte bound still goes, alone.
	b, _ = o.Next(1000, 1)
	if len(b.Records) != 1 {
		t.Fatalf("batch of %d records with a 1-byte bound", len(b.Records))
	}
}

// writeLegacyOutbox writes an agent.db as the previous version did: the
// outbox bucket holds JSON records, the meta bucket no outbox counters.
func writeLegacyOutbox(t *testing.T, path string, recs []store.Record) {
	t.Helper()
	var values [][]byte
	for _, r := range recs {
		v, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}
	writeRawOutbox(t, path, values)
}

// writeRawOutbox writes an agent.db whose outbox holds values as they are.
func writeRawOutbox(t *testing.T, path string, values [][]byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("meta")); err != nil {
			return err
		}
		b, err := tx.CreateBucket([]byte("outbox"))
		if err != nil {
			return err
		}
		for _, v := range values {
			seq, _ := b.NextSequence()
			key := make([]byte, 8)
			binary.BigEndian.PutUint64(key, seq)
			if err := b.Put(key, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
