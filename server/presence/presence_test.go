package presence_test

import (
	"context"
	"errors"
	"fmt"
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

// chunkStore records the sizes of TouchAgents calls and fails the one
// numbered failAt.
type chunkStore struct {
	tether.AgentStore
	sizes  []int
	failAt int
}

func (s *chunkStore) TouchAgents(ctx context.Context, seen map[string]time.Time) error {
	s.sizes = append(s.sizes, len(seen))
	if len(s.sizes) == s.failAt {
		return errors.New("disk full")
	}
	return s.AgentStore.TouchAgents(ctx, seen)
}

// TestFlushWritesInChunks has many marks flushed a chunk per call, so no
// one transaction holds the store long; after a failure, only the marks
// not written are flushed again.
func TestFlushWritesInChunks(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 1234
	s := &chunkStore{AgentStore: db, failAt: 2}
	p := presence.New(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	seen := time.Now().UTC().Truncate(time.Millisecond)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
		if err := db.RegisterAgent(ctx, &tether.Agent{ID: ids[i], Name: "a", KeyHash: make([]byte, 32)}, "", seen); err != nil {
			t.Fatal(err)
		}
		p.Seen(ids[i], seen)
	}
	if err := p.Flush(ctx); err == nil {
		t.Fatal("a failed chunk was not reported")
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// 500, then a failed 500; again the failed 500 and the last 234.
	if want := []int{500, 500, 500, 234}; fmt.Sprint(s.sizes) != fmt.Sprint(want) {
		t.Errorf("TouchAgents calls of %v marks, want %v", s.sizes, want)
	}
	for _, id := range ids {
		if a, _ := db.Agent(ctx, id); !a.LastSeen.Equal(seen) {
			t.Fatalf("agent %s: last_seen %v, want %v", id, a.LastSeen, seen)
		}
	}
}
