package api

import (
	"encoding/json"
	"time"
)

// Error is the body of every non-2xx response of the management API.
type Error struct {
	// Code is a stable machine-readable code: invalid, not_found,
	// unauthorized, forbidden, conflict, expired, gone, too_large,
	// exhausted, unavailable or internal.
	Code string `json:"code"`
	// Message is a one-line reason, safe to show to a person.
	Message string `json:"message"`
	// Field names the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
}

// ErrorResponse wraps Error.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// CreateEnrollmentTokenRequest is the body of POST /api/v1/enrollment-tokens.
type CreateEnrollmentTokenRequest struct {
	// Name is a label for people (optional).
	Name string `json:"name,omitempty"`
	// Groups the enrolled agents join.
	Groups []string `json:"groups,omitempty"`
	// TTL is how long the token works, as a Go duration ("24h", "30m");
	// empty: 24h; "0": never expires.
	TTL string `json:"ttl,omitempty"`
	// MaxUses is how many agents it may enroll (0: unlimited).
	MaxUses int `json:"max_uses,omitempty"`
}

// EnrollmentToken describes an enrollment token. Token is set only in the
// answer to its creation.
type EnrollmentToken struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Token     string     `json:"token,omitempty"`
	Groups    []string   `json:"groups"`
	MaxUses   int        `json:"max_uses"`
	Uses      int        `json:"uses"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	// Status is active, expired, used_up or revoked.
	Status string `json:"status"`
}

// RegisterAgentRequest is the body of POST /api/v1/agents, sent by
// `tether-agent enroll` with an enrollment token.
type RegisterAgentRequest struct {
	// ID is the installation UUID the agent generated (lowercase canonical
	// form).
	ID string `json:"id"`
	// Name is a display name (default: Hostname).
	Name string `json:"name,omitempty"`
	// CurrentKey is the agent key the installation already holds, when it
	// re-enrolls; required to re-enroll an id that is still registered.
	CurrentKey string `json:"current_key,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	OS         string `json:"os,omitempty"`
	Arch       string `json:"arch,omitempty"`
	Version    string `json:"version,omitempty"`
}

// RegisterAgentResponse carries the agent's identity. AgentKey is shown only
// here: the agent stores it, the server keeps only its hash.
type RegisterAgentResponse struct {
	Agent    Agent  `json:"agent"`
	AgentKey string `json:"agent_key"`
	// CommsURLs are the comms API addresses the agent should use.
	CommsURLs []string `json:"comms_urls"`
}

// Agent describes an enrolled agent.
type Agent struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	// Status is active, disconnected or enrolled (never connected).
	Status     string     `json:"status"`
	Hostname   string     `json:"hostname"`
	OS         string     `json:"os"`
	Arch       string     `json:"arch"`
	Version    string     `json:"version"`
	EnrolledAt time.Time  `json:"enrolled_at"`
	LastSeen   *time.Time `json:"last_seen,omitempty"`
}

// AgentList is the answer of GET /api/v1/agents.
type AgentList struct {
	Items []Agent `json:"items"`
	// Next, when set, is the `after` value that returns the next page.
	Next string `json:"next,omitempty"`
}

// EnrollmentTokenList is the answer of GET /api/v1/enrollment-tokens.
type EnrollmentTokenList struct {
	Items []EnrollmentToken `json:"items"`
}

// StateEntry is one state document of an agent.
type StateEntry struct {
	Module    string          `json:"module"`
	Key       string          `json:"key"`
	Doc       json.RawMessage `json:"doc"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// StateList is the answer of GET /api/v1/agents/{id}/state[/{module}].
type StateList struct {
	AgentID string       `json:"agent_id"`
	Items   []StateEntry `json:"items"`
}

// Target is what a command is aimed at.
type Target struct {
	// Type is agent (the only type this version accepts).
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Action is what a command asks for.
type Action struct {
	Name string `json:"name"`
	// Args is a JSON object (optional).
	Args    json.RawMessage `json:"args,omitempty"`
	Version string          `json:"version,omitempty"`
}

// CreateCommandRequest is the body of POST /api/v1/commands.
type CreateCommandRequest struct {
	Target Target `json:"target"`
	Action Action `json:"action"`
	// Timeout is the orders' time window as a Go duration (default "5m",
	// from 1s to 24h).
	Timeout string `json:"timeout,omitempty"`
}

// Result is an order's outcome.
type Result struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Order is one command's work for one agent.
type Order struct {
	OrderID    string     `json:"order_id"`
	RequestID  string     `json:"request_id"`
	AgentID    string     `json:"agent_id"`
	Action     Action     `json:"action"`
	Status     string     `json:"status"`
	Result     *Result    `json:"result,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	SentAt     *time.Time `json:"sent_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	TimeoutAt  time.Time  `json:"timeout_at"`
	Attempts   int        `json:"attempts"`
}

// Command is a command request with its orders.
type Command struct {
	ID        string    `json:"id"`
	Target    Target    `json:"target"`
	Action    Action    `json:"action"`
	Timeout   string    `json:"timeout"`
	Source    string    `json:"source"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
	// Status summarises the orders: pending, sent, success, failure (any
	// failed once all finished).
	Status string `json:"status"`
	// Orders is set by create and show; list leaves it out.
	Orders []Order `json:"orders,omitempty"`
}

// CommandList is the answer of GET /api/v1/commands.
type CommandList struct {
	Items []Command `json:"items"`
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	Status string `json:"status"`
	// Checks maps each check to "ok" or its failure.
	Checks map[string]string `json:"checks,omitempty"`
}
