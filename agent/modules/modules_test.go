package modules_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/modules"
	"github.com/tetherhq/tether/agent/store"
)

// testLog is a logger that writes to the test's log only when -v or on
// failure.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func openStore(t testing.TB, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(dir, "agent.db"))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// sink is the outbox the modules write to in tests: the agent's real
// store, and a copy of every record appended (as the sender would take
// them out).
type sink struct {
	*store.Outbox
	db   *store.DB
	mu   sync.Mutex
	recs []store.Record
}

func newSink(t testing.TB, dir string) *sink {
	db := openStore(t, dir)
	t.Cleanup(func() { db.Close() })
	return &sink{Outbox: db.Outbox, db: db}
}

func (s *sink) AppendWith(recs []store.Record, meta map[string][]byte) error {
	if err := s.Outbox.AppendWith(recs, meta); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, recs...)
	return nil
}

// drain returns every record appended so far.
func (s *sink) drain(t *testing.T) []store.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Record{}, s.recs...)
}

// startManager runs a Manager over db with cfg until the test ends (or
// the returned stop is called).
func startManager(t testing.TB, dataDir string, s *sink, cfg modules.Config, tweak func(*modules.Options)) (*modules.Manager, func()) {
	t.Helper()
	opts := modules.Options{Outbox: s, Log: testLog(t), DataDir: dataDir, AgentID: "agent-1", Version: "1.2.3",
		Inventory: modules.InventorySources{DpkgStatus: "-", RPM: "-"}}
	if tweak != nil {
		tweak(&opts)
	}
	m := modules.NewManager(opts)
	ctx, cancel := context.WithCancel(context.Background())
	m.Start(ctx)
	m.Apply(cfg)
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); m.Stop() }) }
	t.Cleanup(stop)
	return m, stop
}

// noModules is a configuration with every module off.
func noModules() modules.Config {
	c := modules.DefaultConfig()
	c.Inventory.Enabled, c.Health.Enabled = false, false
	return c
}

// await polls cond until it holds or d passes.
func await(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

type line struct {
	Path   string `json:"path"`
	Line   string `json:"line"`
	Offset int64  `json:"offset"`
	Part   int    `json:"part"`
	More   bool   `json:"more"`
}

func lines(t *testing.T, recs []store.Record) []line {
	t.Helper()
	var out []line
	for _, r := range recs {
		if r.Event.Module != "logcollector" {
			continue
		}
		if r.Event.Type != "line" || r.Stateful {
			t.Fatalf("unexpected record %+v", r)
		}
		var l line
		if err := json.Unmarshal(r.Event.Payload, &l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

func texts(ls []line) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Line
	}
	return out
}

// slogWith returns log with e keeping its warnings and errors.
func slogWith(e *modules.ErrorLog, log *slog.Logger) *slog.Logger {
	return slog.New(e.Handler(log.Handler()))
}
