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
	// ReleasePublicKey is the server's release-signing public key, the
	// standard base64 of its 32 Ed25519 bytes: the agent pins it and
	// accepts only files (upgrades) whose signature it verifies. Absent
	// when the server stores no files.
	ReleasePublicKey string `json:"release_public_key,omitempty"`
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
	// Type is agent, group or server.
	Type string `json:"type"`
	// ID is the agent id or the group name; empty for server.
	ID string `json:"id"`
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
	OrderID   string `json:"order_id"`
	RequestID string `json:"request_id"`
	// AgentID is empty for an order a server node executes.
	AgentID string `json:"agent_id"`
	// AgentGroups are the agent's groups when the order was created.
	AgentGroups []string   `json:"agent_groups,omitempty"`
	Action      Action     `json:"action"`
	Status      string     `json:"status"`
	Result      *Result    `json:"result,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	SentAt      *time.Time `json:"sent_at,omitempty"`
	// ReceivedAt is when the agent confirmed it stored the order.
	ReceivedAt *time.Time `json:"received_at,omitempty"`
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
	// Total is the number of orders; Counts the number in each status.
	Total  int            `json:"total"`
	Counts map[string]int `json:"counts"`
	// Orders is set by create and show (up to 1000; list the rest with
	// GET /api/v1/orders?request=ID); list leaves it out.
	Orders []Order `json:"orders,omitempty"`
}

// CommandList is the answer of GET /api/v1/commands.
type CommandList struct {
	Items []Command `json:"items"`
	// Next, when set, is the cursor of the next page.
	Next string `json:"next,omitempty"`
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	Status string `json:"status"`
	// Checks maps each check to "ok" or its failure.
	Checks map[string]string `json:"checks,omitempty"`
}

// Group is a named set of agents with a centralized configuration.
type Group struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Config is the group's configuration as YAML, as it was written.
	Config string `json:"config"`
	// Version is a hash of the configuration; it changes when it does.
	Version   string    `json:"version"`
	Members   int       `json:"members"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// GroupList is the answer of GET /api/v1/groups.
type GroupList struct {
	Items []Group `json:"items"`
}

// CreateGroupRequest is the body of POST /api/v1/groups.
type CreateGroupRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Config is a YAML mapping (optional).
	Config string `json:"config,omitempty"`
}

// UpdateGroupRequest is the body of PATCH /api/v1/groups/{name}; absent
// fields are left as they are.
type UpdateGroupRequest struct {
	Description *string `json:"description,omitempty"`
	Config      *string `json:"config,omitempty"`
}

// SetAgentGroupsRequest is the body of PUT /api/v1/agents/{id}/groups.
type SetAgentGroupsRequest struct {
	Groups []string `json:"groups"`
}

// OrderList is the answer of GET /api/v1/orders.
type OrderList struct {
	Items []Order `json:"items"`
	// Next, when set, is the cursor of the next page.
	Next string `json:"next,omitempty"`
}

// CancelResponse is the answer of a cancel.
type CancelResponse struct {
	// Cancelled is how many orders were not finished and now failed
	// "cancelled".
	Cancelled int `json:"cancelled"`
}

// Progress is one event of GET /api/v1/commands/{id}/progress (a
// Server-Sent Events stream): the request's order counts.
type Progress struct {
	RequestID string `json:"request_id"`
	Total     int    `json:"total"`
	Pending   int    `json:"pending"`
	Sent      int    `json:"sent"`
	Success   int    `json:"success"`
	Failure   int    `json:"failure"`
	// Done is true once every order finished; it is the last event.
	Done bool `json:"done"`
}

// Action describes a built-in action (GET /api/v1/actions).
type ActionSpec struct {
	Name string `json:"name"`
	// Target is "agent" or "server".
	Target string    `json:"target"`
	Doc    string    `json:"doc"`
	Args   []ArgSpec `json:"args"`
}

// ArgSpec describes one argument of a built-in action.
type ArgSpec struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required"`
	Doc      string `json:"doc"`
}

// ActionList is the answer of GET /api/v1/actions.
type ActionList struct {
	Items []ActionSpec `json:"items"`
}

// File describes a file stored on the server, content-addressed by its
// SHA-256 (POST and GET /api/v1/files). Agents download it from the comms
// listener at /api/v1/files/{sha256}.
type File struct {
	// Name is the name it was first uploaded under.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of its bytes.
	SHA256 string `json:"sha256"`
	// UploadedAt is when it was first uploaded; Uploader the name of the
	// token that uploaded it.
	UploadedAt time.Time `json:"uploaded_at"`
	Uploader   string    `json:"uploader"`
	// Signature is the standard base64 of the server's Ed25519 signature,
	// by its release-signing key, of the 32 raw bytes of the SHA-256
	// digest.
	Signature string `json:"signature"`
}

// FileList is the answer of GET /api/v1/files.
type FileList struct {
	Items []File `json:"items"`
}
