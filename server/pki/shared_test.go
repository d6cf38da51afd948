package pki_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tetherhq/tether/server/pki"
	"github.com/tetherhq/tether/server/sqlite"
)

func openStore(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestSharedCA has nodes start at once on one store: one CA, in the store,
// its certificate in every node's directory and its key in none.
func TestSharedCA(t *testing.T) {
	store := openStore(t)
	const nodes = 6
	dirs := make([]string, nodes)
	cas := make([]*pki.CA, nodes)
	var wg sync.WaitGroup
	for i := range dirs {
		dirs[i] = filepath.Join(t.TempDir(), "tls")
		wg.Go(func() {
			ca, err := pki.EnsureSharedCA(t.Context(), store, dirs[i], "test CA")
			if err != nil {
				t.Error(err)
			}
			cas[i] = ca
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, ca := range cas {
		if !ca.Cert.Equal(cas[0].Cert) {
			t.Errorf("node %d has another CA", i)
		}
		st, err := os.Stat(filepath.Join(dirs[i], pki.CACertFile))
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("node %d's ca.crt: %v %v", i, st, err)
		}
		if _, err := os.Stat(filepath.Join(dirs[i], pki.CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("node %d's ca.key: %v, want none", i, err)
		}
		// Each node issues its own certificate from it.
		if _, err := pki.EnsureServerCert(ca, dirs[i], pki.HostNames()); err != nil {
			t.Errorf("node %d's server certificate: %v", i, err)
		}
	}
	again, err := pki.EnsureSharedCA(t.Context(), store, dirs[0], "test CA")
	if err != nil || !again.Cert.Equal(cas[0].Cert) {
		t.Errorf("second start: %v, or another CA", err)
	}
}

// TestSharedCAFromFiles moves the CA of a node's directory to a store that
// holds none; a directory with another CA is refused.
func TestSharedCAFromFiles(t *testing.T) {
	store := openStore(t)
	dir := filepath.Join(t.TempDir(), "tls")
	local, err := pki.EnsureCA(dir, "local CA")
	if err != nil {
		t.Fatal(err)
	}
	shared, err := pki.EnsureSharedCA(t.Context(), store, dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if !shared.Cert.Equal(local.Cert) {
		t.Fatal("the node's CA did not move to the store")
	}
	other, err := pki.EnsureSharedCA(t.Context(), store, filepath.Join(t.TempDir(), "tls"), "test CA")
	if err != nil || !other.Cert.Equal(local.Cert) {
		t.Fatalf("another node: %v, or another CA", err)
	}

	foreign := filepath.Join(t.TempDir(), "tls")
	if _, err := pki.EnsureCA(foreign, "foreign CA"); err != nil {
		t.Fatal(err)
	}
	_, err = pki.EnsureSharedCA(t.Context(), store, foreign, "test CA")
	if err == nil || !strings.Contains(err.Error(), "is not the CA of the store's other nodes") {
		t.Fatalf("a directory with another CA: %v", err)
	}
}
