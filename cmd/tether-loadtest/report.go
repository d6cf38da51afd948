package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what one run measured against one server. The JSON form is
// what -o json prints and scripts/benchplot reads.
type Report struct {
	Label     string    `json:"label"`
	Target    string    `json:"target"` // tether or baseline
	StartedAt time.Time `json:"started_at"`
	Machine   Machine   `json:"machine"`
	Config    RunConfig `json:"config"`

	Agents          int     `json:"agents"`
	AgentsConnected int     `json:"agents_connected"`
	Connections     int     `json:"connections"`
	PollsWaiting    int     `json:"polls_waiting"`
	RampSeconds     float64 `json:"ramp_seconds"`
	EnrollSeconds   float64 `json:"enroll_seconds,omitempty"`

	Server         *ProcStats       `json:"server,omitempty"`
	Loader         *ProcStats       `json:"loader,omitempty"`
	CommandLatency *LatencyStats    `json:"command_latency,omitempty"`
	Fanout         *FanoutStats     `json:"fanout,omitempty"`
	Events         *EventStats      `json:"events,omitempty"`
	Errors         map[string]int64 `json:"errors"`

	Baseline *Report            `json:"baseline,omitempty"`
	Ratios   map[string]float64 `json:"ratios,omitempty"`
}

// RunConfig is the part of the command line that shapes the traffic.
type RunConfig struct {
	AgentsPerConnection int     `json:"agents_per_connection"`
	DurationSeconds     float64 `json:"duration_seconds"`
	PollWaitSeconds     float64 `json:"poll_wait_seconds"`
	CommandRate         float64 `json:"command_rate"`
	EventsPerSecond     float64 `json:"events_per_second_per_agent"`
	EventSize           int     `json:"event_size"`
	BatchIntervalSecs   float64 `json:"batch_interval_seconds"`
	Fanout              bool    `json:"fanout"`
	SourceIPs           int     `json:"source_ips"`
}

// ProcStats is a process's memory and CPU over the window.
type ProcStats struct {
	PID              int     `json:"pid"`
	RSSBytesBefore   int64   `json:"rss_bytes_before"`
	RSSBytes         int64   `json:"rss_bytes"`
	RSSPerAgentBytes float64 `json:"rss_per_agent_bytes"`
	CPUPercent       float64 `json:"cpu_percent"` // one core = 100
	CPUSeconds       float64 `json:"cpu_seconds"`
}

// LatencyStats summarises command latencies, from the creation request to
// the result acknowledged by the server.
type LatencyStats struct {
	Count     int       `json:"count"`
	Missing   int       `json:"missing"`
	P50ms     float64   `json:"p50_ms"`
	P90ms     float64   `json:"p90_ms"`
	P99ms     float64   `json:"p99_ms"`
	Maxms     float64   `json:"max_ms"`
	SamplesMs []float64 `json:"samples_ms,omitempty"`
}

// FanoutStats times one command to every agent.
type FanoutStats struct {
	Agents          int     `json:"agents"`
	Delivered       int     `json:"delivered"`
	Results         int     `json:"results"`
	CreateMs        float64 `json:"create_ms"`
	FirstDeliveryMs float64 `json:"first_delivery_ms"`
	LastDeliveryMs  float64 `json:"last_delivery_ms"`
	AllResultsMs    float64 `json:"all_results_ms"`
	Complete        bool    `json:"complete"`
}

// EventStats counts what the server acknowledged during the window.
type EventStats struct {
	AcceptedEvents  int64   `json:"accepted_events"`
	AcceptedBytes   int64   `json:"accepted_bytes"`
	Batches         int64   `json:"batches"`
	EventsPerSecond float64 `json:"events_per_second"`
	BytesPerSecond  float64 `json:"bytes_per_second"`
	BatchP50ms      float64 `json:"batch_p50_ms"`
	BatchP99ms      float64 `json:"batch_p99_ms"`
}

// latencyStats summarises samples (milliseconds); keep says whether the
// samples go in the report (for plots).
func latencyStats(samples []float64, missing int, keep bool) *LatencyStats {
	s := &LatencyStats{Count: len(samples), Missing: missing}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	sort.Float64s(sorted)
	s.P50ms = round3(percentile(sorted, 0.50))
	s.P90ms = round3(percentile(sorted, 0.90))
	s.P99ms = round3(percentile(sorted, 0.99))
	s.Maxms = round3(sorted[len(sorted)-1])
	if keep {
		s.SamplesMs = make([]float64, len(samples))
		for i, v := range samples {
			s.SamplesMs[i] = round3(v)
		}
	}
	return s
}

// percentile returns the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

// addRatios sets r.Ratios to r's figures divided by its baseline's, for
// every figure both measured.
func (r *Report) addRatios() {
	b := r.Baseline
	if b == nil {
		return
	}
	r.Ratios = map[string]float64{}
	put := func(name string, mine, base float64) {
		if mine > 0 && base > 0 {
			r.Ratios[name] = math.Round(mine/base*100) / 100
		}
	}
	if r.Server != nil && b.Server != nil {
		put("server_rss_per_agent", r.Server.RSSPerAgentBytes, b.Server.RSSPerAgentBytes)
		put("server_cpu", r.Server.CPUPercent, b.Server.CPUPercent)
	}
	if r.CommandLatency != nil && b.CommandLatency != nil {
		put("command_latency_p50", r.CommandLatency.P50ms, b.CommandLatency.P50ms)
		put("command_latency_p99", r.CommandLatency.P99ms, b.CommandLatency.P99ms)
	}
	if r.Fanout != nil && b.Fanout != nil {
		put("fanout_last_delivery", r.Fanout.LastDeliveryMs, b.Fanout.LastDeliveryMs)
		put("fanout_all_results", r.Fanout.AllResultsMs, b.Fanout.AllResultsMs)
	}
	if r.Events != nil && b.Events != nil {
		put("events_per_second", r.Events.EventsPerSecond, b.Events.EventsPerSecond)
	}
	put("ramp_seconds", r.RampSeconds, b.RampSeconds)
}

func writeJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeTable prints the report for people, the baseline in a second
// column when there is one.
func writeTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cols := []*Report{r}
	head := "\ttether"
	if r.Baseline != nil {
		cols = append(cols, r.Baseline)
		head += "\tbaseline\tratio"
	}
	fmt.Fprintf(tw, "%s (%s, %d CPUs, %s)%s\n", r.Label, r.StartedAt.Format(time.RFC3339), r.Machine.CPUs, r.Machine.Go, head)
	row := func(name string, ratio string, f func(*Report) string) {
		line := name
		for _, c := range cols {
			line += "\t" + f(c)
		}
		if r.Baseline != nil {
			if v, ok := r.Ratios[ratio]; ok {
				line += fmt.Sprintf("\t%.2f×", v)
			} else {
				line += "\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	row("agents connected", "", func(c *Report) string { return fmt.Sprintf("%d / %d", c.AgentsConnected, c.Agents) })
	row("connections", "", func(c *Report) string { return fmt.Sprint(c.Connections) })
	row("polls waiting (server)", "", func(c *Report) string { return fmt.Sprint(c.PollsWaiting) })
	row("ramp-up", "ramp_seconds", func(c *Report) string { return fmt.Sprintf("%.1f s", c.RampSeconds) })
	if r.Server != nil {
		row("server RSS", "", func(c *Report) string {
			if c.Server == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f MiB (from %.1f)", mib(c.Server.RSSBytes), mib(c.Server.RSSBytesBefore))
		})
		row("server RSS per agent", "server_rss_per_agent", func(c *Report) string {
			if c.Server == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f KiB", c.Server.RSSPerAgentBytes/1024)
		})
		row("server CPU (window)", "server_cpu", func(c *Report) string {
			if c.Server == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f %% of a core", c.Server.CPUPercent)
		})
	}
	if r.Loader != nil {
		row("load program RSS, CPU", "", func(c *Report) string {
			if c.Loader == nil {
				return "-"
			}
			return fmt.Sprintf("%.0f MiB, %.1f %%", mib(c.Loader.RSSBytes), c.Loader.CPUPercent)
		})
	}
	if r.CommandLatency != nil {
		row("command latency p50", "command_latency_p50", func(c *Report) string {
			return latencyCell(c.CommandLatency, func(l *LatencyStats) float64 { return l.P50ms })
		})
		row("command latency p99", "command_latency_p99", func(c *Report) string {
			return latencyCell(c.CommandLatency, func(l *LatencyStats) float64 { return l.P99ms })
		})
		row("command latency max", "", func(c *Report) string {
			return latencyCell(c.CommandLatency, func(l *LatencyStats) float64 { return l.Maxms })
		})
		row("commands (answered / missing)", "", func(c *Report) string {
			if c.CommandLatency == nil {
				return "-"
			}
			return fmt.Sprintf("%d / %d", c.CommandLatency.Count, c.CommandLatency.Missing)
		})
	}
	if r.Fanout != nil {
		row("fan-out first delivery", "", func(c *Report) string {
			return fanoutCell(c.Fanout, func(f *FanoutStats) float64 { return f.FirstDeliveryMs })
		})
		row("fan-out last delivery", "fanout_last_delivery", func(c *Report) string {
			return fanoutCell(c.Fanout, func(f *FanoutStats) float64 { return f.LastDeliveryMs })
		})
		row("fan-out all results", "fanout_all_results", func(c *Report) string {
			return fanoutCell(c.Fanout, func(f *FanoutStats) float64 { return f.AllResultsMs })
		})
		row("fan-out results", "", func(c *Report) string {
			if c.Fanout == nil {
				return "-"
			}
			return fmt.Sprintf("%d / %d", c.Fanout.Results, c.Fanout.Agents)
		})
	}
	if r.Events != nil {
		row("events accepted per second", "events_per_second", func(c *Report) string {
			if c.Events == nil {
				return "-"
			}
			return fmt.Sprintf("%.0f (%.1f MB/s)", c.Events.EventsPerSecond, c.Events.BytesPerSecond/1e6)
		})
		row("push p50 / p99", "", func(c *Report) string {
			if c.Events == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f / %.1f ms", c.Events.BatchP50ms, c.Events.BatchP99ms)
		})
	}
	row("errors", "", func(c *Report) string { return errorsCell(c.Errors) })
	return tw.Flush()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func latencyCell(l *LatencyStats, get func(*LatencyStats) float64) string {
	if l == nil || l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", get(l))
}

func fanoutCell(f *FanoutStats, get func(*FanoutStats) float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", get(f))
}

func errorsCell(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, errs[k])
	}
	return strings.Join(parts, ", ")
}
