package integration_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of this file drive the event path with the agent's test load
// (TETHER_AGENT_TEST_LOAD): numbered events "testload-N", each queued once
// in the outbox, whatever happens to the agent.

// sinkEvent is one line of the server's file sink.
type sinkEvent struct {
	AgentID  string          `json:"agent_id"`
	Sequence uint64          `json:"sequence"`
	EventID  string          `json:"event_id"`
	Module   string          `json:"module"`
	Type     string          `json:"type"`
	Key      *string         `json:"key"`
	Payload  json.RawMessage `json:"payload"`
}

// sinkEvents reads the events of the file sink's files, skipping a last
// line still being written.
func sinkEvents(t *testing.T, dataDir string) []sinkEvent {
	t.Helper()
	var out []sinkEvent
	eachEventLine(t, dataDir, func(f string, line []byte) {
		var e sinkEvent
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("%s: bad line %q: %v", f, line, err)
		}
		out = append(out, e)
	})
	return out
}

// loadCount counts the test-load events in the sink by number.
func loadCount(t *testing.T, dataDir string) (map[int]int, []sinkEvent) {
	t.Helper()
	seen := map[int]int{}
	var other []sinkEvent
	for _, e := range sinkEvents(t, dataDir) {
		if e.Module != "testload" {
			other = append(other, e)
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(e.EventID, "testload-"))
		if err != nil {
			t.Fatalf("test-load event id %q", e.EventID)
		}
		seen[n]++
	}
	return seen, other
}

// checkOnce fails unless every number the sink holds is there exactly once
// and it holds every number of want.
func checkOnce(t *testing.T, seen map[int]int, want func(int) bool, total int) {
	t.Helper()
	var dup, missing []int
	for n, c := range seen {
		if c > 1 {
			dup = append(dup, n)
		}
	}
	for n := range total {
		if want(n) && seen[n] == 0 {
			missing = append(missing, n)
		}
	}
	if len(dup) > 0 || len(missing) > 0 {
		t.Fatalf("%d events stored more than once (%v…), %d missing (%v…)", len(dup), head(dup), len(missing), head(missing))
	}
}

func head(s []int) []int { return s[:min(len(s), 10)] }

// startLoadAgent runs an enrolled agent with a test load and extra
// environment.
func startLoadAgent(t testing.TB, dir, load string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin("tether-agent"), "run", "--data-dir", dir)
	cmd.Env = append(append(os.Environ(), "TETHER_AGENT_TEST_LOAD="+load), env...)
	return startCmd(t, cmd)
}

func writeAgentConfig(t testing.TB, dir, yaml string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// statusFile reads the agent's status.json, also after the agent stopped;
// nil until the agent wrote one.
func statusFile(dir string) map[string]any {
	b, err := os.ReadFile(filepath.Join(dir, "status.json"))
	if err != nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	return m
}

func stopAgent(p *proc) {
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	p.exited(10 * time.Second)
}

// TestEventsSurviveAgentSIGKILL kills the agent with SIGKILL again and
// again while it queues and sends events in small batches — at random
// moments, and at the two steps of a batch's life where a kill matters
// most — and in the end the server's sink holds every event exactly once.
func TestEventsSurviveAgentSIGKILL(t *testing.T) {
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	// Small, frequent batches, so that kills land between a batch's
	// sending and its acknowledgement.
	writeAgentConfig(t, a.dir, "batch_max_events: 150\nbatch_interval: 20ms\noutbox_fsync_window: 20ms\n")
	const total = 20000
	load := fmt.Sprintf("%d:4000", total)
	// Killed with a batch handed out but not sent, and with a batch the
	// server acknowledged but the outbox still holds (sent again: the
	// server must store it once).
	kills := 0
	for _, at := range []string{"batched:3", "sent:5", "batched:1", "sent:1"} {
		p := startLoadAgent(t, a.dir, load, "TETHER_AGENT_CRASH_AT="+at)
		if _, ok := p.exited(30 * time.Second); !ok {
			t.Fatalf("the agent did not reach crash point %s", at)
		}
		if ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("the agent ended with %v, want SIGKILL at %s", p.cmd.ProcessState, at)
		}
		kills++
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for range 8 {
		p := startLoadAgent(t, a.dir, load)
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		_ = p.cmd.Process.Kill() // SIGKILL
		<-p.done
		kills++
	}
	p := startLoadAgent(t, a.dir, load)
	var seen map[int]int
	await(t, 2*time.Minute, "every test-load event in the sink", func() bool {
		seen, _ = loadCount(t, s.dataDir)
		return len(seen) == total
	})
	stopAgent(p)
	seen, _ = loadCount(t, s.dataDir)
	checkOnce(t, seen, func(int) bool { return true }, total)
	st := statusFile(a.dir)
	if st["queued_events"] != 0.0 || st["dropped_events"] != 0.0 {
		t.Fatalf("agent status after the run: %v", st)
	}
	t.Logf("%d SIGKILLs; %d events each stored once", kills, total)
}

// restartServer starts tether-server again with the arguments of s, on the
// addresses it listened on.
func restartServer(t testing.TB, s *server) *server {
	t.Helper()
	comms, _ := url.Parse(s.commsURL)
	api, _ := url.Parse(s.apiURL)
	// The same arguments, on the addresses the first run listened on.
	args := append([]string(nil), s.proc.cmd.Args[1:]...)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--comms-addr":
			args[i+1] = comms.Host
		case "--api-addr":
			args[i+1] = api.Host
		}
	}
	p := start(t, "tether-server", args...)
	await(t, 30*time.Second, "the server to listen again", func() bool {
		return strings.Contains(p.Output(), "Comms API:")
	})
	s2 := *s
	s2.proc = p
	return &s2
}

// TestOutboxFullDropsOldestEvents queues far more events than the outbox
// may hold while the server is down: the oldest stateless events are
// dropped and counted, the state (inventory) is kept, and once the server
// is back the agent sends the rest and reports the drops with an
// events_dropped event.
func TestOutboxFullDropsOldestEvents(t *testing.T) {
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	stopAgent(s.proc) // the server is down
	writeAgentConfig(t, a.dir, "outbox_max_bytes: 1MiB\nbatch_max_events: 1000\n")
	const total = 60000 // about 4 MiB of events
	p := startLoadAgent(t, a.dir, strconv.Itoa(total))
	var st map[string]any
	await(t, time.Minute, "the agent to queue the whole load", func() bool {
		st = statusFile(a.dir)
		return strings.Contains(p.Output(), "test load queued") && st != nil && st["dropped_events"].(float64) > 0
	})
	if qb, max := st["queued_bytes"].(float64), st["outbox_max_bytes"].(float64); max != 1<<20 || qb > max {
		t.Fatalf("outbox holds %v bytes, bound %v", qb, max)
	}
	s = restartServer(t, s)
	await(t, 2*time.Minute, "the outbox to drain", func() bool {
		st = statusFile(a.dir)
		return st["queued_events"] == 0.0
	})
	stopAgent(p)
	st = statusFile(a.dir)
	dropped := int(st["dropped_events"].(float64))
	seen, other := loadCount(t, s.dataDir)
	// A report may itself be dropped later; each carries the total.
	reported, inventory := 0, false
	for _, e := range other {
		switch {
		case e.Module == "agent" && e.Type == "events_dropped":
			var r struct {
				Dropped int    `json:"dropped"`
				Total   int    `json:"total"`
				Reason  string `json:"reason"`
			}
			if err := json.Unmarshal(e.Payload, &r); err != nil || r.Reason != "outbox full" || r.Dropped < 1 {
				t.Fatalf("events_dropped payload %s: %v", e.Payload, err)
			}
			reported = max(reported, r.Total)
		case e.Module == "inventory" && e.Key != nil && *e.Key == "host":
			inventory = true
		}
	}
	checkOnce(t, seen, func(n int) bool { return n == total-1 }, total)
	// What was not stored was dropped by the policy, and said so.
	if len(seen)+dropped < total || reported != dropped || !inventory {
		t.Fatalf("%d events stored + %d dropped (status) of %d; %d reported dropped in all; inventory kept: %v",
			len(seen), dropped, total, reported, inventory)
	}
	// The oldest went first: past the batch held for sending when the
	// outbox filled, the events stored are the newest.
	var runs int
	for n := range total {
		if seen[n] > 0 && (n == 0 || seen[n-1] == 0) {
			runs++
		}
	}
	if runs > 2 {
		t.Fatalf("the events stored form %d runs: want the first batch and the newest ones", runs)
	}
	t.Logf("%d events queued with a 1 MiB outbox: %d stored, %d dropped and reported", total, len(seen), dropped)
}
