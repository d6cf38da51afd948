//go:build unix

package integration_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// arResult is the data of an active-response result.
type arResult struct {
	Command     string   `json:"command"`
	Path        string   `json:"path"`
	Args        []string `json:"args"`
	ExitCode    int      `json:"exit_code"`
	TimedOut    bool     `json:"timed_out"`
	Stdout      string   `json:"stdout"`
	Stderr      string   `json:"stderr"`
	StdoutBytes int      `json:"stdout_bytes"`
	Truncated   bool     `json:"truncated"`
}

// arSend sends active-response to the agent with tetherctl, waits for it
// and returns the order's status and result, and tetherctl's exit code.
func arSend(t *testing.T, s *server, agentID string, flags ...string) (status string, code int, message string, res arResult, exit int) {
	t.Helper()
	args := append([]string{"commands", "send", "--agent", agentID, "active-response", "--timeout", "30s", "--wait", "-o", "json"}, flags...)
	stdout, stderr, exit := s.ctl(t, args...)
	var cmd commandJSON
	if err := json.Unmarshal([]byte(stdout), &cmd); err != nil {
		t.Fatalf("tetherctl %v: exit %d, output is not JSON: %v\n%s\n%s", flags, exit, err, stdout, stderr)
	}
	if len(cmd.Orders) != 1 || cmd.Orders[0].Result == nil {
		t.Fatalf("tetherctl %v: %s", flags, stdout)
	}
	o := cmd.Orders[0]
	if len(o.Result.Data) > 0 && string(o.Result.Data) != "null" {
		if err := json.Unmarshal(o.Result.Data, &res); err != nil {
			t.Fatalf("result data: %v\n%s", err, o.Result.Data)
		}
	}
	return o.Status, o.Result.Code, o.Result.Message, res, exit
}

func writeExecutable(t *testing.T, path, script string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestActiveResponse sends active-response orders through tetherctl to a
// real agent: executables from DATA/active-response/bin and from a
// configured directory run with their arguments and report their output
// and exit code; what lies outside is refused; a command past its time
// limit is killed with the processes it started.
func TestActiveResponse(t *testing.T) {
	s := startServer(t)
	var tok struct {
		Token string `json:"token"`
	}
	s.ctlJSON(t, &tok, "enrollment-tokens", "create", "--uses", "1", "--ttl", "1h")
	root := t.TempDir()
	dataDir := filepath.Join(root, "agent")
	if _, stderr, code := run(t, nil, "tether-agent", "enroll", "--server", s.apiURL, "--token", tok.Token,
		"--ca-cert", s.caCert, "--data-dir", dataDir, "--name", "ar-1"); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, stderr)
	}
	var ident struct {
		AgentID string `json:"agent_id"`
	}
	b, _ := os.ReadFile(filepath.Join(dataDir, "identity.json"))
	if err := json.Unmarshal(b, &ident); err != nil || ident.AgentID == "" {
		t.Fatalf("identity.json: %v %s", err, b)
	}
	id := ident.AgentID

	binDir := filepath.Join(dataDir, "active-response", "bin")
	extraDir := filepath.Join(root, "extra-bin")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{binDir, extraDir, outside} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	writeExecutable(t, filepath.Join(binDir, "block-ip"), `echo "blocked $1"; echo "rule added" >&2`)
	writeExecutable(t, filepath.Join(binDir, "fail"), `echo "cannot do that" >&2; exit 4`)
	writeExecutable(t, filepath.Join(binDir, "hang"), "sleep 300 &\necho $! > \"$1\"\nwait\n")
	writeExecutable(t, filepath.Join(extraDir, "collect"), `echo "collected in $(pwd)"`)
	writeExecutable(t, filepath.Join(outside, "evil"), `echo escaped`)
	writeExecutable(t, filepath.Join(dataDir, "active-response", "x"), `echo escaped`)
	if err := os.Symlink(filepath.Join(outside, "evil"), filepath.Join(binDir, "escape")); err != nil {
		t.Fatal(err)
	}
	cfg := "active_response:\n  bin_dirs: [" + extraDir + "]\n"
	if err := os.WriteFile(filepath.Join(dataDir, "agent.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	start(t, "tether-agent", "run", "--data-dir", dataDir)
	await(t, 20*time.Second, "the agent to be active", func() bool {
		var a agentJSON
		s.ctlJSON(t, &a, "agents", "show", id)
		return a.Status == "active"
	})

	// Success: the output and the exit code come back; the arguments are
	// given as --arg and --args-json, as 'commands send --help' shows.
	status, code, msg, res, exit := arSend(t, s, id, "--arg", "command=block-ip", "--args-json", `{"args":["203.0.113.7"]}`)
	if exit != 0 || status != "success" || code != 0 || msg != "block-ip exited with code 0" ||
		res.Stdout != "blocked 203.0.113.7\n" || res.Stderr != "rule added\n" || res.Truncated || res.Path != filepath.Join(binDir, "block-ip") {
		t.Fatalf("block-ip: exit %d, %s %d %q, %+v", exit, status, code, msg, res)
	}
	// From the directory agent.yaml adds; it runs in that directory.
	status, _, _, res, exit = arSend(t, s, id, "--args-json", `{"command":"collect"}`)
	if exit != 0 || status != "success" || res.Stdout != "collected in "+extraDir+"\n" {
		t.Fatalf("collect: exit %d, %s, %+v", exit, status, res)
	}
	// A non-zero exit is a failure with that code; --wait exits 3.
	status, code, msg, res, exit = arSend(t, s, id, "--args-json", `{"command":"fail"}`)
	if exit != 3 || status != "failure" || code != 4 || msg != "fail exited with code 4" || res.Stderr != "cannot do that\n" {
		t.Fatalf("fail: exit %d, %s %d %q, %+v", exit, status, code, msg, res)
	}

	// Refused: not run, and the message says why.
	for command, want := range map[string]string{
		"../x":                         "leaves the allowlisted directory",
		"/bin/sh":                      "is outside the allowlisted directories",
		filepath.Join(outside, "evil"): "is outside the allowlisted directories",
		"escape":                       "outside the allowlisted directory",
		".":                            "is a directory",
		"missing":                      "not found in the allowlisted directories",
	} {
		b, _ := json.Marshal(map[string]any{"command": command, "args": []string{"-c", "echo escaped"}})
		status, code, msg, res, exit := arSend(t, s, id, "--args-json", string(b))
		if exit != 3 || status != "failure" || code != -1 || !strings.Contains(msg, want) || res.Stdout != "" {
			t.Errorf("%q: exit %d, %s %d %q; want a refusal containing %q", command, exit, status, code, msg, want)
		}
	}

	// Past its time limit the command is killed with its process group:
	// the grandchild it started is gone too.
	pidFile := filepath.Join(root, "grandchild.pid")
	b, _ = json.Marshal(map[string]any{"command": "hang", "args": []string{pidFile}, "timeout": "1s"})
	status, code, msg, res, exit = arSend(t, s, id, "--args-json", string(b))
	if exit != 3 || status != "failure" || code != 137 || !strings.HasPrefix(msg, "timed out after 1s") || !res.TimedOut {
		t.Fatalf("hang: exit %d, %s %d %q, %+v", exit, status, code, msg, res)
	}
	pb, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, "the grandchild to be gone", func() bool { return !processAlive(pid) })

	// The server checks the arguments' types before any order is created.
	_, stderr, exit := s.ctl(t, "commands", "send", "--agent", id, "active-response", "--args-json", `{"command":"block-ip","timeout":"soon"}`)
	if exit == 0 || !strings.Contains(stderr, "action.args.timeout") {
		t.Fatalf("bad timeout: exit %d, %s", exit, stderr)
	}
}

// processAlive reports whether pid is a process that has not ended (a
// zombie nobody reaped yet has ended).
func processAlive(pid int) bool {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
	}
	return syscall.Kill(pid, 0) == nil
}
