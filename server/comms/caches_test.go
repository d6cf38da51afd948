package comms

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

// testService returns a service on a SQLite store with one agent
// registered in group "g", its id and a token of it.
func testService(tb testing.TB) (*Service, *sqlite.DB, string, string) {
	tb.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(tb.TempDir(), "t.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := authn.NewKeyring(ctx, db, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	s := New(Options{Store: db, Notifier: notify.NewHub(), Keys: keys, Presence: presence.New(db, log), Log: log})
	id := uuid.NewString()
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32), Groups: []string{"g"}}, "", time.Now()); err != nil {
		tb.Fatal(err)
	}
	tok, _, err := keys.Issue(id, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return s, db, id, tok
}

func TestAgentCacheDropsExpiredEntries(t *testing.T) {
	s, _, id, _ := testService(t)
	gone := uuid.NewString() // an agent that polled here long ago
	s.agents[gone] = cachedAgent{agent: &tether.Agent{ID: gone}, at: time.Now().Add(-agentCacheTTL - time.Second)}
	a, err := s.agent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != id || len(a.Groups) != 1 || a.Groups[0] != "g" {
		t.Fatalf("cached record %+v, want id %s in group g", a, id)
	}
	if _, ok := s.agents[gone]; ok {
		t.Fatal("an expired entry is still cached")
	}
	if _, ok := s.agents[id]; !ok {
		t.Fatal("the record read is not cached")
	}
}
