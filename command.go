package tether

import (
	"encoding/json"
	"time"
)

// TargetType says what a command request is aimed at.
type TargetType string

// Target types.
const (
	TargetAgent  TargetType = "agent"
	TargetGroup  TargetType = "group"
	TargetServer TargetType = "server"
)

// Target is what a command request is aimed at.
type Target struct {
	Type TargetType
	ID   string
}

// Action is what a command asks for: a named action with JSON arguments.
type Action struct {
	Name string
	// Args is a JSON object (nil: no arguments).
	Args json.RawMessage
	// Version of the action's argument schema ("" for the current one).
	Version string
}

// CommandRequest is what a person or tool asked for. It is expanded into one
// Order per target agent when it is created.
type CommandRequest struct {
	ID      string
	Target  Target
	Action  Action
	Timeout time.Duration
	// Source is the kind of caller: "user" or "service".
	Source string
	// User is the name of the token that created the request.
	User      string
	CreatedAt time.Time
}

// OrderStatus is where an order is in its life.
type OrderStatus string

// Order statuses. The only transitions are pending → sent, pending → success
// | failure, sent → success | failure (see Transition).
const (
	OrderPending OrderStatus = "pending"
	OrderSent    OrderStatus = "sent"
	OrderSuccess OrderStatus = "success"
	OrderFailure OrderStatus = "failure"
)

// Finished reports whether s is a final status.
func (s OrderStatus) Finished() bool { return s == OrderSuccess || s == OrderFailure }

// Valid reports whether s is a known status.
func (s OrderStatus) Valid() bool {
	switch s {
	case OrderPending, OrderSent, OrderSuccess, OrderFailure:
		return true
	}
	return false
}

// Transition returns nil when an order may move from one status to another,
// and an ECONFLICT error naming both otherwise. It is the one place the
// order life cycle is defined; stores enforce it with conditional updates.
func Transition(from, to OrderStatus) error {
	ok := false
	switch from {
	case OrderPending:
		ok = to == OrderSent || to == OrderSuccess || to == OrderFailure
	case OrderSent:
		ok = to == OrderSuccess || to == OrderFailure
	}
	if !ok {
		return Errorf(ECONFLICT, "order cannot go from %q to %q", from, to)
	}
	return nil
}

// Result is the outcome of an order.
type Result struct {
	Code    int
	Message string
	// Data is any JSON value (nil: none).
	Data json.RawMessage
}

// Order is one command request's work for one agent.
type Order struct {
	ID        string
	RequestID string
	// AgentID is the agent that executes the order, or "" for an order the
	// server executes itself (a request aimed at the server).
	AgentID string
	Action  Action
	Status  OrderStatus
	Result  Result
	// User who created the request (copied for the agent's logs).
	User string
	// AgentGroups are the groups the agent was in when the order was
	// created, in the agent's order (set by the store).
	AgentGroups []string
	// CreatedAt is when the order was created; SentAt when it was first
	// delivered; ReceivedAt when the agent confirmed it stored it;
	// FinishedAt when it reached a final status; TimeoutAt the end of its
	// time window.
	CreatedAt  time.Time
	SentAt     time.Time
	ReceivedAt time.Time
	FinishedAt time.Time
	TimeoutAt  time.Time
	// Attempts counts deliveries.
	Attempts int
}

// CommandFilter selects command requests in a list.
type CommandFilter struct {
	// AgentID, when set, keeps requests with an order for that agent.
	AgentID string
	// Status, when set, keeps requests with at least one order in it.
	Status OrderStatus
	// Before, when set, keeps requests created before it.
	Before time.Time
	// Cursor, when set, continues a list where the call that returned it
	// stopped (an opaque value, "" for the first page).
	Cursor string
	// Limit caps the number returned (0: the store default, 100).
	Limit int
}

// Limits of an order list.
const (
	DefaultOrderLimit = 100
	MaxOrderLimit     = 1000
)

// OrderFilter selects orders in a list. Set fields combine with AND.
type OrderFilter struct {
	RequestID string
	AgentID   string
	// Group keeps the orders of the agents that are in the group now.
	Group  string
	Status OrderStatus
	// Action keeps orders of the action name.
	Action string
	// CreatedAfter and CreatedBefore, when set, keep orders created
	// strictly after or before them.
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// Cursor, when set, continues a list where the call that returned it
	// stopped (an opaque value, "" for the first page).
	Cursor string
	// Limit caps the number returned (0: DefaultOrderLimit; at most
	// MaxOrderLimit).
	Limit int
}

// CancelFilter selects the orders to cancel: every order of the request
// RequestID, or the one order OrderID (of RequestID when both are set).
type CancelFilter struct {
	RequestID string
	OrderID   string
}

// Finish is one result of an order, as FinishOrders applies it.
type Finish struct {
	// AgentID is the agent reporting ("" for a server order).
	AgentID string
	OrderID string
	// Status is OrderSuccess or OrderFailure.
	Status OrderStatus
	Result Result
}

// FinishOutcome is what FinishOrders did with one Finish: Order is the
// order as stored, or Err says why there is none (ENOTFOUND). Finished is
// true when this Finish is what finished the order (false for a repeated
// report).
type FinishOutcome struct {
	Order    *Order
	Finished bool
	Err      error
}

// CheckFinishes checks that every result of fs finishes its order (success
// or failure): a Store's FinishOrders fails the batch with EINVALID
// otherwise.
func CheckFinishes(fs []Finish) error {
	for _, f := range fs {
		if !f.Status.Finished() {
			return FieldError("status", "must be %q or %q, not %q", OrderSuccess, OrderFailure, f.Status)
		}
	}
	return nil
}

// Delivery is one agent's poll for orders, as DeliverOrders serves it.
type Delivery struct {
	AgentID string
	// Received lists the ids of orders the agent stored since its last
	// poll: they are not delivered again.
	Received []string
	// Limit is the most orders to return (0: 100).
	Limit int
}

// OrderCount is how many stored orders have one status and action.
type OrderCount struct {
	Status OrderStatus
	Action string
	N      int
}
