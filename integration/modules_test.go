package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// buildTicker builds the example plugin into dir/ticker-plugin.
func buildTicker(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "ticker-plugin"), "./examples/ticker-plugin")
	cmd.Dir = filepath.Dir(filepath.Dir(file))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the example plugin: %v\n%s", err, out)
	}
}

// moduleEvents returns the payloads of a module's events in the sink.
func moduleEvents(t *testing.T, dataDir, module string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	for _, e := range sinkEvents(t, dataDir) {
		if e.Module == module {
			out = append(out, e.Payload)
		}
	}
	return out
}

func logLines(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	for _, p := range moduleEvents(t, dataDir, "logcollector") {
		var l struct {
			Line string `json:"line"`
		}
		_ = json.Unmarshal(p, &l)
		out = append(out, l.Line)
	}
	return out
}

// TestModulesReconfiguredFromServer: a group's configuration turns the log
// collector and a plugin on in a running agent, then changes the files and
// removes the plugin, without restarting the agent; the inventory and
// health documents reach the state store.
func TestModulesReconfiguredFromServer(t *testing.T) {
	s := startServer(t)
	var tok struct {
		Token string `json:"token"`
	}
	s.ctlJSON(t, &tok, "enrollment-tokens", "create", "--group", "linux", "--uses", "1", "--ttl", "1h")
	dir := filepath.Join(t.TempDir(), "agent")
	if _, stderr, code := run(t, nil, "tether-agent", "enroll", "--server", s.apiURL, "--token", tok.Token,
		"--ca-cert", s.caCert, "--data-dir", dir, "--name", "mod-1"); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, stderr)
	}
	var ident struct {
		AgentID string `json:"agent_id"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err := json.Unmarshal(b, &ident); err != nil {
		t.Fatal(err)
	}
	buildTicker(t, filepath.Join(dir, "plugins"))
	logs := t.TempDir()
	a, bLog := filepath.Join(logs, "a.log"), filepath.Join(logs, "b.log")
	appendText(t, a, "a before\n")
	agent := start(t, "tether-agent", "run", "--data-dir", dir)
	pid := agent.cmd.Process.Pid

	// The inventory and health documents reach the state store.
	for _, c := range []struct{ module, key, field string }{{"inventory", "host", "hostname"}, {"health", "agent", "rss_bytes"}} {
		await(t, 30*time.Second, c.module+" state", func() bool {
			var state struct {
				Items []struct {
					Key string         `json:"key"`
					Doc map[string]any `json:"doc"`
				} `json:"items"`
			}
			s.ctlJSON(t, &state, "agents", "state", ident.AgentID, c.module)
			return slices.ContainsFunc(state.Items, func(it struct {
				Key string         `json:"key"`
				Doc map[string]any `json:"doc"`
			}) bool {
				return it.Key == c.key && it.Doc[c.field] != nil
			})
		})
	}

	// The group's configuration: follow a.log, run the ticker.
	cfgFile := filepath.Join(t.TempDir(), "linux.yaml")
	writeGroupConfig(t, cfgFile, fmt.Sprintf("logcollector:\n  files: [{path: %q, start_at: beginning}]\n"+
		"plugins:\n  - {name: ticker, command: ticker-plugin, config: {interval: 100ms}}\n", a))
	if _, stderr, code := s.ctl(t, "groups", "create", "linux", "--config-file", cfgFile); code != 0 {
		t.Fatalf("groups create: exit %d %s", code, stderr)
	}
	appendText(t, a, "a after\n")
	await(t, 30*time.Second, "a.log's lines and ticks", func() bool {
		return slices.Equal(logLines(t, s.dataDir), []string{"a before", "a after"}) && len(moduleEvents(t, s.dataDir, "ticker")) >= 3
	})
	var tick struct {
		PID int `json:"pid"`
	}
	_ = json.Unmarshal(moduleEvents(t, s.dataDir, "ticker")[0], &tick)
	if !processAlive(tick.PID) {
		t.Fatalf("the plugin's process %d is not running", tick.PID)
	}

	// Another configuration: b.log instead of a.log, no plugin.
	writeGroupConfig(t, cfgFile, fmt.Sprintf("logcollector:\n  files: [{path: %q, start_at: beginning}]\n", bLog))
	if _, stderr, code := s.ctl(t, "groups", "set-config", "linux", "--config-file", cfgFile); code != 0 {
		t.Fatalf("groups set-config: exit %d %s", code, stderr)
	}
	await(t, 30*time.Second, "the plugin to stop", func() bool { return !processAlive(tick.PID) })
	appendText(t, bLog, "b 1\n")
	await(t, 30*time.Second, "b.log's line", func() bool { return slices.Contains(logLines(t, s.dataDir), "b 1") })
	// a.log is no longer followed; the ticks stopped. (Events leave the
	// outbox in order: what was queued before a line of b.log is in the
	// sink once that line is.)
	appendText(t, a, "a ignored\n")
	appendText(t, bLog, "b 2\n")
	await(t, 30*time.Second, "b.log's second line", func() bool { return slices.Contains(logLines(t, s.dataDir), "b 2") })
	ticks := len(moduleEvents(t, s.dataDir, "ticker"))
	appendText(t, bLog, "b 3\n")
	await(t, 30*time.Second, "b.log's third line", func() bool { return slices.Contains(logLines(t, s.dataDir), "b 3") })
	if got := logLines(t, s.dataDir); !slices.Equal(got, []string{"a before", "a after", "b 1", "b 2", "b 3"}) {
		t.Fatalf("lines %q", got)
	}
	if n := len(moduleEvents(t, s.dataDir, "ticker")); n != ticks {
		t.Fatalf("%d ticks after the plugin was removed", n-ticks)
	}
	if agent.cmd.Process.Pid != pid || agentStatus(t, dir)["pid"] != float64(pid) {
		t.Fatal("the agent restarted")
	}
}

func appendText(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func writeGroupConfig(t *testing.T, path, yaml string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPluginDiesWithTheAgent: an agent killed with SIGKILL cannot stop its
// plugins; the kernel kills them, so the next agent does not find a second
// copy running.
func TestPluginDiesWithTheAgent(t *testing.T) {
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	buildTicker(t, filepath.Join(a.dir, "plugins"))
	writeAgentConfig(t, a.dir, "plugins: [{name: ticker, command: ticker-plugin, config: {interval: 100ms}}]\n")
	p := a.start(t, "")
	await(t, 20*time.Second, "ticks", func() bool { return len(moduleEvents(t, s.dataDir, "ticker")) > 0 })
	var tick struct {
		PID int `json:"pid"`
	}
	_ = json.Unmarshal(moduleEvents(t, s.dataDir, "ticker")[0], &tick)
	_ = p.cmd.Process.Kill() // SIGKILL
	<-p.done
	await(t, 5*time.Second, "the plugin to die with the agent", func() bool { return !processAlive(tick.PID) })
}
