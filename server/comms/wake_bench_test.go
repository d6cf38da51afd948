package comms

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

// BenchmarkWakeUp measures what a waiting poll does when it is woken and
// finds nothing to answer (a wake-up for another reason, or one that
// another poll of the agent served): it reads its agent from the cache
// and looks at the store again, through the group commit.
//
//	go test -run '^$' -bench WakeUp -benchmem ./server/comms/
func BenchmarkWakeUp(b *testing.B) {
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
	s := New(Options{Store: db, Notifier: notify.NewHub(), Keys: keys, Presence: presence.New(db, log), Log: log})
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: []string{"g"}}, "", time.Now()); err != nil {
		b.Fatal(err)
	}
	tok, _, err := keys.Issue(id, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	req := connect.NewRequest(&commsv1.PollCommandsRequest{})
	req.Header().Set("Authorization", "Bearer "+tok)
	w, err := s.startPoll(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	defer s.endPoll(w)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.lookAgain(ctx, w); err != nil {
			b.Fatal(err)
		}
		if w.ready() {
			b.Fatal("an answer from nowhere")
		}
	}
}
