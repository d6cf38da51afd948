package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/postgres"
	"github.com/tetherhq/tether/server/postgres/pgtest"
	"github.com/tetherhq/tether/server/storetest"
)

func open(t testing.TB, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

func TestStore(t *testing.T) {
	pgtest.ServerURL(t) // skip (or fail under CI) at once when there is no server
	storetest.Run(t, func(t *testing.T) tether.Store {
		return open(t, pgtest.URL(t))
	})
}

// raw connects to the schema of url with pgx alone, to look behind the store.
func raw(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestMigrations(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url)
	ctx := t.Context()
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest := postgres.LatestSchemaVersion(); v != latest || v < 1 {
		t.Errorf("SchemaVersion = %d, want %d (and at least 1)", v, latest)
	}
	a := &tether.Agent{ID: "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d3e", Name: "kept"}
	if err := db.RegisterAgent(ctx, a, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	db.Close()

	count := func() (n int, last time.Time) {
		t.Helper()
		if err := raw(t, url).QueryRow(ctx, "SELECT count(*), max(applied_at) FROM schema_migrations").Scan(&n, &last); err != nil {
			t.Fatal(err)
		}
		return n, last
	}
	n1, last1 := count()
	if n1 != v {
		t.Errorf("schema_migrations has %d rows, want %d", n1, v)
	}
	// Opening an up-to-date database applies nothing and keeps the data.
	db = open(t, url)
	if _, err := db.Agent(ctx, a.ID); err != nil {
		t.Errorf("agent after reopening: %v", err)
	}
	if n2, last2 := count(); n2 != n1 || !last2.Equal(last1) {
		t.Errorf("reopening applied migrations: %d rows (last at %v), want %d (last at %v)", n2, last2, n1, last1)
	}
}

func TestMigrationsNewerSchema(t *testing.T) {
	url := pgtest.URL(t)
	open(t, url).Close()
	if _, err := raw(t, url).Exec(t.Context(), "INSERT INTO schema_migrations (version) VALUES (9999)"); err != nil {
		t.Fatal(err)
	}
	_, err := postgres.Open(t.Context(), url)
	if err == nil {
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "database schema version 9999 is newer than this server") ||
		!strings.Contains(err.Error(), "upgrade tether-server") {
		t.Errorf("error = %q, want it to name the version and say to upgrade", err)
	}
}

// TestMigrationsConcurrent opens a new database from several nodes at
// once: the advisory lock has each migration applied once, and every node
// starts.
func TestMigrationsConcurrent(t *testing.T) {
	url := pgtest.URL(t)
	const nodes = 4
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			db, err := postgres.Open(t.Context(), url)
			if err == nil {
				db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	var n int
	if err := raw(t, url).QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != postgres.LatestSchemaVersion() {
		t.Errorf("schema_migrations has %d rows, want %d", n, postgres.LatestSchemaVersion())
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := postgres.Open(ctx, "postgres://tether:secret-password@127.0.0.1:1/tether?connect_timeout=2")
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	if strings.Contains(err.Error(), "secret-password") {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error = %q, want it to name the server", err)
	}
}

func TestIsURL(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://u@h/db":   true,
		"postgresql://u@h/db": true,
		"":                    false,
		"/var/lib/tether.db":  false,
		"sqlite:///x":         false,
	} {
		if got := postgres.IsURL(s); got != want {
			t.Errorf("IsURL(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestTwoNodes runs two stores on one database, as two server nodes do:
// the guarded writes keep their promises across them.
func TestTwoNodes(t *testing.T) {
	url := pgtest.URL(t)
	dbs := []*postgres.DB{open(t, url), open(t, url)}
	ctx := t.Context()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	tok := &tether.Token{ID: "enroll", Name: "enroll", Role: tether.RoleRegistrar, SecretHash: []byte("hash"), MaxUses: 5, CreatedAt: now}
	if err := dbs[0].CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	var agents []*tether.Agent
	for i := range 8 {
		agents = append(agents, &tether.Agent{ID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", i), Name: "a"})
	}
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { errs[i] = dbs[i%2].RegisterAgent(ctx, a, "enroll", now) })
	}
	wg.Wait()
	ok := 0
	var enrolled *tether.Agent
	for i, err := range errs {
		switch tether.ErrorCode(err) {
		case "":
			ok++
			enrolled = agents[i]
		case tether.EGONE:
		default:
			t.Errorf("RegisterAgent: %v", err)
		}
	}
	if ok != 5 {
		t.Errorf("%d registrations succeeded, want 5", ok)
	}

	// The first admin token is created once, whichever node asks first.
	created := make([]bool, 6)
	for i := range created {
		wg.Go(func() {
			admin := &tether.Token{ID: fmt.Sprintf("admin-%d", i), Name: "admin", Role: tether.RoleAdmin, SecretHash: []byte("h")}
			var err error
			if created[i], err = dbs[i%2].CreateFirstAdmin(ctx, admin); err != nil {
				t.Errorf("CreateFirstAdmin: %v", err)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, c := range created {
		if c {
			n++
		}
	}
	admins, err := dbs[0].Tokens(ctx, tether.TokenFilter{Role: tether.RoleAdmin, IncludeRevoked: true})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(admins) != 1 {
		t.Errorf("%d nodes created the first admin token, %d are stored; want 1 and 1", n, len(admins))
	}

	// Orders expire once, whichever node sweeps.
	r := &tether.CommandRequest{ID: "r1", Target: tether.Target{Type: tether.TargetAgent, ID: enrolled.ID}, Action: tether.Action{Name: "x"}, CreatedAt: now}
	var orders []*tether.Order
	for i := range 100 {
		orders = append(orders, &tether.Order{ID: fmt.Sprintf("r1-%03d", i), AgentID: enrolled.ID,
			Action: r.Action, CreatedAt: now, TimeoutAt: now.Add(time.Minute)})
	}
	if err := dbs[1].CreateCommand(ctx, r, orders); err != nil {
		t.Fatal(err)
	}
	counts := make([]int, 4)
	for i := range counts {
		wg.Go(func() {
			n, err := dbs[i%2].ExpireOrders(ctx, now.Add(time.Hour))
			if err != nil {
				t.Error(err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	if sum := counts[0] + counts[1] + counts[2] + counts[3]; sum != len(orders) {
		t.Errorf("sweepers expired %v = %d orders, want %d", counts, sum, len(orders))
	}
}

// TestDeleteAgentRacesCommand deletes agents while commands are created
// for them: no order is left pending for an agent that is gone.
func TestDeleteAgentRacesCommand(t *testing.T) {
	url := pgtest.URL(t)
	dbs := []*postgres.DB{open(t, url), open(t, url)}
	ctx := t.Context()
	now := time.Now().UTC()
	const rounds = 30
	for i := range rounds {
		a := &tether.Agent{ID: fmt.Sprintf("%08x-0000-4000-8000-000000000001", i), Name: "a", Groups: []string{"g"}}
		if err := dbs[0].RegisterAgent(ctx, a, "", now); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := dbs[0].DeleteAgent(ctx, a.ID); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			r := &tether.CommandRequest{ID: fmt.Sprintf("r%d", i), Target: tether.Target{Type: tether.TargetAgent, ID: a.ID},
				Action: tether.Action{Name: "x"}, CreatedAt: now}
			err := dbs[1].CreateCommand(ctx, r, []*tether.Order{{ID: fmt.Sprintf("o%d", i), AgentID: a.ID, Action: r.Action}})
			if err != nil && tether.ErrorCode(err) != tether.ENOTFOUND {
				t.Error(err)
			}
		})
		wg.Go(func() {
			r := &tether.CommandRequest{ID: fmt.Sprintf("g%d", i), Target: tether.Target{Type: tether.TargetGroup, ID: "g"},
				Action: tether.Action{Name: "x"}, CreatedAt: now}
			_, err := dbs[1].CreateGroupCommand(ctx, r, tether.Order{})
			if err != nil && tether.ErrorCode(err) != tether.EINVALID {
				t.Error(err)
			}
		})
		wg.Wait()
	}
	left, _, err := dbs[0].Orders(ctx, tether.OrderFilter{Status: tether.OrderPending})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("%d orders pending for deleted agents", len(left))
	}
}

// TestNULInAgentText stores what agents send with a NUL character, which
// PostgreSQL's text cannot hold: it becomes U+FFFD, and the write succeeds.
func TestNULInAgentText(t *testing.T) {
	db := open(t, pgtest.URL(t))
	ctx := t.Context()
	now := time.Now().UTC()
	a := &tether.Agent{ID: "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d3e", Name: "a", Hostname: "h\x00st"}
	if err := db.RegisterAgent(ctx, a, "", now); err != nil {
		t.Fatal(err)
	}
	if a.Hostname != "h\uFFFDst" {
		t.Errorf("hostname stored as %q", a.Hostname)
	}
	if err := db.ApplyState(ctx, a.ID, 1, []tether.Event{{Module: "m", Key: "k\x00", Op: tether.StateUpsert, Payload: []byte(`{}`)}}, now); err != nil {
		t.Fatal(err)
	}
	r := &tether.CommandRequest{ID: "r", Target: tether.Target{Type: tether.TargetAgent, ID: a.ID}, Action: tether.Action{Name: "x"}}
	if err := db.CreateCommand(ctx, r, []*tether.Order{{ID: "o", AgentID: a.ID, Action: r.Action}}); err != nil {
		t.Fatal(err)
	}
	o, err := db.FinishOrder(ctx, a.ID, "o", tether.OrderFailure, tether.Result{Code: 1 << 40, Message: "out\x00put"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if o.Result.Message != "out\uFFFDput" || o.Result.Code != 1<<40 {
		t.Errorf("result stored as %d %q", o.Result.Code, o.Result.Message)
	}
}

// registerGroup registers n agents in group g.
func registerGroup(b *testing.B, db *postgres.DB, n int, g string) []string {
	b.Helper()
	ids := make([]string, n)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-000000000000", i)
		if err := db.RegisterAgent(b.Context(), &tether.Agent{ID: ids[i], Name: "a", Groups: []string{g}}, "", now); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

// BenchmarkCreateGroupCommand expands a group of 10,000 agents.
func BenchmarkCreateGroupCommand(b *testing.B) {
	db := open(b, pgtest.URL(b))
	const members = 10000
	registerGroup(b, db, members, "g")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	b.ResetTimer()
	for i := range b.N {
		r := &tether.CommandRequest{ID: fmt.Sprintf("r%d", i), Target: tether.Target{Type: tether.TargetGroup, ID: "g"},
			Action: tether.Action{Name: "restart"}, CreatedAt: now}
		orders, err := db.CreateGroupCommand(b.Context(), r, tether.Order{Action: r.Action, CreatedAt: now, TimeoutAt: now.Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		if len(orders) != members {
			b.Fatalf("%d orders, want %d", len(orders), members)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*members), "µs/order")
}

// BenchmarkDeliverOrders serves 1,000 polls at once, each taking one order
// and acknowledging the one before: a group command fanned out.
func BenchmarkDeliverOrders(b *testing.B) {
	db := open(b, pgtest.URL(b))
	const polls = 1000
	ids := registerGroup(b, db, polls, "g")
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	received := make([][]string, polls)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		r := &tether.CommandRequest{ID: fmt.Sprintf("r%d", i), Target: tether.Target{Type: tether.TargetGroup, ID: "g"},
			Action: tether.Action{Name: "restart"}, CreatedAt: now}
		if _, err := db.CreateGroupCommand(b.Context(), r, tether.Order{Action: r.Action, TimeoutAt: now.Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
		ds := make([]tether.Delivery, polls)
		for j, id := range ids {
			ds[j] = tether.Delivery{AgentID: id, Received: received[j], Limit: 10}
		}
		b.StartTimer()
		got, err := db.DeliverOrders(b.Context(), ds, now)
		if err != nil {
			b.Fatal(err)
		}
		for j, os := range got {
			if len(os) != 1 {
				b.Fatalf("poll %d got %d orders, want 1", j, len(os))
			}
			received[j] = []string{os[0].ID}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*polls), "µs/poll")
}

// TestOpenMissingSchema opens a URL whose search_path names no schema: the
// error says what to do.
func TestOpenMissingSchema(t *testing.T) {
	url := strings.Replace(pgtest.URL(t), "search_path=tether_test_", "search_path=missing_", 1)
	_, err := postgres.Open(t.Context(), url)
	if err == nil || !strings.Contains(err.Error(), "create the schema that search_path names first") {
		t.Fatalf("Open with a missing schema: %v", err)
	}
}
