package files_test

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tetherhq/tether/server/files"
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

// TestSharedKey has nodes start at once on one store: one release-signing
// key, in the store, its public key in every node's directory.
func TestSharedKey(t *testing.T) {
	store := openStore(t)
	const nodes = 6
	dirs := make([]string, nodes)
	pubs := make([]string, nodes)
	var wg sync.WaitGroup
	for i := range dirs {
		dirs[i] = t.TempDir()
		wg.Go(func() {
			key, err := files.EnsureSharedKey(t.Context(), store, dirs[i])
			if err != nil {
				t.Error(err)
				return
			}
			pubs[i] = files.EncodePublicKey(key.Public().(ed25519.PublicKey))
		})
	}
	wg.Wait()
	for i, dir := range dirs {
		if pubs[i] == "" || pubs[i] != pubs[0] {
			t.Errorf("node %d has key %q, node 0 %q", i, pubs[i], pubs[0])
		}
		if _, err := os.Stat(filepath.Join(dir, files.KeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("node %d's release.key: %v, want none", i, err)
		}
		if st, err := os.Stat(filepath.Join(dir, files.PublicKeyFile)); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("node %d's release.pub: %v %v", i, st, err)
		}
	}
}

// TestSharedKeyFromFile moves the key of a node's directory to a store that
// holds none; a directory with another key is refused.
func TestSharedKeyFromFile(t *testing.T) {
	store := openStore(t)
	dir := t.TempDir()
	local, err := files.EnsureKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := files.EnsureSharedKey(t.Context(), store, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !shared.Equal(local) {
		t.Fatal("the node's key did not move to the store")
	}
	if other, err := files.EnsureSharedKey(t.Context(), store, t.TempDir()); err != nil || !other.Equal(local) {
		t.Fatalf("another node: %v, or another key", err)
	}
	foreign := t.TempDir()
	if _, err := files.EnsureKey(foreign); err != nil {
		t.Fatal(err)
	}
	_, err = files.EnsureSharedKey(t.Context(), store, foreign)
	if err == nil || !strings.Contains(err.Error(), "is not the release-signing key of the store's other nodes") {
		t.Fatalf("a directory with another key: %v", err)
	}
}
