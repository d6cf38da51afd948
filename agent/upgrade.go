package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/client"
)

// UpgradeDir is the directory of upgrades in the data directory: the
// download in progress (SHA256.part) and the record of the last upgrade
// (UpgradeRecordFile).
const UpgradeDir = "upgrade"

// UpgradeRecordFile is the record of the last upgrade, in UpgradeDir.
const UpgradeRecordFile = "state.json"

// PreviousSuffix is appended to the executable's name for the binary an
// upgrade replaced.
const PreviousSuffix = ".previous"

// DefaultRollbackAfter is how long a new binary has, by default, to reach
// the server before it is rolled back.
const DefaultRollbackAfter = 2 * time.Minute

// MaxUpgradeStarts is how many times a new binary may start without
// reaching the server before the next start rolls it back.
const MaxUpgradeStarts = 3

// upgradeCheckTimeout bounds the start check of a new binary.
const upgradeCheckTimeout = time.Minute

// Upgrader carries out upgrade orders for one agent. Run builds it from
// the agent's identity and options; tests build their own.
//
// An upgrade goes (the action "upgrade", arguments {version, sha256,
// file, signature, rollback_after}):
//
//  1. Download GET /api/v1/files/{sha256} into DATA/upgrade/SHA256.part,
//     resuming a partial file with Range.
//  2. Verify the SHA-256 of the whole file and the Ed25519 signature of its
//     digest with the release key pinned at enrollment; a file failing
//     either is deleted and the order fails.
//  3. Copy it next to the executable (same directory: the rename is
//     atomic), keep the running binary as EXECUTABLE.previous (a hard
//     link), write the upgrade record DATA/upgrade/state.json, rename the
//     new binary over the executable.
//  4. Start check: run the new binary as `run --upgrade-check`, which loads
//     the identity and configuration, authenticates with the server and
//     prints its version, without touching agent.db. A binary that does
//     not start, cannot reach the server or reports another version is
//     rolled back here, by the old process, which reports the failure.
//  5. Record state probation with the deadline (rollback_after, default
//     2m), return ErrRestart: the agent re-executes itself, now the new
//     binary.
//  6. The new binary, at start (UpgradeStarting, then Settle before the
//     orders): counts its starts, and waits until it has reached the
//     server (a successful Authenticate): then the record says confirmed
//     and the order succeeds. Past the deadline, after more than
//     MaxUpgradeStarts starts, or when it stops on an error at start
//     (UpgradeStopped), it puts EXECUTABLE.previous back and re-executes:
//     the previous version reports "rolled back: REASON; version V runs".
type Upgrader struct {
	// DataDir is the agent's data directory.
	DataDir string
	// ConfigFile is the configuration file given to run ("" for the
	// default), passed on to the new binary's start check.
	ConfigFile string
	// Executable is the binary to replace; empty: the running one
	// (os.Executable, symlinks resolved).
	Executable string
	// Version is the running agent's version.
	Version string
	// Client downloads files and, on probation, checks the server is
	// reachable.
	Client *client.Client
	// ReleaseKey is the release-signing key pinned at enrollment; nil:
	// every upgrade fails (with KeyErr's text when set).
	ReleaseKey ed25519.PublicKey
	KeyErr     error
	// Logger receives the upgrade's logs (default: discarded).
	Logger *slog.Logger
}

// Handler returns the handler of the action "upgrade".
func (u *Upgrader) Handler() Handler {
	return Handler{Run: u.run, Resume: u.resume}
}

func (u *Upgrader) log() *slog.Logger {
	if u.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.Logger
}

// upgradeArgs are the arguments of an upgrade order.
type upgradeArgs struct {
	Version       string `json:"version"`
	SHA256        string `json:"sha256"`
	File          string `json:"file"`
	Signature     string `json:"signature"`
	RollbackAfter string `json:"rollback_after"`

	sig           []byte
	rollbackAfter time.Duration
}

func parseUpgradeArgs(raw json.RawMessage) (upgradeArgs, error) {
	var a upgradeArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("arguments: %v", err)
	}
	if a.Version == "" {
		return a, errors.New("arguments: version is required")
	}
	if !isHexSHA256(a.SHA256) {
		return a, fmt.Errorf("arguments: sha256 %q: want 64 lowercase hex digits", a.SHA256)
	}
	sig, err := base64.StdEncoding.DecodeString(a.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return a, fmt.Errorf("arguments: signature: want the standard base64 of %d bytes", ed25519.SignatureSize)
	}
	a.sig = sig
	a.rollbackAfter = DefaultRollbackAfter
	if a.RollbackAfter != "" {
		d, err := time.ParseDuration(a.RollbackAfter)
		if err != nil || d < time.Second || d > 24*time.Hour {
			return a, fmt.Errorf("arguments: rollback_after %q: want a duration from 1s to 24h", a.RollbackAfter)
		}
		a.rollbackAfter = d
	}
	return a, nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// upgradeData is the data of an upgrade order's result.
type upgradeData struct {
	// Version is the version that runs now.
	Version     string `json:"version"`
	PID         int    `json:"pid"`
	FromVersion string `json:"from_version,omitempty"`
	ToVersion   string `json:"to_version,omitempty"`
	RolledBack  bool   `json:"rolled_back,omitempty"`
	Executable  string `json:"executable,omitempty"`
	Previous    string `json:"previous,omitempty"`
}

// fail is a failure that leaves the running version in place.
func (u *Upgrader) fail(format string, args ...any) Outcome {
	msg := fmt.Sprintf(format, args...)
	return Outcome{Message: fmt.Sprintf("%s; version %s runs", msg, u.Version), Data: upgradeData{Version: u.Version, PID: os.Getpid()}}
}

func (u *Upgrader) run(ctx context.Context, o client.Order) (Outcome, error) {
	a, err := parseUpgradeArgs(o.Args)
	if err != nil {
		return u.fail("%v", err), nil
	}
	log := u.log().With("order_id", o.ID, "to_version", a.Version, "sha256", a.SHA256)
	if a.Version == u.Version {
		return Outcome{Success: true, Message: fmt.Sprintf("version %s already runs: nothing to do", u.Version),
			Data: upgradeData{Version: u.Version, PID: os.Getpid()}}, nil
	}
	if u.ReleaseKey == nil {
		err := u.KeyErr
		if err == nil {
			err = errors.New("no release key pinned at enrollment")
		}
		return u.fail("refused: %v", err), nil
	}
	exe, err := u.executable()
	if err != nil {
		return u.fail("%v", err), nil
	}
	if err := checkWritable(filepath.Dir(exe)); err != nil {
		return u.fail("cannot install next to the executable %s: %v", exe, err), nil
	}
	log.Info("downloading the new agent binary", "file", a.File)
	part, err := u.fetch(ctx, a, log)
	if err != nil {
		log.Warn("upgrade failed", "err", err)
		return u.fail("%v", err), nil
	}
	log.Info("new agent binary downloaded and verified", "path", part)
	return u.install(ctx, o, a, part, exe, log)
}

// executable returns the file to replace.
func (u *Upgrader) executable() (string, error) {
	exe := u.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return "", fmt.Errorf("find the running executable: %w", err)
		}
	}
	resolved, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return "", fmt.Errorf("find the running executable: %w", err)
	}
	return filepath.Abs(resolved)
}

// checkWritable checks that files can be created in dir.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".tether-agent-upgrade-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// fetch downloads the file into DATA/upgrade/SHA256.part, resuming what an
// earlier attempt left there, and verifies it; a file that fails the
// checks is deleted. It returns the file's path.
func (u *Upgrader) fetch(ctx context.Context, a upgradeArgs, log *slog.Logger) (string, error) {
	dir := filepath.Join(u.DataDir, UpgradeDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	part := filepath.Join(dir, a.SHA256+".part")
	if old, _ := filepath.Glob(filepath.Join(dir, "*.part")); len(old) > 0 {
		for _, p := range old {
			if p != part {
				os.Remove(p) // another file's download, abandoned
			}
		}
	}
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", part, err)
	}
	defer f.Close()
	var bo backoff
	startedOver := false
	for first := true; ; first = false {
		st, err := f.Stat()
		if err != nil {
			return "", err
		}
		if first && st.Size() > 0 {
			log.Info("resuming an interrupted download", "offset", st.Size())
		}
		_, err = u.Client.Download(ctx, a.SHA256, f, st.Size())
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			var got int64
			if st, err := f.Stat(); err == nil {
				got = st.Size()
			}
			return "", fmt.Errorf("download %s: %v (the %d bytes received are kept: another upgrade order resumes from there)", a.SHA256, ctx.Err(), got)
		}
		var ce *client.Error
		switch {
		case errors.As(err, &ce) && ce.Code == connect.CodeOutOfRange && !startedOver:
			startedOver = true
			log.Warn("the partial download is longer than the file: starting over", "err", err)
			if err := f.Truncate(0); err != nil {
				return "", err
			}
		case errors.As(err, &ce) && ce.Retryable():
			d := bo.next(err)
			log.Warn("download failed, retrying", "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return "", fmt.Errorf("download %s: %v", a.SHA256, ctx.Err())
			}
		default:
			return "", fmt.Errorf("download %s: %w", a.SHA256, err)
		}
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := verifyRelease(part, a.SHA256, a.sig, u.ReleaseKey); err != nil {
		os.Remove(part)
		return "", err
	}
	return part, nil
}

// verifyRelease checks the file at path: its SHA-256 must be want and sig
// the release key's Ed25519 signature of the 32 bytes of that digest.
func verifyRelease(path, want string, sig []byte, key ed25519.PublicKey) error {
	digest, err := fileSHA256(path)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(digest); got != want {
		return fmt.Errorf("refused: the file downloaded has SHA-256 %s, not %s (deleted it)", got, want)
	}
	if !ed25519.Verify(key, digest, sig) {
		return errors.New("refused: the signature does not verify with the release key pinned at enrollment (deleted the file)")
	}
	return nil
}

func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Sum(nil), nil
}

// install swaps the verified file in place of exe, keeping the running
// binary, runs the new binary's start check, and returns ErrRestart to
// restart into it, or a failure once it rolled back.
func (u *Upgrader) install(ctx context.Context, o client.Order, a upgradeArgs, part, exe string, log *slog.Logger) (Outcome, error) {
	dir, base := filepath.Split(exe)
	st, err := os.Stat(exe)
	if err != nil {
		return u.fail("install: %v", err), nil
	}
	staged := filepath.Join(dir, "."+base+".new")
	if err := copyFile(part, staged, st.Mode().Perm()|0o100); err != nil {
		os.Remove(staged)
		return u.fail("install: copy the new binary next to %s: %v", exe, err), nil
	}
	if err := verifyRelease(staged, a.SHA256, a.sig, u.ReleaseKey); err != nil {
		os.Remove(staged)
		return u.fail("install: the copy next to %s: %v", exe, err), nil
	}
	prev := exe + PreviousSuffix
	if err := keepPrevious(exe, prev); err != nil {
		os.Remove(staged)
		return u.fail("install: keep the running binary as %s: %v", prev, err), nil
	}
	now := time.Now().UTC()
	rec := &UpgradeRecord{
		OrderID: o.ID, State: UpgradeInstalling,
		FromVersion: u.Version, ToVersion: a.Version, SHA256: a.SHA256, File: a.File,
		Executable: exe, Previous: prev, RollbackAfter: a.rollbackAfter.String(),
		StartedAt: now, Deadline: now.Add(upgradeCheckTimeout + a.rollbackAfter),
	}
	if err := writeUpgradeRecord(u.DataDir, rec); err != nil {
		os.Remove(staged)
		return u.fail("install: %v", err), nil
	}
	if err := os.Rename(staged, exe); err != nil {
		os.Remove(staged)
		reason := fmt.Sprintf("install: %v", err)
		_ = u.rollBack(rec, reason)
		return u.fail("%s", reason), nil
	}
	syncDir(dir)
	os.Remove(part)
	log.Info("new agent binary installed; checking that it starts", "executable", exe, "previous", prev)

	version, err := u.checkNew(ctx, exe)
	if err == nil && version != a.Version {
		err = fmt.Errorf("it says it is version %q, not %q", version, a.Version)
	}
	if err != nil {
		reason := "the new binary failed its start check: " + err.Error()
		log.Error("rolling back the upgrade", "reason", reason)
		if rerr := u.rollBack(rec, reason); rerr != nil {
			return u.fail("%s; rolling back failed: %v", reason, rerr), nil
		}
		return u.rolledBack(rec), nil
	}
	rec.State = UpgradeProbation
	rec.Deadline = time.Now().UTC().Add(a.rollbackAfter)
	if err := writeUpgradeRecord(u.DataDir, rec); err != nil {
		reason := fmt.Sprintf("install: %v", err)
		_ = u.rollBack(rec, reason)
		return u.rolledBack(rec), nil
	}
	log.Info("restarting into the new version", "deadline", rec.Deadline)
	return Outcome{}, ErrRestart
}

// rolledBack is the outcome of an upgrade that was rolled back.
func (u *Upgrader) rolledBack(rec *UpgradeRecord) Outcome {
	return Outcome{
		Message: fmt.Sprintf("rolled back: %s; version %s runs", rec.Reason, u.Version),
		Data: upgradeData{Version: u.Version, PID: os.Getpid(), FromVersion: rec.FromVersion, ToVersion: rec.ToVersion,
			RolledBack: true, Executable: rec.Executable},
	}
}

// checkNew runs the start check of the binary at exe (`run
// --upgrade-check`) and returns the version it reports.
func (u *Upgrader) checkNew(ctx context.Context, exe string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, upgradeCheckTimeout)
	defer cancel()
	args := []string{"run", "--data-dir", u.DataDir}
	if u.ConfigFile != "" {
		args = append(args, "--config", u.ConfigFile)
	}
	args = append(args, "--upgrade-check")
	cmd := exec.CommandContext(ctx, exe, args...)
	stdout, stderr := &tailBuffer{max: 64 << 10}, &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("it did not finish within %s", upgradeCheckTimeout)
	}
	if err != nil {
		if last := lastLine(stderr.Bytes()); last != "" {
			return "", fmt.Errorf("%v: %s", err, truncate(last, 512))
		}
		return "", err
	}
	var out struct {
		Version string `json:"version"`
	}
	last := lastLine(stdout.Bytes())
	if json.Unmarshal([]byte(last), &out) != nil || out.Version == "" {
		return "", fmt.Errorf("unexpected output %q", truncate(last, 512))
	}
	return out.Version, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) Bytes() []byte { return b.buf }

func lastLine(b []byte) string {
	b = bytes.TrimRight(b, "\r\n\t ")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return string(b)
}

// copyFile copies src to dst (created or truncated, mode perm), fsynced.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(perm); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// keepPrevious makes prev a copy of exe (a hard link when the file system
// allows it), replacing any earlier one.
func keepPrevious(exe, prev string) error {
	if err := os.Remove(prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Link(exe, prev); err == nil {
		syncDir(filepath.Dir(prev))
		return nil
	}
	st, err := os.Stat(exe)
	if err != nil {
		return err
	}
	tmp := prev + ".tmp"
	if err := copyFile(exe, tmp, st.Mode().Perm()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, prev); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(prev))
	return nil
}

// syncDir fsyncs a directory, so that renames in it are durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
