package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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
	return db.tx(ctx, func(tx pgx.Tx) error {
		if err := agentExists(ctx, tx, agentID); err != nil {
			return err
		}
		return applyState(ctx, tx, agentID, seq, events, at)
	})
}

// applyState applies the stateful events of the agent's batch seq in tx,
// as ApplyState describes, in one round trip. The agent exists and the ops
// were checked.
func applyState(ctx context.Context, tx pgx.Tx, agentID string, seq uint64, events []tether.Event, at time.Time) error {
	var b pgx.Batch
	for _, e := range events {
		// A tombstone has a NULL doc; an upsert of an empty payload stores
		// an empty, non-NULL one.
		var doc []byte
		switch e.Op {
		case "":
			continue
		case tether.StateUpsert:
			doc = []byte{}
			if len(e.Payload) > 0 {
				doc = e.Payload
			}
		}
		b.Queue(`INSERT INTO state (agent_id, module, key, doc, sequence, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (agent_id, module, key) DO UPDATE SET
				doc = excluded.doc, sequence = excluded.sequence, updated_at = excluded.updated_at
			WHERE state.sequence <= excluded.sequence`,
			agentID, text(e.Module), text(e.Key), doc, int64(seq), timeArg(at))
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("apply state: %w", err)
	}
	return nil
}

// State lists the agent's documents, of one module when module is set,
// ordered by module and key.
func (db *DB) State(ctx context.Context, agentID, module string) ([]*tether.StateEntry, error) {
	return queryAll(ctx, db.pool, func(s scanner) (*tether.StateEntry, error) {
		e := tether.StateEntry{AgentID: agentID}
		var (
			seq     int64
			updated pgtype.Timestamptz
		)
		if err := s.Scan(&e.Module, &e.Key, &e.Doc, &seq, &updated); err != nil {
			return nil, err
		}
		e.Sequence, e.UpdatedAt = uint64(seq), timeVal(updated)
		return &e, nil
	}, "select state", `SELECT module, key, doc, sequence, updated_at FROM state
		WHERE agent_id = $1 AND doc IS NOT NULL AND ($2::text = '' OR module = $2)
		ORDER BY module, key`, agentID, module)
}
