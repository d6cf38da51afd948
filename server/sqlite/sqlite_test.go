package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sqlite"
	"github.com/tetherhq/tether/server/storetest"
)

func open(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(path)
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
	storetest.Run(t, func(t *testing.T) tether.Store {
		return open(t, filepath.Join(t.TempDir(), "tether.db"))
	})
}

// rawDB opens the file with the driver alone, to look behind the store.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenCreatesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.db")
	db := open(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if err := db.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?#%", "x?y.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	open(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

func TestOpenMissingDir(t *testing.T) {
	_, err := sqlite.Open(filepath.Join(t.TempDir(), "missing", "tether.db"))
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}

func TestWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	open(t, path)
	var mode string
	if err := rawDB(t, path).QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest := sqlite.LatestSchemaVersion(); v != latest || v < 1 {
		t.Errorf("SchemaVersion = %d, want %d (and at least 1)", v, latest)
	}
	a := &tether.Agent{ID: "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d3e", Name: "kept"}
	if err := db.RegisterAgent(ctx, a, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	count := func() (n int, last int64) {
		t.Helper()
		raw := rawDB(t, path)
		if err := raw.QueryRow("SELECT count(*), max(applied_at) FROM schema_migrations").Scan(&n, &last); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		return n, last
	}
	n1, last1 := count()
	if n1 != v {
		t.Errorf("schema_migrations has %d rows, want %d", n1, v)
	}

	// Reopening an up-to-date database applies nothing and keeps the data.
	db = open(t, path)
	if _, err := db.Agent(ctx, a.ID); err != nil {
		t.Errorf("agent after reopening: %v", err)
	}
	db.Close()
	if n2, last2 := count(); n2 != n1 || last2 != last1 {
		t.Errorf("reopening applied migrations: %d rows (last at %d), want %d (last at %d)", n2, last2, n1, last1)
	}
}

func TestMigrationsNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw := rawDB(t, path)
	if _, err := raw.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)"); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	_, err = sqlite.Open(path)
	if err == nil {
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "database schema version 9999 is newer than this server") ||
		!strings.Contains(err.Error(), "upgrade tether-server") {
		t.Errorf("error = %q, want it to name the version and say to upgrade", err)
	}
}

// TestTwoHandles runs two stores on one file, as two processes would (for
// example a server and an offline admin command): writes from both wait for
// each other instead of failing with SQLITE_BUSY.
func TestTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	dbs := []*sqlite.DB{open(t, path), open(t, path)}
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	tok := &tether.Token{ID: "enroll", Name: "enroll", Role: tether.RoleRegistrar, SecretHash: []byte("hash"), MaxUses: 5, CreatedAt: now}
	if err := dbs[0].CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	var agents []*tether.Agent
	for i := range 6 {
		a := &tether.Agent{ID: strings.Repeat(string(rune('a'+i)), 8) + "-0000-4000-8000-000000000000", Name: "a"}
		agents = append(agents, a)
	}
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { errs[i] = dbs[i%2].RegisterAgent(ctx, a, "enroll", now) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch tether.ErrorCode(err) {
		case "":
			ok++
		case tether.EGONE:
		default:
			t.Errorf("RegisterAgent: %v", err)
		}
	}
	if ok != 5 {
		t.Errorf("%d registrations succeeded, want 5", ok)
	}

	// Orders expire once, whichever handle sweeps.
	r := &tether.CommandRequest{ID: "r1", Target: tether.Target{Type: tether.TargetServer}, Action: tether.Action{Name: "x"}, CreatedAt: now}
	var enrolled *tether.Agent
	for i, a := range agents {
		if errs[i] == nil {
			enrolled = a
			break
		}
	}
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

// TestMigrateFromVersion1 upgrades a database made by the first schema: its
// orders and group configurations survive the rebuild of orders, and the
// orders lose their cascade from agents.
func TestMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	schema1, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	raw := rawDB(t, path)
	const agentID = "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d3e"
	for _, q := range []string{
		string(schema1),
		`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, 1)`,
		`INSERT INTO agents (id, name, group_list, enrolled_at, updated_at) VALUES ('` + agentID + `', 'a', '["web"]', 1, 1)`,
		`INSERT INTO agent_groups VALUES ('web', '` + agentID + `')`,
		`INSERT INTO command_requests (id, target_type, target_id, action_name, created_at) VALUES ('r1', 'agent', '` + agentID + `', 'restart', 5)`,
		`INSERT INTO orders (seq, id, request_id, agent_id, action_name, status, created_at, timeout_at, attempts)
			VALUES (7, 'o1', 'r1', '` + agentID + `', 'restart', 'sent', 5, 9000000000000000000, 1)`,
		`INSERT INTO group_configs VALUES ('web', '{"log_level":"debug"}', 3)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db := open(t, path)
	ctx := t.Context()
	if v, err := db.SchemaVersion(ctx); err != nil || v != sqlite.LatestSchemaVersion() {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, sqlite.LatestSchemaVersion())
	}
	o, err := db.Order(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if o.RequestID != "r1" || o.AgentID != agentID || o.Status != tether.OrderSent || o.Attempts != 1 ||
		!o.CreatedAt.Equal(time.Unix(0, 5)) {
		t.Errorf("migrated order = %+v", o)
	}
	g, err := db.Group(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if string(g.ConfigJSON) != `{"log_level":"debug"}` || g.Members != 1 || !g.UpdatedAt.Equal(time.Unix(0, 3)) {
		t.Errorf("migrated group = %+v", g)
	}
	cfgs, err := db.GroupConfigs(ctx, []string{"web"})
	if err != nil || len(cfgs) != 1 {
		t.Fatalf("GroupConfigs = %v, %v", cfgs, err)
	}

	// The orders of a deleted agent stay.
	if err := db.DeleteAgent(ctx, agentID); err != nil {
		t.Fatal(err)
	}
	o, err = db.Order(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != tether.OrderFailure || o.Result.Message != "agent deleted" {
		t.Errorf("order of the deleted agent: status %s, message %q", o.Status, o.Result.Message)
	}
	// The agent can enroll again and get new orders.
	a := &tether.Agent{ID: agentID, Name: "a"}
	if err := db.RegisterAgent(ctx, a, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	r := &tether.CommandRequest{ID: "r2", Target: tether.Target{Type: tether.TargetAgent, ID: agentID}, Action: tether.Action{Name: "x"}}
	if err := db.CreateCommand(ctx, r, []*tether.Order{{ID: "o2", AgentID: agentID, Action: r.Action}}); err != nil {
		t.Fatal(err)
	}
	var fks int
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM pragma_foreign_key_list('orders') WHERE "table" = 'agents'`).Scan(&fks); err != nil {
		t.Fatal(err)
	}
	if fks != 0 {
		t.Errorf("orders has %d foreign keys on agents, want none", fks)
	}
}

// TestCreateGroupCommandRollback makes the insertion of one order in the
// middle of a group expansion fail: nothing of the request is stored.
func TestCreateGroupCommandRollback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	db := open(t, path)
	ctx := t.Context()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 100 {
		id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", i)
		ids = append(ids, id)
		if err := db.RegisterAgent(ctx, &tether.Agent{ID: id, Name: "a", Groups: []string{"g"}}, "", now); err != nil {
			t.Fatal(err)
		}
	}
	raw := rawDB(t, path)
	_, err := raw.Exec(`CREATE TRIGGER fail_one BEFORE INSERT ON orders WHEN NEW.agent_id = '` + ids[50] + `'
		BEGIN SELECT RAISE(ABORT, 'injected failure'); END`)
	if err != nil {
		t.Fatal(err)
	}

	r := &tether.CommandRequest{ID: "r1", Target: tether.Target{Type: tether.TargetGroup, ID: "g"},
		Action: tether.Action{Name: "restart"}, CreatedAt: now}
	tmpl := tether.Order{Action: r.Action, CreatedAt: now, TimeoutAt: now.Add(time.Hour)}
	orders, err := db.CreateGroupCommand(ctx, r, tmpl)
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("CreateGroupCommand = %d orders, %v; want the injected failure", len(orders), err)
	}
	var requests, stored int
	if err := raw.QueryRow(`SELECT (SELECT count(*) FROM command_requests), (SELECT count(*) FROM orders)`).Scan(&requests, &stored); err != nil {
		t.Fatal(err)
	}
	if requests != 0 || stored != 0 {
		t.Errorf("after a failed expansion: %d requests and %d orders stored, want none", requests, stored)
	}

	if _, err := raw.Exec(`DROP TRIGGER fail_one`); err != nil {
		t.Fatal(err)
	}
	orders, err = db.CreateGroupCommand(ctx, r, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) != len(ids) {
		t.Errorf("expansion after the failure: %d orders, want %d", len(orders), len(ids))
	}
}

// BenchmarkCreateGroupCommand expands a group of 10,000 agents.
func BenchmarkCreateGroupCommand(b *testing.B) {
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "tether.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const members = 10000
	for i := range members {
		a := &tether.Agent{ID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", i), Name: "a", Groups: []string{"g"}}
		if err := db.RegisterAgent(ctx, a, "", now); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		r := &tether.CommandRequest{ID: fmt.Sprintf("r%d", i), Target: tether.Target{Type: tether.TargetGroup, ID: "g"},
			Action: tether.Action{Name: "restart"}, CreatedAt: now}
		orders, err := db.CreateGroupCommand(ctx, r, tether.Order{Action: r.Action, CreatedAt: now, TimeoutAt: now.Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		if len(orders) != members {
			b.Fatalf("%d orders, want %d", len(orders), members)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*members), "µs/order")
}
