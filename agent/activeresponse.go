package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/client"
)

// ActiveResponseBinDir, in the data directory, is the directory whose
// executables active-response may always run; active_response.bin_dirs in
// agent.yaml adds others.
var ActiveResponseBinDir = filepath.Join("active-response", "bin")

const (
	// ActiveResponseOutputLimit is how many bytes of each of stdout and
	// stderr an active-response result keeps; the rest is counted and
	// dropped.
	ActiveResponseOutputLimit = 64 << 10
	// activeResponseDefaultTimeout limits a command when neither its
	// arguments nor its order set a time limit.
	activeResponseDefaultTimeout = 5 * time.Minute
	// activeResponseWaitDelay is how long the agent waits, after the
	// command ended, for processes it left behind to close stdout and
	// stderr.
	activeResponseWaitDelay = time.Second
	// activeResponsePath is the PATH commands run with.
	activeResponsePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// ActiveResponseDirs returns the directories active-response runs
// executables from, in the order they are searched: DATA/active-response/bin,
// then active_response.bin_dirs of the local configuration.
func ActiveResponseDirs(dataDir string, cfg Config) []string {
	dir := filepath.Join(dataDir, ActiveResponseBinDir)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return append([]string{dir}, cfg.ActiveResponse.BinDirs...)
}

// ActiveResponseResult is the data of an active-response result.
type ActiveResponseResult struct {
	// Command is the command as the order named it; Path the file run
	// (symbolic links resolved), which is also the command's argv[0].
	Command string   `json:"command"`
	Path    string   `json:"path"`
	Args    []string `json:"args"`
	// ExitCode is the command's exit code, or 128+N when signal N ended it
	// (Signal is then N).
	ExitCode int  `json:"exit_code"`
	Signal   int  `json:"signal,omitempty"`
	TimedOut bool `json:"timed_out"`
	// DurationMS is the time from start to exit, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
	// Stdout and Stderr are the first ActiveResponseOutputLimit bytes of
	// each (invalid UTF-8 replaced by U+FFFD); StdoutBytes and
	// StderrBytes how many the command wrote; Truncated is set when either
	// was cut.
	Stdout      string `json:"stdout"`
	Stderr      string `json:"stderr"`
	StdoutBytes int64  `json:"stdout_bytes"`
	StderrBytes int64  `json:"stderr_bytes"`
	Truncated   bool   `json:"truncated"`
}

// ActiveResponseHandler returns the active-response action: it runs an
// executable found in one of dirs (see ActiveResponseDirs), without a shell,
// within a time limit. An order found running after a restart fails with
// "interrupted": running the command again could repeat its effect.
func ActiveResponseHandler(dirs []string) Handler {
	return Handler{Run: func(ctx context.Context, o client.Order) (Outcome, error) {
		return runActiveResponse(ctx, dirs, o)
	}}
}

type activeResponseArgs struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Timeout string   `json:"timeout"`
}

func runActiveResponse(ctx context.Context, dirs []string, o client.Order) (Outcome, error) {
	notRun := Outcome{Code: -1}
	var a activeResponseArgs
	if len(o.Args) > 0 && string(o.Args) != "null" {
		dec := json.NewDecoder(bytes.NewReader(o.Args))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			return notRun, fmt.Errorf("arguments: %v", err)
		}
	}
	var timeout time.Duration
	if a.Timeout != "" {
		d, err := time.ParseDuration(a.Timeout)
		if err != nil || d <= 0 {
			return notRun, fmt.Errorf("arguments: timeout %q: want a positive duration such as \"30s\"", a.Timeout)
		}
		timeout = d
	}
	path, dir, err := resolveActiveResponse(dirs, a.Command)
	if err != nil {
		return notRun, err
	}

	// The time limit: the timeout argument or the end of the order's
	// window, whichever comes first.
	limit, byWindow := timeout, false
	if dl, ok := ctx.Deadline(); ok && (timeout == 0 || time.Until(dl) < timeout) {
		limit, byWindow = time.Until(dl), true
	}
	if limit == 0 {
		limit = activeResponseDefaultTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	deadline, _ := runCtx.Deadline()
	if runCtx.Err() != nil {
		return notRun, errors.New("the order's time window ended before the command started")
	}

	res := ActiveResponseResult{Command: a.Command, Path: path, Args: a.Args}
	if res.Args == nil {
		res.Args = []string{}
	}
	stdout, stderr := &cappedBuffer{limit: ActiveResponseOutputLimit}, &cappedBuffer{limit: ActiveResponseOutputLimit}
	cmd := exec.CommandContext(runCtx, path)
	cmd.Args = append([]string{path}, a.Args...)
	cmd.Dir = dir
	cmd.Env = activeResponseEnv(o, deadline)
	cmd.Stdin = nil // the null device
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = activeResponseWaitDelay
	inProcessGroup(cmd) // Cancel kills the whole group

	started := time.Now()
	if err := cmd.Start(); err != nil {
		return notRun, fmt.Errorf("start %s: %v", path, err)
	}
	waitErr := cmd.Wait()
	res.DurationMS = time.Since(started).Milliseconds()
	ps := cmd.ProcessState
	if ps == nil { // Wait failed before the process ended
		return notRun, fmt.Errorf("wait for %s: %v", path, waitErr)
	}
	res.Stdout, res.StdoutBytes = stdout.text()
	res.Stderr, res.StderrBytes = stderr.text()
	res.Truncated = res.StdoutBytes > ActiveResponseOutputLimit || res.StderrBytes > ActiveResponseOutputLimit
	res.ExitCode = ps.ExitCode()
	if sig, ok := exitSignal(ps); ok {
		res.Signal, res.ExitCode = sig, 128+sig
	}
	stopped := runCtx.Err() != nil && !ps.Success()
	res.TimedOut = stopped && errors.Is(runCtx.Err(), context.DeadlineExceeded)

	out := Outcome{Success: ps.Success(), Code: res.ExitCode, Data: res}
	switch {
	case res.TimedOut && byWindow:
		out.Message = fmt.Sprintf("timed out after %v (the order's time window ended): %s and its process group killed", roundLimit(limit), a.Command)
	case res.TimedOut:
		out.Message = fmt.Sprintf("timed out after %v: %s and its process group killed", roundLimit(limit), a.Command)
	case stopped:
		out.Message = fmt.Sprintf("stopped (the agent is shutting down): %s and its process group killed", a.Command)
	case res.Signal != 0:
		out.Message = fmt.Sprintf("%s was killed by signal %d", a.Command, res.Signal)
	default:
		out.Message = fmt.Sprintf("%s exited with code %d", a.Command, res.ExitCode)
	}
	if res.Truncated {
		out.Message += fmt.Sprintf(" (output truncated to %d KiB per stream)", ActiveResponseOutputLimit>>10)
	}
	return out, nil
}

// resolveActiveResponse finds command in dirs and returns the file to run,
// symbolic links resolved, and the allowlisted directory it lies in. A
// relative command is looked up in each directory in turn (the first that
// holds it wins); an absolute one must name a file in one of them. Either
// way the file, once every link is followed, must lie inside that
// directory (itself resolved), be a regular file, executable, and not
// writable by every user.
func resolveActiveResponse(dirs []string, command string) (path, dir string, err error) {
	switch {
	case command == "":
		return "", "", errors.New("arguments: command is required")
	case strings.ContainsRune(command, 0):
		return "", "", fmt.Errorf("command %q: contains a NUL byte", command)
	case len(dirs) == 0:
		return "", "", errors.New("active-response: no allowlisted directory")
	}
	name := command
	if filepath.IsAbs(command) {
		name = ""
		for _, d := range dirs {
			rel, ok := within(d, filepath.Clean(command))
			if !ok { // perhaps named through the directory's real path
				if real, err := filepath.EvalSymlinks(d); err == nil {
					rel, ok = within(real, filepath.Clean(command))
				}
			}
			if ok {
				dirs, name = []string{d}, rel
				break
			}
		}
		if name == "" {
			return "", "", fmt.Errorf("command %q is outside the allowlisted directories (%s)", command, strings.Join(dirs, ", "))
		}
	} else if !filepath.IsLocal(command) {
		return "", "", fmt.Errorf("command %q leaves the allowlisted directory: give a name inside it, without \"..\"", command)
	}
	for _, d := range dirs {
		candidate := filepath.Join(d, name)
		if _, err := os.Lstat(candidate); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		realDir, err := filepath.EvalSymlinks(d)
		if err != nil {
			return "", "", fmt.Errorf("allowlisted directory %s: %v", d, err)
		}
		if st, err := os.Stat(realDir); err != nil {
			return "", "", fmt.Errorf("allowlisted directory %s: %v", d, err)
		} else if worldWritable(st.Mode()) {
			return "", "", fmt.Errorf("allowlisted directory %s is writable by every user (mode %04o): refused", d, st.Mode().Perm())
		}
		real, err := filepath.EvalSymlinks(candidate)
		if err != nil {
			return "", "", fmt.Errorf("command %q: %s: %v", command, candidate, unwrapPathError(err))
		}
		if _, ok := within(realDir, real); !ok {
			return "", "", fmt.Errorf("command %q resolves to %s, outside the allowlisted directory %s: refused", command, real, d)
		}
		st, err := os.Stat(real)
		switch {
		case err != nil:
			return "", "", fmt.Errorf("command %q: %v", command, err)
		case st.IsDir():
			return "", "", fmt.Errorf("command %q (%s) is a directory, not an executable file", command, real)
		case !st.Mode().IsRegular():
			return "", "", fmt.Errorf("command %q (%s) is not a regular file (%s)", command, real, st.Mode().Type())
		case !isExecutable(st.Mode()):
			return "", "", fmt.Errorf("command %q (%s) is not executable (mode %04o)", command, real, st.Mode().Perm())
		case worldWritable(st.Mode()):
			return "", "", fmt.Errorf("command %q (%s) is writable by every user (mode %04o): refused", command, real, st.Mode().Perm())
		}
		return real, d, nil
	}
	return "", "", fmt.Errorf("command %q not found in the allowlisted directories (%s)", command, strings.Join(dirs, ", "))
}

// within reports whether path lies inside dir, lexically, and returns it
// relative to dir.
func within(dir, path string) (string, bool) {
	rel, err := filepath.Rel(dir, path)
	if err != nil || !filepath.IsLocal(rel) {
		return "", false
	}
	return rel, true
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// activeResponseEnv is the whole environment of a command: nothing of the
// agent's own is passed on.
func activeResponseEnv(o client.Order, deadline time.Time) []string {
	env := append(baseEnv(),
		"TETHER_ORDER_ID="+o.ID,
		"TETHER_REQUEST_ID="+o.RequestID,
		"TETHER_USER="+o.User,
		"TETHER_DEADLINE="+deadline.UTC().Format(time.RFC3339),
	)
	return env
}

func roundLimit(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// cappedBuffer keeps the first limit bytes written to it and counts the
// rest; it never fails a write, so the command is not disturbed.
type cappedBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
	total int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += int64(len(p))
	if room := b.limit - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// text returns what was kept, valid UTF-8 and at most limit bytes, and
// how many bytes were written in all.
func (b *cappedBuffer) text() (string, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return truncate(string(b.buf), b.limit), b.total
}
