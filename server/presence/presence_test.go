package presence_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

func TestMarksReachTheStoreInOneFlush(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	p := presence.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	seen := time.Now().UTC().Truncate(time.Millisecond)
	p.Seen(id, seen)
	p.Seen(uuid.NewString(), seen) // an unknown agent is ignored

	a, _ := db.Agent(ctx, id)
	if !a.LastSeen.IsZero() {
		t.Fatal("a mark reached the store before a flush")
	}
	if got := p.LastSeen(id, a.LastSeen); !got.Equal(seen) {
		t.Fatalf("LastSeen before flush = %v, want %v", got, seen)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ = db.Agent(ctx, id)
	if !a.LastSeen.Equal(seen) {
		t.Fatalf("stored last_seen = %v, want %v", a.LastSeen, seen)
	}
	p.Forget(id)
	if got := p.LastSeen(id, time.Time{}); !got.IsZero() {
		t.Fatalf("forgotten agent still has a mark: %v", got)
	}
}
