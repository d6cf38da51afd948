package modules_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/modules"
)

var (
	buildOnce   sync.Once
	tickerPath  string
	tickerBuild error
	buildDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// installTicker builds the example plugin (once per test run) and copies
// it into DATA/plugins.
func installTicker(t *testing.T, dataDir string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, tickerBuild = os.MkdirTemp("", "ticker-plugin-")
		if tickerBuild != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		tickerPath = filepath.Join(buildDir, "ticker-plugin")
		cmd := exec.Command("go", "build", "-o", tickerPath, "./examples/ticker-plugin")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			tickerBuild = fmt.Errorf("build the example plugin: %v\n%s", err, out)
		}
	})
	if tickerBuild != nil {
		t.Fatal(tickerBuild)
	}
	b, err := os.ReadFile(tickerPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(dataDir, modules.PluginsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ticker-plugin"), b, 0o755); err != nil {
		t.Fatal(err)
	}
}

type tickEvent struct {
	Run, N, PID int
	At          time.Time
}

func ticks(t *testing.T, s *sink, module string) []tickEvent {
	t.Helper()
	var out []tickEvent
	for _, r := range s.drain(t) {
		if r.Event.Module != module {
			continue
		}
		if r.Event.Type != "tick" || r.Stateful || r.Event.Protobuf || r.Event.ID == "" {
			t.Fatalf("unexpected record %+v", r)
		}
		var e tickEvent
		if err := json.Unmarshal(r.Event.Payload, &e); err != nil {
			t.Fatal(err)
		}
		e.At = r.Event.CollectedAt
		out = append(out, e)
	}
	return out
}

func pluginConfig(name, command, config string) modules.Config {
	c := noModules()
	c.Plugins = []modules.PluginConfig{{Name: name, Command: command, Config: json.RawMessage(config)}}
	return c
}

func pluginStatus(m *modules.Manager, name string) map[string]any {
	b, _ := json.Marshal(m.Status()["plugin/"+name])
	var st map[string]any
	_ = json.Unmarshal(b, &st)
	return st
}

// TestPluginRestartedWithBackoff: a plugin that exits is started again
// after a delay that doubles up to the maximum.
func TestPluginRestartedWithBackoff(t *testing.T) {
	dir := t.TempDir()
	installTicker(t, dir)
	s := newSink(t, dir)
	m, _ := startManager(t, dir, s, pluginConfig("ticker", "ticker-plugin", `{"interval": "20ms", "exit_after": 3}`), func(o *modules.Options) {
		o.PluginRestartMin, o.PluginRestartMax = 200*time.Millisecond, 800*time.Millisecond
	})
	var got []tickEvent
	await(t, 30*time.Second, "five runs of the plugin", func() bool {
		got = ticks(t, s, "ticker")
		return len(got) >= 15
	})
	// Every run sends ticks 1, 2, 3 and exits with status 3.
	first := map[int]tickEvent{}
	last := map[int]tickEvent{}
	for i, e := range got[:15] {
		if e.Run != i/3+1 || e.N != i%3+1 {
			t.Fatalf("tick %d: %+v", i, e)
		}
		if _, ok := first[e.Run]; !ok {
			first[e.Run] = e
		}
		last[e.Run] = e
	}
	// Restart delays 200ms, 400ms, 800ms, 800ms (plus the first tick's 20ms).
	for r, want := range map[int]time.Duration{2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: 800 * time.Millisecond} {
		gap := first[r].At.Sub(last[r-1].At)
		if gap < want || gap > want+2*time.Second {
			t.Errorf("run %d started %v after run %d ended, want about %v", r, gap, r-1, want)
		}
		if first[r].PID == first[r-1].PID {
			t.Errorf("runs %d and %d have the same pid", r-1, r)
		}
	}
	st := pluginStatus(m, "ticker")
	if st["restarts"].(float64) < 4 {
		t.Fatalf("status %v", st)
	}
}

// TestPluginStoppedWhenRemoved: a plugin whose configuration changes is
// restarted with the new one; removed from the configuration, it is
// stopped and sends nothing more.
func TestPluginStoppedWhenRemoved(t *testing.T) {
	dir := t.TempDir()
	installTicker(t, dir)
	s := newSink(t, dir)
	m, _ := startManager(t, dir, s, pluginConfig("ticker", "ticker-plugin", `{"interval": "20ms"}`), nil)
	var got []tickEvent
	await(t, 20*time.Second, "ticks", func() bool {
		got = ticks(t, s, "ticker")
		return len(got) >= 3
	})
	pid1 := got[0].PID
	if st := pluginStatus(m, "ticker"); st["state"] != "running" || int(st["pid"].(float64)) != pid1 {
		t.Fatalf("status %v, pid %d", st, pid1)
	}
	// Its state directory is kept across runs.
	if b, _ := os.ReadFile(filepath.Join(dir, modules.PluginStateDir, "ticker", "runs")); string(b) != "1\n" {
		t.Fatalf("runs file %q", b)
	}

	m.Apply(pluginConfig("ticker", "ticker-plugin", `{"interval": "30ms"}`))
	if alive(pid1) {
		t.Fatalf("the first run (pid %d) still runs after its configuration changed", pid1)
	}
	await(t, 20*time.Second, "ticks of the second run", func() bool {
		got = ticks(t, s, "ticker")
		return got[len(got)-1].Run == 2
	})
	pid2 := got[len(got)-1].PID

	m.Apply(noModules())
	if alive(pid2) {
		t.Fatalf("the plugin (pid %d) still runs after its removal", pid2)
	}
	if _, ok := m.Status()["plugin/ticker"]; ok {
		t.Fatal("a removed plugin still has a status")
	}
	n := len(ticks(t, s, "ticker"))
	time.Sleep(200 * time.Millisecond)
	if n2 := len(ticks(t, s, "ticker")); n2 != n {
		t.Fatalf("%d ticks after the plugin was removed", n2-n)
	}
}

// alive reports whether pid is a running process (not a zombie: the
// agent reaps its plugins).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}

// TestPluginRefusals: an executable outside DATA/plugins, and one that
// speaks something other than frames, never run for long; the status says
// why.
func TestPluginRefusals(t *testing.T) {
	dir := t.TempDir()
	pdir := filepath.Join(dir, modules.PluginsDir)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/true", filepath.Join(pdir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "chatty"), []byte("#!/bin/sh\necho hello, world\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, dir)
	cfg := noModules()
	cfg.Plugins = []modules.PluginConfig{{Name: "escape", Command: "escape"}, {Name: "chatty", Command: "chatty"}, {Name: "missing", Command: "missing"}}
	m, _ := startManager(t, dir, s, cfg, func(o *modules.Options) { o.PluginRestartMin = time.Minute })
	want := map[string]string{
		"escape":  "outside the plugins directory",
		"chatty":  "plugin frame larger than the limit",
		"missing": "not found in",
	}
	for name, msg := range want {
		await(t, 10*time.Second, name+" refused", func() bool {
			st := pluginStatus(m, name)
			last, _ := st["last_exit"].(string)
			return st["state"] == "waiting" && contains(last, msg)
		})
	}
}

func contains(s, sub string) bool { return sub != "" && strings.Contains(s, sub) }
