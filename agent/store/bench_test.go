package store_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

// benchRecord is a typical log line event of about 200 bytes of payload.
func benchRecord(i int) store.Record {
	return store.Record{Event: client.Event{
		ID: "bench-" + strconv.Itoa(i), Module: "logcollector", Type: "line", CollectedAt: time.Now(),
		Payload: fmt.Appendf(nil, `{"path":"/var/log/syslog","line":"Nov 23 18:00:00 web-1 sshd[%d]: Accepted publickey for deploy from 10.0.0.%d port 52144 ssh2: ED25519 SHA256:Yx1aQ0f3kHk"}`, i, i%250),
	}}
}

// BenchmarkOutboxAppend measures appends that wait for the disk, in
// groups of records per call, from one or many goroutines; ns/op is per
// event.
func BenchmarkOutboxAppend(b *testing.B) {
	for _, c := range []struct {
		writers, perCall int
		window           time.Duration
	}{
		{1, 100, 0}, {1, 1000, 0}, {8, 1, 0}, {8, 1, 10 * time.Millisecond}, {64, 1, 100 * time.Millisecond}, {8, 100, 100 * time.Millisecond},
	} {
		b.Run(fmt.Sprintf("writers=%d/per_call=%d/window=%v", c.writers, c.perCall, c.window), func(b *testing.B) {
			db, err := store.Open(filepath.Join(b.TempDir(), "agent.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.Outbox.SetLimits(-1, c.window)
			recs := make([]store.Record, c.perCall)
			for i := range recs {
				recs[i] = benchRecord(i)
			}
			calls := max(b.N/(c.perCall*c.writers), 1)
			b.ResetTimer()
			var wg sync.WaitGroup
			for range c.writers {
				wg.Go(func() {
					for range calls {
						if err := db.Outbox.Append(recs...); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			n := calls * c.perCall * c.writers
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}

// BenchmarkOutboxDrain measures how fast a full outbox empties when the
// server takes every batch at once: Next and Ack of batches of 1,000
// events, the outbox's share of a back-fill. ns/op is per event.
func BenchmarkOutboxDrain(b *testing.B) {
	db, err := store.Open(filepath.Join(b.TempDir(), "agent.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Outbox.SetLimits(-1, 0)
	const chunk = 5000
	recs := make([]store.Record, chunk)
	for i := range recs {
		recs[i] = benchRecord(i)
	}
	for n := 0; n < b.N; n += chunk {
		if err := db.Outbox.Append(recs[:min(chunk, b.N-n)]...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	drained := 0
	for {
		batch, err := db.Outbox.Next(1000, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		if batch == nil {
			break
		}
		drained += len(batch.Records)
		if err := db.Outbox.Ack(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if drained != b.N {
		b.Fatalf("drained %d of %d", drained, b.N)
	}
	b.ReportMetric(float64(drained)/b.Elapsed().Seconds(), "events/s")
}
