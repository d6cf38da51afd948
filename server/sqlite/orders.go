package sqlite

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether"
)

// cursor is where a list stopped: the creation time and id of its last
// row. It travels as base64url("<unix nanoseconds>.<id>").
type cursor struct {
	at int64
	id string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.at, 10) + "." + c.id))
}

func decodeCursor(s string) (cursor, error) {
	bad := tether.FieldError("cursor", "not a cursor from a previous page")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, bad
	}
	at, id, ok := strings.Cut(string(b), ".")
	if !ok || id == "" {
		return cursor{}, bad
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return cursor{}, bad
	}
	return cursor{at: n, id: id}, nil
}

// Orders lists orders by creation time then id, and returns the cursor of
// the next page ("" after the last one).
func (db *DB) Orders(ctx context.Context, f tether.OrderFilter) ([]*tether.Order, string, error) {
	var (
		where []string
		args  []any
	)
	if f.RequestID != "" {
		where = append(where, "request_id = ?")
		args = append(args, f.RequestID)
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = ?")
		args = append(args, f.AgentID)
	}
	if f.Group != "" {
		where = append(where, "agent_id IN (SELECT agent_id FROM agent_groups WHERE grp = ?)")
		args = append(args, f.Group)
	}
	if f.Status != "" {
		where = append(where, "status = ?")
		args = append(args, string(f.Status))
	}
	if f.Action != "" {
		where = append(where, "action_name = ?")
		args = append(args, f.Action)
	}
	if !f.CreatedAfter.IsZero() {
		where = append(where, "created_at > ?")
		args = append(args, f.CreatedAfter.UnixNano())
	}
	if !f.CreatedBefore.IsZero() {
		where = append(where, "created_at < ?")
		args = append(args, f.CreatedBefore.UnixNano())
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) > (?, ?)")
		args = append(args, c.at, c.id)
	}
	n := f.Limit
	switch {
	case n <= 0:
		n = tether.DefaultOrderLimit
	case n > tether.MaxOrderLimit:
		n = tether.MaxOrderLimit
	}
	q := `SELECT ` + orderColumns + ` FROM orders`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at, id LIMIT ?`
	args = append(args, n+1)
	os, _, err := queryOrders(ctx, db.reader, "select orders", q, args...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(os) > n {
		os = os[:n]
		last := os[n-1]
		next = cursor{at: last.CreatedAt.UnixNano(), id: last.ID}.String()
	}
	return os, next, nil
}

// CommandCounts counts the orders of each request by status, in one query.
func (db *DB) CommandCounts(ctx context.Context, requestIDs []string) (map[string]map[tether.OrderStatus]int, error) {
	counts := make(map[string]map[tether.OrderStatus]int, len(requestIDs))
	if len(requestIDs) == 0 {
		return counts, nil
	}
	list, err := json.Marshal(requestIDs)
	if err != nil {
		return nil, fmt.Errorf("encode request ids: %w", err)
	}
	rows, err := db.reader.QueryContext(ctx, `SELECT request_id, status, count(*) FROM orders
		WHERE request_id IN (SELECT value FROM json_each(?))
		GROUP BY request_id, status`, string(list))
	if err != nil {
		return nil, fmt.Errorf("count orders: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, status string
			n          int
		)
		if err := rows.Scan(&id, &status, &n); err != nil {
			return nil, fmt.Errorf("scan order count: %w", err)
		}
		if counts[id] == nil {
			counts[id] = map[tether.OrderStatus]int{}
		}
		counts[id][tether.OrderStatus(status)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count orders: %w", err)
	}
	return counts, nil
}

// FinishedOrders returns up to limit (default 100) orders that finished
// before before, by finish time then id.
func (db *DB) FinishedOrders(ctx context.Context, before time.Time, limitN int) ([]*tether.Order, error) {
	// finished_at is set exactly when an order finishes; the unary + keeps
	// SQLite on the finished_at index rather than the status one.
	os, _, err := queryOrders(ctx, db.reader, "select finished orders", `SELECT `+orderColumns+` FROM orders
		WHERE finished_at < ? AND +status IN ('success', 'failure')
		ORDER BY finished_at, id LIMIT ?`, before.UnixNano(), limit(limitN))
	return os, err
}

// DeleteOrders deletes the finished orders with the ids in one statement,
// and returns how many it deleted.
func (db *DB) DeleteOrders(ctx context.Context, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return 0, fmt.Errorf("encode order ids: %w", err)
	}
	// The unary + keeps SQLite on the id index rather than the status one.
	res, err := db.writer.ExecContext(ctx, `DELETE FROM orders
		WHERE id IN (SELECT value FROM json_each(?)) AND +status IN ('success', 'failure')`, string(list))
	if err != nil {
		return 0, fmt.Errorf("delete orders: %w", err)
	}
	n, err := rowsAffected(res)
	return int(n), err
}

// DeleteEmptyCommands deletes the requests created before before that have
// no orders, in one statement, and returns how many it deleted.
func (db *DB) DeleteEmptyCommands(ctx context.Context, before time.Time) (int, error) {
	res, err := db.writer.ExecContext(ctx, `DELETE FROM command_requests
		WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM orders WHERE request_id = command_requests.id)`,
		before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("delete empty commands: %w", err)
	}
	n, err := rowsAffected(res)
	return int(n), err
}
