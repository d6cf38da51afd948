package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// OrderQuery filters ListOrders. Zero fields do not filter; set fields
// combine with AND.
type OrderQuery struct {
	// RequestID keeps the orders of that command.
	RequestID string
	// AgentID keeps the orders of that agent.
	AgentID string
	// Group keeps the orders of the agents that are in that group now.
	Group string
	// Status is pending, sent, success or failure.
	Status string
	// Action keeps the orders of that action name.
	Action string
	// CreatedAfter and CreatedBefore keep orders created strictly after or
	// before them.
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// Cursor is the OrderList.Next of the previous page.
	Cursor string
	// Limit caps the page size (0: the server default).
	Limit int
}

func (q OrderQuery) values() url.Values {
	v := url.Values{}
	setNonEmpty(v, "request", q.RequestID)
	setNonEmpty(v, "agent", q.AgentID)
	setNonEmpty(v, "group", q.Group)
	setNonEmpty(v, "status", q.Status)
	setNonEmpty(v, "action", q.Action)
	if !q.CreatedAfter.IsZero() {
		v.Set("created_after", q.CreatedAfter.UTC().Format(time.RFC3339Nano))
	}
	if !q.CreatedBefore.IsZero() {
		v.Set("created_before", q.CreatedBefore.UTC().Format(time.RFC3339Nano))
	}
	setNonEmpty(v, "cursor", q.Cursor)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// ListOrders returns one page of orders; OrderList.Next continues it.
func (c *Client) ListOrders(ctx context.Context, q OrderQuery) (*OrderList, error) {
	return call[OrderList](ctx, c, http.MethodGet, "/api/v1/orders", q.values(), nil)
}

// AllOrders lists the orders of q from q.Cursor to the end, following the
// cursors page after page (q.Limit is the page size). It stops with an
// error if the server hands back a cursor it already gave.
func (c *Client) AllOrders(ctx context.Context, q OrderQuery) ([]Order, error) {
	var all []Order
	seen := map[string]bool{}
	for {
		page, err := c.ListOrders(ctx, q)
		if err != nil {
			return all, err
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all, nil
		}
		if seen[page.Next] {
			return all, fmt.Errorf("list orders: the server returned cursor %q twice", page.Next)
		}
		seen[page.Next] = true
		q.Cursor = page.Next
	}
}

// GetOrder returns one order.
func (c *Client) GetOrder(ctx context.Context, id string) (*Order, error) {
	if id == "" {
		return nil, errors.New("get order: empty id")
	}
	return call[Order](ctx, c, http.MethodGet, "/api/v1/orders/"+url.PathEscape(id), nil, nil)
}

// CancelOrder cancels one order if it has not finished: it fails
// "cancelled" (CancelResponse.Cancelled is 1), and an agent that has not
// started it skips it.
func (c *Client) CancelOrder(ctx context.Context, id string) (*CancelResponse, error) {
	if id == "" {
		return nil, errors.New("cancel order: empty id")
	}
	return call[CancelResponse](ctx, c, http.MethodPost, "/api/v1/orders/"+url.PathEscape(id)+"/cancel", nil, nil)
}
