package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sqlite"
)

// TestMigrateTokenKinds upgrades a database of schema version 2, whose
// tokens have no kind: enrollment tokens become service tokens, the others
// (the bootstrap admin token among them) user tokens.
func TestMigrateTokenKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	raw := rawDB(t, path)
	for _, name := range []string{"0001_init.sql", "0002_groups_orders.sql"} {
		schema, err := os.ReadFile(filepath.Join("migrations", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(string(schema)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	ids := map[tether.Role]string{
		tether.RoleAdmin:     "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d31",
		tether.RoleOperator:  "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d32",
		tether.RoleViewer:    "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d33",
		tether.RoleRegistrar: "0b7e3c8e-8d3f-4c7e-9f5c-0e6f4b1c2d34",
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, 1), (2, 2)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for role, id := range ids {
		if _, err := raw.Exec(`INSERT INTO tokens (id, name, role, secret_hash, created_at) VALUES (?, ?, ?, x'00', 1)`,
			id, string(role), string(role)); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	db := open(t, path)
	ctx := t.Context()
	if v, err := db.SchemaVersion(ctx); err != nil || v != sqlite.LatestSchemaVersion() {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, sqlite.LatestSchemaVersion())
	}
	for role, id := range ids {
		tok, err := db.Token(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := tether.DefaultKind(role); tok.Kind != want {
			t.Errorf("migrated %s token: kind %q, want %q", role, tok.Kind, want)
		}
	}
	// The column refuses a kind the domain does not know.
	if _, err := rawDB(t, path).Exec(`UPDATE tokens SET kind = 'robot' WHERE id = ?`, ids[tether.RoleViewer]); err == nil {
		t.Errorf("the kind column accepts 'robot'")
	}
}
