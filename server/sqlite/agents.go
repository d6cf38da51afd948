package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tetherhq/tether"
)

const agentColumns = `id, name, group_list, key_hash, disabled, hostname, os, arch, version,
	enrolled_at, updated_at, enrolled_by, last_seen, last_batch_seq`

func scanAgent(s scanner) (*tether.Agent, error) {
	var (
		a                       tether.Agent
		groups                  string
		enrolled, updated, seen sql.NullInt64
		seq                     int64
	)
	err := s.Scan(&a.ID, &a.Name, &groups, &a.KeyHash, &a.Disabled, &a.Hostname, &a.OS, &a.Arch,
		&a.Version, &enrolled, &updated, &a.EnrolledBy, &seen, &seq)
	if err != nil {
		return nil, err
	}
	if a.Groups, err = groupsVal(groups); err != nil {
		return nil, err
	}
	a.KeyHash = blobVal(a.KeyHash)
	a.EnrolledAt, a.UpdatedAt, a.LastSeen = timeVal(enrolled), timeVal(updated), timeVal(seen)
	a.LastBatchSeq = uint64(seq)
	return &a, nil
}

func getAgent(ctx context.Context, q queryer, id string) (*tether.Agent, error) {
	a, err := scanAgent(q.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tether.NotFound("agent", id)
	}
	if err != nil {
		return nil, fmt.Errorf("select agent: %w", err)
	}
	return a, nil
}

// RegisterAgent creates the agent, or replaces the key, name, groups and
// facts of an existing one, and counts one use of the token tokenID (none
// when tokenID is ""), in one transaction. An existing agent keeps its
// EnrolledAt, EnrolledBy, Disabled, LastSeen and LastBatchSeq. Zero
// EnrolledAt and UpdatedAt are set to now. On success *a is updated to the
// agent as stored.
func (db *DB) RegisterAgent(ctx context.Context, a *tether.Agent, tokenID string, now time.Time) error {
	if a.ID == "" {
		return tether.FieldError("id", "missing")
	}
	groups, err := groupsArg(a.Groups)
	if err != nil {
		return err
	}
	enrolled, updated := a.EnrolledAt, a.UpdatedAt
	if enrolled.IsZero() {
		enrolled = now
	}
	if updated.IsZero() {
		updated = now
	}
	var stored *tether.Agent
	err = db.write(ctx, func(tx *sql.Tx) error {
		if tokenID != "" {
			t, err := getToken(ctx, tx, tokenID)
			if err != nil {
				return err
			}
			if err := t.Usable(now); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE tokens SET uses = uses + 1 WHERE id = ?`, tokenID); err != nil {
				return fmt.Errorf("count token use: %w", err)
			}
		}
		var err error
		stored, err = scanAgent(tx.QueryRowContext(ctx, `INSERT INTO agents (`+agentColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET
				name = excluded.name, group_list = excluded.group_list, key_hash = excluded.key_hash,
				hostname = excluded.hostname, os = excluded.os, arch = excluded.arch,
				version = excluded.version, updated_at = excluded.updated_at
			RETURNING `+agentColumns,
			a.ID, a.Name, groups, blobArg(a.KeyHash), a.Disabled, a.Hostname, a.OS, a.Arch, a.Version,
			timeArg(enrolled), timeArg(updated), a.EnrolledBy, timeArg(a.LastSeen), int64(min(a.LastBatchSeq, math.MaxInt64))))
		if err != nil {
			return fmt.Errorf("upsert agent: %w", err)
		}
		return setMembership(ctx, tx, a.ID, groups)
	})
	if err != nil {
		return err
	}
	*a = *stored
	return nil
}

// Agent returns the agent with the id.
func (db *DB) Agent(ctx context.Context, id string) (*tether.Agent, error) {
	return getAgent(ctx, db.reader, id)
}

// Agents lists agents ordered by id.
func (db *DB) Agents(ctx context.Context, f tether.AgentFilter) ([]*tether.Agent, error) {
	var (
		where []string
		args  []any
	)
	if f.Group != "" {
		where = append(where, "id IN (SELECT agent_id FROM agent_groups WHERE grp = ?)")
		args = append(args, f.Group)
	}
	if f.NamePrefix != "" {
		// The range lets SQLite use the name index; substr decides.
		where = append(where, "name >= ? AND substr(name, 1, length(?)) = ?")
		args = append(args, f.NamePrefix, f.NamePrefix, f.NamePrefix)
	}
	if !f.SeenSince.IsZero() {
		where = append(where, "last_seen >= ?")
		args = append(args, f.SeenSince.UnixNano())
	}
	if !f.NotSeenSince.IsZero() {
		where = append(where, "last_seen < ?")
		args = append(args, f.NotSeenSince.UnixNano())
	}
	if f.NeverSeen {
		where = append(where, "last_seen IS NULL")
	}
	if f.After != "" {
		where = append(where, "id > ?")
		args = append(args, f.After)
	}
	q := `SELECT ` + agentColumns + ` FROM agents`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, limit(f.Limit))
	return queryAll(ctx, db.reader, scanAgent, "select agents", q, args...)
}

// DeleteAgent removes the agent, its group memberships and its state, in
// one transaction. Its orders and command requests stay: the unfinished
// orders fail with the message "agent deleted", finished at the current
// time.
func (db *DB) DeleteAgent(ctx context.Context, id string) error {
	now := db.now().UnixNano()
	return db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE orders
			SET status = 'failure', result_code = 0, result_message = 'agent deleted', result_data = NULL,
				finished_at = ?
			WHERE agent_id = ? AND status IN ('pending', 'sent')`, now, id)
		if err != nil {
			return fmt.Errorf("fail orders of deleted agent: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("delete agent: %w", err)
		}
		n, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if n == 0 {
			return tether.NotFound("agent", id)
		}
		return nil
	})
}

// TouchAgents records last-seen times in one transaction. Unknown ids and
// zero times are ignored; a time does not replace a later one.
func (db *DB) TouchAgents(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	times := make(map[string]int64, len(seen))
	for id, at := range seen {
		if !at.IsZero() {
			times[id] = at.UnixNano()
		}
	}
	if len(times) == 0 {
		return nil
	}
	obj, err := json.Marshal(times)
	if err != nil {
		return fmt.Errorf("encode last-seen times: %w", err)
	}
	// One statement: json_each yields the id as key and the time as value.
	_, err = db.writer.ExecContext(ctx, `UPDATE agents SET last_seen = t.value
		FROM json_each(?) AS t
		WHERE agents.id = t.key AND (agents.last_seen IS NULL OR agents.last_seen < t.value)`, string(obj))
	if err != nil {
		return fmt.Errorf("touch agents: %w", err)
	}
	return nil
}

// agentExists returns ENOTFOUND unless the agent exists.
func agentExists(ctx context.Context, q queryer, id string) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM agents WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return tether.NotFound("agent", id)
	}
	if err != nil {
		return fmt.Errorf("select agent: %w", err)
	}
	return nil
}
