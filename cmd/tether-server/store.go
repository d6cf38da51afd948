package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/postgres"
	"github.com/tetherhq/tether/server/sqlite"
)

// dbFile is the SQLite database in the data directory.
const dbFile = "tether.db"

// versionedStore is a store whose schema is versioned by migrations.
type versionedStore interface {
	tether.Store
	SchemaVersion(ctx context.Context) (int, error)
}

// openStore opens the store of cfg, applying the migrations it lacks: the
// SQLite database in the data directory (created with the directory), or
// the PostgreSQL database of cfg.Store. It also returns the latest schema
// version this binary knows for that store.
func openStore(ctx context.Context, cfg Config) (versionedStore, int, error) {
	if cfg.Store != "" {
		db, err := postgres.Open(ctx, cfg.Store)
		if err != nil {
			return nil, 0, fmt.Errorf("open store: %w", err)
		}
		return db, postgres.LatestSchemaVersion(), nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("create data directory: %w", err)
	}
	db, err := sqlite.Open(filepath.Join(cfg.DataDir, dbFile))
	if err != nil {
		return nil, 0, fmt.Errorf("open database: %w", err)
	}
	return db, sqlite.LatestSchemaVersion(), nil
}

// storeName names the store of cfg for people: the database file, or the
// PostgreSQL URL without its password.
func storeName(cfg Config) string {
	if cfg.Store == "" {
		return "SQLite " + filepath.Join(cfg.DataDir, dbFile)
	}
	u, err := url.Parse(cfg.Store)
	if err != nil {
		return "PostgreSQL"
	}
	return "PostgreSQL " + u.Redacted()
}
