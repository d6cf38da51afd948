// Package sqlite implements tether.Store on a SQLite database file, with the
// pure Go driver modernc.org/sqlite. It is the store of a single-node server.
//
// Times are stored as INTEGER unix nanoseconds in UTC, and the zero time as
// NULL. The schema is created and upgraded by the embedded migrations in
// migrations/, applied in order by Open.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tetherhq/tether"
)

// busyTimeout is how long a connection waits for a lock held by another
// connection (a reader during a checkpoint, or another process) before
// failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// DB is a tether.Store on one SQLite file. It is safe for concurrent use.
//
// It holds two pools on the file:
//
//   - writer has exactly one connection, and opens its transactions with
//     BEGIN IMMEDIATE. SQLite allows one writer at a time; with several write
//     connections, two deferred transactions that both read and then write
//     fail with SQLITE_BUSY however long busy_timeout is (neither can wait
//     for the other), so writes would need retry loops. A single connection
//     queues writers in database/sql instead, in Go, without errors. Every
//     read-then-write sequence (RegisterAgent, FinishOrder, ...) runs on it,
//     inside one transaction, so it is also race-free.
//   - reader has several query-only connections. In WAL mode readers never
//     block the writer nor each other, and each read transaction sees the
//     last committed state.
type DB struct {
	path   string
	writer *sql.DB
	reader *sql.DB
	// now returns the current time, for the few defaults the store fills in.
	now func() time.Time
}

var _ tether.Store = (*DB)(nil)

// Open opens the database file at path, creating it when missing, and
// applies the migrations it lacks. It fails when the file's schema is newer
// than this binary knows.
func Open(path string) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db := &DB{path: abs, now: time.Now}

	// journal_mode=WAL is persistent in the file. synchronous=NORMAL does not
	// sync the WAL on each commit, only at checkpoints: in WAL mode that
	// keeps the database file consistent across a power loss or OS crash
	// (never corrupt), at the cost of possibly losing the last transactions
	// committed just before it. A process crash loses nothing.
	db.writer, err = sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db.writer.SetMaxOpenConns(1)
	db.writer.SetMaxIdleConns(1)
	db.writer.SetConnMaxLifetime(0)
	db.writer.SetConnMaxIdleTime(0)

	ctx := context.Background()
	if err := db.writer.PingContext(ctx); err != nil {
		db.writer.Close()
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	if err := db.migrate(ctx); err != nil {
		db.writer.Close()
		return nil, err
	}

	db.reader, err = sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		db.writer.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	n := max(4, runtime.NumCPU())
	db.reader.SetMaxOpenConns(n)
	db.reader.SetMaxIdleConns(n)
	if err := db.reader.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	return db, nil
}

// dsn returns the driver's data source name for the file at the absolute
// path: a file: URI, so that any character in the path is escaped.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	if u.Path != "" && u.Path[0] != '/' {
		u.Path = "/" + u.Path // Windows drive letters: file:///C:/...
	}
	return u.String()
}

// Path returns the absolute path of the database file.
func (db *DB) Path() string { return db.path }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.reader.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close closes the database.
func (db *DB) Close() error {
	var errs []error
	if db.reader != nil {
		errs = append(errs, db.reader.Close())
	}
	errs = append(errs, db.writer.Close())
	return errors.Join(errs...)
}

// write runs fn in a write transaction, and commits it when fn returns nil.
// Any other way out, a panic included, rolls it back: the writer has one
// connection, which an open transaction would hold forever.
func (db *DB) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// read runs fn in a read transaction, which sees one consistent snapshot.
func (db *DB) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.reader.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// Times: INTEGER unix nanoseconds UTC, NULL for the zero time.

func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func timeVal(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

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

// isUniqueViolation reports whether err is a PRIMARY KEY or UNIQUE
// constraint failure.
func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	c := e.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// queryer is a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// stmtCache runs the statements of one transaction, preparing each distinct
// query once: a transaction that runs the same few statements thousands of
// times (serving a batch of polls) would otherwise spend most of its time
// parsing SQL.
type stmtCache struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

func newStmtCache(tx *sql.Tx) *stmtCache {
	return &stmtCache{tx: tx, stmts: map[string]*sql.Stmt{}}
}

func (c *stmtCache) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := c.stmts[query]; ok {
		return st, nil
	}
	st, err := c.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = st
	return st, nil
}

func (c *stmtCache) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return c.tx.QueryRowContext(ctx, query, args...) // reports the same error
	}
	return st.QueryRowContext(ctx, args...)
}

func (c *stmtCache) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (c *stmtCache) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// queryAll runs query and returns its rows read by scan. what says what the
// query does, for errors ("select agents").
func queryAll[T any](ctx context.Context, q queryer, scan func(scanner) (T, error), what, query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
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

// rowsAffected returns the rows changed by res.
func rowsAffected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("rows affected: %w", err)
	}
	return n, nil
}

// limit returns n, or the default of 100 when n is not positive.
func limit(n int) int {
	if n <= 0 {
		return 100
	}
	return n
}
