package tether

import (
	"bytes"
	"encoding/json"
	"time"
)

// Group is a named set of agents with a centralized configuration.
//
// Membership lives on the agents (Agent.Groups): an agent may name a group
// that nobody created (an enrollment token may name any group), and it is a
// member all the same. A Group is the operator's record of a group: its
// description and configuration.
type Group struct {
	Name        string
	Description string
	// Config is the configuration's YAML source as the operator wrote it
	// (empty: none).
	Config []byte
	// ConfigJSON is the same document as a JSON object ("{}" when empty);
	// it is what agents receive, merged with their other groups'.
	ConfigJSON []byte
	// Version is a hex hash of ConfigJSON, computed by the caller.
	Version   string
	CreatedAt time.Time
	UpdatedAt time.Time
	// Members counts the agents that list the group; stores fill it in
	// Group and Groups and ignore it on writes.
	Members int
}

// ConfigDoc returns the document a Store keeps for g.ConfigJSON: "{}" when
// it is empty, and EINVALID on the field "config" unless it is a JSON
// object.
func (g *Group) ConfigDoc() ([]byte, error) {
	doc := bytes.TrimSpace(g.ConfigJSON)
	if len(doc) == 0 {
		return []byte("{}"), nil
	}
	if doc[0] != '{' || !json.Valid(doc) {
		return nil, FieldError("config", "want a JSON object")
	}
	return g.ConfigJSON, nil
}

// GroupConfig is the centralized configuration of one group, as GetConfig
// merges it.
type GroupConfig struct {
	Group string
	// Doc is a JSON object (the group's ConfigJSON).
	Doc []byte
	// Version is the group's Version.
	Version   string
	UpdatedAt time.Time
}
