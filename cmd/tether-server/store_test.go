package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/postgres/pgtest"
)

// stopped holds the nodes a test shut down itself, which its cleanup
// leaves alone.
var stopped sync.Map

// stopNode shuts n down before the end of the test.
func stopNode(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped.Store(n, true)
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// startNodes starts a node per data directory, all at once, on the store
// ("": each on SQLite in its directory), and shuts them down at the end of
// the test.
func startNodes(t *testing.T, store string, dirs ...string) []*Node {
	t.Helper()
	nodes := make([]*Node, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Go(func() {
			cfg := defaultConfig()
			cfg.DataDir, cfg.Store = dir, store
			cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.PollWait = Duration(2 * time.Second)
			if err := cfg.validate(); err != nil {
				errs[i] = err
				return
			}
			log := slog.New(slog.DiscardHandler)
			if testing.Verbose() {
				log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", i)
			}
			nodes[i], errs[i] = startNode(context.Background(), cfg, log)
		})
	}
	wg.Wait()
	for i, n := range nodes {
		if n == nil {
			continue
		}
		t.Cleanup(func() {
			if _, ok := stopped.Load(n); ok {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := n.Shutdown(ctx); err != nil {
				t.Errorf("node %d shutdown: %v", i, err)
			}
		})
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// jwtKID returns the kid of a JWT's header.
func jwtKID(t *testing.T, token string) string {
	t.Helper()
	head, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	return h.KID
}

// TestNodesShareOneStore starts two nodes at once on one new PostgreSQL
// store: they share the CA, the signing keys (a token one issues, the other
// takes, through a key rotation too), the release-signing key and one
// bootstrap admin token.
func TestNodesShareOneStore(t *testing.T) {
	store := pgtest.URL(t)
	dirs := []string{t.TempDir(), t.TempDir()}
	nodes := startNodes(t, store, dirs...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// One node created the admin token, and has it in its data directory.
	var first, other *Node
	for _, n := range nodes {
		if n.FirstStart {
			if first != nil {
				t.Fatal("both nodes created a bootstrap admin token")
			}
			first = n
		} else {
			other = n
		}
	}
	if first == nil || first.AdminToken == "" {
		t.Fatalf("no node created the bootstrap admin token: %+v", nodes)
	}
	if other.AdminToken != "" {
		t.Errorf("the other node has an admin token %q", other.AdminToken)
	}
	if _, err := os.Stat(filepath.Join(other.cfg.DataDir, adminTokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the other node's admin.token: %v, want none", err)
	}
	// Same CA: written to both data directories, and each node's
	// certificate verifies with the other's CA file.
	ca0, err0 := os.ReadFile(nodes[0].CACertFile)
	ca1, err1 := os.ReadFile(nodes[1].CACertFile)
	if err0 != nil || err1 != nil || !bytes.Equal(ca0, ca1) {
		t.Fatalf("CA certificates differ (%v, %v)", err0, err1)
	}
	for _, dir := range dirs {
		for _, secret := range []string{"tls/ca.key", "release.key"} {
			if _, err := os.Stat(filepath.Join(dir, secret)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s in a data directory: %v; want it in the store only", secret, err)
			}
		}
		if st, err := os.Stat(filepath.Join(dir, "release.pub")); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("release.pub: %v %v; want the public key, mode 0644", st, err)
		}
	}
	// The admin token works on the other node, through its TLS listener.
	c, err := api.New(api.Options{Server: other.APIURL, Token: first.AdminToken, CACertFile: first.CACertFile})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := c.ListTokens(ctx, true)
	if err != nil {
		t.Fatalf("admin token on the other node: %v", err)
	}
	if len(toks.Items) != 1 || toks.Items[0].Role != "admin" {
		t.Errorf("tokens: %+v; want the one bootstrap admin token", toks.Items)
	}

	// An agent enrolls through the other node: the release key it pins is
	// the one both nodes sign with.
	keyOf := func(n *Node) string {
		t.Helper()
		c, err := api.New(api.Options{Server: n.APIURL, Token: first.AdminToken, CACertFile: n.CACertFile})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.RegisterAgent(ctx, api.RegisterAgentRequest{ID: uuid.NewString()})
		if err != nil {
			t.Fatal(err)
		}
		return resp.ReleasePublicKey
	}
	if k0, k1 := keyOf(nodes[0]), keyOf(nodes[1]); k0 == "" || k0 != k1 {
		t.Errorf("release keys %q and %q, want one", k0, k1)
	}

	// An agent enrolls through the other node; a token issued by one node
	// is taken by the other.
	enroll, err := c.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	ec, err := api.New(api.Options{Server: other.APIURL, Token: enroll.Token, CACertFile: other.CACertFile})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	reg, err := ec.RegisterAgent(ctx, api.RegisterAgentRequest{ID: id, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	key := reg.AgentKey
	hc := httpsClient(t, first)
	authenticate := func(n *Node) string {
		t.Helper()
		st, out := connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
		if st != 200 || out["token"] == nil {
			t.Fatalf("Authenticate: %d %v", st, out)
		}
		return out["token"].(string)
	}
	poll := func(n *Node, jwt, what string) {
		t.Helper()
		if st, out := connectJSON(t, hc, n, "PollCommands", jwt, `{"wait":"0.1s"}`); st != 200 {
			t.Errorf("%s: PollCommands: %d %v", what, st, out)
		}
	}
	old := authenticate(first)
	poll(other, old, "a token of the first node on the other")

	// rotate-signing-key runs on one node: its new tokens carry the new
	// kid, and the other node takes them; tokens of the old key stay valid.
	kid, err := first.keys.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kid == jwtKID(t, old) {
		t.Fatal("rotation kept the kid")
	}
	rotated := authenticate(first)
	if got := jwtKID(t, rotated); got != kid {
		t.Errorf("token after the rotation has kid %q, want %q", got, kid)
	}
	poll(other, rotated, "a token of the new key on the other node")
	poll(other, old, "a token of the old key on the other node")
	poll(first, old, "a token of the old key on its node")
	// Once the other node reads the keys again (every 30 s), it signs with
	// the new key too.
	if err := other.keys.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := jwtKID(t, authenticate(other)); got != kid {
		t.Errorf("the other node signs with kid %q after a refresh, want %q", got, kid)
	}

	// A node restarted on its data directory keeps the shared identity.
	stopNode(t, other)
	again := startNodes(t, store, other.cfg.DataDir)[0]
	if again.FirstStart {
		t.Error("a restarted node created an admin token")
	}
	if ca, _ := os.ReadFile(again.CACertFile); !bytes.Equal(ca, ca0) {
		t.Error("a restarted node changed the CA")
	}
	poll(again, rotated, "a token on the restarted node")
}

// TestNodeRefusesForeignCA starts a node whose data directory holds a CA
// of its own on a store that holds another: it refuses, saying what to do.
func TestNodeRefusesForeignCA(t *testing.T) {
	store := pgtest.URL(t)
	startNodes(t, store, t.TempDir())
	dir := t.TempDir()
	stopNode(t, startNodes(t, "", dir)[0]) // SQLite: a CA of its own
	cfg := defaultConfig()
	cfg.DataDir, cfg.Store = dir, store
	cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	_, err := startNode(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "is not the CA of the store's other nodes") {
		t.Fatalf("start with a foreign CA: %v", err)
	}
}

// TestNodeMovesToSharedStore starts a node on SQLite, then on a new
// PostgreSQL store with the same data directory: its CA and release key
// move to the store, so the agents that trust them carry on.
func TestNodeMovesToSharedStore(t *testing.T) {
	dir := t.TempDir()
	lone := startNodes(t, "", dir)[0]
	ca1, _ := os.ReadFile(lone.CACertFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	register := func(n *Node, token string) string {
		t.Helper()
		c, err := api.New(api.Options{Server: n.APIURL, Token: token, CACertFile: n.CACertFile})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.RegisterAgent(ctx, api.RegisterAgentRequest{ID: uuid.NewString()})
		if err != nil {
			t.Fatal(err)
		}
		return resp.ReleasePublicKey
	}
	key1 := register(lone, lone.AdminToken)
	stopNode(t, lone)
	// A single node keeps the CA key and the release key in files: they
	// move to the new store at the first start on it.
	store := pgtest.URL(t)
	moved := startNodes(t, store, dir)[0]
	ca2, _ := os.ReadFile(moved.CACertFile)
	if !bytes.Equal(ca1, ca2) {
		t.Error("the CA changed when the node moved to PostgreSQL")
	}
	// The new store has no admin token: the node made one.
	if !moved.FirstStart || moved.AdminToken == "" {
		t.Fatalf("no bootstrap admin token on the new store")
	}
	if key2 := register(moved, moved.AdminToken); key2 != key1 {
		t.Errorf("release key %q on the new store, %q before", key2, key1)
	}
	// A second node on the new store gets the same CA.
	second := startNodes(t, store, t.TempDir())[0]
	if ca3, _ := os.ReadFile(second.CACertFile); !bytes.Equal(ca1, ca3) {
		t.Error("a second node has another CA")
	}
}

// TestMigrateCommand runs tether-server migrate on each store: it creates
// the schema and says which version the store is at.
func TestMigrateCommand(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"sqlite", []string{"--data-dir", t.TempDir()}, "SQLite "},
		{"postgres", []string{"--store", pgtest.URL(t)}, "PostgreSQL postgres://"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // a second run has nothing to do
				var out, errb strings.Builder
				if code := Main(t.Context(), append([]string{"migrate"}, tt.args...), &out, &errb); code != 0 {
					t.Fatalf("migrate: exit %d: %s", code, errb.String())
				}
				if !strings.HasPrefix(out.String(), tt.want) || !strings.Contains(out.String(), "schema version") {
					t.Errorf("migrate printed %q", out.String())
				}
			}
		})
	}
	var out, errb strings.Builder
	if code := Main(t.Context(), []string{"migrate", "--store", "postgres://tether:hunter2@127.0.0.1:1/x?connect_timeout=2"}, &out, &errb); code != 1 {
		t.Errorf("migrate on an unreachable store: exit %d, want 1", code)
	}
	if strings.Contains(errb.String(), "hunter2") || !strings.Contains(errb.String(), "connect to PostgreSQL") {
		t.Errorf("migrate on an unreachable store: %q", errb.String())
	}
}
