package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

// States of an upgrade in its record.
const (
	// UpgradeInstalling: the new binary is in place and its start check
	// runs; the old process still runs.
	UpgradeInstalling = "installing"
	// UpgradeProbation: the agent restarts into the new binary, which must
	// reach the server before the deadline.
	UpgradeProbation = "probation"
	// UpgradeConfirmed: the new binary reached the server.
	UpgradeConfirmed = "confirmed"
	// UpgradeRolledBack: the previous binary was put back (Reason says why).
	UpgradeRolledBack = "rolled-back"
)

// UpgradeRecord is DATA/upgrade/state.json: the last upgrade and how far it
// went. It outlives the process that writes it, so that whichever binary
// starts next knows what to do.
type UpgradeRecord struct {
	OrderID     string `json:"order_id"`
	State       string `json:"state"`
	FromVersion string `json:"from_version"`
	ToVersion   string `json:"to_version"`
	SHA256      string `json:"sha256"`
	File        string `json:"file"`
	// Executable is the path of the agent's binary; Previous, the binary
	// it replaced (Executable + PreviousSuffix).
	Executable string `json:"executable"`
	Previous   string `json:"previous"`
	// RollbackAfter is how long the new binary had to reach the server.
	RollbackAfter string    `json:"rollback_after"`
	StartedAt     time.Time `json:"started_at"`
	// Deadline is when a new binary still on probation is rolled back.
	Deadline time.Time `json:"deadline"`
	// Starts counts the starts of the new binary while on probation.
	Starts int `json:"starts"`
	// Reason says why the upgrade was rolled back.
	Reason string `json:"reason,omitempty"`
	// Restored is true once Previous was renamed over Executable.
	Restored   bool      `json:"restored,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// onProbation reports whether the upgrade still has to be confirmed.
func (r *UpgradeRecord) onProbation() bool {
	return r.State == UpgradeInstalling || r.State == UpgradeProbation
}

func upgradeRecordPath(dataDir string) string {
	return filepath.Join(dataDir, UpgradeDir, UpgradeRecordFile)
}

// ReadUpgradeRecord returns the record of the last upgrade; nil when there
// was none.
func ReadUpgradeRecord(dataDir string) (*UpgradeRecord, error) {
	var rec UpgradeRecord
	err := readJSONFile(upgradeRecordPath(dataDir), &rec)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read upgrade record: %w", err)
	}
	return &rec, nil
}

func writeUpgradeRecord(dataDir string, rec *UpgradeRecord) error {
	if err := os.MkdirAll(filepath.Join(dataDir, UpgradeDir), 0o700); err != nil {
		return fmt.Errorf("write upgrade record: %w", err)
	}
	if err := writeJSONFile(upgradeRecordPath(dataDir), rec, 0o600); err != nil {
		return fmt.Errorf("write upgrade record: %w", err)
	}
	return nil
}

// rollBack records the rollback and its reason, then puts the previous
// binary back (restorePrevious).
func (u *Upgrader) rollBack(rec *UpgradeRecord, reason string) error {
	rec.State, rec.Reason, rec.FinishedAt = UpgradeRolledBack, reason, time.Now().UTC()
	if err := writeUpgradeRecord(u.DataDir, rec); err != nil {
		return err
	}
	_, err := u.restorePrevious(rec)
	return err
}

// restorePrevious renames the previous binary over the executable unless
// that was done already. restored is false when there was nothing to put
// back (the previous binary is missing): the reason then says so.
func (u *Upgrader) restorePrevious(rec *UpgradeRecord) (restored bool, err error) {
	if rec.Restored {
		return false, nil
	}
	if _, err := os.Lstat(rec.Previous); errors.Is(err, fs.ErrNotExist) {
		rec.Reason += fmt.Sprintf(" (the previous binary %s is missing: nothing was put back)", rec.Previous)
	} else if err := os.Rename(rec.Previous, rec.Executable); err != nil {
		return false, fmt.Errorf("put the previous binary back: %w", err)
	} else {
		syncDir(filepath.Dir(rec.Executable))
		restored = true
		u.log().Warn("previous agent binary put back", "executable", rec.Executable, "version", rec.FromVersion, "reason", rec.Reason)
	}
	rec.Restored = true
	return restored, writeUpgradeRecord(u.DataDir, rec)
}

// rollBackAndRestart rolls back on behalf of the new binary, which runs:
// ErrRestart when the previous binary was put back (re-execute it), nil
// when the new one must go on (nothing to put back, or rolling back
// failed).
func (u *Upgrader) rollBackAndRestart(rec *UpgradeRecord, reason string) error {
	u.log().Error("rolling back the upgrade", "to_version", rec.ToVersion, "from_version", rec.FromVersion, "reason", reason)
	rec.State, rec.Reason, rec.FinishedAt = UpgradeRolledBack, reason, time.Now().UTC()
	if err := writeUpgradeRecord(u.DataDir, rec); err != nil {
		u.log().Error("cannot roll back: going on with the new version", "err", err)
		return nil
	}
	return u.finishRollback(rec)
}

// finishRollback completes a recorded rollback (the process that began it
// may have stopped before the rename) and returns ErrRestart when this
// process is the binary just replaced.
func (u *Upgrader) finishRollback(rec *UpgradeRecord) error {
	restored, err := u.restorePrevious(rec)
	if err != nil {
		u.log().Error("cannot roll back: going on with the current version", "err", err)
		return nil
	}
	if restored && u.Version == rec.ToVersion {
		return ErrRestart
	}
	return nil
}

// UpgradeStarting is called by `tether-agent run` before anything else.
// When this binary is a new version on probation, it counts the start and
// rolls back — returning ErrRestart: re-execute the binary, now the
// previous one — when it started more than MaxUpgradeStarts times or its
// deadline passed without reaching the server. It also completes a
// rollback an earlier process began. Otherwise it returns nil.
func UpgradeStarting(dataDir, version string, logger *slog.Logger) error {
	u := &Upgrader{DataDir: dataDir, Version: version, Logger: logger}
	rec, err := ReadUpgradeRecord(dataDir)
	if err != nil || rec == nil {
		if err != nil {
			u.log().Warn("upgrade record", "err", err)
		}
		return nil
	}
	switch {
	case rec.State == UpgradeRolledBack:
		return u.finishRollback(rec)
	case !rec.onProbation() || version != rec.ToVersion:
		return nil
	}
	rec.Starts++
	switch {
	case rec.Starts > MaxUpgradeStarts:
		return u.rollBackAndRestart(rec, fmt.Sprintf("version %s started %d times without reaching the server", rec.ToVersion, rec.Starts-1))
	case !time.Now().Before(rec.Deadline):
		return u.rollBackAndRestart(rec, fmt.Sprintf("version %s did not reach the server within %s", rec.ToVersion, rec.RollbackAfter))
	}
	if err := writeUpgradeRecord(dataDir, rec); err != nil {
		u.log().Warn("upgrade record", "err", err)
	}
	return nil
}

// UpgradeStopped is called by `tether-agent run` with what Run returned.
// When this binary is a new version on probation and Run failed, it rolls
// back and returns ErrRestart (re-execute: the previous binary). Otherwise
// it returns err.
func UpgradeStopped(dataDir, version string, err error, logger *slog.Logger) error {
	if err == nil || errors.Is(err, ErrRestart) || errors.Is(err, ErrRemoved) || errors.Is(err, store.ErrLocked) {
		return err
	}
	rec, rerr := ReadUpgradeRecord(dataDir)
	if rerr != nil || rec == nil || !rec.onProbation() || version != rec.ToVersion {
		return err
	}
	u := &Upgrader{DataDir: dataDir, Version: version, Logger: logger}
	if rb := u.rollBackAndRestart(rec, fmt.Sprintf("version %s stopped at start: %v", rec.ToVersion, err)); rb != nil {
		return rb
	}
	return err
}

// Settle is called by Run before it settles the orders found running.
// When this binary is the new version on probation, it waits until it has
// reached the server (a successful Authenticate; an answer that the agent
// was removed counts too): the upgrade is then confirmed. Past the
// deadline it rolls back and returns ErrRestart. When the upgrade record
// says a version other than this one should be on probation, the upgrade
// did not take: it is recorded as rolled back. Settle returns nil when ctx
// ends.
func (u *Upgrader) Settle(ctx context.Context) error {
	rec, err := ReadUpgradeRecord(u.DataDir)
	if err != nil {
		u.log().Warn("upgrade record", "err", err)
		return nil
	}
	switch {
	case rec == nil:
		return nil
	case rec.State == UpgradeRolledBack:
		return u.finishRollback(rec)
	case !rec.onProbation():
		return nil
	case u.Version != rec.ToVersion:
		reason := fmt.Sprintf("the agent started as version %s before version %s reached the server", u.Version, rec.ToVersion)
		if err := u.rollBack(rec, reason); err != nil {
			u.log().Error("record the rollback", "err", err)
		}
		return nil
	}
	log := u.log().With("to_version", rec.ToVersion, "from_version", rec.FromVersion)
	log.Info("new version on probation: reaching the server", "deadline", rec.Deadline)
	var bo backoff
	var last error
	for {
		actx, cancel := context.WithDeadline(ctx, rec.Deadline)
		_, err := u.Client.Authenticate(actx)
		cancel()
		if err == nil || denied(err) {
			rec.State, rec.FinishedAt = UpgradeConfirmed, time.Now().UTC()
			if err := writeUpgradeRecord(u.DataDir, rec); err != nil {
				log.Warn("record the confirmed upgrade", "err", err)
			}
			log.Info("upgrade confirmed: the new version reached the server")
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if last == nil || time.Now().Before(rec.Deadline) {
			last = err // not the deadline's own error, when there was another
		}
		left := time.Until(rec.Deadline)
		if left <= 0 {
			break
		}
		d := min(bo.next(err), left)
		log.Warn("new version cannot reach the server yet", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return nil
		}
	}
	return u.rollBackAndRestart(rec, fmt.Sprintf("version %s did not reach the server within %s (%v)", rec.ToVersion, rec.RollbackAfter, last))
}

// resume settles an upgrade order found running at start: Settle ran
// before and left the record confirmed or rolled back.
func (u *Upgrader) resume(o client.Order) Outcome {
	a, _ := parseUpgradeArgs(o.Args)
	rec, err := ReadUpgradeRecord(u.DataDir)
	if err != nil || rec == nil || rec.OrderID != o.ID {
		if a.Version != "" && a.Version == u.Version {
			return Outcome{Success: true, Message: fmt.Sprintf("version %s runs", u.Version), Data: upgradeData{Version: u.Version, PID: os.Getpid()}}
		}
		return u.fail("interrupted before the new binary was installed")
	}
	switch {
	case rec.State == UpgradeRolledBack:
		return u.rolledBack(rec)
	case u.Version == rec.ToVersion: // confirmed
		return Outcome{
			Success: true,
			Message: fmt.Sprintf("upgraded from %s to %s", rec.FromVersion, rec.ToVersion),
			Data: upgradeData{Version: u.Version, PID: os.Getpid(), FromVersion: rec.FromVersion, ToVersion: rec.ToVersion,
				Executable: rec.Executable, Previous: rec.Previous},
		}
	default:
		return u.fail("interrupted: version %s did not take over", rec.ToVersion)
	}
}

// UpgradeCheck is `tether-agent run --upgrade-check`, the start check an
// agent runs on a new binary before restarting into it: it loads the
// identity and the configuration like Run, authenticates with the server
// (retrying for up to 45 s), and writes {"version": V, "agent_id": ID} to w.
// It does not open agent.db, so it runs while the agent does.
func UpgradeCheck(ctx context.Context, opts RunOptions, w io.Writer) error {
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	ident, err := LoadIdentity(opts.DataDir)
	if err != nil {
		return err
	}
	cfgPath, mustExist := opts.ConfigFile, true
	if cfgPath == "" {
		cfgPath, mustExist = filepath.Join(opts.DataDir, ConfigFile), false
	}
	if _, err := LoadConfig(cfgPath, mustExist); err != nil {
		return err
	}
	c, err := commsClient(opts.DataDir, ident, opts.Version)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	var bo backoff
	for {
		_, err := c.Authenticate(ctx)
		if err == nil {
			break
		}
		var ce *client.Error
		if ctx.Err() != nil || !errors.As(err, &ce) || !ce.Retryable() {
			return fmt.Errorf("reach the server: %w", err)
		}
		if !sleep(ctx, bo.next(err)) {
			return fmt.Errorf("reach the server: %w", err)
		}
	}
	return json.NewEncoder(w).Encode(map[string]string{"version": opts.Version, "agent_id": ident.AgentID})
}

// commsClient returns a comms client for ident with the CA kept in
// dataDir, as Run builds it.
func commsClient(dataDir string, ident Identity, version string) (*client.Client, error) {
	var roots *x509.CertPool
	if pem, err := os.ReadFile(filepath.Join(dataDir, CAFile)); err == nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", filepath.Join(dataDir, CAFile))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	c, err := client.New(client.Config{
		URLs:      ident.CommsURLs,
		AgentID:   ident.AgentID,
		AgentKey:  ident.AgentKey,
		RootCAs:   roots,
		UserAgent: "tether-agent/" + version,
	})
	if err != nil {
		return nil, fmt.Errorf("comms client: %w", err)
	}
	return c, nil
}

// setUpUpgrades registers the upgrade action and settles an upgrade on
// probation (see Settle).
func (rt *agentRun) setUpUpgrades(ctx context.Context, handlers map[string]Handler) error {
	key, keyErr := rt.ident.ReleasePublicKey()
	u := &Upgrader{
		DataDir: rt.opts.DataDir, ConfigFile: rt.opts.ConfigFile, Version: rt.opts.Version,
		Client: rt.client, ReleaseKey: key, KeyErr: keyErr, Logger: rt.log,
	}
	handlers["upgrade"] = u.Handler()
	if rec, _ := ReadUpgradeRecord(rt.opts.DataDir); rec != nil && rec.onProbation() {
		rt.writeStatus("confirming upgrade")
	}
	return u.Settle(ctx)
}
