package postgres

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether"
)

// cursor is where a list stopped: the creation time and id of its last
// row. It travels as base64url("<unix nanoseconds>.<id>"), as the SQLite
// store's cursors do.
type cursor struct {
	at int64
	id string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.at, 10) + "." + c.id))
}

func (c cursor) time() time.Time { return time.Unix(0, c.at).UTC() }

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
		args  params
	)
	if f.RequestID != "" {
		where = append(where, "request_id = "+args.add(f.RequestID))
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = "+args.add(f.AgentID))
	}
	if f.Group != "" {
		where = append(where, "agent_id IN (SELECT agent_id FROM agent_groups WHERE grp = "+args.add(f.Group)+")")
	}
	if f.Status != "" {
		where = append(where, "status = "+args.add(string(f.Status)))
	}
	if f.Action != "" {
		where = append(where, "action_name = "+args.add(f.Action))
	}
	if !f.CreatedAfter.IsZero() {
		where = append(where, "created_at > "+args.add(f.CreatedAfter.UTC()))
	}
	if !f.CreatedBefore.IsZero() {
		where = append(where, "created_at < "+args.add(f.CreatedBefore.UTC()))
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) > ("+args.add(c.time())+", "+args.add(c.id)+")")
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
	q += ` ORDER BY created_at, id LIMIT ` + args.add(n+1)
	os, err := queryOrders(ctx, db.pool, "select orders", q, args...)
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
	rows, err := db.pool.Query(ctx, `SELECT request_id, status, count(*) FROM orders
		WHERE request_id = ANY($1)
		GROUP BY request_id, status`, requestIDs)
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
	return queryOrders(ctx, db.pool, "select finished orders", `SELECT `+orderColumns+` FROM orders
		WHERE finished_at < $1 AND status IN ('success', 'failure')
		ORDER BY finished_at, id LIMIT $2`, before.UTC(), limit(limitN))
}

// DeleteOrders deletes the finished orders with the ids in one statement,
// and returns how many it deleted.
func (db *DB) DeleteOrders(ctx context.Context, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := db.exec(ctx, "delete orders", `DELETE FROM orders
		WHERE id = ANY($1) AND status IN ('success', 'failure')`, ids)
	return int(n), err
}

// DeleteEmptyCommands deletes the requests created before before that have
// no orders, in one statement, and returns how many it deleted.
func (db *DB) DeleteEmptyCommands(ctx context.Context, before time.Time) (int, error) {
	n, err := db.exec(ctx, "delete empty commands", `DELETE FROM command_requests
		WHERE created_at < $1 AND NOT EXISTS (SELECT 1 FROM orders WHERE request_id = command_requests.id)`,
		before.UTC())
	return int(n), err
}
