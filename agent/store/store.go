// Package store is the agent's durable local state, one bbolt file
// (DATA_DIR/agent.db): the event outbox (Outbox) and the order store
// (OrderStore). Every change is one bbolt transaction, fsynced on commit, so
// a crash at any point leaves either the old or the new state; appends to
// the outbox are group-committed, many to a transaction (see Outbox).
//
// bbolt holds an exclusive lock on the file while it is open: only one
// process (tether-agent run) may open it at a time.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketOutbox   = []byte("outbox")    // be64 event sequence → Record (record.go)
	bucketMeta     = []byte("meta")      // counters and the pending batch
	bucketOrders   = []byte("orders")    // be64 local order sequence → StoredOrder (JSON)
	bucketOrderIDs = []byte("order_ids") // order id → indexEntry (JSON)
	bucketResults  = []byte("results")   // be64 local order sequence → client.Result (JSON)
	// bucketModuleMeta holds the keys modules set with Outbox.AppendWith.
	bucketModuleMeta = []byte("module_meta")
	// bucketStateKeys maps module NUL key → be64 event sequence of the
	// latest state change of that document in the outbox.
	bucketStateKeys = []byte("outbox_state_keys")
	// bucketSuperseded lists (be64 event sequence → nothing) the state
	// changes in the outbox that a later change of the same document
	// replaces: those deleted first when the outbox is full.
	bucketSuperseded = []byte("outbox_superseded")

	keyBatchSeq     = []byte("batch_seq")     // last batch sequence number allocated
	keyPendingBatch = []byte("pending_batch") // the batch being sent (JSON)
	keyDeadLetters  = []byte("dead_letters")  // batches dropped as invalid
	keyOrderSeq     = []byte("order_seq")     // last local order sequence
)

// DB is the open store.
type DB struct {
	bolt   *bolt.DB
	Outbox *Outbox
	Orders *OrderStore
}

// ErrLocked means another process has the store open.
var ErrLocked = errors.New("agent.db is in use by another process (is tether-agent already running?)")

// Open opens (creating if needed) the store at path.
func Open(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketOutbox, bucketMeta, bucketOrders, bucketOrderIDs, bucketResults, bucketModuleMeta, bucketStateKeys, bucketSuperseded} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	d := &DB{bolt: db, Outbox: newOutbox(db), Orders: &OrderStore{db: db}}
	if err := d.Outbox.load(); err != nil {
		db.Close()
		return nil, err
	}
	if err := d.Orders.load(); err != nil {
		d.Outbox.close()
		db.Close()
		return nil, err
	}
	return d, nil
}

// Close commits the appends under way and closes the store.
func (d *DB) Close() error {
	d.Outbox.close()
	return d.bolt.Close()
}

func be64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func fromBe64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
