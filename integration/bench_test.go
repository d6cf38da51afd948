package integration_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The agent-side benchmarks run the real binaries on loopback with the
// agent's test load (TETHER_AGENT_TEST_LOAD) standing in for a module.
// Each iteration is one measurement: run them with -benchtime 1x, e.g.
//
//	go test ./integration -run '^$' -bench 'AgentCPU|Backfill' -benchtime 1x
//
// docs/benchmarks.md has the figures.

// cpuTime is the user+system CPU time a process used, from /proc.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	// The fields after the command name (which may hold spaces).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// rssBytes is a process's resident memory.
func rssBytes(pid int) float64 { return procBytes(pid, "status", "VmRSS") }

// procBytes reads a "Key: N kB" line of /proc/PID/<file> in bytes; 0 when
// the file or the key is missing.
func procBytes(pid int, file, key string) float64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

func serverWith(b *testing.B, yaml string) *server {
	b.Helper()
	cfg := filepath.Join(b.TempDir(), "server.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	return startServer(b, "--config", cfg)
}

// BenchmarkAgentCPU measures the agent's CPU while it queues and sends a
// steady flow of events to a server on the same host: outbox appends,
// batches, zstd, TLS. cpu-%/1k-ev/s is the share of one core per 1,000
// events per second.
func BenchmarkAgentCPU(b *testing.B) {
	for _, rate := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("events_per_sec=%d", rate), func(b *testing.B) {
			for range b.N {
				s := serverWith(b, "poll_wait: 5s\ningest:\n  agent_events_per_sec: 0\n  agent_bytes_per_sec: 0\n")
				a := enrollCrashAgent(b, s)
				const warm, measure = 3 * time.Second, 15 * time.Second
				total := rate * int((warm + measure + 5*time.Second).Seconds())
				p := startLoadAgent(b, a.dir, fmt.Sprintf("%d:%d", total, rate))
				pid := p.cmd.Process.Pid
				time.Sleep(warm)
				c0, t0 := cpuTime(b, pid), time.Now()
				time.Sleep(measure)
				c1, t1 := cpuTime(b, pid), time.Now()
				rss := rssBytes(pid)
				queued := statusFile(a.dir)["queued_events"]
				stopAgent(p)
				cpu := float64(c1-c0) / float64(t1.Sub(t0)) // cores
				b.ReportMetric(100*cpu/(float64(rate)/1000), "cpu-%/1k-ev/s")
				b.ReportMetric(100*cpu, "cpu-%")
				b.ReportMetric(rss/(1<<20), "rss-MiB")
				if q, _ := queued.(float64); q > float64(rate) {
					b.Errorf("the agent fell behind: %v events queued", q)
				}
			}
		})
	}
}

// BenchmarkBackfill queues events while the server is down, then starts
// the server and measures how fast the agent drains its outbox: with the
// server's default per-agent rate (5,000 events/s), and with no server
// limit (what the agent and one server node manage on this host).
func BenchmarkBackfill(b *testing.B) {
	for _, c := range []struct {
		name, ingest string
		events       int
	}{
		{"server_default_limits", "", 100_000},
		{"no_server_limit", "ingest:\n  agent_events_per_sec: 0\n  agent_bytes_per_sec: 0\n", 200_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				s := serverWith(b, "poll_wait: 5s\n"+c.ingest)
				a := enrollCrashAgent(b, s)
				stopAgent(s.proc)
				writeAgentConfig(b, a.dir, "outbox_max_bytes: 4GiB\n")
				p := startLoadAgent(b, a.dir, strconv.Itoa(c.events))
				await(b, 5*time.Minute, "the load queued", func() bool {
					st := statusFile(a.dir)
					q, _ := st["queued_events"].(float64)
					return strings.Contains(p.Output(), "test load queued") && int(q) >= c.events
				})
				// The agent is backing off from a server it cannot reach;
				// time the drain from the first acknowledged batch.
				restartServer(b, s)
				var t0 time.Time
				var from float64
				await(b, 5*time.Minute, "the outbox drained", func() bool {
					q, _ := statusFile(a.dir)["queued_events"].(float64)
					if t0.IsZero() && q < float64(c.events) {
						t0, from = time.Now(), q
					}
					return q == 0
				})
				took := time.Since(t0)
				stopAgent(p)
				b.ReportMetric(from/took.Seconds(), "events/s")
			}
		})
	}
}

// BenchmarkAgentIdle measures what an enrolled, connected agent with
// nothing to do costs its host: the default modules on (inventory,
// health), long-polls held by a server with its default poll_wait (50 s),
// no orders and no load. After a warm-up (connected, the first inventory
// and health sent, then 10 s more) it reads the agent's CPU time over a
// window and its memory at the end:
//
//   - cpu-s/h: CPU seconds (user + system) per hour, extrapolated from the
//     window;
//   - rss-MiB, pss-MiB: VmRSS, and the proportional set size from
//     smaps_rollup (shared pages divided among the processes mapping
//     them); rss-peak-MiB is VmHWM, the peak since start;
//   - bin-MiB: the binary as the harness builds it (with symbols), and
//     bin-stripped-MiB as `make build` does (-trimpath -ldflags '-s -w').
//
// The window is TETHER_BENCH_IDLE_WINDOW (a Go duration, default 2m):
//
//	TETHER_BENCH_IDLE_WINDOW=10m go test ./integration -run '^$' -bench AgentIdle -benchtime 1x -timeout 30m
func BenchmarkAgentIdle(b *testing.B) {
	window := 2 * time.Minute
	if v := os.Getenv("TETHER_BENCH_IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			b.Fatalf("TETHER_BENCH_IDLE_WINDOW: %q is not a duration of 1s or more", v)
		}
		window = d
	}
	for range b.N {
		s := serverWith(b, "poll_wait: 50s\n")
		a := enrollCrashAgent(b, s)
		p := startCmd(b, exec.Command(bin("tether-agent"), "run", "--data-dir", a.dir))
		pid := p.cmd.Process.Pid
		await(b, time.Minute, "the agent connected, its first documents sent", func() bool {
			st := statusFile(a.dir)
			connected, _ := st["connected"].(bool)
			q, ok := st["queued_events"].(float64)
			return connected && ok && q == 0
		})
		time.Sleep(10 * time.Second)
		c0, t0 := cpuTime(b, pid), time.Now()
		time.Sleep(window)
		c1, t1 := cpuTime(b, pid), time.Now()
		rss, pss, peak := rssBytes(pid), procBytes(pid, "smaps_rollup", "Pss"), procBytes(pid, "status", "VmHWM")
		if connected, _ := statusFile(a.dir)["connected"].(bool); !connected {
			b.Errorf("the agent was not connected at the end of the window")
		}
		stopAgent(p)
		b.ReportMetric(float64(c1-c0)/float64(t1.Sub(t0))*3600, "cpu-s/h")
		b.ReportMetric(rss/(1<<20), "rss-MiB")
		b.ReportMetric(peak/(1<<20), "rss-peak-MiB")
		if pss > 0 {
			b.ReportMetric(pss/(1<<20), "pss-MiB")
		}
	}
	b.StopTimer()
	if fi, err := os.Stat(bin("tether-agent")); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "bin-MiB")
	}
	stripped := filepath.Join(b.TempDir(), "tether-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", stripped, "./cmd/tether-agent")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		b.Logf("stripped build: %v\n%s", err, out)
	} else if fi, err := os.Stat(stripped); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "bin-stripped-MiB")
	}
}
