package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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
		created pgtype.Timestamptz
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
		agent                                    pgtype.Text
		status                                   string
		args, data                               []byte
		created, sent, received, finished, tmout pgtype.Timestamptz
	)
	err := s.Scan(&seq, &o.ID, &o.RequestID, &agent, &o.Action.Name, &args, &o.Action.Version,
		&status, &o.Result.Code, &o.Result.Message, &data, &o.User,
		&created, &sent, &received, &finished, &tmout, &o.Attempts, &o.AgentGroups)
	if err != nil {
		return nil, 0, err
	}
	o.AgentGroups = listVal(o.AgentGroups)
	o.AgentID = agent.String
	o.Status = tether.OrderStatus(status)
	o.Action.Args, o.Result.Data = blobVal(args), blobVal(data)
	o.CreatedAt, o.SentAt, o.ReceivedAt = timeVal(created), timeVal(sent), timeVal(received)
	o.FinishedAt, o.TimeoutAt = timeVal(finished), timeVal(tmout)
	return &o, seq, nil
}

// scanOrders reads rows of orderColumns, and returns the orders and their
// seqs.
func scanOrders(rows pgx.Rows) ([]*tether.Order, []int64, error) {
	defer rows.Close()
	var (
		os   []*tether.Order
		seqs []int64
	)
	for rows.Next() {
		o, seq, err := scanOrder(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("scan order: %w", err)
		}
		os, seqs = append(os, o), append(seqs, seq)
	}
	return os, seqs, rows.Err()
}

// queryOrders runs query, which returns orderColumns, and returns the
// orders. what says what the query does, for errors.
func queryOrders(ctx context.Context, q queryer, what, query string, args ...any) ([]*tether.Order, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	os, _, err := scanOrders(rows)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return os, nil
}

// bySeq returns the orders by creation time, then seq: RETURNING gives the
// rows in no set order.
func bySeq(os []*tether.Order, seqs []int64) []*tether.Order {
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
	return sorted
}

// agentArg stores the agent id "" of a server order as NULL.
func agentArg(id string) any {
	if id == "" {
		return nil
	}
	return id
}

// copyColumns are the columns copyOrders writes: orderColumns after seq.
var copyColumns = []string{"id", "request_id", "agent_id", "action_name", "action_args", "action_version",
	"status", "result_code", "result_message", "result_data", "user_name",
	"created_at", "sent_at", "received_at", "finished_at", "timeout_at", "attempts", "agent_groups"}

// copyOrders inserts the orders with COPY, in their order (which seq
// keeps). An order id in use is ECONFLICT.
func copyOrders(ctx context.Context, tx pgx.Tx, orders []*tether.Order) error {
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"orders"}, copyColumns, pgx.CopyFromSlice(len(orders), func(i int) ([]any, error) {
		o := orders[i]
		return []any{o.ID, o.RequestID, agentArg(o.AgentID), o.Action.Name, blobArg(o.Action.Args), o.Action.Version,
			string(o.Status), o.Result.Code, o.Result.Message, blobArg(o.Result.Data), o.User,
			timeArg(o.CreatedAt), timeArg(o.SentAt), timeArg(o.ReceivedAt), timeArg(o.FinishedAt),
			timeArg(o.TimeoutAt), o.Attempts, listArg(o.AgentGroups)}, nil
	}))
	if isUniqueViolation(err) {
		return tether.Errorf(tether.ECONFLICT, "an order id of the command is in use")
	}
	if err != nil {
		return fmt.Errorf("insert orders: %w", err)
	}
	return nil
}

// insertRequest inserts the request; an id in use is ECONFLICT.
func insertRequest(ctx context.Context, tx pgx.Tx, r *tether.CommandRequest) error {
	_, err := tx.Exec(ctx, `INSERT INTO command_requests (`+requestColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
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
	o, _, err := scanOrder(q.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
//
// The agents of the orders are read with a share lock, which an agent's
// deletion waits for: an order is never stored for an agent deleted
// meanwhile without being failed with its other orders.
func (db *DB) CreateCommand(ctx context.Context, r *tether.CommandRequest, orders []*tether.Order) error {
	if r.CreatedAt.IsZero() {
		r.CreatedAt = micro(db.now())
	}
	var agentIDs []string
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
		if o.AgentID != "" {
			agentIDs = append(agentIDs, o.AgentID)
		}
	}
	slices.Sort(agentIDs)
	agentIDs = slices.Compact(agentIDs)
	return db.tx(ctx, func(tx pgx.Tx) error {
		if err := insertRequest(ctx, tx, r); err != nil {
			return err
		}
		if len(orders) == 0 {
			return nil
		}
		groups := make(map[string][]string, len(agentIDs))
		if len(agentIDs) > 0 {
			members, err := queryMembers(ctx, tx, `SELECT id, group_list FROM agents WHERE id = ANY($1)
				ORDER BY id FOR KEY SHARE`, agentIDs)
			if err != nil {
				return err
			}
			for _, m := range members {
				groups[m.id] = m.groups
			}
		}
		for _, o := range orders {
			o.RequestID = r.ID
			if o.AgentID == "" {
				continue
			}
			g, ok := groups[o.AgentID]
			if !ok {
				return tether.NotFound("agent", o.AgentID)
			}
			o.AgentGroups = g
		}
		return copyOrders(ctx, tx, orders)
	})
}

// member is an agent of a group and its groups.
type member struct {
	id     string
	groups []string
}

// queryMembers runs query, which returns agents' ids and group lists.
func queryMembers(ctx context.Context, q queryer, query string, args ...any) ([]member, error) {
	return queryAll(ctx, q, func(s scanner) (m member, err error) {
		err = s.Scan(&m.id, &m.groups)
		m.groups = listVal(m.groups)
		return m, err
	}, "select agents", query, args...)
}

// CreateGroupCommand stores the request and one order per member of the
// group r.Target.ID, copied from tmpl, in one transaction, and returns the
// orders in agent id order. A zero r.CreatedAt is set to the current time,
// a zero tmpl.CreatedAt to r.CreatedAt, and an empty tmpl.Action to
// r.Action. The members are read with a share lock, as CreateCommand
// reads its agents.
func (db *DB) CreateGroupCommand(ctx context.Context, r *tether.CommandRequest, tmpl tether.Order) ([]*tether.Order, error) {
	if r.Target.Type != tether.TargetGroup {
		return nil, tether.FieldError("target.type", "want %q, not %q", tether.TargetGroup, r.Target.Type)
	}
	if r.Target.ID == "" {
		return nil, tether.FieldError("target.id", "missing")
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = micro(db.now())
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
	err := db.tx(ctx, func(tx pgx.Tx) error {
		members, err := queryMembers(ctx, tx, `SELECT a.id, a.group_list
			FROM agent_groups g JOIN agents a ON a.id = g.agent_id
			WHERE g.grp = $1 ORDER BY a.id FOR KEY SHARE OF a`, r.Target.ID)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			return tether.FieldError("target.id", "group %q has no members", r.Target.ID)
		}
		if err := insertRequest(ctx, tx, r); err != nil {
			return err
		}
		orders = make([]*tether.Order, len(members))
		for i, m := range members {
			if err := ctx.Err(); err != nil {
				return err
			}
			o := tmpl
			o.ID, o.AgentID, o.AgentGroups = uuid.NewString(), m.id, m.groups
			orders[i] = &o
		}
		return copyOrders(ctx, tx, orders)
	})
	if err != nil {
		return nil, err
	}
	return orders, nil
}

// read runs fn in a read-only transaction that sees one snapshot.
func (db *DB) read(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return fn(tx)
}

// CommandRequest returns a request without its orders.
func (db *DB) CommandRequest(ctx context.Context, id string) (*tether.CommandRequest, error) {
	return getRequest(ctx, db.pool, id)
}

func getRequest(ctx context.Context, q queryer, id string) (*tether.CommandRequest, error) {
	r, err := scanRequest(q.QueryRow(ctx, `SELECT `+requestColumns+` FROM command_requests WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tether.NotFound("command", id)
	}
	if err != nil {
		return nil, fmt.Errorf("select command: %w", err)
	}
	return r, nil
}

// Command returns the request and its orders, ordered by creation time and
// id, as of one moment.
func (db *DB) Command(ctx context.Context, id string) (*tether.CommandRequest, []*tether.Order, error) {
	var (
		r  *tether.CommandRequest
		os []*tether.Order
	)
	err := db.read(ctx, func(tx pgx.Tx) error {
		var err error
		if r, err = getRequest(ctx, tx, id); err != nil {
			return err
		}
		os, err = queryOrders(ctx, tx, "select orders", `SELECT `+orderColumns+` FROM orders
			WHERE request_id = $1 ORDER BY created_at, id`, id)
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
		args  params
	)
	switch {
	case f.AgentID != "" && f.Status != "":
		where = append(where, "id IN (SELECT request_id FROM orders WHERE agent_id = "+args.add(f.AgentID)+
			" AND status = "+args.add(string(f.Status))+")")
	case f.AgentID != "":
		where = append(where, "id IN (SELECT request_id FROM orders WHERE agent_id = "+args.add(f.AgentID)+")")
	case f.Status != "":
		where = append(where, "EXISTS (SELECT 1 FROM orders o WHERE o.request_id = command_requests.id AND o.status = "+
			args.add(string(f.Status))+")")
	}
	if !f.Before.IsZero() {
		where = append(where, "created_at < "+args.add(f.Before.UTC()))
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < ("+args.add(c.time())+", "+args.add(c.id)+")")
	}
	q := `SELECT ` + requestColumns + ` FROM command_requests`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	n := limit(f.Limit)
	q += ` ORDER BY created_at DESC, id DESC LIMIT ` + args.add(n+1)
	rs, err := queryAll(ctx, db.pool, scanRequest, "select commands", q, args...)
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
	return getOrder(ctx, db.pool, id)
}

// sendOrdersSQL marks the orders that the query chosen (a CTE) selects
// sent at $1 (the first time only) and counts a delivery. The condition
// recheck is tested again on each row as the update finds it: an order
// another transaction finished meanwhile is left alone. chosen is run once,
// as a CTE: an IN subquery could be run again as the update goes, and pick
// further orders past its limit.
const sendOrdersSQL = `WITH chosen AS (%s)
	UPDATE orders AS o
	SET status = 'sent', sent_at = coalesce(o.sent_at, $1), attempts = o.attempts + 1
	FROM chosen WHERE o.seq = chosen.seq AND %s
	RETURNING %s`

// deliverable is the condition an order meets when a poll may be given it.
const deliverable = `status IN ('pending', 'sent') AND (status = 'pending' OR received_at IS NULL)`

// orderColumnsOf is orderColumns, each prefixed with alias and a dot.
func orderColumnsOf(alias string) string {
	cols := strings.Split(orderColumns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

var (
	receiveSQL = `UPDATE orders SET received_at = $1
		WHERE id = ANY($2) AND agent_id = $3 AND received_at IS NULL`
	deliverSQL = fmt.Sprintf(sendOrdersSQL, `SELECT seq FROM orders
		WHERE agent_id = $2 AND `+deliverable+` AND (timeout_at IS NULL OR timeout_at > $1)
		ORDER BY created_at, seq LIMIT $3`,
		`o.status IN ('pending', 'sent') AND (o.status = 'pending' OR o.received_at IS NULL)`, orderColumnsOf("o"))
	claimSQL = fmt.Sprintf(sendOrdersSQL, `SELECT seq FROM orders
		WHERE agent_id IS NULL AND status = 'pending' AND (timeout_at IS NULL OR timeout_at > $1)
		ORDER BY created_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED`, `o.status = 'pending'`, orderColumnsOf("o"))
)

// DeliverOrders serves the polls ds in one transaction and one round trip:
// for each, it acknowledges the receipt of the ids in Received (orders of
// that agent only), then returns up to Limit (default 100) orders of the
// agent that are pending, or sent but not received, and whose time window
// has not ended at now, in creation order, marking them sent and counting
// the delivery. The polls are run in agent id order, so that concurrent
// calls lock the rows of their agents in the same order.
func (db *DB) DeliverOrders(ctx context.Context, ds []tether.Delivery, now time.Time) ([][]*tether.Order, error) {
	out := make([][]*tether.Order, len(ds))
	if len(ds) == 0 {
		return out, nil
	}
	at := now.UTC()
	idx := make([]int, len(ds))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(i, j int) int { return strings.Compare(ds[i].AgentID, ds[j].AgentID) })
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, i := range idx {
			d := ds[i]
			if len(d.Received) > 0 {
				b.Queue(receiveSQL, at, d.Received, d.AgentID)
			}
			b.Queue(deliverSQL, at, d.AgentID, limit(d.Limit)).Query(func(rows pgx.Rows) error {
				os, seqs, err := scanOrders(rows)
				out[i] = bySeq(os, seqs)
				return err
			})
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("deliver orders: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CancelOrders fails every pending or sent order that f selects, with the
// message "cancelled", in one conditional update, and returns how many it
// changed. The update checks each order's status as it finds it, so an
// order finished meanwhile by a report or a sweeper is left alone.
func (db *DB) CancelOrders(ctx context.Context, f tether.CancelFilter, at time.Time) (int, []string, error) {
	if f.RequestID == "" && f.OrderID == "" {
		return 0, nil, tether.Errorf(tether.EINVALID, "name a command or an order to cancel")
	}
	// filter returns the condition that selects f's orders, its values
	// added to args.
	filter := func(args *params) string {
		var where []string
		if f.RequestID != "" {
			where = append(where, "request_id = "+args.add(f.RequestID))
		}
		if f.OrderID != "" {
			where = append(where, "id = "+args.add(f.OrderID))
		}
		return strings.Join(where, " AND ")
	}
	args := params{timeArg(at)}
	cond := filter(&args)
	var (
		n      int
		sentTo []string
	)
	err := db.tx(ctx, func(tx pgx.Tx) error {
		n, sentTo = 0, nil
		rows, err := tx.Query(ctx, `UPDATE orders
			SET status = 'failure', result_code = 0, result_message = 'cancelled', result_data = NULL, finished_at = $1
			WHERE `+cond+` AND status IN ('pending', 'sent')
			RETURNING agent_id, sent_at IS NOT NULL`, args...)
		if err != nil {
			return fmt.Errorf("cancel orders: %w", err)
		}
		seen := map[string]bool{}
		for rows.Next() {
			var (
				agent pgtype.Text
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
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cancel orders: %w", err)
		}
		if n > 0 {
			return nil
		}
		// Nothing changed: tell an unknown request or order apart.
		var one int
		if f.OrderID != "" {
			var only params
			err = tx.QueryRow(ctx, `SELECT 1 FROM orders WHERE `+filter(&only), only...).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return tether.NotFound("order", f.OrderID)
			}
		} else {
			err = tx.QueryRow(ctx, `SELECT 1 FROM command_requests WHERE id = $1`, f.RequestID).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
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
	return queryAll(ctx, db.pool, func(s scanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	}, "select finished orders", `SELECT id FROM orders
		WHERE id = ANY($1) AND agent_id = $2 AND status IN ('success', 'failure')`, ids, agentID)
}

// ClaimServerOrders moves up to limit (default 100) pending server orders
// whose time window has not ended at now to sent, in creation order, and
// returns them. The orders are locked as they are chosen, skipping those
// another claim holds: two callers never get the same order, and neither
// waits for the other.
func (db *DB) ClaimServerOrders(ctx context.Context, limitN int, now time.Time) ([]*tether.Order, error) {
	var os []*tether.Order
	err := db.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, claimSQL, now.UTC(), limit(limitN))
		if err != nil {
			return fmt.Errorf("claim server orders: %w", err)
		}
		got, seqs, err := scanOrders(rows)
		if err != nil {
			return fmt.Errorf("claim server orders: %w", err)
		}
		os = bySeq(got, seqs)
		return nil
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

// finishSQL finishes one pending or sent order of the agent (NULL: a
// server order) and returns it.
const finishSQL = `UPDATE orders
	SET status = $1, result_code = $2, result_message = $3, result_data = $4, finished_at = $5
	WHERE id = $6 AND agent_id IS NOT DISTINCT FROM $7 AND status IN ('pending', 'sent')
	RETURNING ` + orderColumns

// FinishOrders applies results in one transaction and two round trips: the
// updates, in order, then the reads of the orders they left unchanged
// (unknown, another agent's, or finished already: none that a later update
// of the batch can finish).
func (db *DB) FinishOrders(ctx context.Context, fs []tether.Finish, at time.Time) ([]tether.FinishOutcome, error) {
	if err := tether.CheckFinishes(fs); err != nil {
		return nil, err
	}
	out := make([]tether.FinishOutcome, len(fs))
	if len(fs) == 0 {
		return out, nil
	}
	err := db.tx(ctx, func(tx pgx.Tx) error {
		clear(out) // a transaction run again starts afresh
		var updates pgx.Batch
		for i, f := range fs {
			res := f.Result
			updates.Queue(finishSQL, string(f.Status), res.Code, text(res.Message), blobArg(res.Data), timeArg(at),
				f.OrderID, agentArg(f.AgentID)).Query(func(rows pgx.Rows) error {
				os, _, err := scanOrders(rows)
				if len(os) > 0 {
					out[i].Order, out[i].Finished = os[0], true
				}
				return err
			})
		}
		if err := tx.SendBatch(ctx, &updates).Close(); err != nil {
			return fmt.Errorf("finish order: %w", err)
		}
		var reads pgx.Batch
		for i, f := range fs {
			if out[i].Finished {
				continue
			}
			reads.Queue(`SELECT `+orderColumns+` FROM orders WHERE id = $1`, f.OrderID).QueryRow(func(row pgx.Row) error {
				o, _, err := scanOrder(row)
				switch {
				case errors.Is(err, pgx.ErrNoRows), err == nil && o.AgentID != f.AgentID:
					out[i].Err = tether.NotFound("order", f.OrderID)
					return nil
				case err != nil:
					return err
				}
				out[i].Order = o
				return nil
			})
		}
		if reads.Len() == 0 {
			return nil
		}
		if err := tx.SendBatch(ctx, &reads).Close(); err != nil {
			return fmt.Errorf("select order: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ExpireOrders fails every pending or sent order whose time window ended at
// or before now, with the message "timed out", in one statement, and
// returns how many it changed. Sweepers on several nodes wait for each
// other on the rows and each order is counted by the one that changed it.
func (db *DB) ExpireOrders(ctx context.Context, now time.Time) (int, error) {
	n, err := db.exec(ctx, "expire orders", `UPDATE orders
		SET status = 'failure', result_code = 0, result_message = 'timed out', result_data = NULL, finished_at = $1
		WHERE status IN ('pending', 'sent') AND timeout_at <= $1`, now.UTC())
	return int(n), err
}

// CountOrders counts the orders by status and action.
func (db *DB) CountOrders(ctx context.Context) ([]tether.OrderCount, error) {
	return queryAll(ctx, db.pool, func(s scanner) (tether.OrderCount, error) {
		var c tether.OrderCount
		var st string
		err := s.Scan(&st, &c.Action, &c.N)
		c.Status = tether.OrderStatus(st)
		return c, err
	}, "count orders", `SELECT status, action_name, count(*) FROM orders GROUP BY status, action_name ORDER BY status, action_name`)
}
