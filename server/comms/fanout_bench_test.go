package comms_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

// BenchmarkGroupFanOut measures a group command to N agents whose polls are
// all waiting: from the request's creation until every poll has returned its
// order. It calls the service's handlers directly (no network), so it
// measures the server's own cost: expansion, wake-ups and deliveries.
//
//	go test -run '^$' -bench GroupFanOut -benchtime 3x ./server/comms/
func BenchmarkGroupFanOut(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) { benchFanOut(b, n) })
	}
}

func benchFanOut(b *testing.B, n int) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "t.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := authn.NewKeyring(ctx, db, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	hub := notify.NewHub()
	svc := comms.New(comms.Options{Store: db, Notifier: hub, Keys: keys, Presence: presence.New(db, log), Log: log})
	mgr := &command.Manager{Store: db, Notifier: hub}
	ids := make([]string, n)
	tokens := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
		if err := db.RegisterAgent(ctx, &tether.Agent{ID: ids[i], Name: "a", KeyHash: make([]byte, 32), Groups: []string{"all"}}, "", time.Now()); err != nil {
			b.Fatal(err)
		}
		if tokens[i], _, err = keys.Issue(ids[i], time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := 0
		for j := range ids {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				req := connect.NewRequest(&commsv1.PollCommandsRequest{Wait: durationpb.New(60 * time.Second)})
				req.Header().Set("Authorization", "Bearer "+tokens[j])
				resp, err := svc.PollCommands(ctx, req)
				if err != nil {
					b.Error(err)
					return
				}
				// Acknowledge receipt so the next iteration starts clean.
				ack := connect.NewRequest(&commsv1.PollCommandsRequest{Wait: durationpb.New(time.Millisecond)})
				ack.Header().Set("Authorization", "Bearer "+tokens[j])
				for _, o := range resp.Msg.Orders {
					ack.Msg.ReceivedOrderIds = append(ack.Msg.ReceivedOrderIds, o.OrderId)
				}
				mu.Lock()
				got += len(resp.Msg.Orders)
				mu.Unlock()
				if _, err := svc.PollCommands(ctx, ack); err != nil {
					b.Error(err)
				}
			}(j)
		}
		for hub.Waiting() < n {
			time.Sleep(10 * time.Millisecond)
		}
		b.StartTimer()
		start := time.Now()
		if _, _, err := mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetGroup, ID: "all"}, Action: tether.Action{Name: "restart"}}); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/fan-out")
		if got != n {
			b.Fatalf("delivered %d orders to %d agents", got, n)
		}
	}
}
