package tether

import (
	"regexp"
	"time"
)

// AgentStatus is an agent's connection status as the server sees it.
type AgentStatus string

// Agent statuses.
const (
	// AgentActive: the agent polled or pushed within the last two poll
	// windows.
	AgentActive AgentStatus = "active"
	// AgentDisconnected: the agent has not been heard from for longer.
	AgentDisconnected AgentStatus = "disconnected"
	// AgentNeverSeen: the agent enrolled but never connected.
	AgentNeverSeen AgentStatus = "enrolled"
)

// Agent is an enrolled endpoint.
type Agent struct {
	// ID is the installation UUID the agent chose at enrollment.
	ID string
	// Name is a display name, by default the host name.
	Name string
	// Groups the agent belongs to, in order.
	Groups []string
	// KeyHash is the SHA-256 hash of the agent key; the key itself is never
	// stored.
	KeyHash []byte
	// Disabled agents cannot authenticate.
	Disabled bool

	// Facts reported at enrollment.
	Hostname string
	OS       string
	Arch     string
	Version  string

	// EnrolledAt is when the agent first enrolled; UpdatedAt when it last
	// re-enrolled or was changed.
	EnrolledAt time.Time
	UpdatedAt  time.Time
	// EnrolledBy is the id of the token used to enroll.
	EnrolledBy string
	// LastSeen is when the agent last polled or pushed (zero: never).
	LastSeen time.Time
	// LastBatchSeq is the highest event batch sequence accepted.
	LastBatchSeq uint64
}

// StatusAt returns the agent's connection status at now, for a poll window
// of window (an agent is active while heard from within two windows).
func (a *Agent) StatusAt(now time.Time, window time.Duration) AgentStatus {
	switch {
	case a.LastSeen.IsZero():
		return AgentNeverSeen
	case now.Sub(a.LastSeen) <= 2*window:
		return AgentActive
	default:
		return AgentDisconnected
	}
}

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	groupRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)
)

// ValidID reports whether id is a UUID in canonical lowercase form, the form
// of every id Tether hands out or accepts.
func ValidID(id string) bool { return uuidRE.MatchString(id) }

// ValidateGroups checks group names: 1 to 64 characters of [a-zA-Z0-9_.-],
// starting with a letter or digit, no duplicates, at most 64 groups.
func ValidateGroups(field string, groups []string) error {
	if len(groups) > 64 {
		return FieldError(field, "at most 64 groups")
	}
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		if !groupRE.MatchString(g) {
			return FieldError(field, "group %q: use 1 to 64 characters of letters, digits, '_', '.', '-'", g)
		}
		if seen[g] {
			return FieldError(field, "group %q listed twice", g)
		}
		seen[g] = true
	}
	return nil
}

// AgentFilter selects agents in a list.
type AgentFilter struct {
	// Group, when set, keeps agents in that group.
	Group string
	// NamePrefix, when set, keeps agents whose name starts with it.
	NamePrefix string
	// SeenSince, when set, keeps agents last seen at or after it (active).
	SeenSince time.Time
	// NotSeenSince, when set, keeps agents seen before it but not since
	// (disconnected).
	NotSeenSince time.Time
	// NeverSeen keeps agents that never connected.
	NeverSeen bool
	// After, when set, keeps agents whose id sorts after it (pagination).
	After string
	// Limit caps the number of agents returned (0: the store default, 100).
	Limit int
}
