package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tetherhq/tether"
)

// BeginBatch records the agent's batch seq as accepted and pending, and
// applies its state changes, in one transaction, when seq is above the last
// one accepted; otherwise it reports whether the batch is still pending.
func (db *DB) BeginBatch(ctx context.Context, agentID string, seq uint64, state []tether.Event, at time.Time) (tether.BatchStatus, time.Time, error) {
	if seq == 0 || seq > math.MaxInt64 {
		return 0, time.Time{}, tether.FieldError("sequence", "want 1 to %d", int64(math.MaxInt64))
	}
	if err := tether.CheckStateOps(state); err != nil {
		return 0, time.Time{}, err
	}
	var (
		status  tether.BatchStatus
		pending time.Time
	)
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE agents SET last_batch_seq = ?1 WHERE id = ?2 AND last_batch_seq < ?1`, int64(seq), agentID)
		if err != nil {
			return fmt.Errorf("accept batch: %w", err)
		}
		n, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if n == 0 {
			if err := agentExists(ctx, tx, agentID); err != nil {
				return err
			}
			var ns int64
			err := tx.QueryRowContext(ctx, `SELECT pending_at FROM pending_batches WHERE agent_id = ? AND seq = ?`,
				agentID, int64(seq)).Scan(&ns)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				status = tether.BatchDone
				return nil
			case err != nil:
				return fmt.Errorf("select pending batch: %w", err)
			}
			status, pending = tether.BatchPending, time.Unix(0, ns).UTC()
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO pending_batches (agent_id, seq, pending_at) VALUES (?, ?, ?)`,
			agentID, int64(seq), at.UnixNano()); err != nil {
			return fmt.Errorf("insert pending batch: %w", err)
		}
		status, pending = tether.BatchNew, at.UTC()
		return applyState(ctx, tx, agentID, seq, state, at)
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	return status, pending, nil
}

// FinishBatch records that the sinks hold the agent's batch seq.
func (db *DB) FinishBatch(ctx context.Context, agentID string, seq uint64) error {
	if seq > math.MaxInt64 {
		return nil // never pending
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM pending_batches WHERE agent_id = ? AND seq = ?`, agentID, int64(seq)); err != nil {
			return fmt.Errorf("finish batch: %w", err)
		}
		return nil
	})
}
