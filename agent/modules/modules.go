// Package modules is what tether-agent collects by itself: the log
// collector (files followed across rotation), the host inventory (sent as
// differences), the agent's health document, and plugins (child processes
// speaking the tether.plugin.v1 frames). Each module appends its events to
// the agent's durable outbox; a module that reads a source keeps its
// position in the same transaction as the events it read, so a crash
// neither loses nor repeats them.
//
// A Manager runs the modules a Config turns on and reconfigures them
// without a restart when Apply is given another one: a module whose
// configuration changed is stopped and started again with the new one (its
// position is on disk, so nothing is read twice); a plugin removed from
// the configuration is stopped.
package modules

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

// Outbox is where modules queue their events: the agent's durable outbox.
type Outbox interface {
	// AppendWith appends records and sets keys (nil value: delete) in one
	// transaction.
	AppendWith(recs []store.Record, meta map[string][]byte) error
	// MetaPrefix returns the keys set with AppendWith that start with
	// prefix.
	MetaPrefix(prefix string) (map[string][]byte, error)
}

// Options are what the modules need from the agent.
type Options struct {
	// Outbox receives the events.
	Outbox Outbox
	// Log receives the modules' logs.
	Log *slog.Logger
	// DataDir is the agent's data directory: plugins are looked up in
	// DATA/plugins and keep their state in DATA/plugin-state.
	DataDir string
	// AgentID and Version describe the agent (inventory, plugins).
	AgentID, Version string
	// Stats returns the agent's figures for the health document.
	Stats func() AgentStats
	// Backlogged reports that the outbox holds so much that the log
	// collector should stop reading for now (the files are the buffer).
	Backlogged func() bool
	// Inventory says where the inventory reads from (zero: the host's
	// own databases).
	Inventory InventorySources
	// PluginRestartMin and PluginRestartMax bound the delay before a
	// plugin that exited is started again (defaults 1 s and 5 min).
	PluginRestartMin, PluginRestartMax time.Duration
}

// Manager runs the modules of the configuration last applied.
type Manager struct {
	opts Options
	log  *slog.Logger

	applyMu sync.Mutex // one Apply at a time
	mu      sync.Mutex
	ctx     context.Context
	running map[string]*running // "logcollector", "inventory", "health", "plugin/NAME"
	wg      sync.WaitGroup
	status  map[string]any // per module, for the health document
}

type running struct {
	cfg    any
	cancel context.CancelFunc
	done   chan struct{}
}

// NewManager returns a Manager that runs nothing until Start and Apply.
func NewManager(opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Stats == nil {
		opts.Stats = func() AgentStats { return AgentStats{} }
	}
	if opts.Backlogged == nil {
		opts.Backlogged = func() bool { return false }
	}
	if opts.PluginRestartMin <= 0 {
		opts.PluginRestartMin = time.Second
	}
	if opts.PluginRestartMax <= 0 {
		opts.PluginRestartMax = 5 * time.Minute
	}
	opts.Inventory = opts.Inventory.withDefaults()
	return &Manager{opts: opts, log: opts.Log, running: map[string]*running{}, status: map[string]any{}}
}

// Start sets the context the modules run under (Apply before Start does
// nothing); Stop ends them.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx = ctx
}

// Apply makes cfg the configuration in force: modules it turns off stop,
// modules it turns on start, modules whose configuration changed restart
// with the new one; the others go on untouched. It returns once the
// stopped modules have stopped.
func (m *Manager) Apply(cfg Config) {
	want := map[string]any{}
	if len(cfg.LogCollector.Files) > 0 {
		want["logcollector"] = cfg.LogCollector
	}
	if cfg.Inventory.Enabled {
		want["inventory"] = cfg.Inventory
	}
	if cfg.Health.Enabled {
		want["health"] = cfg.Health
	}
	for _, p := range cfg.Plugins {
		want["plugin/"+p.Name] = p
	}

	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	if m.ctx == nil || m.ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	var stopping []*running
	changed := map[string]bool{}
	for name, r := range m.running {
		if c, ok := want[name]; !ok || !reflect.DeepEqual(c, r.cfg) {
			stopping = append(stopping, r)
			delete(m.running, name)
			delete(m.status, name)
			changed[name] = ok
			if !ok {
				m.log.Info("module stopped", "module", name)
			}
		}
	}
	m.mu.Unlock()
	// Wait without the lock: a module sets its status under it.
	for _, r := range stopping {
		r.cancel()
		<-r.done
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return
	}
	for name, c := range want {
		if _, ok := m.running[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		r := &running{cfg: c, cancel: cancel, done: make(chan struct{})}
		m.running[name] = r
		run := m.runner(c)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(r.done)
			run(ctx)
		}()
		if changed[name] {
			m.log.Info("module reconfigured", "module", name)
		} else {
			m.log.Info("module started", "module", name)
		}
	}
}

func (m *Manager) runner(c any) func(context.Context) {
	switch c := c.(type) {
	case LogCollectorConfig:
		return func(ctx context.Context) {
			m.restarting(ctx, "logcollector", func(ctx context.Context) error { return m.runLogCollector(ctx, c) })
		}
	case InventoryConfig:
		return func(ctx context.Context) { m.runInventory(ctx, c) }
	case HealthConfig:
		return func(ctx context.Context) { m.runHealth(ctx, c) }
	case PluginConfig:
		return func(ctx context.Context) { m.superviseplugin(ctx, c) }
	}
	panic("modules: unknown module configuration")
}

// restarting runs f until ctx ends, running it again after an error with
// a backoff.
func (m *Manager) restarting(ctx context.Context, module string, f func(context.Context) error) {
	delay := time.Second
	for {
		err := f(ctx)
		if ctx.Err() != nil {
			return
		}
		m.log.Error("module failed; restarting it", "module", module, "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, time.Minute)
	}
}

// Stop stops every module and waits for them (plugins get their Stop frame
// and up to 5 s to exit).
func (m *Manager) Stop() {
	m.mu.Lock()
	for name, r := range m.running {
		r.cancel()
		delete(m.running, name)
	}
	m.ctx = nil
	m.mu.Unlock()
	m.wg.Wait()
}

// setStatus records a module's figures for the health document.
func (m *Manager) setStatus(name string, v any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.running[name]; ok {
		m.status[name] = v
	}
}

// Status returns each running module's figures (for the health document
// and tether-agent status).
func (m *Manager) Status() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]any, len(m.running))
	for name := range m.running {
		out[name] = m.status[name]
	}
	return out
}

// newEvent returns an event of module with a new id, collected now.
func newEvent(module, typ string, payload []byte) client.Event {
	return client.Event{ID: uuid.NewString(), Module: module, Type: typ, CollectedAt: time.Now().UTC(), Payload: payload}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only types of this package, which always encode
	}
	return b
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
