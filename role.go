package tether

// Role is what a management API token may do.
type Role string

// Roles, from most to least powerful.
const (
	// RoleAdmin may do everything, and alone manages the API tokens of
	// people and services.
	RoleAdmin Role = "admin"
	// RoleOperator manages agents, commands, files and enrollment tokens.
	RoleOperator Role = "operator"
	// RoleViewer reads agents, commands, state, files and events.
	RoleViewer Role = "viewer"
	// RoleRegistrar only registers agents: the role of enrollment tokens.
	RoleRegistrar Role = "registrar"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleOperator, RoleViewer, RoleRegistrar}

// Permission is one thing a route of the management API does.
type Permission string

// Permissions. Every route of the management API checks exactly one.
const (
	PermTokensRead     Permission = "tokens:read"
	PermTokensWrite    Permission = "tokens:write"
	PermAgentsRegister Permission = "agents:register"
	PermAgentsRead     Permission = "agents:read"
	PermAgentsWrite    Permission = "agents:write"
	PermCommandsRead   Permission = "commands:read"
	PermCommandsWrite  Permission = "commands:write"
	PermStateRead      Permission = "state:read"
	PermFilesRead      Permission = "files:read"
	PermFilesWrite     Permission = "files:write"
	// PermEventsRead follows the events a server node accepts, live.
	PermEventsRead Permission = "events:read"
	// PermUsersManage creates, lists and revokes the API tokens of people
	// and services (not enrollment tokens): admin only.
	PermUsersManage Permission = "users:manage"
)

var rolePerms = map[Role][]Permission{
	RoleAdmin: {PermTokensRead, PermTokensWrite, PermAgentsRegister, PermAgentsRead,
		PermAgentsWrite, PermCommandsRead, PermCommandsWrite, PermStateRead, PermFilesRead, PermFilesWrite,
		PermUsersManage, PermEventsRead},
	RoleOperator: {PermTokensRead, PermTokensWrite, PermAgentsRegister, PermAgentsRead,
		PermAgentsWrite, PermCommandsRead, PermCommandsWrite, PermStateRead, PermFilesRead, PermFilesWrite,
		PermEventsRead},
	RoleViewer:    {PermAgentsRead, PermCommandsRead, PermStateRead, PermFilesRead, PermEventsRead},
	RoleRegistrar: {PermAgentsRegister},
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { _, ok := rolePerms[r]; return ok }

// Can reports whether role r holds permission p.
func (r Role) Can(p Permission) bool {
	for _, q := range rolePerms[r] {
		if q == p {
			return true
		}
	}
	return false
}
