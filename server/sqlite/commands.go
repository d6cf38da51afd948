package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
)

const requestColumns = `id, target_type, target_id, action_name, action_args, action_version,
	timeout_ns, source, user_name, created_at`

func scanRequest(s scanner) (*tether.CommandRequest, error) {
	var (
		r       tether.CommandRequest
		ttype   string
		args    []byte
		timeout int64
		created sql.NullInt64
	)
	err := s.Scan(&r.ID, &ttype, &r.Target.ID, &r.Action.Name, &args, &r.Action.Version,
		&timeout, &r.Source, &r.User, &created)
	if err != nil {
		return nil, err
	}
	r.Target.Type = tether.TargetType(ttype)
	r.Action.Args = blobVal(args)
	r.Timeout = time.Duration(timeout)
	r.CreatedAt = timeVal(created)
	return &r, nil
}

const orderColumns = `seq, id, request_id, agent_id, action_name, action_args, action_version,
	status, result_code, result_message, result_data, user_name,
	created_at, sent_at, received_at, finished_at, timeout_at, attempts, agent_groups`

// scanOrder reads an order and its seq, the insertion order.
func scanOrder(s scanner) (*tether.Order, int64, error) {
	var (
		o                                        tether.Order
		seq                                      int64
		agent                                    sql.NullString
		status                                   string
		args, data                               []byte
		created, sent, received, finished, tmout sql.NullInt64
		groups                                   string
	)
	err := s.Scan(&seq, &o.ID, &o.RequestID, &agent, &o.Action.Name, &args, &o.Action.Version,
		&status, &o.Result.Code, &o.Result.Message, &data, &o.User,
		&created, &sent, &received, &finished, &tmout, &o.Attempts, &groups)
	if err != nil {
		return nil, 0, err
	}
	if o.AgentGroups, err = groupsVal(groups); err != nil {
		return nil, 0, fmt.Errorf("order %s agent_groups: %w", o.ID, err)
	}
	o.AgentID = agent.String
	o.Status = tether.OrderStatus(status)
	o.Action.Args, o.Result.Data = blobVal(args), blobVal(data)
	o.CreatedAt, o.SentAt, o.ReceivedAt = timeVal(created), timeVal(sent), timeVal(received)
	o.FinishedAt, o.TimeoutAt = timeVal(finished), timeVal(tmout)
	return &o, seq, nil
}

// queryOrders runs query, which returns orderColumns, and returns the
// orders and their seqs. what says what the query does, for errors.
func queryOrders(ctx context.Context, q queryer, what, query string, args ...any) ([]*tether.Order, []int64, error) {
	var seqs []int64
	os, err := queryAll(ctx, q, func(s scanner) (*tether.Order, error) {
		o, seq, err := scanOrder(s)
		seqs = append(seqs, seq)
		return o, err
	}, what, query, args...)
	return os, seqs, err
}

// agentArg stores the agent id "" of a server order as NULL.
func agentArg(id string) any {
	if id == "" {
		return nil
	}
	return id
}

// insertOrderSQL inserts an order: ?1 to ?18 are its columns after seq, in
// the order of orderColumns.
const insertOrderSQL = `INSERT INTO orders (
		id, request_id, agent_id, action_name, action_args, action_version,
		status, result_code, result_message, result_data, user_name,
		created_at, sent_at, received_at, finished_at, timeout_at, attempts, agent_groups)`

const insertOrderValues = `?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18`

// insertOrderArgs returns the arguments of insertOrderSQL for o.
func insertOrderArgs(o *tether.Order) []any {
	return []any{o.ID, o.RequestID, agentArg(o.AgentID), o.Action.Name, blobArg(o.Action.Args), o.Action.Version,
		string(o.Status), o.Result.Code, o.Result.Message, blobArg(o.Result.Data), o.User,
		timeArg(o.CreatedAt), timeArg(o.SentAt), timeArg(o.ReceivedAt), timeArg(o.FinishedAt),
		timeArg(o.TimeoutAt), o.Attempts, groupsText(o.AgentGroups)}
}

// groupsText is groupsArg for a list that cannot fail to encode.
func groupsText(groups []string) string {
	s, err := groupsArg(groups)
	if err != nil {
		return "[]" // json.Marshal of a []string does not fail
	}
	return s
}

// insertRequest inserts the request; an id in use is ECONFLICT.
func insertRequest(ctx context.Context, tx *sql.Tx, r *tether.CommandRequest) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO command_requests (`+requestColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, string(r.Target.Type), r.Target.ID, r.Action.Name, blobArg(r.Action.Args), r.Action.Version,
		int64(r.Timeout), r.Source, r.User, timeArg(r.CreatedAt))
	if isUniqueViolation(err) {
		return tether.Errorf(tether.ECONFLICT, "command %q already exists", r.ID)
	}
	if err != nil {
		return fmt.Errorf("insert command: %w", err)
	}
	return nil
}

func getOrder(ctx context.Context, q queryer, id string) (*tether.Order, error) {
	o, _, err := scanOrder(q.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tether.NotFound("order", id)
	}
	if err != nil {
		return nil, fmt.Errorf("select order: %w", err)
	}
	return o, nil
}

// CreateCommand stores the request and its orders in one transaction. Zero
// CreatedAt times are set to the current time, and an order's empty Status
// to pending. An order for an unknown agent is ENOTFOUND and an id in use
// ECONFLICT; either way nothing is stored.
func (db *DB) CreateCommand(ctx context.Context, r *tether.CommandRequest, orders []*tether.Order) error {
	now := db.now().UTC()
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	for _, o := range orders {
		if o.Status == "" {
			o.Status = tether.OrderPending
		}
		if !o.Status.Valid() {
			return tether.FieldError("status", "unknown order status %q", o.Status)
		}
		if o.CreatedAt.IsZero() {
			o.CreatedAt = r.CreatedAt
		}
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		if err := insertRequest(ctx, tx, r); err != nil {
			return err
		}
		if len(orders) == 0 {
			return nil
		}
		// The SELECT … WHERE inserts nothing for an unknown agent, which
		// tells it apart without a second statement per order.
		stmt, err := tx.PrepareContext(ctx, insertOrderSQL+` SELECT `+insertOrderValues+`
			WHERE ?3 IS NULL OR EXISTS (SELECT 1 FROM agents WHERE id = ?3)`)
		if err != nil {
			return fmt.Errorf("prepare insert order: %w", err)
		}
		defer stmt.Close()
		for _, o := range orders {
			o.RequestID = r.ID
			if o.AgentID != "" {
				var groups string
				err := tx.QueryRowContext(ctx, `SELECT group_list FROM agents WHERE id = ?`, o.AgentID).Scan(&groups)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("select agent groups: %w", err)
				}
				if o.AgentGroups, err = groupsVal(cmp.Or(groups, "[]")); err != nil {
					return err
				}
			}
			res, err := stmt.ExecContext(ctx, insertOrderArgs(o)...)
			if isUniqueViolation(err) {
				return tether.Errorf(tether.ECONFLICT, "order %q already exists", o.ID)
			}
			if err != nil {
				return fmt.Errorf("insert order: %w", err)
			}
			n, err := rowsAffected(res)
			if err != nil {
				return err
			}
			if n == 0 {
				return tether.NotFound("agent", o.AgentID)
			}
		}
		return nil
	})
}

// CreateGroupCommand stores the request and one order per member of the
// group r.Target.ID, copied from tmpl, in one transaction, and returns the
// orders in agent id order. A zero r.CreatedAt is set to the current time,
// a zero tmpl.CreatedAt to r.CreatedAt, and an empty tmpl.Action to
// r.Action.
func (db *DB) CreateGroupCommand(ctx context.Context, r *tether.CommandRequest, tmpl tether.Order) ([]*tether.Order, error) {
	if r.Target.Type != tether.TargetGroup {
		return nil, tether.FieldError("target.type", "want %q, not %q", tether.TargetGroup, r.Target.Type)
	}
	if r.Target.ID == "" {
		return nil, tether.FieldError("target.id", "missing")
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = db.now().UTC()
	}
	if tmpl.CreatedAt.IsZero() {
		tmpl.CreatedAt = r.CreatedAt
	}
	if tmpl.Action.Name == "" {
		tmpl.Action = r.Action
	}
	tmpl.RequestID, tmpl.Status = r.ID, tether.OrderPending
	tmpl.Result, tmpl.Attempts = tether.Result{}, 0
	tmpl.SentAt, tmpl.ReceivedAt, tmpl.FinishedAt = time.Time{}, time.Time{}, time.Time{}
	var orders []*tether.Order
	err := db.write(ctx, func(tx *sql.Tx) error {
		members, err := groupMembers(ctx, tx, r.Target.ID)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			return tether.FieldError("target.id", "group %q has no members", r.Target.ID)
		}
		if err := insertRequest(ctx, tx, r); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, insertOrderSQL+` VALUES (`+insertOrderValues+`)`)
		if err != nil {
			return fmt.Errorf("prepare insert order: %w", err)
		}
		defer stmt.Close()
		orders = make([]*tether.Order, len(members))
		for i, m := range members {
			if err := ctx.Err(); err != nil {
				return err
			}
			o := tmpl
			o.ID, o.AgentID, o.AgentGroups = uuid.NewString(), m.id, m.groups
			if _, err := stmt.ExecContext(ctx, insertOrderArgs(&o)...); err != nil {
				return fmt.Errorf("insert order: %w", err)
			}
			orders[i] = &o
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return orders, nil
}

// groupMembers returns the ids of the agents in the group, in order.
func groupMembers(ctx context.Context, q queryer, group string) ([]member, error) {
	return queryAll(ctx, q, func(s scanner) (m member, err error) {
		var groups string
		if err = s.Scan(&m.id, &groups); err != nil {
			return m, err
		}
		m.groups, err = groupsVal(groups)
		return m, err
	}, "select group members", `SELECT g.agent_id, a.group_list FROM agent_groups g JOIN agents a ON a.id = g.agent_id
		WHERE g.grp = ? ORDER BY g.agent_id`, group)
}

// member is an agent of a group and its groups.
type member struct {
	id     string
	groups []string
}

// CommandRequest returns a request without its orders.
func (db *DB) CommandRequest(ctx context.Context, id string) (*tether.CommandRequest, error) {
	r, err := scanRequest(db.reader.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM command_requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tether.NotFound("command", id)
	}
	if err != nil {
		return nil, fmt.Errorf("select command: %w", err)
	}
	return r, nil
}

// Command returns the request and its orders, ordered by creation time and id.
func (db *DB) Command(ctx context.Context, id string) (*tether.CommandRequest, []*tether.Order, error) {
	var (
		r  *tether.CommandRequest
		os []*tether.Order
	)
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		r, err = scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM command_requests WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return tether.NotFound("command", id)
		}
		if err != nil {
			return fmt.Errorf("select command: %w", err)
		}
		os, _, err = queryOrders(ctx, tx, "select orders", `SELECT `+orderColumns+` FROM orders
			WHERE request_id = ? ORDER BY created_at, id`, id)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return r, os, nil
}

// Commands lists command requests, newest first, by creation time then id,
// and returns the cursor of the next page.
func (db *DB) Commands(ctx context.Context, f tether.CommandFilter) ([]*tether.CommandRequest, string, error) {
	var (
		where []string
		args  []any
	)
	switch {
	case f.AgentID != "" && f.Status != "":
		where = append(where, "id IN (SELECT request_id FROM orders WHERE agent_id = ? AND status = ?)")
		args = append(args, f.AgentID, string(f.Status))
	case f.AgentID != "":
		where = append(where, "id IN (SELECT request_id FROM orders WHERE agent_id = ?)")
		args = append(args, f.AgentID)
	case f.Status != "":
		// Newest requests first, each checked through the request_id index:
		// the unary + keeps SQLite from scanning every order in the status
		// for each request instead.
		where = append(where, "EXISTS (SELECT 1 FROM orders o WHERE o.request_id = command_requests.id AND +o.status = ?)")
		args = append(args, string(f.Status))
	}
	if !f.Before.IsZero() {
		where = append(where, "created_at < ?")
		args = append(args, f.Before.UnixNano())
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < (?, ?)")
		args = append(args, c.at, c.id)
	}
	q := `SELECT ` + requestColumns + ` FROM command_requests`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	n := limit(f.Limit)
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, n+1)
	rs, err := queryAll(ctx, db.reader, scanRequest, "select commands", q, args...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(rs) > n {
		rs = rs[:n]
		last := rs[n-1]
		next = cursor{at: last.CreatedAt.UnixNano(), id: last.ID}.String()
	}
	return rs, next, nil
}

// Order returns one order.
func (db *DB) Order(ctx context.Context, id string) (*tether.Order, error) {
	return getOrder(ctx, db.reader, id)
}

// DeliverOrders serves the polls ds in one transaction: for each, it
// acknowledges the receipt of the ids in Received (orders of that agent
// only), then returns up to Limit (default 100) orders of the agent that are
// pending, or sent but not received, and whose time window has not ended at
// now, in creation order, marking them sent and counting the delivery.
func (db *DB) DeliverOrders(ctx context.Context, ds []tether.Delivery, now time.Time) ([][]*tether.Order, error) {
	at := now.UnixNano()
	out := make([][]*tether.Order, len(ds))
	err := db.write(ctx, func(tx *sql.Tx) error {
		// Statements closed with the transaction.
		c := newStmtCache(tx)
		for i, d := range ds {
			os, err := deliverOrders(ctx, c, d, at)
			if err != nil {
				return err
			}
			out[i] = os
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// deliverOrders serves one poll of DeliverOrders in tx.
func deliverOrders(ctx context.Context, tx *stmtCache, d tether.Delivery, at int64) ([]*tether.Order, error) {
	if len(d.Received) > 0 {
		list, err := json.Marshal(d.Received)
		if err != nil {
			return nil, fmt.Errorf("encode received order ids: %w", err)
		}
		// The unary + keeps SQLite on the id index rather than walking
		// every order of the agent.
		_, err = tx.ExecContext(ctx, `UPDATE orders SET received_at = ?
			WHERE id IN (SELECT value FROM json_each(?)) AND +agent_id = ? AND received_at IS NULL`,
			at, string(list), d.AgentID)
		if err != nil {
			return nil, fmt.Errorf("receive orders: %w", err)
		}
	}
	// The index on (agent_id, status) skips the agent's finished orders;
	// without statistics SQLite would rather walk all of them in creation
	// order.
	return sendOrders(ctx, tx, `SELECT seq FROM orders INDEXED BY orders_agent_status
		WHERE agent_id = ?2 AND status IN ('pending', 'sent')
			AND (status = 'pending' OR received_at IS NULL)
			AND (timeout_at IS NULL OR timeout_at > ?1)
		ORDER BY created_at, seq LIMIT ?3`, at, d.AgentID, limit(d.Limit))
}

// sendOrders marks the orders whose seqs selectSeqs returns sent at at (the
// first time only) and counts a delivery, in one statement, and returns them
// as stored, by creation time then seq. selectSeqs gets at as ?1 and args as
// ?2 and on.
func sendOrders(ctx context.Context, tx queryer, selectSeqs string, at int64, args ...any) ([]*tether.Order, error) {
	os, seqs, err := queryOrders(ctx, tx, "send orders", `UPDATE orders
		SET status = 'sent', sent_at = coalesce(sent_at, ?1), attempts = attempts + 1
		WHERE seq IN (`+selectSeqs+`)
		RETURNING `+orderColumns, append([]any{at}, args...)...)
	if err != nil {
		return nil, err
	}
	// RETURNING gives the rows in no set order.
	idx := make([]int, len(os))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int {
		return cmp.Or(os[i].CreatedAt.Compare(os[j].CreatedAt), cmp.Compare(seqs[i], seqs[j]))
	})
	sorted := make([]*tether.Order, len(os))
	for k, i := range idx {
		sorted[k] = os[i]
	}
	return sorted, nil
}

// CancelOrders fails every pending or sent order that f selects, with the
// message "cancelled", in one conditional update, and returns how many it
// changed.
func (db *DB) CancelOrders(ctx context.Context, f tether.CancelFilter, at time.Time) (int, []string, error) {
	var (
		where []string
		args  = []any{timeArg(at)}
	)
	if f.RequestID != "" {
		where = append(where, "request_id = ?")
		args = append(args, f.RequestID)
	}
	if f.OrderID != "" {
		where = append(where, "id = ?")
		args = append(args, f.OrderID)
	}
	if len(where) == 0 {
		return 0, nil, tether.Errorf(tether.EINVALID, "name a command or an order to cancel")
	}
	cond := strings.Join(where, " AND ")
	var (
		n      int
		sentTo []string
	)
	err := db.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE orders
			SET status = 'failure', result_code = 0, result_message = 'cancelled', result_data = NULL, finished_at = ?
			WHERE `+cond+` AND status IN ('pending', 'sent')
			RETURNING agent_id, sent_at IS NOT NULL`, args...)
		if err != nil {
			return fmt.Errorf("cancel orders: %w", err)
		}
		seen := map[string]bool{}
		for rows.Next() {
			var (
				agent sql.NullString
				sent  bool
			)
			if err := rows.Scan(&agent, &sent); err != nil {
				rows.Close()
				return fmt.Errorf("cancel orders: %w", err)
			}
			n++
			if sent && agent.Valid && !seen[agent.String] {
				seen[agent.String] = true
				sentTo = append(sentTo, agent.String)
			}
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("cancel orders: %w", err)
		}
		if err := rows.Err(); err != nil || n > 0 {
			return err
		}
		var one int
		if f.OrderID != "" {
			err = tx.QueryRowContext(ctx, `SELECT 1 FROM orders WHERE `+cond, args[1:]...).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return tether.NotFound("order", f.OrderID)
			}
		} else {
			err = tx.QueryRowContext(ctx, `SELECT 1 FROM command_requests WHERE id = ?`, f.RequestID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return tether.NotFound("command", f.RequestID)
			}
		}
		if err != nil {
			return fmt.Errorf("select cancelled: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return n, sentTo, nil
}

// FinishedAmong returns those of ids that are finished orders of the agent.
func (db *DB) FinishedAmong(ctx context.Context, agentID string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("encode order ids: %w", err)
	}
	return queryAll(ctx, db.reader, func(s scanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	}, "select finished orders", `SELECT id FROM orders
		WHERE id IN (SELECT value FROM json_each(?)) AND +agent_id = ? AND status IN ('success', 'failure')`,
		string(list), agentID)
}

// ClaimServerOrders moves up to limit (default 100) pending server orders
// whose time window has not ended at now to sent, in creation order, and
// returns them, all in one write transaction: two callers never get the
// same order.
func (db *DB) ClaimServerOrders(ctx context.Context, limitN int, now time.Time) ([]*tether.Order, error) {
	var os []*tether.Order
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		os, err = sendOrders(ctx, tx, `SELECT seq FROM orders
			WHERE agent_id IS NULL AND status = 'pending' AND (timeout_at IS NULL OR timeout_at > ?1)
			ORDER BY created_at, seq LIMIT ?2`, now.UnixNano(), limit(limitN))
		return err
	})
	if err != nil {
		return nil, err
	}
	return os, nil
}

// FinishOrder moves an order of the agent to success or failure with its
// result, and returns the order as stored. An order that had already
// finished is returned unchanged; an order of another agent is ENOTFOUND.
// agentID "" finishes a server order.
func (db *DB) FinishOrder(ctx context.Context, agentID, orderID string, status tether.OrderStatus, res tether.Result, at time.Time) (*tether.Order, error) {
	out, err := db.FinishOrders(ctx, []tether.Finish{{AgentID: agentID, OrderID: orderID, Status: status, Result: res}}, at)
	if err != nil {
		return nil, err
	}
	return out[0].Order, out[0].Err
}

// FinishOrders applies results in one transaction, each statement prepared
// once.
func (db *DB) FinishOrders(ctx context.Context, fs []tether.Finish, at time.Time) ([]tether.FinishOutcome, error) {
	if err := tether.CheckFinishes(fs); err != nil {
		return nil, err
	}
	out := make([]tether.FinishOutcome, len(fs))
	err := db.write(ctx, func(tx *sql.Tx) error {
		c := newStmtCache(tx) // statements closed with the transaction
		for i, f := range fs {
			o, finished, err := finishOrder(ctx, c, f, timeArg(at))
			if tether.ErrorCode(err) == tether.ENOTFOUND {
				out[i].Err = err
				continue
			}
			if err != nil {
				return err
			}
			out[i].Order, out[i].Finished = o, finished
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// finishOrder applies one result of FinishOrders in tx; finished is true
// when it changed the order.
func finishOrder(ctx context.Context, tx queryer, f tether.Finish, at any) (o *tether.Order, finished bool, err error) {
	res := f.Result
	os, _, err := queryOrders(ctx, tx, "finish order", `UPDATE orders
		SET status = ?, result_code = ?, result_message = ?, result_data = ?, finished_at = ?
		WHERE id = ? AND agent_id IS ? AND status IN ('pending', 'sent')
		RETURNING `+orderColumns,
		string(f.Status), res.Code, res.Message, blobArg(res.Data), at, f.OrderID, agentArg(f.AgentID))
	if err != nil {
		return nil, false, err
	}
	if len(os) > 0 {
		return os[0], true, nil
	}
	// Not changed: unknown, another agent's, or finished already (the only
	// statuses left).
	if o, err = getOrder(ctx, tx, f.OrderID); err != nil {
		return nil, false, err
	}
	if o.AgentID != f.AgentID {
		return nil, false, tether.NotFound("order", f.OrderID)
	}
	return o, false, nil
}

// ExpireOrders fails every pending or sent order whose time window ended at
// or before now, with the message "timed out", in one statement, and
// returns how many it changed.
func (db *DB) ExpireOrders(ctx context.Context, now time.Time) (int, error) {
	at := now.UnixNano()
	res, err := db.writer.ExecContext(ctx, `UPDATE orders
		SET status = 'failure', result_code = 0, result_message = 'timed out', result_data = NULL, finished_at = ?1
		WHERE status IN ('pending', 'sent') AND timeout_at <= ?1`, at)
	if err != nil {
		return 0, fmt.Errorf("expire orders: %w", err)
	}
	n, err := rowsAffected(res)
	return int(n), err
}

// CountOrders counts the orders by status and action.
func (db *DB) CountOrders(ctx context.Context) ([]tether.OrderCount, error) {
	return queryAll(ctx, db.reader, func(s scanner) (tether.OrderCount, error) {
		var c tether.OrderCount
		var st string
		err := s.Scan(&st, &c.Action, &c.N)
		c.Status = tether.OrderStatus(st)
		return c, err
	}, "count orders", `SELECT status, action_name, count(*) FROM orders GROUP BY status, action_name ORDER BY status, action_name`)
}
