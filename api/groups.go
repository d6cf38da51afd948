package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// CreateGroup creates a group, with a configuration when req.Config is set.
func (c *Client) CreateGroup(ctx context.Context, req CreateGroupRequest) (*Group, error) {
	var out Group
	if err := c.Do(ctx, http.MethodPost, "/api/v1/groups", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListGroups lists every group.
func (c *Client) ListGroups(ctx context.Context) (*GroupList, error) {
	var out GroupList
	if err := c.Do(ctx, http.MethodGet, "/api/v1/groups", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetGroup returns one group with its configuration.
func (c *Client) GetGroup(ctx context.Context, name string) (*Group, error) {
	if name == "" {
		return nil, errors.New("get group: empty name")
	}
	var out Group
	if err := c.Do(ctx, http.MethodGet, groupPath(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateGroup changes the fields of req that are set; a new configuration
// is announced to the group's connected agents.
func (c *Client) UpdateGroup(ctx context.Context, name string, req UpdateGroupRequest) (*Group, error) {
	if name == "" {
		return nil, errors.New("update group: empty name")
	}
	var out Group
	if err := c.Do(ctx, http.MethodPatch, groupPath(name), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
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
	var out Agent
	if err := c.Do(ctx, http.MethodPut, "/api/v1/agents/"+url.PathEscape(id)+"/groups", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func groupPath(name string) string { return "/api/v1/groups/" + url.PathEscape(name) }
