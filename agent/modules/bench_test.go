package modules_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/modules"
)

// BenchmarkLogCollector measures how fast the log collector moves lines
// from a file into the outbox (real bbolt store, default group commit):
// b.N lines of about 100 bytes, reported as lines/s.
func BenchmarkLogCollector(b *testing.B) {
	dir := b.TempDir()
	log := filepath.Join(dir, "app.log")
	f, err := os.Create(log)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range b.N {
		fmt.Fprintf(w, "2026-01-02T03:04:05.000Z host app[1234]: request %09d served in 12ms, status 200, bytes 5120\n", i)
	}
	w.Flush()
	f.Close()
	s := newSink(b, dir)
	cfg := logConfig(log)
	cfg.LogCollector.Files[0].StartAt = "beginning"
	b.ResetTimer()
	start := time.Now()
	_, stop := startManager(b, dir, s, cfg, func(o *modules.Options) { o.Log = slog.New(slog.DiscardHandler) })
	for {
		s.mu.Lock()
		n := len(s.recs)
		s.mu.Unlock()
		if n >= b.N {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
	b.StopTimer()
	stop()
}
