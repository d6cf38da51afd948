package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/client"
	bolt "go.etcd.io/bbolt"
)

// Status is the local status of a stored order.
type Status string

const (
	// StatusPending: received, not started.
	StatusPending Status = "pending"
	// StatusRunning: its handler was started. Found at start-up, it means
	// the agent stopped while the handler ran.
	StatusRunning Status = "running"
)

// StoredOrder is an order in the order store.
type StoredOrder struct {
	// Seq is the local arrival sequence: orders run in Seq order.
	Seq        uint64       `json:"seq"`
	Order      client.Order `json:"order"`
	Status     Status       `json:"status"`
	ReceivedAt time.Time    `json:"received_at"`
	StartedAt  time.Time    `json:"started_at,omitzero"`
}

// indexEntry maps an order id to its local sequence; it outlives the order
// so that a re-delivered order is recognised.
type indexEntry struct {
	Seq        uint64    `json:"seq"`
	ReceivedAt time.Time `json:"received_at"`
}

// lookup reads the index entry of an order id; ok is false for an id never
// received (or pruned).
func lookup(idx *bolt.Bucket, id string) (e indexEntry, ok bool, err error) {
	iv := idx.Get([]byte(id))
	if iv == nil {
		return e, false, nil
	}
	if err := json.Unmarshal(iv, &e); err != nil {
		return e, false, fmt.Errorf("decode index of order %s: %w", id, err)
	}
	return e, true, nil
}

// ErrUnknownOrder is returned for a local sequence that is not stored.
var ErrUnknownOrder = errors.New("no such order")

// OrderStore is the durable command store: orders received and not yet
// finished, and results not yet acknowledged by the server.
type OrderStore struct {
	db       *bolt.DB
	nOrders  atomic.Int64
	nResults atomic.Int64
}

func (s *OrderStore) load() error {
	return s.db.View(func(tx *bolt.Tx) error {
		s.nOrders.Store(int64(tx.Bucket(bucketOrders).Stats().KeyN))
		s.nResults.Store(int64(tx.Bucket(bucketResults).Stats().KeyN))
		return nil
	})
}

// Len is the number of orders not finished yet.
func (s *OrderStore) Len() int { return int(s.nOrders.Load()) }

// PendingResults is the number of results awaiting acknowledgement.
func (s *OrderStore) PendingResults() int { return int(s.nResults.Load()) }

// Add stores the orders not seen before, in the given order, in one
// transaction, and returns those it added. An order whose id is already
// known (stored, finished, or finished and acknowledged) is ignored.
func (s *OrderStore) Add(orders []client.Order) ([]StoredOrder, error) {
	var added []StoredOrder
	now := time.Now().UTC()
	err := s.db.Update(func(tx *bolt.Tx) error {
		added = added[:0]
		meta, ob, idx := tx.Bucket(bucketMeta), tx.Bucket(bucketOrders), tx.Bucket(bucketOrderIDs)
		seq := fromBe64(meta.Get(keyOrderSeq))
		for _, o := range orders {
			if o.ID == "" || idx.Get([]byte(o.ID)) != nil {
				continue
			}
			seq++
			so := StoredOrder{Seq: seq, Order: o, Status: StatusPending, ReceivedAt: now}
			v, err := json.Marshal(so)
			if err != nil {
				return err
			}
			if err := ob.Put(be64(seq), v); err != nil {
				return err
			}
			iv, _ := json.Marshal(indexEntry{Seq: seq, ReceivedAt: now})
			if err := idx.Put([]byte(o.ID), iv); err != nil {
				return err
			}
			added = append(added, so)
		}
		return meta.Put(keyOrderSeq, be64(seq))
	})
	if err != nil {
		return nil, fmt.Errorf("store orders: %w", err)
	}
	s.nOrders.Add(int64(len(added)))
	return added, nil
}

// List returns the unfinished orders in arrival order.
func (s *OrderStore) List() ([]StoredOrder, error) {
	var out []StoredOrder
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrders).ForEach(func(k, v []byte) error {
			var so StoredOrder
			if err := json.Unmarshal(v, &so); err != nil {
				return fmt.Errorf("decode order %d: %w", fromBe64(k), err)
			}
			out = append(out, so)
			return nil
		})
	})
	return out, err
}

// Queued returns the ids of up to max stored orders not started yet, in
// arrival order: the poll lists them so the server can say which were
// cancelled.
func (s *OrderStore) Queued(max int) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOrders).Cursor()
		for k, v := c.First(); k != nil && len(ids) < max; k, v = c.Next() {
			var so StoredOrder
			if err := json.Unmarshal(v, &so); err != nil {
				return fmt.Errorf("decode order %d: %w", fromBe64(k), err)
			}
			if so.Status == StatusPending {
				ids = append(ids, so.Order.ID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queued orders: %w", err)
	}
	return ids, nil
}

// Cancel finishes the orders with the ids that have not started, with the
// result r (its OrderID set to each), in one transaction, and returns them.
// Running, finished and unknown orders are left alone: a cancel that races
// the executor either wins (the order never starts) or loses (it runs).
func (s *OrderStore) Cancel(ids []string, r client.Result) ([]StoredOrder, error) {
	var done []StoredOrder
	err := s.db.Update(func(tx *bolt.Tx) error {
		done = done[:0]
		idx, ob, rb := tx.Bucket(bucketOrderIDs), tx.Bucket(bucketOrders), tx.Bucket(bucketResults)
		for _, id := range ids {
			e, ok, err := lookup(idx, id)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			v := ob.Get(be64(e.Seq))
			if v == nil {
				continue
			}
			var so StoredOrder
			if err := json.Unmarshal(v, &so); err != nil {
				return err
			}
			if so.Status != StatusPending {
				continue
			}
			r.OrderID = id
			rv, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := rb.Put(be64(e.Seq), rv); err != nil {
				return err
			}
			if err := ob.Delete(be64(e.Seq)); err != nil {
				return err
			}
			done = append(done, so)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cancel orders: %w", err)
	}
	s.nOrders.Add(-int64(len(done)))
	s.nResults.Add(int64(len(done)))
	return done, nil
}

// Next returns the oldest unfinished order, or nil.
func (s *OrderStore) Next() (*StoredOrder, error) {
	var out *StoredOrder
	err := s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketOrders).Cursor().First()
		if k == nil {
			return nil
		}
		out = new(StoredOrder)
		return json.Unmarshal(v, out)
	})
	if err != nil {
		return nil, fmt.Errorf("next order: %w", err)
	}
	return out, nil
}

// MarkRunning persists that the order's handler is about to run. An order
// no longer stored (cancelled meanwhile) is ErrUnknownOrder.
func (s *OrderStore) MarkRunning(seq uint64) error {
	return s.setStatus(seq, StatusRunning)
}

// Requeue puts an order found running back in the queue, to run again.
func (s *OrderStore) Requeue(seq uint64) error {
	return s.setStatus(seq, StatusPending)
}

func (s *OrderStore) setStatus(seq uint64, st Status) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOrders)
		v := b.Get(be64(seq))
		if v == nil {
			return ErrUnknownOrder
		}
		var so StoredOrder
		if err := json.Unmarshal(v, &so); err != nil {
			return err
		}
		so.Status, so.StartedAt = st, time.Now().UTC()
		if st == StatusPending {
			so.StartedAt = time.Time{}
		}
		nv, err := json.Marshal(so)
		if err != nil {
			return err
		}
		return b.Put(be64(seq), nv)
	})
	if err != nil {
		return fmt.Errorf("mark order %d %s: %w", seq, st, err)
	}
	return nil
}

// Finish replaces the order by its result, atomically. The result stays
// until Ack.
func (s *OrderStore) Finish(seq uint64, r client.Result) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOrders)
		if ob.Get(be64(seq)) == nil {
			return ErrUnknownOrder
		}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketResults).Put(be64(seq), v); err != nil {
			return err
		}
		return ob.Delete(be64(seq))
	})
	if err != nil {
		return fmt.Errorf("finish order %d: %w", seq, err)
	}
	s.nOrders.Add(-1)
	s.nResults.Add(1)
	return nil
}

// Results returns up to max results awaiting acknowledgement (0: all), in
// the order of their orders.
func (s *OrderStore) Results(max int) ([]client.Result, error) {
	var out []client.Result
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketResults).Cursor()
		for k, v := c.First(); k != nil && (max <= 0 || len(out) < max); k, v = c.Next() {
			var r client.Result
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode result %d: %w", fromBe64(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Ack deletes the results of the given order ids: the server holds them.
func (s *OrderStore) Ack(orderIDs []string) error {
	removed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed = 0
		idx, rb := tx.Bucket(bucketOrderIDs), tx.Bucket(bucketResults)
		for _, id := range orderIDs {
			e, ok, err := lookup(idx, id)
			if err != nil {
				return err
			}
			if !ok || rb.Get(be64(e.Seq)) == nil {
				continue
			}
			if err := rb.Delete(be64(e.Seq)); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge results: %w", err)
	}
	s.nResults.Add(-int64(removed))
	return nil
}

// PruneIndex forgets the ids of orders received before t that are finished
// and acknowledged, and returns how many it forgot. Keep the window well
// beyond the server's re-delivery horizon.
func (s *OrderStore) PruneIndex(before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		idx, ob, rb := tx.Bucket(bucketOrderIDs), tx.Bucket(bucketOrders), tx.Bucket(bucketResults)
		var drop [][]byte
		err := idx.ForEach(func(k, v []byte) error {
			var e indexEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.ReceivedAt.Before(before) && ob.Get(be64(e.Seq)) == nil && rb.Get(be64(e.Seq)) == nil {
				drop = append(drop, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := idx.Delete(k); err != nil {
				return err
			}
		}
		n = len(drop)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune order index: %w", err)
	}
	return n, nil
}
