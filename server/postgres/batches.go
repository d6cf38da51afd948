package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tetherhq/tether"
)

// BeginBatch records the agent's batch seq as accepted and pending, and
// applies its state changes, in one transaction, when seq is above the last
// one accepted; otherwise it reports whether the batch is still pending.
//
// The conditional update of the agent's row decides: concurrent calls for
// one agent wait for each other on that row, and the one that raised the
// sequence is the only one to find the batch new.
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
	err := db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx,
			`UPDATE agents SET last_batch_seq = $1 WHERE id = $2 AND last_batch_seq < $1`, int64(seq), agentID)
		if err != nil {
			return fmt.Errorf("accept batch: %w", err)
		}
		if tag.RowsAffected() == 0 {
			if err := agentExists(ctx, tx, agentID); err != nil {
				return err
			}
			var ts pgtype.Timestamptz
			err := tx.QueryRow(ctx, `SELECT pending_at FROM pending_batches WHERE agent_id = $1 AND seq = $2`,
				agentID, int64(seq)).Scan(&ts)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				status, pending = tether.BatchDone, time.Time{}
				return nil
			case err != nil:
				return fmt.Errorf("select pending batch: %w", err)
			}
			status, pending = tether.BatchPending, timeVal(ts)
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO pending_batches (agent_id, seq, pending_at) VALUES ($1, $2, $3)`,
			agentID, int64(seq), at.UTC()); err != nil {
			return fmt.Errorf("insert pending batch: %w", err)
		}
		status, pending = tether.BatchNew, micro(at)
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
	_, err := db.exec(ctx, "finish batch", `DELETE FROM pending_batches WHERE agent_id = $1 AND seq = $2`, agentID, int64(seq))
	return err
}
