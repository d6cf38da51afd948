package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tetherhq/tether"
)

// SigningKeys lists every signing key, newest first.
func (db *DB) SigningKeys(ctx context.Context) ([]*tether.SigningKey, error) {
	return queryAll(ctx, db.pool, func(s scanner) (*tether.SigningKey, error) {
		var (
			key              tether.SigningKey
			created, retired pgtype.Timestamptz
		)
		if err := s.Scan(&key.ID, &key.Private, &created, &retired); err != nil {
			return nil, err
		}
		key.CreatedAt, key.RetiredAt = timeVal(created), timeVal(retired)
		return &key, nil
	}, "select signing keys", `SELECT id, private, created_at, retired_at
		FROM signing_keys ORDER BY created_at DESC, id DESC`)
}

// AddSigningKey stores a new key; a zero CreatedAt is set to the current
// time. A key id in use is ECONFLICT.
func (db *DB) AddSigningKey(ctx context.Context, k *tether.SigningKey) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = micro(db.now())
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO signing_keys (id, private, created_at, retired_at)
		VALUES ($1, $2, $3, $4)`, k.ID, k.Private, timeArg(k.CreatedAt), timeArg(k.RetiredAt))
	if isUniqueViolation(err) {
		return tether.Errorf(tether.ECONFLICT, "signing key %q already exists", k.ID)
	}
	if err != nil {
		return fmt.Errorf("insert signing key: %w", err)
	}
	return nil
}

// Secret returns a named cluster secret.
func (db *DB) Secret(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := db.pool.QueryRow(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tether.NotFound("secret", name)
	}
	if err != nil {
		return nil, fmt.Errorf("select secret: %w", err)
	}
	return v, nil
}

// PutSecretOnce stores a named secret unless it exists, and returns the
// stored value. An insertion racing another one waits for it on the unique
// name, then finds its value: every caller gets the same one.
func (db *DB) PutSecretOnce(ctx context.Context, name string, value []byte) ([]byte, error) {
	if value == nil {
		value = []byte{}
	}
	var v []byte
	err := db.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, name, value, db.now().UTC())
		if err != nil {
			return fmt.Errorf("insert secret: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v); err != nil {
			return fmt.Errorf("select secret: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}
