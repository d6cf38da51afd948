package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/tetherhq/tether/client"
)

// CentralFile, in the data directory, holds the last centralized
// configuration applied, so that the agent starts with it even when the
// server cannot be reached.
const CentralFile = "central.json"

// config returns the effective configuration: the local file with the
// applied centralized configuration over it.
func (rt *agentRun) config() Config {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.eff
}

// loadCentral applies the centralized configuration saved by the previous
// run, if any. One that no longer validates (the local file changed) is
// ignored with a warning; the server's copy is fetched soon after.
func (rt *agentRun) loadCentral() {
	rt.eff = rt.cfg
	var saved centralConfig
	err := readJSONFile(filepath.Join(rt.opts.DataDir, CentralFile), &saved)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		rt.log.Warn("saved centralized configuration unreadable; waiting for the server's", "err", err)
		return
	}
	if err := rt.applyCentral(saved.Version, saved.Config, false); err != nil {
		rt.log.Warn("saved centralized configuration not applied", "version", saved.Version, "err", err)
	}
}

// applyCentral validates a centralized configuration over the local one
// and, when valid, makes it the effective configuration at once (no
// restart: the loops read it on their next turn, the log level changes
// immediately) and saves it when save is set. An invalid one changes
// nothing and is returned as the error.
func (rt *agentRun) applyCentral(version string, doc json.RawMessage, save bool) error {
	eff, err := ApplyCentral(rt.cfg, doc)
	rt.mu.Lock()
	if err != nil {
		rt.configErr = fmt.Sprintf("version %s not applied: %v", version, err)
		rt.mu.Unlock()
		notify(rt.kick)
		return err
	}
	rt.eff, rt.configErr = eff, ""
	rt.central = centralConfig{Version: version, Config: doc}
	rt.mu.Unlock()
	if rt.opts.LogLevel != nil {
		rt.opts.LogLevel.Set(eff.SlogLevel())
	}
	if rt.db != nil {
		rt.applyEventConfig(eff)
	}
	if rt.configApplied != nil {
		notify(rt.configApplied) // the modules reconfigure themselves
	}
	if save {
		if err := writeJSONFile(filepath.Join(rt.opts.DataDir, CentralFile), centralConfig{Version: version, Config: doc}, 0o600); err != nil {
			rt.log.Warn("save centralized configuration", "err", err)
		}
	}
	notify(rt.kick)
	return nil
}

// syncConfig fetches the centralized configuration and applies it when it
// changed. It returns the version in force on the server and whether it
// was new; a configuration that does not validate is returned as an error
// wrapped in errInvalidConfig, and the previous one stays.
func (rt *agentRun) syncConfig(ctx context.Context) (string, bool, error) {
	rt.mu.Lock()
	known := rt.central.Version
	rt.mu.Unlock()
	version, doc, unchanged, err := rt.client.GetConfig(ctx, known)
	rt.noteCall(ctx, err)
	if err != nil {
		return "", false, err
	}
	if unchanged {
		return version, false, nil
	}
	if err := rt.applyCentral(version, doc, true); err != nil {
		return version, false, &invalidConfigError{err}
	}
	rt.log.Info("centralized configuration applied", "version", version)
	return version, true, nil
}

// invalidConfigError is a centralized configuration that did not validate.
type invalidConfigError struct{ err error }

func (e *invalidConfigError) Error() string { return e.err.Error() }
func (e *invalidConfigError) Unwrap() error { return e.err }

// configLoop keeps the centralized configuration applied: at start, every
// few minutes, and as soon as a poll says the server has another version.
func (rt *agentRun) configLoop(ctx context.Context) error {
	const every = 5 * time.Minute
	var bo backoff
	rejected := ""
	for {
		version, _, err := rt.syncConfig(ctx)
		wait := every
		var invalid *invalidConfigError
		switch {
		case ctx.Err() != nil:
			return nil
		case denied(err):
			return ErrRemoved
		case errors.As(err, &invalid):
			bo.reset()
			if version != rejected { // say it once per version
				rejected = version
				rt.log.Error("centralized configuration rejected; keeping the previous one", "version", version, "err", err)
			}
		case err != nil:
			wait = min(bo.next(err), every)
			rt.log.Warn("get config failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		default:
			bo.reset()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rt.configNow:
		case <-time.After(wait):
		}
	}
}

// addConfigHandlers registers set-config, which applies the centralized
// configuration now and says what is in force, and set-group, which moves
// the agent to other groups on the server and applies their configuration.
func (rt *agentRun) addConfigHandlers(h map[string]Handler) {
	h["set-config"] = Handler{
		Run: func(ctx context.Context, _ client.Order) (Outcome, error) {
			version, changed, err := rt.syncConfig(ctx)
			if err != nil {
				return Outcome{}, err
			}
			msg := "configuration " + version + " already in force"
			if changed {
				msg = "configuration " + version + " applied"
			}
			return Outcome{Success: true, Message: msg, Data: map[string]any{"version": version, "changed": changed, "effective": rt.config()}}, nil
		},
		// Applying twice is harmless: an interrupted set-config runs again.
		Idempotent: true,
	}
	h["set-group"] = Handler{
		Run: func(ctx context.Context, o client.Order) (Outcome, error) {
			var args struct {
				Groups *[]string `json:"groups"`
			}
			if err := json.Unmarshal(o.Args, &args); err != nil || args.Groups == nil {
				return Outcome{}, errors.New(`set-group: want the argument {"groups": ["NAME", …]}`)
			}
			groups, version, err := rt.client.SetGroups(ctx, o.ID, *args.Groups)
			if err != nil {
				return Outcome{}, fmt.Errorf("set groups on the server: %w", err)
			}
			data := map[string]any{"groups": groups, "config_version": version}
			applied, _, err := rt.syncConfig(ctx)
			if err != nil {
				// The groups changed; their configuration did not apply.
				return Outcome{Data: data}, fmt.Errorf("groups set to %v; their configuration not applied: %w", groups, err)
			}
			data["config_version"] = applied
			data["effective"] = rt.config()
			return Outcome{Success: true, Message: fmt.Sprintf("groups set to %v, configuration %s in force", groups, applied), Data: data}, nil
		},
		// Setting the same groups again is harmless.
		Idempotent: true,
	}
}
