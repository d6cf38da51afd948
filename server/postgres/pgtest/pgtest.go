// Package pgtest gives tests a PostgreSQL schema of their own on a real
// server, so that test runs (and the tests of one run) never see each
// other's data.
//
// The server is TETHER_TEST_POSTGRES (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable); its database is
// created when missing (the user may then need CREATEDB). When it cannot
// be reached, the tests that need it are skipped with a message saying how
// to point them at a server, except under CI (CI=true), where they fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EnvURL names the environment variable that holds the test server's URL.
const EnvURL = "TETHER_TEST_POSTGRES"

// DefaultURL is the test server's URL when EnvURL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

var (
	reachOnce sync.Once
	reachErr  error
)

// ServerURL returns the URL of the test server, or skips the test (fails
// it under CI) when the server cannot be reached.
func ServerURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		base = DefaultURL
	}
	reachOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if pgCode(err) == "3D000" { // invalid_catalog_name: no such database
			err = createDatabase(ctx, base)
			if err == nil {
				conn, err = pgx.Connect(ctx, base)
			}
		}
		if err != nil {
			reachErr = err
			return
		}
		reachErr = conn.Ping(ctx)
		conn.Close(ctx)
	})
	if reachErr != nil {
		msg := fmt.Sprintf("PostgreSQL is not reachable at %s: %v", redact(base), reachErr)
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s\n(CI=true: the PostgreSQL tests must run; start PostgreSQL or set %s)", msg, EnvURL)
		}
		t.Skipf("%s\nskipping; to run these tests, start PostgreSQL or set %s=postgres://USER@HOST:PORT/DB?sslmode=disable", msg, EnvURL)
	}
	return base
}

// URL returns the URL of a new, empty schema on the test server, which is
// dropped when the test ends. The URL sets search_path to the schema, and
// synchronous_commit off: a test does not need its commits to survive a
// power loss, and thousands of commits run much faster without waiting for
// the disk.
func URL(t testing.TB) string {
	t.Helper()
	base := ServerURL(t)
	var b [8]byte
	rand.Read(b[:])
	schema := "tether_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to the test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	return u.String()
}

// createDatabase creates the database of the URL base, through the
// server's postgres database. Another test process creating it at the
// same time is fine.
func createDatabase(ctx context.Context, base string) error {
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		return err
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if c := pgCode(err); c == "42P04" || c == "23505" { // duplicate_database, or a concurrent creation
		err = nil
	}
	return err
}

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// redact returns the URL without its password.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
