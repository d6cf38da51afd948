package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/tetherhq/tether/agent/modules"
	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

// ErrRemoved is returned by Run when the server answers PERMISSION_DENIED:
// the agent was deleted or disabled.
var ErrRemoved = errors.New("agent was removed or disabled on the server")

// RunOptions are the inputs of Run.
type RunOptions struct {
	// DataDir is the data directory (default DefaultDataDir).
	DataDir string
	// ConfigFile is the configuration file; empty: DATA_DIR/agent.yaml,
	// which may be absent. A file named here must exist.
	ConfigFile string
	// Logger receives the agent's logs (default: slog.Default()).
	Logger *slog.Logger
	// LogLevel, if set, is set to the configuration's log_level.
	LogLevel *slog.LevelVar
	// Version is the agent's version.
	Version string
}

// Run runs the agent until ctx ends (nil), an order asks for a restart
// (ErrRestart), or the server says the agent was removed (ErrRemoved).
func Run(ctx context.Context, opts RunOptions) error {
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	errLog := modules.NewErrorLog(10) // the last warnings, for the health document
	log = slog.New(errLog.Handler(log.Handler()))
	ident, err := LoadIdentity(opts.DataDir)
	if err != nil {
		return err
	}
	cfgPath, mustExist := opts.ConfigFile, true
	if cfgPath == "" {
		cfgPath, mustExist = filepath.Join(opts.DataDir, ConfigFile), false
	}
	cfg, err := LoadConfig(cfgPath, mustExist)
	if err != nil {
		return err
	}
	if opts.LogLevel != nil {
		opts.LogLevel.Set(cfg.SlogLevel())
	}
	var roots *x509.CertPool
	if pem, err := os.ReadFile(filepath.Join(opts.DataDir, CAFile)); err == nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate found", filepath.Join(opts.DataDir, CAFile))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	c, err := client.New(client.Config{
		URLs:        ident.CommsURLs,
		AgentID:     ident.AgentID,
		AgentKey:    ident.AgentKey,
		RootCAs:     roots,
		UserAgent:   "tether-agent/" + opts.Version,
		Version:     opts.Version,
		Compression: cfg.Compression,
	})
	if err != nil {
		return fmt.Errorf("comms client: %w", err)
	}
	db, err := store.Open(filepath.Join(opts.DataDir, DBFile))
	if err != nil {
		return err
	}
	defer db.Close()

	rt := &agentRun{
		opts:      opts,
		ident:     ident,
		cfg:       cfg,
		cfgPath:   cfgPath,
		log:       log.With("agent_id", ident.AgentID),
		client:    c,
		db:        db,
		startedAt: time.Now().UTC(),
		sendWake:  make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		reportNow: make(chan struct{}, 1),
		configNow: make(chan struct{}, 1),

		configApplied: make(chan struct{}, 1),
		errLog:        errLog,
	}
	return rt.run(ctx)
}

// agentRun is one run of the agent.
type agentRun struct {
	opts    RunOptions
	ident   Identity
	cfg     Config
	cfgPath string
	log     *slog.Logger
	client  *client.Client
	db      *store.DB
	exec    *Executor

	startedAt time.Time
	sendWake  chan struct{} // events appended
	kick      chan struct{} // status changed
	reportNow chan struct{} // results stored
	configNow chan struct{} // the server has another configuration version

	configApplied chan struct{}     // another effective configuration is in force
	errLog        *modules.ErrorLog // last warnings and errors logged

	mu         sync.Mutex
	connected  bool
	lastErr    string
	lastPollAt time.Time
	central    centralConfig // applied
	eff        Config        // in force: cfg with central over it
	configErr  string        // why the last centralized configuration was refused
}

type centralConfig struct {
	Version string          `json:"version"`
	Config  json.RawMessage `json:"config"`
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (rt *agentRun) run(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	log := rt.log

	if n, err := rt.db.Orders.PruneIndex(time.Now().Add(-30 * 24 * time.Hour)); err != nil {
		log.Warn("prune order index", "err", err)
	} else if n > 0 {
		log.Debug("pruned order index", "ids", n)
	}
	rt.loadCentral()
	rt.applyEventConfig(rt.config())
	handlers := BuiltinHandlers(rt.effectiveConfig, ActiveResponseDirs(rt.opts.DataDir, rt.cfg)...)
	rt.addConfigHandlers(handlers)
	// Upgrades (upgrade.go): the action, and a new binary on probation
	// confirmed or rolled back before orders are settled.
	if err := rt.setUpUpgrades(ctx, handlers); err != nil || ctx.Err() != nil {
		return err
	}
	rt.exec = NewExecutor(rt.db.Orders, handlers, log)
	rt.exec.OnResult = func() { notify(rt.reportNow); notify(rt.kick) }
	if err := rt.exec.Recover(); err != nil {
		return fmt.Errorf("recover orders: %w", err)
	}
	if err := rt.queueStartEvents(); err != nil {
		return err
	}
	log.Info("agent started", "name", rt.ident.Name, "comms_url", rt.client.URL(), "version", rt.opts.Version,
		"queued_events", rt.db.Outbox.Len(), "pending_orders", rt.db.Orders.Len())
	rt.writeStatus("running")

	var wg sync.WaitGroup
	loops := []func(context.Context) error{rt.pollLoop, rt.exec.Run, rt.reportLoop, rt.sendLoop, rt.configLoop, rt.statusLoop, rt.testLoadLoop}
	loops = append(loops, rt.modulesLoop)
	for _, loop := range loops {
		wg.Go(func() {
			if err := loop(ctx); err != nil {
				cancel(err)
			}
		})
	}
	<-ctx.Done()
	wg.Wait()

	err := context.Cause(ctx)
	switch {
	case errors.Is(err, ErrRestart):
		rt.writeStatus("restarting")
		return ErrRestart
	case errors.Is(err, ErrRemoved):
		log.Error("the server refused this agent: it was removed or disabled; stopping (enroll again to rejoin)")
		rt.writeStatus("stopped")
		return ErrRemoved
	case parent.Err() != nil:
		log.Info("agent stopped")
		rt.writeStatus("stopped")
		return nil
	default:
		rt.writeStatus("stopped")
		return err
	}
}

// queueStartEvents queues the "started" event. (The inventory module sends
// the host's inventory.)
func (rt *agentRun) queueStartEvents() error {
	now := time.Now().UTC()
	started, err := json.Marshal(map[string]any{"version": rt.opts.Version, "pid": os.Getpid()})
	if err != nil {
		return err
	}
	return rt.emit(
		store.Record{Event: client.Event{ID: uuid.NewString(), Module: "agent", Type: "started", CollectedAt: now, Payload: started}},
	)
}

// emit queues events in the outbox and wakes the sender.
func (rt *agentRun) emit(recs ...store.Record) error {
	if err := rt.db.Outbox.Append(recs...); err != nil {
		return err
	}
	notify(rt.sendWake)
	return nil
}

// noteCall records the outcome of a call to the comms API.
func (rt *agentRun) noteCall(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		return // shutting down
	}
	rt.mu.Lock()
	changed := rt.connected != (err == nil)
	rt.connected = err == nil
	rt.lastErr = ""
	if err != nil {
		rt.lastErr = err.Error()
	}
	rt.mu.Unlock()
	if changed {
		if err == nil {
			rt.log.Info("connected", "comms_url", rt.client.URL())
		}
		notify(rt.kick)
	}
}

func (rt *agentRun) effectiveConfig() any {
	rt.mu.Lock()
	central := rt.central
	rt.mu.Unlock()
	if central.Config == nil {
		central.Config = json.RawMessage("null")
	}
	return map[string]any{
		"effective":   rt.config(),
		"local":       rt.cfg,
		"config_file": rt.cfgPath,
		"central":     central,
		"agent": map[string]any{
			"id":         rt.ident.AgentID,
			"name":       rt.ident.Name,
			"comms_urls": rt.ident.CommsURLs,
			"version":    rt.opts.Version,
			"data_dir":   rt.opts.DataDir,
		},
	}
}

func (rt *agentRun) status(state string) Status {
	var orders []OrderState
	if list, err := rt.db.Orders.List(); err == nil {
		for _, so := range list[:min(len(list), MaxStatusOrders)] {
			orders = append(orders, OrderState{ID: so.Order.ID, Action: so.Order.Action, State: string(so.Status),
				ReceivedAt: so.ReceivedAt, StartedAt: so.StartedAt, User: so.Order.User})
		}
	}
	ob := rt.db.Outbox.Stats()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return Status{
		Orders:            orders,
		AgentID:           rt.ident.AgentID,
		Name:              rt.ident.Name,
		Server:            rt.ident.Server,
		CommsURL:          rt.client.URL(),
		State:             state,
		Connected:         rt.connected,
		LastError:         rt.lastErr,
		LastPollAt:        rt.lastPollAt,
		QueuedEvents:      ob.Records,
		QueuedBytes:       ob.Bytes,
		OutboxMaxBytes:    ob.MaxBytes,
		DroppedEvents:     ob.Dropped,
		CompactedEvents:   ob.Compacted,
		UnreadableEvents:  ob.Unreadable,
		PendingOrders:     rt.db.Orders.Len(),
		PendingResults:    rt.db.Orders.PendingResults(),
		DeadLetterBatches: ob.DeadLetters,
		ConfigVersion:     rt.central.Version,
		ConfigError:       rt.configErr,
		StartedAt:         rt.startedAt,
		PID:               os.Getpid(),
		Version:           rt.opts.Version,
		UpdatedAt:         time.Now().UTC(),
	}
}

func (rt *agentRun) writeStatus(state string) {
	if err := WriteStatus(rt.opts.DataDir, rt.status(state)); err != nil {
		rt.log.Warn("write status", "err", err)
	}
}

// statusLoop rewrites status.json every 2 s and when something changed.
func (rt *agentRun) statusLoop(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-rt.kick:
		}
		rt.writeStatus("running")
	}
}
