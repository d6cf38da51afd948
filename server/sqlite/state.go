package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/tetherhq/tether"
)

// ApplyState applies the stateful events of a batch in order, in one
// transaction: an upsert replaces the document of its key and a delete
// removes it, each only when the key was last changed by a batch of a
// sequence not above seq, so a late retry of an older batch never overwrites
// newer state. A delete leaves a tombstone with its sequence for that
// reason. Events without an Op (stateless ones) are skipped.
func (db *DB) ApplyState(ctx context.Context, agentID string, seq uint64, events []tether.Event, at time.Time) error {
	if seq > math.MaxInt64 {
		return tether.FieldError("seq", "over %d", int64(math.MaxInt64))
	}
	if err := tether.CheckStateOps(events); err != nil {
		return err
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		if err := agentExists(ctx, tx, agentID); err != nil {
			return err
		}
		return applyState(ctx, tx, agentID, seq, events, at)
	})
}

// applyState applies the stateful events of the agent's batch seq in tx,
// as ApplyState describes. The agent exists and the ops were checked.
func applyState(ctx context.Context, tx *sql.Tx, agentID string, seq uint64, events []tether.Event, at time.Time) error {
	stateful := false
	for _, e := range events {
		stateful = stateful || e.Op != ""
	}
	if !stateful {
		return nil
	}
	// A tombstone has a NULL doc; an upsert of an empty payload stores
	// an empty, non-NULL one.
	upsert, err := tx.PrepareContext(ctx, `INSERT INTO state (agent_id, module, key, doc, sequence, updated_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6)
		ON CONFLICT (agent_id, module, key) DO UPDATE SET
			doc = excluded.doc, sequence = excluded.sequence, updated_at = excluded.updated_at
		WHERE state.sequence <= excluded.sequence`)
	if err != nil {
		return fmt.Errorf("prepare upsert state: %w", err)
	}
	defer upsert.Close()
	for _, e := range events {
		var doc any
		switch e.Op {
		case "":
			continue
		case tether.StateUpsert:
			doc = []byte{} // not nil: the driver binds a nil slice as NULL
			if len(e.Payload) > 0 {
				doc = e.Payload
			}
		}
		if _, err := upsert.ExecContext(ctx, agentID, e.Module, e.Key, doc, int64(seq), timeArg(at)); err != nil {
			return fmt.Errorf("%s state: %w", e.Op, err)
		}
	}
	return nil
}

// State lists the agent's documents, of one module when module is set,
// ordered by module and key.
func (db *DB) State(ctx context.Context, agentID, module string) ([]*tether.StateEntry, error) {
	q := `SELECT module, key, doc, sequence, updated_at FROM state
		WHERE agent_id = ?1 AND doc IS NOT NULL`
	if module != "" {
		q += ` AND module = ?2`
	}
	q += ` ORDER BY module, key`
	return queryAll(ctx, db.reader, func(s scanner) (*tether.StateEntry, error) {
		e := tether.StateEntry{AgentID: agentID}
		var (
			seq     int64
			updated sql.NullInt64
		)
		if err := s.Scan(&e.Module, &e.Key, &e.Doc, &seq, &updated); err != nil {
			return nil, err
		}
		e.Sequence, e.UpdatedAt = uint64(seq), timeVal(updated)
		return &e, nil
	}, "select state", q, agentID, module)
}
