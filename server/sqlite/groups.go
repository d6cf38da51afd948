package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tetherhq/tether"
)

// groupColumns are the columns of groups, then the member count.
const groupColumns = `name, description, config, config_json, version, created_at, updated_at,
	(SELECT count(*) FROM agent_groups WHERE grp = groups.name)`

func scanGroup(s scanner) (*tether.Group, error) {
	var (
		g                tether.Group
		created, updated sql.NullInt64
	)
	err := s.Scan(&g.Name, &g.Description, &g.Config, &g.ConfigJSON, &g.Version, &created, &updated, &g.Members)
	if err != nil {
		return nil, err
	}
	g.Config = blobVal(g.Config)
	if len(g.ConfigJSON) == 0 {
		g.ConfigJSON = []byte("{}")
	}
	g.CreatedAt, g.UpdatedAt = timeVal(created), timeVal(updated)
	return &g, nil
}

func getGroup(ctx context.Context, q queryer, name string) (*tether.Group, error) {
	g, err := scanGroup(q.QueryRowContext(ctx, `SELECT `+groupColumns+` FROM groups WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tether.NotFound("group", name)
	}
	if err != nil {
		return nil, fmt.Errorf("select group: %w", err)
	}
	return g, nil
}

// CreateGroup stores a new group; a name in use is ECONFLICT. Zero
// CreatedAt and UpdatedAt are set to the current time and an empty
// ConfigJSON to "{}", and *g is updated to the group as stored.
func (db *DB) CreateGroup(ctx context.Context, g *tether.Group) error {
	if err := tether.ValidateGroups("name", []string{g.Name}); err != nil {
		return err
	}
	doc, err := g.ConfigDoc()
	if err != nil {
		return err
	}
	created, updated := g.CreatedAt, g.UpdatedAt
	if created.IsZero() {
		created = db.now().UTC()
	}
	if updated.IsZero() {
		updated = created
	}
	var stored *tether.Group
	err = db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO groups
			(name, description, config, config_json, version, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			g.Name, g.Description, blobArg(g.Config), doc, g.Version, timeArg(created), timeArg(updated))
		if isUniqueViolation(err) {
			return tether.Errorf(tether.ECONFLICT, "group %q already exists", g.Name)
		}
		if err != nil {
			return fmt.Errorf("insert group: %w", err)
		}
		stored, err = getGroup(ctx, tx, g.Name)
		return err
	})
	if err != nil {
		return err
	}
	*g = *stored
	return nil
}

// Group returns a created group with its member count.
func (db *DB) Group(ctx context.Context, name string) (*tether.Group, error) {
	return getGroup(ctx, db.reader, name)
}

// Groups lists the created groups by name, with their member counts.
func (db *DB) Groups(ctx context.Context) ([]*tether.Group, error) {
	return queryAll(ctx, db.reader, scanGroup, "select groups", `SELECT `+groupColumns+` FROM groups ORDER BY name`)
}

// UpdateGroup replaces the description, configuration, version and update
// time (zero: the current time) of a created group, and updates *g to the
// group as stored.
func (db *DB) UpdateGroup(ctx context.Context, g *tether.Group) error {
	doc, err := g.ConfigDoc()
	if err != nil {
		return err
	}
	updated := g.UpdatedAt
	if updated.IsZero() {
		updated = db.now().UTC()
	}
	var stored *tether.Group
	err = db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE groups
			SET description = ?, config = ?, config_json = ?, version = ?, updated_at = ?
			WHERE name = ?`,
			g.Description, blobArg(g.Config), doc, g.Version, timeArg(updated), g.Name)
		if err != nil {
			return fmt.Errorf("update group: %w", err)
		}
		n, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if n == 0 {
			return tether.NotFound("group", g.Name)
		}
		stored, err = getGroup(ctx, tx, g.Name)
		return err
	})
	if err != nil {
		return err
	}
	*g = *stored
	return nil
}

// DeleteGroup removes the group and every agent's membership of it, in one
// transaction. The agents that lose it keep their other groups in order and
// have their UpdatedAt set to the current time. It is ENOTFOUND only when
// the group was neither created nor named by any agent.
func (db *DB) DeleteGroup(ctx context.Context, name string) error {
	now := db.now().UnixNano()
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET
				group_list = (SELECT coalesce(json_group_array(value ORDER BY key), '[]')
					FROM json_each(agents.group_list) WHERE value <> ?1),
				updated_at = ?2
			WHERE id IN (SELECT agent_id FROM agent_groups WHERE grp = ?1)`, name, now)
		if err != nil {
			return fmt.Errorf("remove group from agents: %w", err)
		}
		members, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM agent_groups WHERE grp = ?`, name); err != nil {
			return fmt.Errorf("delete group members: %w", err)
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM groups WHERE name = ?`, name)
		if err != nil {
			return fmt.Errorf("delete group: %w", err)
		}
		n, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if n == 0 && members == 0 {
			return tether.NotFound("group", name)
		}
		return nil
	})
}

// SetAgentGroups replaces the agent's group list and membership index, and
// sets its UpdatedAt to the current time.
// SetAgentVersion records the version an agent runs.
func (db *DB) SetAgentVersion(ctx context.Context, agentID, version string) error {
	now := db.now().UnixNano()
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET version = ?, updated_at = ? WHERE id = ?`, version, now, agentID)
		if err != nil {
			return fmt.Errorf("update agent version: %w", err)
		}
		n, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if n == 0 {
			return tether.NotFound("agent", agentID)
		}
		return nil
	})
}

func (db *DB) SetAgentGroups(ctx context.Context, agentID string, groups []string) error {
	if err := tether.ValidateGroups("groups", groups); err != nil {
		return err
	}
	list, err := groupsArg(groups)
	if err != nil {
		return err
	}
	now := db.now().UnixNano()
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET group_list = ?, updated_at = ? WHERE id = ?`,
			list, now, agentID)
		if err != nil {
			return fmt.Errorf("update agent groups: %w", err)
		}
		n, err := rowsAffected(res)
		if err != nil {
			return err
		}
		if n == 0 {
			return tether.NotFound("agent", agentID)
		}
		return setMembership(ctx, tx, agentID, list)
	})
}

// setMembership replaces the agent's rows in agent_groups with the groups
// of list, a JSON array (groupsArg).
func setMembership(ctx context.Context, tx *sql.Tx, agentID, list string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM agent_groups WHERE agent_id = ?`, agentID); err != nil {
		return fmt.Errorf("delete agent groups: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO agent_groups (grp, agent_id)
		SELECT value, ? FROM json_each(?)`, agentID, list)
	if err != nil {
		return fmt.Errorf("insert agent groups: %w", err)
	}
	return nil
}

// GroupConfigs returns the configurations of the named groups that were
// created, in the order of groups (a group named twice is returned once).
func (db *DB) GroupConfigs(ctx context.Context, groups []string) ([]*tether.GroupConfig, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	// Each group once, in order: json_each numbers them by key.
	seen := make(map[string]bool, len(groups))
	var names []string
	for _, g := range groups {
		if !seen[g] {
			seen[g] = true
			names = append(names, g)
		}
	}
	list, err := json.Marshal(names)
	if err != nil {
		return nil, fmt.Errorf("encode group names: %w", err)
	}
	return queryAll(ctx, db.reader, func(s scanner) (*tether.GroupConfig, error) {
		var (
			c       tether.GroupConfig
			updated sql.NullInt64
		)
		if err := s.Scan(&c.Group, &c.Doc, &c.Version, &updated); err != nil {
			return nil, err
		}
		if len(c.Doc) == 0 {
			c.Doc = []byte("{}")
		}
		c.UpdatedAt = timeVal(updated)
		return &c, nil
	}, "select group configs", `SELECT g.name, g.config_json, g.version, g.updated_at
		FROM json_each(?) AS n JOIN groups AS g ON g.name = n.value
		ORDER BY n.key`, string(list))
}
