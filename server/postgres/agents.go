package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tetherhq/tether"
)

const agentColumns = `id, name, group_list, key_hash, disabled, hostname, os, arch, version,
	enrolled_at, updated_at, enrolled_by, last_seen, last_batch_seq`

func scanAgent(s scanner) (*tether.Agent, error) {
	var (
		a                       tether.Agent
		enrolled, updated, seen pgtype.Timestamptz
		seq                     int64
	)
	err := s.Scan(&a.ID, &a.Name, &a.Groups, &a.KeyHash, &a.Disabled, &a.Hostname, &a.OS, &a.Arch,
		&a.Version, &enrolled, &updated, &a.EnrolledBy, &seen, &seq)
	if err != nil {
		return nil, err
	}
	a.Groups = listVal(a.Groups)
	a.KeyHash = blobVal(a.KeyHash)
	a.EnrolledAt, a.UpdatedAt, a.LastSeen = timeVal(enrolled), timeVal(updated), timeVal(seen)
	a.LastBatchSeq = uint64(seq)
	return &a, nil
}

func getAgent(ctx context.Context, q queryer, id string) (*tether.Agent, error) {
	a, err := scanAgent(q.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tether.NotFound("agent", id)
	}
	if err != nil {
		return nil, fmt.Errorf("select agent: %w", err)
	}
	return a, nil
}

// RegisterAgent creates the agent, or replaces the key, name, groups and
// facts of an existing one, and counts one use of the token tokenID (none
// when tokenID is ""), in one transaction. The token's row is locked while
// its uses are checked and counted, so concurrent registrations never use
// it more than its limit. An existing agent keeps its EnrolledAt,
// EnrolledBy, Disabled, LastSeen and LastBatchSeq. Zero EnrolledAt and
// UpdatedAt are set to now. On success *a is updated to the agent as
// stored.
func (db *DB) RegisterAgent(ctx context.Context, a *tether.Agent, tokenID string, now time.Time) error {
	if a.ID == "" {
		return tether.FieldError("id", "missing")
	}
	enrolled, updated := a.EnrolledAt, a.UpdatedAt
	if enrolled.IsZero() {
		enrolled = now
	}
	if updated.IsZero() {
		updated = now
	}
	var stored *tether.Agent
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if tokenID != "" {
			t, err := getToken(ctx, tx, tokenID, "FOR UPDATE")
			if err != nil {
				return err
			}
			if err := t.Usable(now); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE tokens SET uses = uses + 1 WHERE id = $1`, tokenID); err != nil {
				return fmt.Errorf("count token use: %w", err)
			}
		}
		var err error
		stored, err = scanAgent(tx.QueryRow(ctx, `INSERT INTO agents AS a (`+agentColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (id) DO UPDATE SET
				name = excluded.name, group_list = excluded.group_list, key_hash = excluded.key_hash,
				hostname = excluded.hostname, os = excluded.os, arch = excluded.arch,
				version = excluded.version, updated_at = excluded.updated_at
			RETURNING `+agentColumns,
			a.ID, text(a.Name), listArg(a.Groups), blobArg(a.KeyHash), a.Disabled, text(a.Hostname), text(a.OS), text(a.Arch), text(a.Version),
			timeArg(enrolled), timeArg(updated), a.EnrolledBy, timeArg(a.LastSeen), int64(min(a.LastBatchSeq, math.MaxInt64))))
		if err != nil {
			return fmt.Errorf("upsert agent: %w", err)
		}
		return setMembership(ctx, tx, a.ID, a.Groups)
	})
	if err != nil {
		return err
	}
	*a = *stored
	return nil
}

// Agent returns the agent with the id.
func (db *DB) Agent(ctx context.Context, id string) (*tether.Agent, error) {
	return getAgent(ctx, db.pool, id)
}

// Agents lists agents ordered by id.
func (db *DB) Agents(ctx context.Context, f tether.AgentFilter) ([]*tether.Agent, error) {
	var (
		where []string
		args  params
	)
	if f.Group != "" {
		where = append(where, "id IN (SELECT agent_id FROM agent_groups WHERE grp = "+args.add(f.Group)+")")
	}
	if f.NamePrefix != "" {
		// The range lets the name index serve; starts_with decides.
		p := args.add(f.NamePrefix)
		where = append(where, "name >= "+p+" AND starts_with(name, "+p+")")
	}
	if !f.SeenSince.IsZero() {
		where = append(where, "last_seen >= "+args.add(f.SeenSince.UTC()))
	}
	if !f.NotSeenSince.IsZero() {
		where = append(where, "last_seen < "+args.add(f.NotSeenSince.UTC()))
	}
	if f.NeverSeen {
		where = append(where, "last_seen IS NULL")
	}
	if f.After != "" {
		where = append(where, "id > "+args.add(f.After))
	}
	q := `SELECT ` + agentColumns + ` FROM agents`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id LIMIT ` + args.add(limit(f.Limit))
	return queryAll(ctx, db.pool, scanAgent, "select agents", q, args...)
}

// DeleteAgent removes the agent, its group memberships and its state, in
// one transaction. Its orders and command requests stay: the unfinished
// orders fail with the message "agent deleted", finished at the current
// time.
//
// The agent's row goes first: commands being created for the agent hold a
// share lock on it, so the deletion waits for them, and the orders they
// stored are failed with the others.
func (db *DB) DeleteAgent(ctx context.Context, id string) error {
	now := db.now().UTC()
	return db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM agents WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("delete agent: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return tether.NotFound("agent", id)
		}
		_, err = tx.Exec(ctx, `UPDATE orders
			SET status = 'failure', result_code = 0, result_message = 'agent deleted', result_data = NULL,
				finished_at = $1
			WHERE agent_id = $2 AND status IN ('pending', 'sent')`, now, id)
		if err != nil {
			return fmt.Errorf("fail orders of deleted agent: %w", err)
		}
		return nil
	})
}

// TouchAgents records last-seen times in one statement. Unknown ids and
// zero times are ignored; a time does not replace a later one.
func (db *DB) TouchAgents(ctx context.Context, seen map[string]time.Time) error {
	ids := make([]string, 0, len(seen))
	for id, at := range seen {
		if !at.IsZero() {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	// In id order, so that two nodes touching the same agents lock them in
	// the same order.
	slices.Sort(ids)
	times := make([]time.Time, len(ids))
	for i, id := range ids {
		times[i] = seen[id].UTC()
	}
	_, err := db.exec(ctx, "touch agents", `UPDATE agents AS a SET last_seen = t.at
		FROM (SELECT id, at FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at) ORDER BY id) AS t
		WHERE a.id = t.id AND (a.last_seen IS NULL OR a.last_seen < t.at)`, ids, times)
	return err
}

// agentExists returns ENOTFOUND unless the agent exists.
func agentExists(ctx context.Context, q queryer, id string) error {
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM agents WHERE id = $1`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return tether.NotFound("agent", id)
	}
	if err != nil {
		return fmt.Errorf("select agent: %w", err)
	}
	return nil
}
