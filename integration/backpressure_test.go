package integration_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAgentSlowsDownForBusyServer runs an agent against a server whose
// rate for one agent is far below what the agent queues: the server
// answers RESOURCE_EXHAUSTED with a delay, the agent waits it, and in the
// end every event is stored exactly once.
func TestAgentSlowsDownForBusyServer(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(cfg, []byte("poll_wait: 5s\ningest:\n  agent_events_per_sec: 1000\n  agent_events_burst: 500\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "--config", cfg)
	a := enrollCrashAgent(t, s)
	writeAgentConfig(t, a.dir, "batch_max_events: 500\nbatch_interval: 50ms\n")
	const total = 8000
	start := time.Now()
	p := startLoadAgent(t, a.dir, strconv.Itoa(total))
	var seen map[int]int
	await(t, 2*time.Minute, "every test-load event in the sink", func() bool {
		seen, _ = loadCount(t, s.dataDir)
		return len(seen) == total
	})
	took := time.Since(start)
	stopAgent(p)
	checkOnce(t, seen, func(int) bool { return true }, total)
	if !strings.Contains(p.Output(), "server busy or rate limit reached") {
		t.Fatalf("the agent was never slowed down:\n%s", p.Output())
	}
	t.Logf("%d events through a server limit of 1000 events/s in %v", total, took.Round(time.Millisecond))
}
