package tether

import (
	"context"
	"time"
)

// Store is the server's durable state: tokens, agents, command requests and
// orders, agent state documents, signing keys and configuration. Every server
// node of a cluster shares one Store. Implementations live in their own
// packages (server/sqlite) and all pass the suite in server/storetest.
//
// Methods return *Error values with ENOTFOUND for missing entities and
// ECONFLICT for forbidden transitions; other errors are internal.
type Store interface {
	TokenStore
	AgentStore
	CommandStore
	StateStore
	KeyStore
	ConfigStore
	// Ping checks that the store can serve (for /readyz).
	Ping(ctx context.Context) error
	Close() error
}

// TokenStore holds management API tokens.
type TokenStore interface {
	CreateToken(ctx context.Context, t *Token) error
	// Token returns the token with the id, revoked or not.
	Token(ctx context.Context, id string) (*Token, error)
	// Tokens lists tokens, newest first.
	Tokens(ctx context.Context, f TokenFilter) ([]*Token, error)
	// RevokeToken marks the token revoked at the time given; revoking a
	// revoked token is not an error.
	RevokeToken(ctx context.Context, id string, at time.Time) error
}

// AgentStore holds the agent registry.
type AgentStore interface {
	// RegisterAgent creates the agent, or replaces the key, name, groups and
	// facts of an existing one with the same id, and counts one use of the
	// enrollment token tokenID, all at once. It fails without changing
	// anything when the token is not usable at now (see Token.Usable).
	RegisterAgent(ctx context.Context, a *Agent, tokenID string, now time.Time) error
	Agent(ctx context.Context, id string) (*Agent, error)
	Agents(ctx context.Context, f AgentFilter) ([]*Agent, error)
	// DeleteAgent removes the agent, its orders and its state.
	DeleteAgent(ctx context.Context, id string) error
	// TouchAgents records last-seen times in one write; unknown ids are
	// ignored and a time older than the stored one does not replace it.
	TouchAgents(ctx context.Context, seen map[string]time.Time) error
	// AcceptBatch records that the agent's batch seq was accepted. It
	// returns false, with no change, when seq is not above the last one
	// accepted (a retried batch).
	AcceptBatch(ctx context.Context, agentID string, seq uint64) (bool, error)
}

// CommandStore holds command requests and their orders.
type CommandStore interface {
	// CreateCommand stores the request and its orders in one transaction.
	CreateCommand(ctx context.Context, r *CommandRequest, orders []*Order) error
	Command(ctx context.Context, id string) (*CommandRequest, []*Order, error)
	Commands(ctx context.Context, f CommandFilter) ([]*CommandRequest, error)
	// Order returns one order.
	Order(ctx context.Context, id string) (*Order, error)
	// DeliverOrders acknowledges the receipt of the ids listed in received
	// (orders of this agent only), then returns up to limit orders of the
	// agent that are pending, or sent but not yet received, oldest first,
	// marking them sent at now and counting the delivery. Orders past their
	// time window are not returned.
	DeliverOrders(ctx context.Context, agentID string, received []string, limit int, now time.Time) ([]*Order, error)
	// FinishOrder moves an order of the agent to success or failure with its
	// result. It returns the order as stored. An order that had already
	// finished is returned unchanged with no error (reports are
	// idempotent); an order of another agent is ENOTFOUND.
	FinishOrder(ctx context.Context, agentID, orderID string, status OrderStatus, res Result, at time.Time) (*Order, error)
	// ExpireOrders fails, with the message "timed out", every pending or
	// sent order whose time window ended before now, and returns how many
	// it changed. Safe to run on several nodes at once.
	ExpireOrders(ctx context.Context, now time.Time) (int, error)
}

// StateStore holds the latest state documents of agents.
type StateStore interface {
	// ApplyState applies the stateful events of a batch in order: upserts
	// replace the document of their key, deletes remove it.
	ApplyState(ctx context.Context, agentID string, seq uint64, events []Event, at time.Time) error
	// State lists the agent's documents, of one module when module is set,
	// ordered by module and key.
	State(ctx context.Context, agentID, module string) ([]*StateEntry, error)
}

// SigningKey is an Ed25519 key that signs agent JWTs.
type SigningKey struct {
	// ID is the key's `kid`.
	ID string
	// Private is the 64-byte Ed25519 private key.
	Private   []byte
	CreatedAt time.Time
	// RetiredAt, when set, is when the key stopped signing; it still
	// verifies tokens it signed until they expire.
	RetiredAt time.Time
}

// KeyStore holds JWT signing keys and other cluster secrets.
type KeyStore interface {
	// SigningKeys lists every signing key, newest first.
	SigningKeys(ctx context.Context) ([]*SigningKey, error)
	// AddSigningKey stores a new key.
	AddSigningKey(ctx context.Context, k *SigningKey) error
	// Secret returns a named cluster secret (ENOTFOUND when absent).
	Secret(ctx context.Context, name string) ([]byte, error)
	// PutSecretOnce stores a named secret unless it exists, and returns the
	// stored value (the one given, or the one already there).
	PutSecretOnce(ctx context.Context, name string, value []byte) ([]byte, error)
}

// GroupConfig is the centralized configuration of one group.
type GroupConfig struct {
	Group string
	// Doc is a JSON object.
	Doc       []byte
	UpdatedAt time.Time
}

// ConfigStore holds centralized configuration by group.
type ConfigStore interface {
	// GroupConfigs returns the configurations of the named groups that have
	// one, in the order of groups.
	GroupConfigs(ctx context.Context, groups []string) ([]*GroupConfig, error)
	// PutGroupConfig creates or replaces a group's configuration.
	PutGroupConfig(ctx context.Context, c *GroupConfig) error
}

// Notifier wakes the long-polls of agents when orders are created for them.
// The single-node implementation is in-process; a cluster uses the store's
// notification channel.
type Notifier interface {
	// Subscribe returns a channel that receives a value whenever Notify is
	// called for the agent, and a function to release it. The channel has a
	// buffer of one: notifications coalesce.
	Subscribe(agentID string) (<-chan struct{}, func())
	// Notify wakes every subscriber of the agents.
	Notify(agentIDs ...string)
}
