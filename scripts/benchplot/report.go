package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// report is the part of a tether-loadtest JSON report the plots use;
// other fields are ignored, missing ones are zero.
type report struct {
	Label           string      `json:"label"`
	Target          string      `json:"target"`
	StartedAt       string      `json:"started_at"`
	Machine         machine     `json:"machine"`
	Agents          int         `json:"agents"`
	AgentsConnected int         `json:"agents_connected"`
	Server          serverStats `json:"server"`
	Config          runConfig   `json:"config"`
	CommandLatency  latency     `json:"command_latency"`
	Baseline        *report     `json:"baseline"`
}

type runConfig struct {
	// EventsPerSecond is each agent's event rate: a run that pushes events
	// measures memory under ingest, not idle agents.
	EventsPerSecond float64 `json:"events_per_second_per_agent"`
}

type machine struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model"`
	MemTotalBytes int64  `json:"mem_total_bytes"`
	Go            string `json:"go"`
}

type serverStats struct {
	RSSBytesBefore   int64   `json:"rss_bytes_before"`
	RSSBytes         int64   `json:"rss_bytes"`
	RSSPerAgentBytes float64 `json:"rss_per_agent_bytes"`
}

type latency struct {
	Count     int       `json:"count"`
	SamplesMs []float64 `json:"samples_ms"`
}

func readReport(path string) (report, error) {
	var r report
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// isBaseline says whether r measured the baseline server.
func (r report) isBaseline() bool { return strings.EqualFold(r.Target, "baseline") }

// name is how a plot's legend names r: its label, or its agent count.
func (r report) name() string {
	n := r.Label
	if n == "" {
		agents := r.AgentsConnected
		if agents == 0 {
			agents = r.Agents
		}
		n = humanCount(float64(agents)) + " agents"
	}
	if r.isBaseline() && !strings.Contains(strings.ToLower(n), "baseline") {
		n += " (baseline)"
	}
	return n
}

// perAgentBytes is the server's memory per connected agent: the report's
// own figure, or the growth over the empty server, or RSS / agents.
func (r report) perAgentBytes() float64 {
	switch {
	case r.Server.RSSPerAgentBytes > 0:
		return r.Server.RSSPerAgentBytes
	case r.AgentsConnected == 0:
		return 0
	case r.Server.RSSBytesBefore > 0:
		return float64(r.Server.RSSBytes-r.Server.RSSBytesBefore) / float64(r.AgentsConnected)
	}
	return float64(r.Server.RSSBytes) / float64(r.AgentsConnected)
}

// machineLine describes the machine and date of the first report that
// says, for a plot's subtitle.
func machineLine(reports []report) string {
	for _, r := range reports {
		m := r.Machine
		if m.CPUs == 0 && m.CPUModel == "" {
			continue
		}
		var parts []string
		cpu := strings.TrimSpace(fmt.Sprintf("%d vCPU %s", m.CPUs, m.CPUModel))
		if m.CPUs == 0 {
			cpu = m.CPUModel
		}
		parts = append(parts, cpu)
		if m.MemTotalBytes > 0 {
			parts = append(parts, fmt.Sprintf("%.0f GiB", float64(m.MemTotalBytes)/(1<<30)))
		}
		if m.Go != "" {
			parts = append(parts, m.Go)
		}
		if len(r.StartedAt) >= 10 {
			parts = append(parts, r.StartedAt[:10])
		}
		return strings.Join(parts, " · ")
	}
	return ""
}
