// Package group manages groups of agents and their centralized
// configuration: it validates names and descriptions, converts each group's
// YAML configuration to the JSON object agents receive (see ParseConfig),
// versions it, and changes agents' membership.
//
// After a change that can change what an agent's GetConfig returns — a
// group's configuration changed, a group with a configuration was created or
// deleted, an agent's groups were replaced — the Service wakes the waiting
// long-polls of the agents concerned (Notifier.Notify), so that the comms API
// re-reads them at once instead of at the end of their wait. Agents learn
// the new configuration through GetConfig, whose version changes with it.
package group

import (
	"context"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether"
)

// MaxDescriptionBytes bounds a group's description.
const MaxDescriptionBytes = 1024

// membersPage is how many members are read at a time to wake them.
const membersPage = 1000

// Service manages groups. Store is required; Notifier and Now are optional.
type Service struct {
	Store tether.Store
	// Notifier wakes the long-polls of agents whose configuration may have
	// changed (nil: none are woken).
	Notifier tether.Notifier
	// Now returns the current time (time.Now when nil).
	Now func() time.Time
	// ForgetAgent and ForgetConfigs, when set, are called before agents
	// are woken: the first with an agent whose groups changed, the second
	// when a configuration changed. A node's comms API drops what it cached
	// of them there, so the polls it wakes see the change.
	ForgetAgent   func(agentID string)
	ForgetConfigs func()
}

// Create creates a group with a description and a YAML configuration (""
// for none). A name in use is ECONFLICT. Agents that already name the group
// are woken when it brings them a configuration.
func (s *Service) Create(ctx context.Context, name, description, yamlConfig string) (*tether.Group, error) {
	if err := tether.ValidateGroups("name", []string{name}); err != nil {
		return nil, err
	}
	if err := checkDescription(description); err != nil {
		return nil, err
	}
	doc, version, err := ParseConfig(yamlConfig)
	if err != nil {
		return nil, err
	}
	now := s.now()
	g := &tether.Group{
		Name: name, Description: description, Config: []byte(yamlConfig), ConfigJSON: doc,
		Version: version, CreatedAt: now, UpdatedAt: now,
	}
	if err := s.Store.CreateGroup(ctx, g); err != nil {
		return nil, err
	}
	if string(doc) != "{}" {
		if err := s.wakeMembers(ctx, name); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Update changes the description and the configuration of a group; a nil
// argument leaves its value as it is. The version changes only when the
// configuration's content does, and only then are the members woken.
func (s *Service) Update(ctx context.Context, name string, description, yamlConfig *string) (*tether.Group, error) {
	if err := tether.ValidateGroups("name", []string{name}); err != nil {
		return nil, err
	}
	if description != nil {
		if err := checkDescription(*description); err != nil {
			return nil, err
		}
	}
	var doc []byte
	var version string
	if yamlConfig != nil {
		var err error
		if doc, version, err = ParseConfig(*yamlConfig); err != nil {
			return nil, err
		}
	}
	g, err := s.Store.Group(ctx, name)
	if err != nil {
		return nil, err
	}
	old := g.Version
	if description != nil {
		g.Description = *description
	}
	if yamlConfig != nil {
		g.Config, g.ConfigJSON, g.Version = []byte(*yamlConfig), doc, version
	}
	g.UpdatedAt = s.now()
	if err := s.Store.UpdateGroup(ctx, g); err != nil {
		return nil, err
	}
	if g.Version != old {
		if err := s.wakeMembers(ctx, name); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Delete removes a group and every agent's membership of it, and wakes its
// former members. It is ENOTFOUND only when the group was neither created
// nor named by any agent.
func (s *Service) Delete(ctx context.Context, name string) error {
	if err := tether.ValidateGroups("name", []string{name}); err != nil {
		return err
	}
	// The members are read first: once deleted, the group has none.
	ids, err := s.members(ctx, name)
	if err != nil {
		return err
	}
	if err := s.Store.DeleteGroup(ctx, name); err != nil {
		return err
	}
	if s.ForgetAgent != nil {
		for _, id := range ids {
			s.ForgetAgent(id)
		}
	}
	s.configsChanged()
	s.notify(ids...)
	return nil
}

// Get returns a created group with its member count.
func (s *Service) Get(ctx context.Context, name string) (*tether.Group, error) {
	if err := tether.ValidateGroups("name", []string{name}); err != nil {
		return nil, err
	}
	return s.Store.Group(ctx, name)
}

// List returns the created groups by name, with their member counts.
func (s *Service) List(ctx context.Context) ([]*tether.Group, error) {
	return s.Store.Groups(ctx)
}

// SetAgentGroups replaces the agent's ordered group list (each name valid,
// none twice, at most 64; the groups need not have been created) and wakes
// the agent when the list changed. It returns the agent as stored.
func (s *Service) SetAgentGroups(ctx context.Context, agentID string, groups []string) (*tether.Agent, error) {
	if groups == nil {
		groups = []string{}
	}
	if err := tether.ValidateGroups("groups", groups); err != nil {
		return nil, err
	}
	a, err := s.Store.Agent(ctx, agentID)
	if err != nil {
		return nil, err
	}
	if slices.Equal(a.Groups, groups) {
		return a, nil
	}
	if err := s.Store.SetAgentGroups(ctx, agentID, groups); err != nil {
		return nil, err
	}
	if s.ForgetAgent != nil {
		s.ForgetAgent(agentID)
	}
	s.notify(agentID)
	return s.Store.Agent(ctx, agentID)
}

// wakeMembers wakes the long-polls of every member of the group.
func (s *Service) wakeMembers(ctx context.Context, name string) error {
	s.configsChanged()
	ids, err := s.members(ctx, name)
	if err != nil {
		return err
	}
	s.notify(ids...)
	return nil
}

// members returns the ids of every member of the group, a page at a time,
// to wake them: none without a Notifier.
func (s *Service) members(ctx context.Context, name string) ([]string, error) {
	if s.Notifier == nil {
		return nil, nil
	}
	var ids []string
	after := ""
	for {
		page, err := s.Store.Agents(ctx, tether.AgentFilter{Group: name, After: after, Limit: membersPage})
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			ids = append(ids, a.ID)
		}
		if len(page) < membersPage {
			return ids, nil
		}
		after = page[len(page)-1].ID
	}
}

func (s *Service) configsChanged() {
	if s.ForgetConfigs != nil {
		s.ForgetConfigs()
	}
}

func (s *Service) notify(ids ...string) {
	if s.Notifier != nil && len(ids) > 0 {
		s.Notifier.Notify(ids...)
	}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func checkDescription(d string) error {
	if len(d) > MaxDescriptionBytes || !utf8.ValidString(d) {
		return tether.FieldError("description", "want at most %d bytes of UTF-8", MaxDescriptionBytes)
	}
	return nil
}
