package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetherhq/tether"
)

const tokenColumns = `id, name, role, kind, secret_hash, group_list, max_uses, uses,
	expires_at, revoked_at, created_at, created_by`

func scanToken(s scanner) (*tether.Token, error) {
	var (
		t                         tether.Token
		role, kind, groups        string
		expires, revoked, created sql.NullInt64
	)
	err := s.Scan(&t.ID, &t.Name, &role, &kind, &t.SecretHash, &groups, &t.MaxUses, &t.Uses,
		&expires, &revoked, &created, &t.CreatedBy)
	if err != nil {
		return nil, err
	}
	t.Role, t.Kind = tether.Role(role), tether.TokenKind(kind)
	if t.Groups, err = groupsVal(groups); err != nil {
		return nil, err
	}
	t.ExpiresAt, t.RevokedAt, t.CreatedAt = timeVal(expires), timeVal(revoked), timeVal(created)
	return &t, nil
}

// groupsArg encodes a list of groups as a JSON array.
func groupsArg(groups []string) (string, error) {
	if len(groups) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return "", fmt.Errorf("encode groups: %w", err)
	}
	return string(b), nil
}

// groupsVal decodes a JSON array of groups; an empty list is nil.
func groupsVal(s string) ([]string, error) {
	var groups []string
	if err := json.Unmarshal([]byte(s), &groups); err != nil {
		return nil, fmt.Errorf("decode groups: %w", err)
	}
	if len(groups) == 0 {
		return nil, nil
	}
	return groups, nil
}

// prepareToken fills in the defaults of a new token and checks its kind.
func (db *DB) prepareToken(t *tether.Token) error {
	if t.Kind == "" {
		t.Kind = tether.DefaultKind(t.Role)
	}
	if !t.Kind.Valid() {
		return tether.FieldError("kind", "%q is not one of user, service", t.Kind)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = db.now().UTC()
	}
	return nil
}

// tokenArgs returns the values of tokenColumns for t.
func tokenArgs(t *tether.Token) ([]any, error) {
	groups, err := groupsArg(t.Groups)
	if err != nil {
		return nil, err
	}
	return []any{t.ID, t.Name, string(t.Role), string(t.Kind), t.SecretHash, groups, t.MaxUses, t.Uses,
		timeArg(t.ExpiresAt), timeArg(t.RevokedAt), timeArg(t.CreatedAt), t.CreatedBy}, nil
}

// CreateToken stores a new token. A zero CreatedAt is set to the current
// time, a zero Kind to the role's default kind. A token id in use is
// ECONFLICT.
func (db *DB) CreateToken(ctx context.Context, t *tether.Token) error {
	if err := db.prepareToken(t); err != nil {
		return err
	}
	args, err := tokenArgs(t)
	if err != nil {
		return err
	}
	_, err = db.writer.ExecContext(ctx, `INSERT INTO tokens (`+tokenColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	if isUniqueViolation(err) {
		return tether.Errorf(tether.ECONFLICT, "token %q already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("insert token: %w", err)
	}
	return nil
}

// CreateFirstAdmin stores t, an admin token, unless the store holds an
// admin token already, and reports whether it did: one statement in a
// write transaction, which holds the database's write lock.
func (db *DB) CreateFirstAdmin(ctx context.Context, t *tether.Token) (bool, error) {
	if t.Role != tether.RoleAdmin {
		return false, tether.FieldError("role", "want %q, not %q", tether.RoleAdmin, t.Role)
	}
	if err := db.prepareToken(t); err != nil {
		return false, err
	}
	args, err := tokenArgs(t)
	if err != nil {
		return false, err
	}
	var created bool
	err = db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO tokens (`+tokenColumns+`)
			SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
			WHERE NOT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin')`, args...)
		if isUniqueViolation(err) {
			return tether.Errorf(tether.ECONFLICT, "token %q already exists", t.ID)
		}
		if err != nil {
			return fmt.Errorf("insert token: %w", err)
		}
		n, err := rowsAffected(res)
		created = n == 1
		return err
	})
	return created, err
}

// Token returns the token with the id, revoked or not.
func (db *DB) Token(ctx context.Context, id string) (*tether.Token, error) {
	return getToken(ctx, db.reader, id)
}

func getToken(ctx context.Context, q queryer, id string) (*tether.Token, error) {
	t, err := scanToken(q.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tether.NotFound("token", id)
	}
	if err != nil {
		return nil, fmt.Errorf("select token: %w", err)
	}
	return t, nil
}

// Tokens lists tokens, newest first. Unless f.IncludeRevoked, revoked tokens
// and tokens expired at the current time are left out.
func (db *DB) Tokens(ctx context.Context, f tether.TokenFilter) ([]*tether.Token, error) {
	var (
		where []string
		args  []any
	)
	if f.Role != "" {
		where = append(where, "role = ?")
		args = append(args, string(f.Role))
	}
	if !f.IncludeRevoked {
		where = append(where, "revoked_at IS NULL", "(expires_at IS NULL OR expires_at > ?)")
		args = append(args, db.now().UnixNano())
	}
	q := `SELECT ` + tokenColumns + ` FROM tokens`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC`
	return queryAll(ctx, db.reader, scanToken, "select tokens", q, args...)
}

// usableAdmin is the condition that holds for a row of tokens, named
// alias, that is an admin token usable at the time ?1 (see
// tether.Token.Usable).
func usableAdmin(alias string) string {
	return fmt.Sprintf(`%[1]s.role = 'admin' AND %[1]s.revoked_at IS NULL
		AND (%[1]s.expires_at IS NULL OR %[1]s.expires_at > ?1)
		AND (%[1]s.max_uses = 0 OR %[1]s.uses < %[1]s.max_uses)`, alias)
}

// RevokeToken marks the token revoked at the time given. Revoking a revoked
// token keeps the first revocation time. Revoking the last admin token
// usable at that time is ECONFLICT: the check and the change are one
// statement, so concurrent revocations cannot remove every admin.
func (db *DB) RevokeToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		at = db.now()
	}
	res, err := db.writer.ExecContext(ctx, `UPDATE tokens AS t SET revoked_at = coalesce(revoked_at, ?1)
		WHERE t.id = ?2 AND NOT (`+usableAdmin("t")+` AND NOT EXISTS (
			SELECT 1 FROM tokens AS o WHERE o.id != ?2 AND `+usableAdmin("o")+`))`,
		at.UnixNano(), id)
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	n, err := rowsAffected(res)
	if err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := getToken(ctx, db.writer, id); err != nil {
		return err
	}
	return tether.Errorf(tether.ECONFLICT,
		"token %s is the last usable admin token: create another admin token before revoking it", id)
}
