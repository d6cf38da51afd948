// Package postgres implements tether.Store on PostgreSQL, with pgx and its
// connection pool. It is the store of a cluster: every server node opens the
// same database and any node may serve any request.
//
// Open takes a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DB?…,
// the libpq form pgx reads, PG* environment variables and ~/.pgpass
// included). Parameters pgx does not know are session settings:
// search_path=NAME keeps Tether's tables in that schema. pool_max_conns
// sizes the pool (default: the larger of 4 and the number of CPUs).
//
// Times are timestamptz, so they keep whole microseconds; the zero time is
// NULL. The schema is created and upgraded by the embedded migrations in
// migrations/, applied by Open under an advisory lock, so that nodes
// starting at once apply each migration once.
//
// Transactions run at READ COMMITTED. Where a method's contract needs more
// (the last-admin guard, token uses, claims of server orders), it takes the
// lock it needs: an advisory lock, a row lock, or SKIP LOCKED. Transactions
// that fail on a deadlock or a serialization failure are run again.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tetherhq/tether"
)

// Advisory lock keys (pg_advisory_lock), fixed for every Tether database:
// two 32-bit halves, "Tthr" and a number.
const (
	lockMigrations int64 = 0x54746872_00000001
	lockAdmins     int64 = 0x54746872_00000002
)

// maxAttempts bounds how often a transaction that failed on a deadlock or
// a serialization failure is run.
const maxAttempts = 5

// DB is a tether.Store on a PostgreSQL database. It is safe for concurrent
// use, from one process or many.
type DB struct {
	pool *pgxpool.Pool
	// now returns the current time, for the few defaults the store fills in.
	now func() time.Time
}

var _ tether.Store = (*DB)(nil)

// IsURL reports whether s is a PostgreSQL URL (postgres:// or
// postgresql://).
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open connects to the database at url and applies the migrations it
// lacks. It fails when the database's schema is newer than this binary
// knows, or when the database cannot be reached.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL store: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL store: %w", err)
	}
	db := &DB{pool: pool, now: time.Now}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL (%s): %w", describe(cfg), err)
	}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// describe names the server and database of cfg, without the password.
func describe(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("host %s port %d database %s user %s", c.Host, c.Port, c.Database, c.User)
}

// Pool returns the connection pool, for the parts of a node that use
// PostgreSQL beyond the store (LISTEN/NOTIFY).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close closes the pool's connections.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// tx runs fn in a transaction, and commits it when fn returns nil. A
// transaction that fails on a deadlock or a serialization failure is run
// again from the start, so fn must set its results afresh on each call.
func (db *DB) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := db.tx1(ctx, fn)
		if err == nil || attempt == maxAttempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
		// A short pause, growing, before the next attempt.
		time.Sleep(time.Duration(attempt*attempt) * time.Millisecond)
	}
}

func (db *DB) tx1(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// A no-op after Commit. Without ctx: a cancelled context must not keep
	// the rollback from reaching the server.
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// exec runs one statement outside a transaction, run again on a deadlock.
func (db *DB) exec(ctx context.Context, what, query string, args ...any) (int64, error) {
	for attempt := 1; ; attempt++ {
		tag, err := db.pool.Exec(ctx, query, args...)
		if err == nil {
			return tag.RowsAffected(), nil
		}
		if attempt == maxAttempts || !retryable(err) || ctx.Err() != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(time.Duration(attempt*attempt) * time.Millisecond)
	}
}

// SQLSTATE codes the store looks at.
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// retryable reports whether a transaction that failed with err may succeed
// when run again.
func retryable(err error) bool {
	c := pgCode(err)
	return c == codeSerializationFailure || c == codeDeadlockDetected
}

// isUniqueViolation reports whether err is a PRIMARY KEY or UNIQUE
// constraint failure.
func isUniqueViolation(err error) bool { return pgCode(err) == codeUniqueViolation }

// Times: timestamptz, NULL for the zero time. Times are cut to whole
// microseconds, as PostgreSQL keeps them.

func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

func timeVal(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// micro cuts t to the microseconds the database keeps.
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// blobArg stores an empty byte slice as NULL.
func blobArg(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// blobVal reads NULL and empty blobs as nil.
func blobVal(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// text is s as PostgreSQL can store it: text cannot hold the character
// NUL (U+0000), which becomes U+FFFD. Applied to the strings that come from
// agents (their facts, state keys, result messages), which SQLite stores
// as they are.
func text(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// listArg is a list for a NOT NULL text[] column: never NULL.
func listArg(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// listVal reads an empty list as nil.
func listVal(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// scanner is a pgx.Row or pgx.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// queryer is a *pgxpool.Pool or a pgx.Tx.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// queryAll runs query and returns its rows read by scan. what says what the
// query does, for errors ("select agents").
func queryAll[T any](ctx context.Context, q queryer, scan func(scanner) (T, error), what, query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var all []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: scan: %w", what, err)
		}
		all = append(all, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return all, nil
}

// params numbers the parameters of a query built piece by piece.
type params []any

// add appends v and returns its placeholder ($n).
func (p *params) add(v any) string {
	*p = append(*p, v)
	return "$" + strconv.Itoa(len(*p))
}

// limit returns n, or the default of 100 when n is not positive.
func limit(n int) int {
	if n <= 0 {
		return 100
	}
	return n
}
