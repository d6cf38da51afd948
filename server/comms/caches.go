package comms

// A node caches agent records and configuration versions for a short
// while (agentCacheTTL), so that polls and pushes do not read the store on
// every call. A change made through this node drops them at once (Forget,
// ForgetConfigs); the methods below drop them when another node made the
// change, and are called by a cluster Notifier (server/pgnotify) when it
// hears of it. They tell no other node.

// DropAgent drops this node's cached record of an agent.
func (s *Service) DropAgent(agentID string) {
	s.mu.Lock()
	delete(s.agents, agentID)
	s.mu.Unlock()
}

// DropConfigs drops this node's cached configuration versions.
func (s *Service) DropConfigs() {
	s.configs.mu.Lock()
	clear(s.configs.m)
	s.configs.mu.Unlock()
}

// DropAll drops every agent record and configuration version this node
// cached: changes may have been missed (the connection to the other nodes
// was lost for a while).
func (s *Service) DropAll() {
	s.mu.Lock()
	clear(s.agents)
	s.mu.Unlock()
	s.qmu.Lock()
	clear(s.quiet)
	s.qmu.Unlock()
	s.DropConfigs()
}
