//go:build unix

package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/client"
)

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func arOrder(t *testing.T, args map[string]any) client.Order {
	t.Helper()
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	o := newOrder("ar-"+strconv.FormatInt(time.Now().UnixNano(), 36), "active-response")
	o.RequestID, o.User, o.Args = "req-1", "alice", b
	return o
}

// runAR runs active-response over dirs with the order's window as the
// context's deadline, as the executor does.
func runAR(t *testing.T, dirs []string, args map[string]any) (agent.Outcome, agent.ActiveResponseResult, error) {
	t.Helper()
	o := arOrder(t, args)
	ctx, cancel := context.WithDeadline(context.Background(), o.TimeoutAt)
	defer cancel()
	out, err := agent.BuiltinHandlers(func() any { return nil }, dirs...)["active-response"].Run(ctx, o)
	res, _ := out.Data.(agent.ActiveResponseResult)
	return out, res, err
}

func TestActiveResponseRunsAnAllowlistedExecutable(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, filepath.Join(dir, "report"), `
echo "argc=$#"
for a in "$@"; do echo "arg=[$a]"; done
echo "cwd=$(pwd)"
env | sort
echo "to stderr" >&2
read line && echo "stdin had data"
exit 3
`)
	writeScript(t, filepath.Join(dir, "ok"), "echo fine\n")
	// Arguments reach the program as they are: no shell sees them.
	args := []string{"203.0.113.7", "a b", "$(touch pwned)", "x;y", "*", ""}
	out, res, err := runAR(t, []string{dir}, map[string]any{"command": "report", "args": args, "timeout": "20s"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Success || out.Code != 3 || out.Message != "report exited with code 3" {
		t.Fatalf("outcome %+v", out)
	}
	wantOut := "argc=6\n"
	for _, a := range args {
		wantOut += "arg=[" + a + "]\n"
	}
	wantOut += "cwd=" + dir + "\n"
	if !strings.HasPrefix(res.Stdout, wantOut) {
		t.Fatalf("stdout:\n%s\nwant it to start with:\n%s", res.Stdout, wantOut)
	}
	if strings.Contains(res.Stdout, "stdin had data") {
		t.Error("the command's stdin was not empty")
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("an argument was run by a shell")
	}
	var env []string
	for _, line := range strings.Split(strings.TrimPrefix(res.Stdout, wantOut), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && k != "PWD" && k != "SHLVL" && k != "_" { // set by sh itself
			env = append(env, line)
		}
	}
	wantEnv := []string{"LANG=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TETHER_DEADLINE=",
		"TETHER_ORDER_ID=ar-", "TETHER_REQUEST_ID=req-1", "TETHER_USER=alice"}
	if len(env) != len(wantEnv) {
		t.Fatalf("environment %q, want exactly the keys of %q", env, wantEnv)
	}
	for i, w := range wantEnv {
		if !strings.HasPrefix(env[i], w) {
			t.Errorf("environment %q, want %q", env[i], w)
		}
	}
	if res.Stderr != "to stderr\n" || res.StderrBytes != int64(len(res.Stderr)) || res.StdoutBytes != int64(len(res.Stdout)) || res.Truncated {
		t.Errorf("stderr %q (%d bytes), stdout %d bytes, truncated %v", res.Stderr, res.StderrBytes, res.StdoutBytes, res.Truncated)
	}
	if res.Command != "report" || res.Path != filepath.Join(dir, "report") || !slices.Equal(res.Args, args) || res.ExitCode != 3 || res.TimedOut {
		t.Errorf("result %+v", res)
	}

	out, res, err = runAR(t, []string{filepath.Join(t.TempDir(), "missing"), dir}, map[string]any{"command": "ok"})
	if err != nil || !out.Success || out.Code != 0 || res.Stdout != "fine\n" || !slices.Equal(res.Args, []string{}) {
		t.Fatalf("second directory: %+v %+v %v", out, res, err)
	}
}

func TestActiveResponseRefusesWhatIsNotAllowlisted(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "bin")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{dir, outside, filepath.Join(dir, "sub"), filepath.Join(dir, "tools")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeScript(t, filepath.Join(root, "x"), "echo escaped\n") // what ../x names
	writeScript(t, filepath.Join(outside, "evil"), "echo escaped\n")
	writeScript(t, filepath.Join(dir, "tools", "real"), "echo inside\n")
	os.Symlink(filepath.Join(outside, "evil"), filepath.Join(dir, "escape"))
	os.Symlink(outside, filepath.Join(dir, "outlink"))
	os.Symlink(filepath.Join(dir, "tools", "real"), filepath.Join(dir, "alias"))
	os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling"))
	os.WriteFile(filepath.Join(dir, "notexec"), []byte("#!/bin/sh\necho no\n"), 0o644)
	writeScript(t, filepath.Join(dir, "open"), "echo open\n")
	os.Chmod(filepath.Join(dir, "open"), 0o777)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o755); err != nil {
		t.Fatal(err)
	}

	refused := []struct {
		name, command, want string
	}{
		{"parent", "../x", `command "../x" leaves the allowlisted directory`},
		{"parent inside a path", "sub/../../x", `leaves the allowlisted directory`},
		{"absolute outside", filepath.Join(outside, "evil"), "is outside the allowlisted directories"},
		{"absolute shell", "/bin/sh", "is outside the allowlisted directories"},
		{"absolute escaping", filepath.Join(dir, "..", "x"), "is outside the allowlisted directories"},
		{"symlink escaping", "escape", "resolves to " + filepath.Join(outside, "evil") + ", outside the allowlisted directory"},
		{"through a linked directory", "outlink/evil", "outside the allowlisted directory"},
		{"dangling symlink", "dangling", "no such file or directory"},
		{"directory", "sub", "is a directory, not an executable file"},
		{"the directory itself", ".", "is a directory, not an executable file"},
		{"the directory itself, absolute", dir, "is a directory, not an executable file"},
		{"not executable", "notexec", "is not executable (mode 0644)"},
		{"writable by all", "open", "is writable by every user (mode 0777)"},
		{"fifo", "fifo", "is not a regular file"},
		{"missing", "nope", `command "nope" not found in the allowlisted directories (` + dir + ")"},
		{"empty", "", "command is required"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runAR(t, []string{dir}, map[string]any{"command": tt.command})
			if err == nil || !strings.Contains(err.Error(), tt.want) || out.Success || out.Code != -1 {
				t.Fatalf("%q: %+v, %v; want a refusal containing %q", tt.command, out, err, tt.want)
			}
		})
	}
	for name, args := range map[string]map[string]any{
		"unknown argument": {"command": "alias", "shell": true},
		"bad timeout":      {"command": "alias", "timeout": "soon"},
		"args not strings": {"command": "alias", "args": []int{1}},
	} {
		if _, _, err := runAR(t, []string{dir}, args); err == nil || !strings.HasPrefix(err.Error(), "arguments: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := runAR(t, nil, map[string]any{"command": "alias"}); err == nil || !strings.Contains(err.Error(), "no allowlisted directory") {
		t.Errorf("no directory: %v", err)
	}

	// Links and paths that stay inside are fine.
	for _, command := range []string{"alias", "tools/real", filepath.Join(dir, "tools", "real"), "./tools/../alias"} {
		out, res, err := runAR(t, []string{dir}, map[string]any{"command": command})
		if err != nil || !out.Success || res.Stdout != "inside\n" || res.Path != filepath.Join(dir, "tools", "real") {
			t.Errorf("%q: %+v %+v %v", command, out, res, err)
		}
	}
	// An allowlisted directory named through a link is resolved first.
	linked := filepath.Join(root, "linked")
	os.Symlink(dir, linked)
	if out, _, err := runAR(t, []string{linked}, map[string]any{"command": "alias"}); err != nil || !out.Success {
		t.Errorf("directory through a link: %+v %v", out, err)
	}
	if _, _, err := runAR(t, []string{linked}, map[string]any{"command": "escape"}); err == nil || !strings.Contains(err.Error(), "outside the allowlisted directory") {
		t.Errorf("escape from a linked directory: %v", err)
	}
	// A directory every user may write to is refused as a whole.
	open := filepath.Join(root, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o777)
	writeScript(t, filepath.Join(open, "tool"), "echo hi\n")
	if _, _, err := runAR(t, []string{open}, map[string]any{"command": "tool"}); err == nil || !strings.Contains(err.Error(), "writable by every user") {
		t.Errorf("world-writable directory: %v", err)
	}
}

// alive reports whether pid is a process that has not ended (a zombie
// waiting to be reaped has ended).
func alive(pid int) bool {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
	}
	return syscall.Kill(pid, 0) == nil
}

func TestActiveResponseKillsTheProcessGroupAtTheTimeLimit(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	pidFile := filepath.Join(state, "grandchild.pid")
	// The child starts a grandchild that would outlive it by far.
	writeScript(t, filepath.Join(dir, "hang"), `
sleep 300 &
echo $! > "$1"
echo started
wait
`)
	for _, tt := range []struct {
		name    string
		args    map[string]any
		window  time.Duration
		message string
	}{
		{"timeout argument", map[string]any{"command": "hang", "args": []string{pidFile}, "timeout": "700ms"}, time.Minute,
			"timed out after 700ms: hang and its process group killed"},
		{"order window", map[string]any{"command": "hang", "args": []string{pidFile}, "timeout": "1h"}, 800 * time.Millisecond,
			"(the order's time window ended): hang and its process group killed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(pidFile)
			o := arOrder(t, tt.args)
			ctx, cancel := context.WithTimeout(context.Background(), tt.window)
			defer cancel()
			start := time.Now()
			out, err := agent.ActiveResponseHandler([]string{dir}).Run(ctx, o)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			res := out.Data.(agent.ActiveResponseResult)
			if out.Success || !strings.Contains(out.Message, tt.message) || !strings.HasPrefix(out.Message, "timed out after ") ||
				!res.TimedOut || res.Signal != int(syscall.SIGKILL) || out.Code != 128+9 || res.Stdout != "started\n" {
				t.Fatalf("outcome %+v, result %+v", out, res)
			}
			if took > 30*time.Second {
				t.Fatalf("returned after %v", took)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for alive(pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("grandchild %d still running after the time limit", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestActiveResponseTruncatesLargeOutput(t *testing.T) {
	dir := t.TempDir()
	// 200000 bytes on stdout; on stderr, a multi-byte rune straddling the limit.
	writeScript(t, filepath.Join(dir, "chatty"), `
i=0
while [ $i -lt 2000 ]; do
  printf '%099d\n' $i
  i=$((i+1))
done
head -c 65535 /dev/zero | tr '\0' 'e' >&2
printf '\342\202\254tail' >&2
`)
	out, res, err := runAR(t, []string{dir}, map[string]any{"command": "chatty"})
	if err != nil {
		t.Fatal(err)
	}
	const limit = agent.ActiveResponseOutputLimit
	if !out.Success || !res.Truncated || res.StdoutBytes != 200000 || len(res.Stdout) != limit || res.StderrBytes != limit+6 {
		t.Fatalf("outcome %q; stdout %d of %d bytes, stderr %d of %d, truncated %v", out.Message, len(res.Stdout), res.StdoutBytes, len(res.Stderr), res.StderrBytes, res.Truncated)
	}
	if !strings.HasPrefix(res.Stdout, strings.Repeat("0", 99)+"\n"+strings.Repeat("0", 98)+"1\n") {
		t.Errorf("stdout does not start with the first lines: %.250q", res.Stdout)
	}
	if res.Stderr != strings.Repeat("e", limit-1) {
		t.Errorf("stderr: %d bytes ending %q; want the whole runes before the limit", len(res.Stderr), res.Stderr[len(res.Stderr)-5:])
	}
	if !strings.Contains(out.Message, "chatty exited with code 0 (output truncated to 64 KiB per stream)") {
		t.Errorf("message %q", out.Message)
	}
}

// TestActiveResponseThroughTheExecutor checks the registered action's
// stored result, and that one interrupted by a restart is not run again.
func TestActiveResponseThroughTheExecutor(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, filepath.Join(dir, "block-ip"), `echo "blocked $1"; exit 0`)
	path := filepath.Join(t.TempDir(), "agent.db")
	db := openStore(t, path)
	handlers := agent.BuiltinHandlers(func() any { return nil }, dir)
	ok := arOrder(t, map[string]any{"command": "block-ip", "args": []string{"203.0.113.7"}})
	bad := arOrder(t, map[string]any{"command": "../block-ip"})
	bad.ID = "bad"
	if _, err := db.Orders.Add([]client.Order{ok, bad}); err != nil {
		t.Fatal(err)
	}
	if err := agent.NewExecutor(db.Orders, handlers, nil).RunPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	results, err := db.Orders.Results(0)
	if err != nil || len(results) != 2 {
		t.Fatalf("results %+v, %v", results, err)
	}
	var data struct {
		Stdout    string `json:"stdout"`
		ExitCode  int    `json:"exit_code"`
		Truncated *bool  `json:"truncated"`
	}
	if err := json.Unmarshal(results[0].Data, &data); err != nil || !results[0].Success || results[0].Code != 0 ||
		data.Stdout != "blocked 203.0.113.7\n" || data.Truncated == nil || *data.Truncated {
		t.Fatalf("result %+v %s (%v)", results[0], results[0].Data, err)
	}
	if r := results[1]; r.Success || r.Code != -1 || !strings.Contains(r.Message, "leaves the allowlisted directory") {
		t.Fatalf("refused result %+v", r)
	}

	// An order left running by a crash is not run again.
	again := arOrder(t, map[string]any{"command": "block-ip"})
	if _, err := db.Orders.Add([]client.Order{again}); err != nil {
		t.Fatal(err)
	}
	list, _ := db.Orders.List()
	for _, so := range list {
		if so.Order.ID == again.ID {
			if err := db.Orders.MarkRunning(so.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	db.Close()
	db = openStore(t, path)
	defer db.Close()
	if err := agent.NewExecutor(db.Orders, handlers, nil).Recover(); err != nil {
		t.Fatal(err)
	}
	results, _ = db.Orders.Results(0)
	i := slices.IndexFunc(results, func(r client.Result) bool { return r.OrderID == again.ID })
	if i < 0 || results[i].Success || results[i].Message != "interrupted" {
		t.Fatalf("interrupted order: %+v", results)
	}
	if n := db.Orders.Len(); n != 0 {
		t.Fatalf("%d orders left", n)
	}
}
