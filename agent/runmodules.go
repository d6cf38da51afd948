package agent

import (
	"context"

	"github.com/tetherhq/tether/agent/modules"
)

// newModules returns the manager of the agent's modules (agent/modules):
// log collector, inventory, health and plugins.
func (rt *agentRun) newModules() *modules.Manager {
	return modules.NewManager(modules.Options{
		Outbox:  rt.db.Outbox,
		Log:     rt.log,
		DataDir: rt.opts.DataDir,
		AgentID: rt.ident.AgentID,
		Version: rt.opts.Version,
		Stats:   rt.moduleStats,
		// The log collector waits while the outbox is half full: the files
		// are a better buffer than dropping the oldest events.
		Backlogged: func() bool {
			s := rt.db.Outbox.Stats()
			return s.MaxBytes > 0 && s.Bytes > s.MaxBytes/2
		},
	})
}

// modulesLoop runs the modules of the effective configuration and applies
// each new one (a centralized configuration applied at run time) without a
// restart; it stops them when the agent stops.
func (rt *agentRun) modulesLoop(ctx context.Context) error {
	m := rt.newModules()
	m.Start(ctx)
	m.Apply(rt.config().Modules)
	for {
		select {
		case <-ctx.Done():
			m.Stop()
			return nil
		case <-rt.configApplied:
			m.Apply(rt.config().Modules)
		}
	}
}

// moduleStats are the agent's figures for the health document.
func (rt *agentRun) moduleStats() modules.AgentStats {
	s := rt.db.Outbox.Stats()
	rt.mu.Lock()
	connected, version := rt.connected, rt.central.Version
	rt.mu.Unlock()
	return modules.AgentStats{
		OutboxEvents:      s.Records,
		OutboxBytes:       s.Bytes,
		DroppedEvents:     s.Dropped,
		DeadLetterBatches: s.DeadLetters,
		Connected:         connected,
		ConfigVersion:     version,
		LastErrors:        rt.errLog.Last(),
	}
}
