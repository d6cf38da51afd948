package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
)

// Order statuses, as the management API spells them.
const (
	StatusPending = "pending"
	StatusSent    = "sent"
	StatusSuccess = "success"
	StatusFailure = "failure"
)

// Progress returns c's order counts as a progress event would carry them:
// from the server's counts when it sent them, else from the orders listed.
// A command without orders is not done.
func (c *Command) Progress() Progress {
	p := Progress{RequestID: c.ID, Total: c.Total}
	counts := c.Counts
	if counts == nil {
		counts = map[string]int{}
		for _, o := range c.Orders {
			counts[o.Status]++
		}
		p.Total = len(c.Orders)
	}
	p.Pending, p.Sent = counts[StatusPending], counts[StatusSent]
	p.Success, p.Failure = counts[StatusSuccess], counts[StatusFailure]
	p.Done = p.Total > 0 && p.Success+p.Failure == p.Total
	return p
}

// CreateEnrollmentToken creates an enrollment token. The answer is the only
// one that carries the token's secret (EnrollmentToken.Token).
func (c *Client) CreateEnrollmentToken(ctx context.Context, req CreateEnrollmentTokenRequest) (*EnrollmentToken, error) {
	return call[EnrollmentToken](ctx, c, http.MethodPost, "/api/v1/enrollment-tokens", nil, req)
}

// ListEnrollmentTokens lists enrollment tokens; includeRevoked also returns
// revoked, expired and used-up ones.
func (c *Client) ListEnrollmentTokens(ctx context.Context, includeRevoked bool) (*EnrollmentTokenList, error) {
	var q url.Values
	if includeRevoked {
		q = url.Values{"all": {"true"}}
	}
	return call[EnrollmentTokenList](ctx, c, http.MethodGet, "/api/v1/enrollment-tokens", q, nil)
}

// RevokeEnrollmentToken revokes an enrollment token by id.
func (c *Client) RevokeEnrollmentToken(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("revoke enrollment token: empty id")
	}
	return c.Do(ctx, http.MethodDelete, "/api/v1/enrollment-tokens/"+url.PathEscape(id), nil, nil, nil)
}

// AgentQuery filters ListAgents. Zero fields do not filter.
type AgentQuery struct {
	// Status is active, disconnected or enrolled.
	Status string
	// Group keeps agents in that group.
	Group string
	// Name keeps agents whose name starts with it.
	Name string
	// Limit caps the page size (0: the server default).
	Limit int
	// After is the AgentList.Next of the previous page.
	After string
}

func (q AgentQuery) values() url.Values {
	v := url.Values{}
	setNonEmpty(v, "status", q.Status)
	setNonEmpty(v, "group", q.Group)
	setNonEmpty(v, "name", q.Name)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	setNonEmpty(v, "after", q.After)
	return v
}

// ListAgents returns one page of agents.
func (c *Client) ListAgents(ctx context.Context, q AgentQuery) (*AgentList, error) {
	return call[AgentList](ctx, c, http.MethodGet, "/api/v1/agents", q.values(), nil)
}

// GetAgent returns one agent.
func (c *Client) GetAgent(ctx context.Context, id string) (*Agent, error) {
	if id == "" {
		return nil, errors.New("get agent: empty id")
	}
	return call[Agent](ctx, c, http.MethodGet, "/api/v1/agents/"+url.PathEscape(id), nil, nil)
}

// DeleteAgent removes an agent; its credentials stop working.
func (c *Client) DeleteAgent(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("delete agent: empty id")
	}
	return c.Do(ctx, http.MethodDelete, "/api/v1/agents/"+url.PathEscape(id), nil, nil, nil)
}

// AgentState returns the state documents of an agent, of every module when
// module is empty.
func (c *Client) AgentState(ctx context.Context, id, module string) (*StateList, error) {
	if id == "" {
		return nil, errors.New("agent state: empty id")
	}
	path := "/api/v1/agents/" + url.PathEscape(id) + "/state"
	if module != "" {
		path += "/" + url.PathEscape(module)
	}
	return call[StateList](ctx, c, http.MethodGet, path, nil, nil)
}

// CreateCommand creates a command request; the answer carries its orders.
func (c *Client) CreateCommand(ctx context.Context, req CreateCommandRequest) (*Command, error) {
	return call[Command](ctx, c, http.MethodPost, "/api/v1/commands", nil, req)
}

// CommandQuery filters ListCommands. Zero fields do not filter.
type CommandQuery struct {
	// AgentID keeps commands with an order for that agent.
	AgentID string
	// Status keeps commands with at least one order in that status.
	Status string
	// Limit caps the number returned (0: the server default).
	Limit int
	// Cursor is the CommandList.Next of the previous page.
	Cursor string
}

func (q CommandQuery) values() url.Values {
	v := url.Values{}
	setNonEmpty(v, "agent", q.AgentID)
	setNonEmpty(v, "status", q.Status)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	setNonEmpty(v, "cursor", q.Cursor)
	return v
}

// ListCommands returns one page of command requests, newest first, with
// their order counts but without their orders.
func (c *Client) ListCommands(ctx context.Context, q CommandQuery) (*CommandList, error) {
	return call[CommandList](ctx, c, http.MethodGet, "/api/v1/commands", q.values(), nil)
}

// GetCommand returns a command request with its orders.
func (c *Client) GetCommand(ctx context.Context, id string) (*Command, error) {
	if id == "" {
		return nil, errors.New("get command: empty id")
	}
	return call[Command](ctx, c, http.MethodGet, "/api/v1/commands/"+url.PathEscape(id), nil, nil)
}

// CancelCommand cancels every order of a command that has not finished:
// each fails "cancelled", and an agent that has not started one skips it.
func (c *Client) CancelCommand(ctx context.Context, id string) (*CancelResponse, error) {
	if id == "" {
		return nil, errors.New("cancel command: empty id")
	}
	return call[CancelResponse](ctx, c, http.MethodPost, "/api/v1/commands/"+url.PathEscape(id)+"/cancel", nil, nil)
}

// ListActions describes the built-in actions and their arguments.
func (c *Client) ListActions(ctx context.Context) (*ActionList, error) {
	return call[ActionList](ctx, c, http.MethodGet, "/api/v1/actions", nil, nil)
}

func setNonEmpty(v url.Values, key, val string) {
	if val != "" {
		v.Set(key, val)
	}
}
