package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// CreateGroup creates a group, with a configuration when req.Config is set.
func (c *Client) CreateGroup(ctx context.Context, req CreateGroupRequest) (*Group, error) {
	return call[Group](ctx, c, http.MethodPost, "/api/v1/groups", nil, req)
}

// ListGroups lists every group.
func (c *Client) ListGroups(ctx context.Context) (*GroupList, error) {
	return call[GroupList](ctx, c, http.MethodGet, "/api/v1/groups", nil, nil)
}

// GetGroup returns one group with its configuration.
func (c *Client) GetGroup(ctx context.Context, name string) (*Group, error) {
	if name == "" {
		return nil, errors.New("get group: empty name")
	}
	return call[Group](ctx, c, http.MethodGet, groupPath(name), nil, nil)
}

// UpdateGroup changes the fields of req that are set; a new configuration
// is announced to the group's connected agents.
func (c *Client) UpdateGroup(ctx context.Context, name string, req UpdateGroupRequest) (*Group, error) {
	if name == "" {
		return nil, errors.New("update group: empty name")
	}
	return call[Group](ctx, c, http.MethodPatch, groupPath(name), nil, req)
}

// DeleteGroup deletes a group; its agents leave it.
func (c *Client) DeleteGroup(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("delete group: empty name")
	}
	return c.Do(ctx, http.MethodDelete, groupPath(name), nil, nil, nil)
}

// SetAgentGroups replaces the groups of an agent (none when req.Groups is
// empty) and returns the agent.
func (c *Client) SetAgentGroups(ctx context.Context, id string, req SetAgentGroupsRequest) (*Agent, error) {
	if id == "" {
		return nil, errors.New("set agent groups: empty id")
	}
	if req.Groups == nil {
		req.Groups = []string{} // "groups": [] rather than null
	}
	return call[Agent](ctx, c, http.MethodPut, "/api/v1/agents/"+url.PathEscape(id)+"/groups", nil, req)
}

func groupPath(name string) string { return "/api/v1/groups/" + url.PathEscape(name) }
