package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tetherhq/tether"
)

// groupColumns are the columns of groups, then the member count.
const groupColumns = `name, description, config, config_json, version, created_at, updated_at,
	(SELECT count(*) FROM agent_groups WHERE grp = groups.name)`

func scanGroup(s scanner) (*tether.Group, error) {
	var (
		g                tether.Group
		created, updated pgtype.Timestamptz
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
	g, err := scanGroup(q.QueryRow(ctx, `SELECT `+groupColumns+` FROM groups WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
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
		created = micro(db.now())
	}
	if updated.IsZero() {
		updated = created
	}
	var stored *tether.Group
	err = db.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO groups
			(name, description, config, config_json, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
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
	return getGroup(ctx, db.pool, name)
}

// Groups lists the created groups by name, with their member counts.
func (db *DB) Groups(ctx context.Context) ([]*tether.Group, error) {
	return queryAll(ctx, db.pool, scanGroup, "select groups", `SELECT `+groupColumns+` FROM groups ORDER BY name`)
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
		updated = db.now()
	}
	var stored *tether.Group
	err = db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE groups
			SET description = $1, config = $2, config_json = $3, version = $4, updated_at = $5
			WHERE name = $6`,
			g.Description, blobArg(g.Config), doc, g.Version, timeArg(updated), g.Name)
		if err != nil {
			return fmt.Errorf("update group: %w", err)
		}
		if tag.RowsAffected() == 0 {
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
	now := db.now().UTC()
	return db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE agents SET group_list = array_remove(group_list, $1::text), updated_at = $2
			WHERE id IN (SELECT agent_id FROM agent_groups WHERE grp = $1)`, name, now)
		if err != nil {
			return fmt.Errorf("remove group from agents: %w", err)
		}
		members := tag.RowsAffected()
		if _, err := tx.Exec(ctx, `DELETE FROM agent_groups WHERE grp = $1`, name); err != nil {
			return fmt.Errorf("delete group members: %w", err)
		}
		tag, err = tx.Exec(ctx, `DELETE FROM groups WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete group: %w", err)
		}
		if tag.RowsAffected() == 0 && members == 0 {
			return tether.NotFound("group", name)
		}
		return nil
	})
}

// SetAgentVersion records the version an agent runs.
func (db *DB) SetAgentVersion(ctx context.Context, agentID, version string) error {
	n, err := db.exec(ctx, "update agent version", `UPDATE agents SET version = $1, updated_at = $2 WHERE id = $3`,
		text(version), db.now().UTC(), agentID)
	if err != nil {
		return err
	}
	if n == 0 {
		return tether.NotFound("agent", agentID)
	}
	return nil
}

// SetAgentGroups replaces the agent's group list and membership index, and
// sets its UpdatedAt to the current time.
func (db *DB) SetAgentGroups(ctx context.Context, agentID string, groups []string) error {
	if err := tether.ValidateGroups("groups", groups); err != nil {
		return err
	}
	now := db.now().UTC()
	return db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE agents SET group_list = $1, updated_at = $2 WHERE id = $3`,
			listArg(groups), now, agentID)
		if err != nil {
			return fmt.Errorf("update agent groups: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return tether.NotFound("agent", agentID)
		}
		return setMembership(ctx, tx, agentID, groups)
	})
}

// setMembership replaces the agent's rows in agent_groups with groups. The
// caller has written the agent's row in tx, which holds it locked.
func setMembership(ctx context.Context, tx pgx.Tx, agentID string, groups []string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM agent_groups WHERE agent_id = $1`, agentID); err != nil {
		return fmt.Errorf("delete agent groups: %w", err)
	}
	if len(groups) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO agent_groups (grp, agent_id)
		SELECT DISTINCT g, $1 FROM unnest($2::text[]) AS g ON CONFLICT DO NOTHING`, agentID, groups)
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
	seen := make(map[string]bool, len(groups))
	var names []string
	for _, g := range groups {
		if !seen[g] {
			seen[g] = true
			names = append(names, g)
		}
	}
	return queryAll(ctx, db.pool, func(s scanner) (*tether.GroupConfig, error) {
		var (
			c       tether.GroupConfig
			updated pgtype.Timestamptz
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
		FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i) JOIN groups AS g ON g.name = n.name
		ORDER BY n.i`, names)
}
