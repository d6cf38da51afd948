package integration_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// loadReport is the part of tether-loadtest's JSON report the tests read.
type loadReport struct {
	Target          string `json:"target"`
	Agents          int    `json:"agents"`
	AgentsConnected int    `json:"agents_connected"`
	Connections     int    `json:"connections"`
	PollsWaiting    int    `json:"polls_waiting"`
	Server          *struct {
		PID      int   `json:"pid"`
		RSSBytes int64 `json:"rss_bytes"`
	} `json:"server"`
	CommandLatency *struct {
		Count   int       `json:"count"`
		Missing int       `json:"missing"`
		P99ms   float64   `json:"p99_ms"`
		Samples []float64 `json:"samples_ms"`
	} `json:"command_latency"`
	Fanout *struct {
		Agents, Delivered, Results int
		Complete                   bool
	} `json:"fanout"`
	Events *struct {
		AcceptedEvents int64 `json:"accepted_events"`
	} `json:"events"`
	Errors   map[string]int64   `json:"errors"`
	Baseline *loadReport        `json:"baseline"`
	Ratios   map[string]float64 `json:"ratios"`
}

func runLoadtest(t *testing.T, s *server, args ...string) loadReport {
	t.Helper()
	base := []string{"--server", s.apiURL, "--token", s.adminToken, "--ca-cert", s.caCert,
		"--server-pid", strconv.Itoa(s.cmd.Process.Pid), "--settle", "0s", "--poll-wait", "5s", "-o", "json"}
	cmd := exec.Command(bin("tether-loadtest"), append(base, args...)...)
	var stderr []byte
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	if err != nil {
		t.Fatalf("tether-loadtest %v: %v\n%s", args, err, stderr)
	}
	var r loadReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	return r
}

// TestLoadProgram runs the load program against a real server and its
// baseline, and checks that what it reports is what happened.
func TestLoadProgram(t *testing.T) {
	s := startServer(t)
	ids := filepath.Join(t.TempDir(), "ids.jsonl")
	const agents = 30
	r := runLoadtest(t, s, "--agents", strconv.Itoa(agents), "--duration", "3s", "--command-rate", "10",
		"--events-per-second", "20", "--fanout", "--baseline", "--identities", ids)

	for _, rep := range []*loadReport{&r, r.Baseline} {
		if rep == nil {
			t.Fatal("no baseline report")
		}
		if rep.AgentsConnected != agents || rep.Connections != agents || rep.PollsWaiting < agents-1 {
			t.Errorf("%s: %d agents connected over %d connections, %d polls waiting; want %d each",
				rep.Target, rep.AgentsConnected, rep.Connections, rep.PollsWaiting, agents)
		}
		if rep.Server == nil || rep.Server.RSSBytes <= 0 {
			t.Errorf("%s: no server figures: %+v", rep.Target, rep.Server)
		}
		if c := rep.CommandLatency; c == nil || c.Count < 20 || c.Missing != 0 || len(c.Samples) != c.Count {
			t.Errorf("%s: command latency %+v; want about 30 commands, all answered", rep.Target, c)
		}
		if f := rep.Fanout; f == nil || !f.Complete || f.Results != agents || f.Delivered != agents {
			t.Errorf("%s: fan-out %+v; want %d delivered and answered", rep.Target, f, agents)
		}
		if e := rep.Events; e == nil || e.AcceptedEvents < agents*20 {
			t.Errorf("%s: events %+v; want at least %d accepted", rep.Target, e, agents*20)
		}
	}
	if r.Target != "tether" || r.Baseline.Target != "baseline" || r.Baseline.Server.PID == r.Server.PID {
		t.Errorf("targets: %s (pid %d) and %s (pid %d)", r.Target, r.Server.PID, r.Baseline.Target, r.Baseline.Server.PID)
	}
	if _, ok := r.Ratios["command_latency_p99"]; !ok {
		t.Errorf("no latency ratio to the baseline: %v", r.Ratios)
	}

	// Again with the same identities (no new enrollment), several agents
	// per connection, from several source addresses.
	r2 := runLoadtest(t, s, "--agents", strconv.Itoa(agents), "--agents-per-connection", "5", "--duration", "1s",
		"--command-rate", "10", "--source-ips", "127.0.0.2-127.0.0.4", "--identities", ids)
	if r2.AgentsConnected != agents || r2.Connections != agents/5 {
		t.Errorf("shared connections: %d agents over %d connections; want %d over %d", r2.AgentsConnected, r2.Connections, agents, agents/5)
	}
	var list struct{ Items []json.RawMessage }
	s.ctlJSON(t, &list, "agents", "list", "--limit", fmt.Sprint(10*agents))
	if len(list.Items) != agents {
		t.Errorf("%d agents registered after two runs with one identities file; want %d", len(list.Items), agents)
	}
}
