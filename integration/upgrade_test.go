package integration_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildAgent builds tether-agent stamped with version into dir.
func buildAgent(t *testing.T, dir, version string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(dir, "tether-agent-"+version)
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, "./cmd/tether-agent")
	cmd.Dir = filepath.Dir(filepath.Dir(file))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tether-agent %s: %v\n%s", version, err, b)
	}
	return out
}

// startExe runs the program at path in the background, like start.
func startExe(t *testing.T, path string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(path, args...))
}

// gate is a TCP relay in front of the comms listener that refuses new
// connections while closed() holds.
func gate(t *testing.T, target string, closed func() bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if closed() {
				c.Close()
				continue
			}
			wg.Go(func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, s)
			})
		}
	})
	return "https://" + ln.Addr().String()
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// setReleaseKey rewrites the release key pinned in the agent's identity.
func setReleaseKey(t *testing.T, dataDir, key string) string {
	t.Helper()
	path := filepath.Join(dataDir, "identity.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ident map[string]any
	if err := json.Unmarshal(b, &ident); err != nil {
		t.Fatal(err)
	}
	old, _ := ident["release_public_key"].(string)
	ident["release_public_key"] = key
	b, _ = json.Marshal(ident)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return old
}

// TestUpgrade upgrades a real agent with real builds: a file signed by
// another key than the pinned one is refused, a binary that cannot start
// and one that cannot reach the server are rolled back, and a good build
// takes over in the same process.
func TestUpgrade(t *testing.T) {
	builds := t.TempDir()
	v1, v2 := buildAgent(t, builds, "1.0.0"), buildAgent(t, builds, "2.0.0")
	broken := filepath.Join(builds, "tether-agent-broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'tether-agent: this build cannot start' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	s := startServer(t)
	agentDir := filepath.Join(t.TempDir(), "agent")
	var blockProbation atomic.Bool
	// The agent reaches the comms listener through a gate that refuses new
	// connections while an upgrade is on probation (the new binary runs).
	commsURL := gate(t, strings.TrimPrefix(s.commsURL, "https://"), func() bool {
		var rec struct{ State string }
		b, err := os.ReadFile(filepath.Join(agentDir, "upgrade", "state.json"))
		return err == nil && json.Unmarshal(b, &rec) == nil && rec.State == "probation" && blockProbation.Load()
	})

	// Install v1 in a directory of its own, as a package would.
	installDir := t.TempDir()
	exe := filepath.Join(installDir, "tether-agent")
	b, _ := os.ReadFile(v1)
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	s.ctlJSON(t, &tok, "enrollment-tokens", "create", "--uses", "1")
	if _, stderr, code := runExe(t, exe, "enroll", "--server", s.apiURL, "--token", tok.Token, "--ca-cert", s.caCert,
		"--data-dir", agentDir, "--name", "up-1", "--comms-url", commsURL); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, stderr)
	}
	var ident struct {
		AgentID string `json:"agent_id"`
	}
	b, _ = os.ReadFile(filepath.Join(agentDir, "identity.json"))
	json.Unmarshal(b, &ident)
	id := ident.AgentID

	// The agent pins another release key than the server's: the server's
	// signature does not verify, and the file is refused.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	realKey := setReleaseKey(t, agentDir, base64.StdEncoding.EncodeToString(other))
	agent := startExe(t, exe, "run", "--data-dir", agentDir)
	pid := agent.cmd.Process.Pid
	await(t, 20*time.Second, "the agent to be active", func() bool {
		var a agentJSON
		s.ctlJSON(t, &a, "agents", "show", id)
		return a.Status == "active"
	})
	cmd := upgrade(t, s, 3, "--agent", id, "--file", v2, "--version", "2.0.0")
	if r := cmd.Orders[0].Result; !strings.Contains(r.Message, "signature does not verify with the release key pinned at enrollment") ||
		!strings.HasSuffix(r.Message, "version 1.0.0 runs") {
		t.Fatalf("foreign signature: %+v", r)
	}
	if fileSum(t, exe) != fileSum(t, v1) || agentStatus(t, agentDir)["version"] != "1.0.0" {
		t.Fatal("a file with a foreign signature was installed")
	}
	if parts, _ := filepath.Glob(filepath.Join(agentDir, "upgrade", "*.part")); len(parts) != 0 {
		t.Fatalf("refused download kept: %v", parts)
	}

	// A signature that is not the server's is refused when the command is
	// created: it never reaches the agent.
	badSig := base64.StdEncoding.EncodeToString(make([]byte, 64))
	args, _ := json.Marshal(map[string]string{"version": "2.0.0", "sha256": fileSum(t, v2), "file": "tether-agent", "signature": badSig})
	if _, stderr, code := s.ctl(t, "commands", "send", "--agent", id, "upgrade", "--args-json", string(args)); code == 0 ||
		!strings.Contains(stderr, "signature") {
		t.Fatalf("bad signature: exit %d: %s", code, stderr)
	}

	// Pin the real key again.
	_ = agent.cmd.Process.Signal(syscall.SIGTERM)
	if code, ok := agent.exited(20 * time.Second); !ok || code != 0 {
		t.Fatalf("agent after SIGTERM: exited=%v code=%d", ok, code)
	}
	setReleaseKey(t, agentDir, realKey)
	agent = startExe(t, exe, "run", "--data-dir", agentDir)
	pid = agent.cmd.Process.Pid
	await(t, 20*time.Second, "the agent to run", func() bool { return runningStatus(t, agentDir)["pid"] == float64(pid) })

	// A binary that cannot start fails its start check: the old agent puts
	// itself back and goes on.
	cmd = upgrade(t, s, 3, "--agent", id, "--file", broken, "--version", "2.0.0")
	if r := cmd.Orders[0].Result; r.Message != "rolled back: the new binary failed its start check: exit status 1: tether-agent: this build cannot start; version 1.0.0 runs" {
		t.Fatalf("broken binary: %+v", r)
	}
	if fileSum(t, exe) != fileSum(t, v1) || agentStatus(t, agentDir)["pid"] != float64(pid) {
		t.Fatal("v1 does not run in the same process after the broken binary")
	}

	// v2 passes its start check, then, restarted into, cannot reach the
	// server (the gate is closed while on probation): past rollback_after
	// it puts v1 back and re-executes it, which reports the failure.
	blockProbation.Store(true)
	cmd = upgrade(t, s, 3, "--agent", id, "--file", v2, "--version", "2.0.0", "--rollback-after", "5s")
	r := cmd.Orders[0].Result
	if !strings.HasPrefix(r.Message, "rolled back: version 2.0.0 did not reach the server within 5s (") || !strings.HasSuffix(r.Message, "; version 1.0.0 runs") {
		t.Fatalf("unreachable new binary: %+v", r)
	}
	var data struct {
		Version    string `json:"version"`
		PID        int    `json:"pid"`
		RolledBack bool   `json:"rolled_back"`
	}
	json.Unmarshal(r.Data, &data)
	if data.Version != "1.0.0" || !data.RolledBack || data.PID != pid {
		t.Fatalf("result data %s", r.Data)
	}
	if fileSum(t, exe) != fileSum(t, v1) {
		t.Fatal("v1 was not put back")
	}
	if !strings.Contains(agent.Output(), `"msg":"rolling back the upgrade"`) {
		t.Fatal("the new binary did not log its rollback")
	}
	blockProbation.Store(false)

	// v2 for good: it reaches the server, the upgrade is confirmed, and
	// the same process (re-executed) runs v2.
	cmd = upgrade(t, s, 0, "--agent", id, "--file", v2, "--version", "2.0.0")
	r = cmd.Orders[0].Result
	json.Unmarshal(r.Data, &data)
	if cmd.Orders[0].Status != "success" || r.Message != "upgraded from 1.0.0 to 2.0.0" || data.Version != "2.0.0" || data.PID != pid {
		t.Fatalf("upgrade: %+v %s", r, r.Data)
	}
	if fileSum(t, exe) != fileSum(t, v2) || fileSum(t, exe+".previous") != fileSum(t, v1) {
		t.Fatal("v2 not installed, or v1 not kept as tether-agent.previous")
	}
	await(t, 10*time.Second, "status showing v2", func() bool {
		st := runningStatus(t, agentDir)
		return st["version"] == "2.0.0" && st["pid"] == float64(pid) && st["connected"] == true
	})
	if _, gone := agent.exited(0); gone {
		t.Fatal("the agent process ended")
	}
	// The server's agent record shows the version that runs.
	var shown struct {
		Version string `json:"version"`
	}
	s.ctlJSON(t, &shown, "agents", "show", id)
	if shown.Version != "2.0.0" {
		t.Fatalf("agents show: version %q after the upgrade, want 2.0.0", shown.Version)
	}
}

// upgrade runs tetherctl agents upgrade --wait -o json, expecting exit
// code want, and returns the command.
func upgrade(t *testing.T, s *server, want int, args ...string) commandJSON {
	t.Helper()
	stdout, stderr, code := s.ctl(t, append([]string{"agents", "upgrade", "--wait", "-o", "json"}, args...)...)
	if code != want {
		t.Fatalf("agents upgrade %v: exit %d, want %d: %s%s", args, code, want, stdout, stderr)
	}
	var cmd commandJSON
	if err := json.Unmarshal([]byte(stdout), &cmd); err != nil || len(cmd.Orders) != 1 || cmd.Orders[0].Result == nil {
		t.Fatalf("agents upgrade %v: %v\n%s", args, err, stdout)
	}
	return cmd
}

// runExe runs the program at path to completion.
func runExe(t *testing.T, path string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// runningStatus returns tether-agent status -o json, or nil while the
// agent is not running.
func runningStatus(t *testing.T, dir string) map[string]any {
	t.Helper()
	stdout, _, code := run(t, nil, "tether-agent", "status", "--data-dir", dir, "-o", "json")
	var m map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &m) != nil {
		return nil
	}
	return m
}
