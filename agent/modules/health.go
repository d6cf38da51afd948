package modules

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/agent/store"
)

// AgentStats are the agent's figures the health document carries, besides
// the process's own.
type AgentStats struct {
	// OutboxEvents and OutboxBytes are what waits in the outbox.
	OutboxEvents int   `json:"outbox_events"`
	OutboxBytes  int64 `json:"outbox_bytes"`
	// DroppedEvents is how many events the outbox's size bound dropped.
	DroppedEvents uint64 `json:"dropped_events"`
	// DeadLetterBatches is how many batches the server refused as invalid.
	DeadLetterBatches uint64 `json:"dead_letter_batches"`
	// Connected is whether the last call to the server succeeded.
	Connected bool `json:"connected"`
	// ConfigVersion is the centralized configuration in force.
	ConfigVersion string `json:"config_version,omitempty"`
	// LastErrors are the agent's last warnings and errors, oldest first.
	LastErrors []LoggedError `json:"last_errors"`
}

// healthDoc is the health module's document (key "agent").
type healthDoc struct {
	AgentStats
	Version       string         `json:"version"`
	PID           int            `json:"pid"`
	StartedAt     time.Time      `json:"started_at"`
	UptimeSeconds int64          `json:"uptime_seconds"`
	RSSBytes      uint64         `json:"rss_bytes"`
	CPUSeconds    float64        `json:"cpu_seconds"`
	CPUPercent    float64        `json:"cpu_percent"`
	Goroutines    int            `json:"goroutines"`
	Modules       map[string]any `json:"modules"`
}

var processStart = time.Now().UTC()

func (m *Manager) runHealth(ctx context.Context, cfg HealthConfig) {
	lastCPU, lastAt := cpuSeconds(), time.Now()
	// A first document soon after start, then one per interval.
	wait := min(cfg.Interval, 5*time.Second)
	for sleep(ctx, wait) {
		wait = cfg.Interval
		cpu, now := cpuSeconds(), time.Now()
		d := healthDoc{
			AgentStats:    m.opts.Stats(),
			Version:       m.opts.Version,
			PID:           os.Getpid(),
			StartedAt:     processStart,
			UptimeSeconds: int64(time.Since(processStart).Seconds()),
			RSSBytes:      rssBytes(),
			CPUSeconds:    round3(cpu),
			Goroutines:    runtime.NumGoroutine(),
			Modules:       m.Status(),
		}
		if el := now.Sub(lastAt).Seconds(); el > 0 {
			d.CPUPercent = round3(100 * (cpu - lastCPU) / el)
		}
		lastCPU, lastAt = cpu, now
		if d.LastErrors == nil {
			d.LastErrors = []LoggedError{}
		}
		rec := store.Record{Stateful: true, Key: "agent", Event: newEvent("health", "agent", mustJSON(d))}
		if err := m.opts.Outbox.AppendWith([]store.Record{rec}, nil); err != nil {
			m.log.Error("health: queue document", "err", err)
		}
	}
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// LoggedError is one warning or error the agent logged.
type LoggedError struct {
	At      time.Time `json:"at"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

// ErrorLog keeps the last warnings and errors logged through its Handler.
type ErrorLog struct {
	mu   sync.Mutex
	max  int
	list []LoggedError
}

// NewErrorLog returns an ErrorLog keeping the last n entries.
func NewErrorLog(n int) *ErrorLog { return &ErrorLog{max: n} }

// Last returns the entries kept, oldest first.
func (e *ErrorLog) Last() []LoggedError {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]LoggedError{}, e.list...)
}

func (e *ErrorLog) add(le LoggedError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.list) == e.max {
		e.list = append(e.list[:0], e.list[1:]...)
	}
	e.list = append(e.list, le)
}

// Handler returns a handler that passes records to next and keeps those
// of level warn and above, whatever next's level.
func (e *ErrorLog) Handler(next slog.Handler) slog.Handler {
	return &errorLogHandler{log: e, next: next}
}

type errorLogHandler struct {
	log   *ErrorLog
	next  slog.Handler
	attrs string
}

func (h *errorLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *errorLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Message)
		b.WriteString(h.attrs)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return b.Len() < 512
		})
		msg := b.String()
		if len(msg) > 512 {
			msg = strings.ToValidUTF8(msg[:512], "") + "…"
		}
		h.log.add(LoggedError{At: r.Time.UTC(), Level: strings.ToLower(r.Level.String()), Message: msg})
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *errorLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		if a.Key == "agent_id" {
			continue // the same on every line
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	return &errorLogHandler{log: h.log, next: h.next.WithAttrs(as), attrs: b.String()}
}

func (h *errorLogHandler) WithGroup(name string) slog.Handler {
	return &errorLogHandler{log: h.log, next: h.next.WithGroup(name), attrs: h.attrs}
}
