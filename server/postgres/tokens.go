package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tetherhq/tether"
)

const tokenColumns = `id, name, role, kind, secret_hash, group_list, max_uses, uses,
	expires_at, revoked_at, created_at, created_by`

func scanToken(s scanner) (*tether.Token, error) {
	var (
		t                         tether.Token
		role, kind                string
		expires, revoked, created pgtype.Timestamptz
	)
	err := s.Scan(&t.ID, &t.Name, &role, &kind, &t.SecretHash, &t.Groups, &t.MaxUses, &t.Uses,
		&expires, &revoked, &created, &t.CreatedBy)
	if err != nil {
		return nil, err
	}
	t.Role, t.Kind = tether.Role(role), tether.TokenKind(kind)
	t.Groups = listVal(t.Groups)
	t.ExpiresAt, t.RevokedAt, t.CreatedAt = timeVal(expires), timeVal(revoked), timeVal(created)
	return &t, nil
}

// tokenArgs returns the values of tokenColumns for t.
func tokenArgs(t *tether.Token) []any {
	return []any{t.ID, t.Name, string(t.Role), string(t.Kind), t.SecretHash, listArg(t.Groups), t.MaxUses, t.Uses,
		timeArg(t.ExpiresAt), timeArg(t.RevokedAt), timeArg(t.CreatedAt), t.CreatedBy}
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
		t.CreatedAt = micro(db.now())
	}
	return nil
}

// CreateToken stores a new token. A zero CreatedAt is set to the current
// time, a zero Kind to the role's default kind. A token id in use is
// ECONFLICT.
func (db *DB) CreateToken(ctx context.Context, t *tether.Token) error {
	if err := db.prepareToken(t); err != nil {
		return err
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO tokens (`+tokenColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, tokenArgs(t)...)
	if isUniqueViolation(err) {
		return tether.Errorf(tether.ECONFLICT, "token %q already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("insert token: %w", err)
	}
	return nil
}

// CreateFirstAdmin stores t, an admin token, unless the store holds an
// admin token already, and reports whether it did. An advisory lock, the
// one RevokeToken takes, makes the check and the insertion one step.
func (db *DB) CreateFirstAdmin(ctx context.Context, t *tether.Token) (bool, error) {
	if t.Role != tether.RoleAdmin {
		return false, tether.FieldError("role", "want %q, not %q", tether.RoleAdmin, t.Role)
	}
	if err := db.prepareToken(t); err != nil {
		return false, err
	}
	var created bool
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockAdmins); err != nil {
			return fmt.Errorf("lock admin tokens: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO tokens (`+tokenColumns+`)
			SELECT $1::text, $2::text, $3::text, $4::text, $5::bytea, $6::text[], $7::bigint, $8::bigint,
				$9::timestamptz, $10::timestamptz, $11::timestamptz, $12::text
			WHERE NOT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin')`, tokenArgs(t)...)
		if isUniqueViolation(err) {
			return tether.Errorf(tether.ECONFLICT, "token %q already exists", t.ID)
		}
		if err != nil {
			return fmt.Errorf("insert token: %w", err)
		}
		created = tag.RowsAffected() == 1
		return nil
	})
	return created, err
}

// Token returns the token with the id, revoked or not.
func (db *DB) Token(ctx context.Context, id string) (*tether.Token, error) {
	return getToken(ctx, db.pool, id, "")
}

// getToken reads a token; lock, when set, is a locking clause ("FOR
// UPDATE").
func getToken(ctx context.Context, q queryer, id, lock string) (*tether.Token, error) {
	t, err := scanToken(q.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1 `+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
		args  params
	)
	if f.Role != "" {
		where = append(where, "role = "+args.add(string(f.Role)))
	}
	if !f.IncludeRevoked {
		where = append(where, "revoked_at IS NULL", "(expires_at IS NULL OR expires_at > "+args.add(db.now().UTC())+")")
	}
	q := `SELECT ` + tokenColumns + ` FROM tokens`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC`
	return queryAll(ctx, db.pool, scanToken, "select tokens", q, args...)
}

// usableAdmin is the condition that holds for a row of tokens, named
// alias, that is an admin token usable at the time $1 (see
// tether.Token.Usable).
func usableAdmin(alias string) string {
	return fmt.Sprintf(`%[1]s.role = 'admin' AND %[1]s.revoked_at IS NULL
		AND (%[1]s.expires_at IS NULL OR %[1]s.expires_at > $1)
		AND (%[1]s.max_uses = 0 OR %[1]s.uses < %[1]s.max_uses)`, alias)
}

// RevokeToken marks the token revoked at the time given. Revoking a revoked
// token keeps the first revocation time. Revoking the last admin token
// usable at that time is ECONFLICT. Revocations take an advisory lock, so
// that each one's check sees what the others changed: two concurrent
// revocations cannot remove every admin.
func (db *DB) RevokeToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		at = db.now()
	}
	return db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockAdmins); err != nil {
			return fmt.Errorf("lock admin tokens: %w", err)
		}
		tag, err := tx.Exec(ctx, `UPDATE tokens AS t SET revoked_at = coalesce(t.revoked_at, $1)
			WHERE t.id = $2 AND NOT (`+usableAdmin("t")+` AND NOT EXISTS (
				SELECT 1 FROM tokens AS o WHERE o.id <> $2 AND `+usableAdmin("o")+`))`,
			at.UTC(), id)
		if err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		if tag.RowsAffected() > 0 {
			return nil
		}
		if _, err := getToken(ctx, tx, id, ""); err != nil {
			return err
		}
		return tether.Errorf(tether.ECONFLICT,
			"token %s is the last usable admin token: create another admin token before revoking it", id)
	})
}
