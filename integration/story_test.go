package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type agentJSON struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Status string   `json:"status"`
	Groups []string `json:"groups"`
}

type commandJSON struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Orders []struct {
		OrderID string `json:"order_id"`
		Status  string `json:"status"`
		Result  *struct {
			Code    int             `json:"code"`
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data"`
		} `json:"result"`
	} `json:"orders"`
}

// TestWholeStory walks what a new user does: create an enrollment token,
// enroll an agent, see it active, see its events, send it commands and read
// the results, restart it, delete it.
func TestWholeStory(t *testing.T) {
	s := startServer(t)

	// An enrollment token for one agent in group "web".
	var tok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	s.ctlJSON(t, &tok, "enrollment-tokens", "create", "--group", "web", "--uses", "1", "--ttl", "1h")
	if !strings.HasPrefix(tok.Token, "tth_") {
		t.Fatalf("enrollment token %q", tok.Token)
	}

	// Enroll.
	agentDir := filepath.Join(t.TempDir(), "agent")
	_, stderr, code := run(t, nil, "tether-agent", "enroll", "--server", s.apiURL, "--token", tok.Token,
		"--ca-cert", s.caCert, "--data-dir", agentDir, "--name", "web-1")
	if code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, stderr)
	}
	if st, err := os.Stat(filepath.Join(agentDir, "identity.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity.json: %v %v", st, err)
	}
	var ident struct {
		AgentID string `json:"agent_id"`
	}
	b, _ := os.ReadFile(filepath.Join(agentDir, "identity.json"))
	if err := json.Unmarshal(b, &ident); err != nil || ident.AgentID == "" {
		t.Fatalf("identity.json: %v %s", err, b)
	}
	id := ident.AgentID

	// The token was for one use: a second enrollment is refused, clearly.
	_, stderr, code = run(t, nil, "tether-agent", "enroll", "--server", s.apiURL, "--token", tok.Token,
		"--ca-cert", s.caCert, "--data-dir", filepath.Join(t.TempDir(), "second"))
	if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "used") {
		t.Fatalf("second use of a one-use token: exit %d, stderr %q", code, stderr)
	}

	// Run the agent; it becomes active.
	agent := start(t, "tether-agent", "run", "--data-dir", agentDir)
	pid := agent.cmd.Process.Pid
	await(t, 20*time.Second, "the agent to be active", func() bool {
		var a agentJSON
		s.ctlJSON(t, &a, "agents", "show", id)
		return a.Status == "active"
	})
	var list struct {
		Items []agentJSON `json:"items"`
	}
	s.ctlJSON(t, &list, "agents", "list", "--group", "web")
	if len(list.Items) != 1 || list.Items[0].ID != id || list.Items[0].Name != "web-1" {
		t.Fatalf("agents list --group web: %+v", list.Items)
	}

	// Its start-up events reach the file sink, with the agent's timestamps.
	await(t, 20*time.Second, "the agent's started event in the sink", func() bool {
		for _, e := range readEvents(t, s.dataDir) {
			if e["agent_id"] == id && e["module"] == "agent" && e["type"] == "started" {
				ts, err := time.Parse(time.RFC3339Nano, e["collected_at"].(string))
				if err != nil || time.Since(ts) > time.Minute || e["agent_name"] != "web-1" || e["received_at"] == nil {
					t.Fatalf("started event: %v", e)
				}
				return true
			}
		}
		return false
	})
	// And its inventory reached the state store.
	var state struct {
		Items []struct {
			Module string         `json:"module"`
			Key    string         `json:"key"`
			Doc    map[string]any `json:"doc"`
		} `json:"items"`
	}
	await(t, 20*time.Second, "inventory state", func() bool {
		s.ctlJSON(t, &state, "agents", "state", id, "inventory")
		return len(state.Items) > 0
	})
	if state.Items[0].Key != "host" || state.Items[0].Doc["hostname"] == nil {
		t.Fatalf("inventory state: %+v", state.Items)
	}

	// get-config: the result carries the effective configuration.
	var cmd commandJSON
	s.ctlJSON(t, &cmd, "commands", "send", "--agent", id, "get-config", "--wait", "--timeout", "30s")
	if cmd.Status != "success" || len(cmd.Orders) != 1 || cmd.Orders[0].OrderID == "" || cmd.Orders[0].Status != "success" {
		t.Fatalf("get-config: %+v", cmd)
	}
	var cfg map[string]any
	if err := json.Unmarshal(cmd.Orders[0].Result.Data, &cfg); err != nil || len(cfg) == 0 {
		t.Fatalf("get-config data: %v %s", err, cmd.Orders[0].Result.Data)
	}

	// A new configuration of its group reaches the agent at once: its
	// waiting poll is answered with the new version, and it fetches it
	// (without the hint it would wait for its next periodic fetch, minutes
	// away).
	await(t, 20*time.Second, "the agent's first configuration", func() bool {
		return agentStatus(t, agentDir)["config_version"] != nil
	})
	before := agentStatus(t, agentDir)["config_version"]
	cfgFile := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(cfgFile, []byte("batch_max_events: 500\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := s.ctl(t, "groups", "create", "web", "--config-file", cfgFile); code != 0 {
		t.Fatalf("groups create: exit %d %s", code, stderr)
	}
	await(t, 10*time.Second, "the new configuration version in the agent's status", func() bool {
		v := agentStatus(t, agentDir)["config_version"]
		return v != nil && v != before
	})

	// set-config applies it now and says what is in force, in the same
	// process; an invalid configuration is refused with the reason, and
	// the previous one stays.
	s.ctlJSON(t, &cmd, "commands", "send", "--agent", id, "set-config", "--wait", "--timeout", "30s")
	var applied struct {
		Version   string         `json:"version"`
		Effective map[string]any `json:"effective"`
	}
	if len(cmd.Orders) != 1 || cmd.Orders[0].Status != "success" || json.Unmarshal(cmd.Orders[0].Result.Data, &applied) != nil ||
		applied.Effective["batch_max_events"] != 500.0 || applied.Version != agentStatus(t, agentDir)["config_version"] {
		t.Fatalf("set-config: %+v", cmd)
	}
	if err := os.WriteFile(cfgFile, []byte("batch_max_events: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := s.ctl(t, "groups", "set-config", "web", "--config-file", cfgFile); code != 0 {
		t.Fatalf("groups set-config: exit %d %s", code, stderr)
	}
	stdout, _, code := s.ctl(t, "commands", "send", "--agent", id, "set-config", "--wait", "-o", "json")
	if code != 3 || !strings.Contains(stdout, "batch_max_events") {
		t.Fatalf("set-config of an invalid configuration: exit %d, %s", code, stdout)
	}
	if st := agentStatus(t, agentDir); st["config_version"] != applied.Version || !strings.Contains(fmt.Sprint(st["config_error"]), "batch_max_events") || st["pid"] != float64(pid) {
		t.Fatalf("status after an invalid configuration: %v", st)
	}

	// set-group moves the agent on the server and applies the
	// configuration of its new groups (none here: the invalid one of web
	// is no longer its).
	s.ctlJSON(t, &cmd, "commands", "send", "--agent", id, "set-group", "--args-json", `{"groups":["eu"]}`, "--wait", "--timeout", "30s")
	if len(cmd.Orders) != 1 || cmd.Orders[0].Status != "success" {
		t.Fatalf("set-group: %+v", cmd)
	}
	var moved agentJSON
	s.ctlJSON(t, &moved, "agents", "show", id)
	if len(moved.Groups) != 1 || moved.Groups[0] != "eu" {
		t.Fatalf("groups after set-group: %v", moved.Groups)
	}
	if st := agentStatus(t, agentDir); st["config_version"] == applied.Version || st["config_error"] != nil {
		t.Fatalf("status after set-group: %v", st)
	}

	// restart: the agent re-executes itself and reports success once back.
	startedBefore := agentStatus(t, agentDir)["started_at"]
	s.ctlJSON(t, &cmd, "commands", "send", "--agent", id, "restart", "--wait", "--timeout", "60s")
	if cmd.Orders[0].Status != "success" {
		t.Fatalf("restart: %+v", cmd)
	}
	if _, gone := agent.exited(0); gone {
		t.Fatal("the agent process ended instead of re-executing itself")
	}
	await(t, 10*time.Second, "a new started_at in the agent's status", func() bool {
		st := agentStatus(t, agentDir)
		return st["started_at"] != startedBefore && st["pid"] == float64(pid)
	})

	// An unknown action fails with a message naming it; --wait exits 3.
	stdout, _, code = s.ctl(t, "commands", "send", "--agent", id, "frobnicate", "--wait", "-o", "json")
	if code != 3 || !strings.Contains(stdout, `unknown action \"frobnicate\"`) {
		t.Fatalf("unknown action: exit %d, %s", code, stdout)
	}
	var cmds struct {
		Items []commandJSON `json:"items"`
	}
	s.ctlJSON(t, &cmds, "commands", "list", "--agent", id)
	if len(cmds.Items) != 6 {
		t.Fatalf("commands list: %d items, want 6", len(cmds.Items))
	}

	// tether-agent status tells a person what the agent does.
	st := agentStatus(t, agentDir)
	if st["agent_id"] != id || st["connected"] != true {
		t.Fatalf("status: %v", st)
	}

	// Deleting the agent stops it within seconds, with a clear message.
	if _, stderr, code := s.ctl(t, "agents", "delete", id); code != 0 {
		t.Fatalf("agents delete: exit %d %s", code, stderr)
	}
	code, ok := agent.exited(10 * time.Second)
	if !ok || code == 0 || !strings.Contains(agent.Output(), "removed") {
		t.Fatalf("after delete: exited=%v code=%d output:\n%s", ok, code, agent.Output())
	}
	if _, _, code := s.ctl(t, "agents", "show", id); code != 1 {
		t.Fatalf("agents show after delete: exit %d", code)
	}

	// The server stops cleanly on SIGTERM.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code, ok := s.exited(20 * time.Second); !ok || code != 0 {
		t.Fatalf("server after SIGTERM: exited=%v code=%d", ok, code)
	}
}

func agentStatus(t *testing.T, dir string) map[string]any {
	t.Helper()
	stdout, stderr, code := run(t, nil, "tether-agent", "status", "--data-dir", dir, "-o", "json")
	if code != 0 {
		t.Fatalf("tether-agent status: exit %d %s", code, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("status output: %v\n%s", err, stdout)
	}
	return m
}

// TestEnrollFailuresAreOneLine checks the errors a person meets most often
// when enrolling.
func TestEnrollFailuresAreOneLine(t *testing.T) {
	s := startServer(t)
	other := t.TempDir()
	// A CA that did not sign the server's certificate.
	wrongCA := filepath.Join(other, "ca.crt")
	_, _, code := run(t, nil, "tether-server", "version")
	if code != 0 {
		t.Fatal("tether-server version failed")
	}
	foreign := startServer(t)
	b, _ := os.ReadFile(foreign.caCert)
	_ = os.WriteFile(wrongCA, b, 0o644)

	cases := []struct {
		name, server, token, ca, want string
	}{
		{"bad token", s.apiURL, "tth_00000000000000000000000000000000_nope", s.caCert, "unknown token"},
		{"wrong CA", s.apiURL, "tth_00000000000000000000000000000000_nope", wrongCA, "CA"},
		{"unreachable", "https://127.0.0.1:1", "tth_00000000000000000000000000000000_nope", s.caCert, "127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := run(t, nil, "tether-agent", "enroll", "--server", c.server, "--token", c.token,
				"--ca-cert", c.ca, "--data-dir", filepath.Join(t.TempDir(), "a"))
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want one line containing %q", code, stderr, c.want)
			}
		})
	}
}
