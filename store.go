package tether

import (
	"context"
	"time"
)

// Store is the server's durable state: tokens, agents, command requests and
// orders, agent state documents, signing keys, cluster secrets and
// configuration. Every server node of a cluster shares one Store.
// Implementations live in their own packages (server/sqlite,
// server/postgres) and all pass the suite in server/storetest.
//
// Methods return *Error values with ENOTFOUND for missing entities and
// ECONFLICT for forbidden transitions; other errors are internal.
type Store interface {
	TokenStore
	AgentStore
	GroupStore
	CommandStore
	StateStore
	BatchStore
	KeyStore
	// Ping checks that the store can serve (for /readyz).
	Ping(ctx context.Context) error
	Close() error
}

// TokenStore holds management API tokens.
type TokenStore interface {
	// CreateToken stores a new token. A zero Kind is set to
	// DefaultKind(t.Role); an unknown one is EINVALID on the field "kind".
	CreateToken(ctx context.Context, t *Token) error
	// Token returns the token with the id, revoked or not.
	Token(ctx context.Context, id string) (*Token, error)
	// Tokens lists tokens, newest first.
	Tokens(ctx context.Context, f TokenFilter) ([]*Token, error)
	// RevokeToken marks the token revoked at the time given; revoking a
	// revoked token is not an error. Revoking the last admin token usable
	// at that time is ECONFLICT, and changes nothing, so that the API
	// always keeps an administrator; the check and the change are one
	// atomic step (two nodes revoking the last two admin tokens at once
	// cannot both succeed).
	RevokeToken(ctx context.Context, id string, at time.Time) error
	// CreateFirstAdmin stores t, an admin token (anything else is EINVALID
	// on the field "role"), unless the store holds an admin token already,
	// revoked or not, and reports whether it stored it. Defaults are filled
	// in as by CreateToken. The check and the insertion are one atomic
	// step: of several nodes starting at once on a new store, exactly one
	// creates the bootstrap admin token.
	CreateFirstAdmin(ctx context.Context, t *Token) (bool, error)
}

// AgentStore holds the agent registry.
type AgentStore interface {
	// RegisterAgent creates the agent, or replaces the key, name, groups and
	// facts of an existing one with the same id, and counts one use of the
	// enrollment token tokenID, all at once. It fails without changing
	// anything when the token is not usable at now (see Token.Usable). On
	// success *a holds the agent as stored (an existing agent keeps its
	// EnrolledAt, LastSeen and LastBatchSeq).
	RegisterAgent(ctx context.Context, a *Agent, tokenID string, now time.Time) error
	Agent(ctx context.Context, id string) (*Agent, error)
	Agents(ctx context.Context, f AgentFilter) ([]*Agent, error)
	// DeleteAgent removes the agent, its group memberships and its state.
	// Its orders stay readable with their request: the unfinished ones
	// fail with the message "agent deleted", finished at the current time.
	DeleteAgent(ctx context.Context, id string) error
	// TouchAgents records last-seen times in one write; unknown ids are
	// ignored and a time older than the stored one does not replace it.
	TouchAgents(ctx context.Context, seen map[string]time.Time) error
}

// CommandStore holds command requests and their orders.
type CommandStore interface {
	// CreateCommand stores the request and its orders in one transaction.
	// An order whose AgentID is "" is executed by the server itself (see
	// ClaimServerOrders); a request may also have no orders at all.
	CreateCommand(ctx context.Context, r *CommandRequest, orders []*Order) error
	// CreateGroupCommand expands a request aimed at the group r.Target.ID
	// in one transaction: it stores the request and one order per agent
	// that is a member of the group at that moment (no cap), in agent id
	// order, and returns the orders. Each order is a copy of tmpl with a
	// new id, the agent's id, RequestID r.ID and status pending (a zero
	// CreatedAt is r.CreatedAt's). A group without members is EINVALID on
	// the field "target.id", and nothing is stored; so is any failure.
	CreateGroupCommand(ctx context.Context, r *CommandRequest, tmpl Order) ([]*Order, error)
	// CommandRequest returns a request without its orders (ENOTFOUND when
	// there is none).
	CommandRequest(ctx context.Context, id string) (*CommandRequest, error)
	Command(ctx context.Context, id string) (*CommandRequest, []*Order, error)
	// Commands lists requests, newest first (by creation time, then id),
	// and returns the cursor of the next page ("" after the last one).
	Commands(ctx context.Context, f CommandFilter) ([]*CommandRequest, string, error)
	// Order returns one order.
	Order(ctx context.Context, id string) (*Order, error)
	// Orders lists orders by creation time, then id, and returns the
	// cursor of the next page ("" after the last one). Paging with the
	// cursor never skips nor repeats an order, whatever their times. A
	// cursor that is not one is EINVALID.
	Orders(ctx context.Context, f OrderFilter) ([]*Order, string, error)
	// CommandCounts counts the orders of each request by status, in one
	// query. Requests without orders (or unknown) have no entry.
	CommandCounts(ctx context.Context, requestIDs []string) (map[string]map[OrderStatus]int, error)
	// DeliverOrders serves the polls ds in one transaction, in order, and
	// returns the orders of each at the same index. For each poll it
	// acknowledges the receipt of the ids listed in Received (orders of
	// that agent only), then returns up to Limit orders of the agent that
	// are pending, or sent but not yet received, oldest first, marking them
	// sent at now and counting the delivery. Orders past their time window
	// are not returned, nor are server orders (AgentID ""). Serving many
	// polls at once is what lets a fan-out to thousands of agents cost a
	// few transactions rather than one per agent.
	DeliverOrders(ctx context.Context, ds []Delivery, now time.Time) ([][]*Order, error)
	// FinishOrder moves an order of the agent to success or failure with its
	// result. It returns the order as stored. An order that had already
	// finished is returned unchanged with no error (reports are
	// idempotent); an order of another agent is ENOTFOUND. agentID ""
	// finishes a server order.
	FinishOrder(ctx context.Context, agentID, orderID string, status OrderStatus, res Result, at time.Time) (*Order, error)
	// FinishOrders applies the results fs in one transaction, in order,
	// each as FinishOrder does, and returns the outcome of each at the
	// same index: the order as stored, or an ENOTFOUND error for an
	// unknown order or one of another agent (which does not fail the
	// others). Any other error fails the whole batch. Applying many
	// agents' results at once is what lets the answers of a fan-out to
	// thousands of agents cost a few transactions rather than one each.
	FinishOrders(ctx context.Context, fs []Finish, at time.Time) ([]FinishOutcome, error)
	// ExpireOrders fails, with the message "timed out", every pending or
	// sent order whose time window ended before now, server orders
	// included, and returns how many it changed. Safe to run on several
	// nodes at once.
	ExpireOrders(ctx context.Context, now time.Time) (int, error)
	// CancelOrders fails, with the message "cancelled" and FinishedAt at,
	// every pending or sent order that f selects, and returns how many it
	// changed; finished orders are left alone, so a cancel racing a
	// sweeper or a report never changes an order twice. A request or order
	// that does not exist is ENOTFOUND; an empty filter EINVALID.
	//
	// It also returns the agents that had been sent one of the orders it
	// changed (each once, in no set order): their agents may hold the
	// orders and are to be told not to start them.
	CancelOrders(ctx context.Context, f CancelFilter, at time.Time) (n int, sentTo []string, err error)
	// CountOrders counts the stored orders by status and action, in one
	// query (for the orders gauge).
	CountOrders(ctx context.Context) ([]OrderCount, error)
	// FinishedAmong returns those of ids that are orders of the agent and
	// have finished (success or failure), in no set order. Unknown ids and
	// other agents' orders are left out.
	FinishedAmong(ctx context.Context, agentID string, ids []string) ([]string, error)
	// FinishedOrders returns up to limit (0: 100) orders that finished
	// before before, oldest finish first (then by id): the next orders
	// that retention archives and deletes.
	FinishedOrders(ctx context.Context, before time.Time, limit int) ([]*Order, error)
	// DeleteOrders deletes the finished orders with the ids, in one
	// transaction, and returns how many it deleted; unknown ids and
	// unfinished orders are skipped.
	DeleteOrders(ctx context.Context, ids []string) (int, error)
	// DeleteEmptyCommands deletes the requests created before before that
	// have no orders (left), and returns how many it deleted.
	DeleteEmptyCommands(ctx context.Context, before time.Time) (int, error)
	// ClaimServerOrders moves up to limit pending server orders (AgentID
	// "") whose time window has not ended at now to sent, oldest first,
	// and returns them: each is returned to one caller only, so that one
	// server node runs it. The node then reports with FinishOrder(ctx, "",
	// …); a claimed order it never finishes times out.
	ClaimServerOrders(ctx context.Context, limit int, now time.Time) ([]*Order, error)
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

// BatchStatus is what BeginBatch found about a batch sequence.
type BatchStatus int

// Batch statuses.
const (
	// BatchNew: the sequence is above the last one accepted. It is now
	// recorded as accepted and pending, with its state changes applied;
	// write the batch to the sinks, then call FinishBatch.
	BatchNew BatchStatus = iota + 1
	// BatchPending: the sequence was accepted at an earlier call (the
	// pending time) but FinishBatch was not called for it: a server
	// crashed or a sink failed while it was being delivered. The sinks may
	// hold part or all of it: write to each sink what it lacks, then call
	// FinishBatch.
	BatchPending
	// BatchDone: the sequence is not above the last one accepted and is
	// not pending: the batch was delivered (or the agent skipped the
	// sequence). Acknowledge it and write nothing.
	BatchDone
)

// BatchStore records the event batches each agent pushed, so that a batch
// reaches the sinks exactly once whatever fails: the sequence is recorded
// (BeginBatch) before the sinks are written, and marked delivered
// (FinishBatch) after every sink accepted the batch. A crash between the
// two leaves the batch pending, and the agent's retry completes it.
type BatchStore interface {
	// BeginBatch records the agent's batch seq, in one transaction with
	// the batch's stateful events (applied as by ApplyState: each only
	// when its key was last changed by a sequence not above seq), when seq
	// is above the agent's last accepted sequence (Agent.LastBatchSeq):
	// it returns BatchNew, and the batch is pending from at. Otherwise it
	// changes nothing and returns BatchPending with the time the batch
	// became pending, or BatchDone. An unknown agent is ENOTFOUND.
	BeginBatch(ctx context.Context, agentID string, seq uint64, state []Event, at time.Time) (BatchStatus, time.Time, error)
	// FinishBatch records that every sink holds the agent's batch seq: it
	// is no longer pending. Finishing a batch that is not pending is not
	// an error.
	FinishBatch(ctx context.Context, agentID string, seq uint64) error
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

// KeyStore holds JWT signing keys and other cluster secrets: what every
// node of a cluster must hold alike (the CA that issues the nodes'
// certificates, the release-signing key), written once by the first node
// that needs it.
type KeyStore interface {
	// SigningKeys lists every signing key, newest first.
	SigningKeys(ctx context.Context) ([]*SigningKey, error)
	// AddSigningKey stores a new key.
	AddSigningKey(ctx context.Context, k *SigningKey) error
	// Secret returns a named cluster secret (ENOTFOUND when absent).
	Secret(ctx context.Context, name string) ([]byte, error)
	// PutSecretOnce stores a named secret unless it exists, and returns the
	// stored value (the one given, or the one already there). Of concurrent
	// calls for one name, from any number of nodes, one stores its value
	// and every call returns that value.
	PutSecretOnce(ctx context.Context, name string, value []byte) ([]byte, error)
}

// GroupStore holds groups, their configuration, and agent membership.
//
// Membership is the agents' ordered group lists (Agent.Groups); a group
// named by an agent need not exist as a Group.
type GroupStore interface {
	ConfigStore
	// CreateGroup stores a new group (ECONFLICT when the name is taken).
	// Zero CreatedAt and UpdatedAt are set to the current time, and an
	// empty ConfigJSON to "{}"; *g is updated to the group as stored.
	CreateGroup(ctx context.Context, g *Group) error
	// Group returns a created group with its member count.
	Group(ctx context.Context, name string) (*Group, error)
	// Groups lists the created groups by name, with their member counts.
	Groups(ctx context.Context) ([]*Group, error)
	// UpdateGroup replaces the description, configuration, version and
	// update time (zero: now) of a created group; *g is updated to the
	// group as stored.
	UpdateGroup(ctx context.Context, g *Group) error
	// DeleteGroup removes the group and every agent's membership of it. It
	// is ENOTFOUND only when the group was neither created nor named by
	// any agent.
	DeleteGroup(ctx context.Context, name string) error
	// SetAgentGroups replaces the agent's group list (validated with
	// ValidateGroups) and its membership index, and sets its UpdatedAt to
	// the current time.
	SetAgentGroups(ctx context.Context, agentID string, groups []string) error
	// SetAgentVersion records the version of the software an agent runs,
	// and sets its UpdatedAt to the current time. An unknown agent is
	// ENOTFOUND.
	SetAgentVersion(ctx context.Context, agentID, version string) error
}

// ConfigStore reads centralized configuration by group.
type ConfigStore interface {
	// GroupConfigs returns the configurations (ConfigJSON) of the named
	// groups that were created, in the order of groups; a group named
	// twice is returned once.
	GroupConfigs(ctx context.Context, groups []string) ([]*GroupConfig, error)
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

// ChangeNotifier is a Notifier that reaches the other server nodes of a
// cluster. Besides waking the polls they hold, it tells them what changed in
// the store, so that they drop what they cached of it: a node caches agent
// records and configuration versions for a few seconds. The comms API calls
// it when a Notifier implements it.
type ChangeNotifier interface {
	Notifier
	// AgentChanged tells the other nodes that the agents' records changed
	// (deleted, disabled, re-enrolled, groups replaced). Call it after the
	// change is committed and before waking the agents.
	AgentChanged(agentIDs ...string)
	// ConfigChanged tells the other nodes that a group's configuration
	// changed (or a group was created or deleted). Call it after the
	// change is committed and before waking the agents.
	ConfigChanged()
}
