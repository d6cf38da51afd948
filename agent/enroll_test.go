package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/api"
)

// fakeMgmt answers POST /api/v1/agents like the management API.
type fakeMgmt struct {
	mu   sync.Mutex
	keys map[string]string // agent id → key
	reqs []api.RegisterAgentRequest
	// releaseKey is the release_public_key answered.
	releaseKey string
}

func (f *fakeMgmt) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: code, Message: msg}})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/api/v1/agents" {
		fail(404, "not_found", "no such endpoint")
		return
	}
	if r.Header.Get("Authorization") != "Bearer good-token" {
		fail(401, "unauthorized", "invalid or expired enrollment token")
		return
	}
	var req api.RegisterAgentRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(400, "invalid", "bad body")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	if key, ok := f.keys[req.ID]; ok && key != req.CurrentKey {
		fail(409, "conflict", "agent id already registered: current_key does not match")
		return
	}
	key := "key-" + uuid.NewString()
	f.keys[req.ID] = key
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(201)
	json.NewEncoder(w).Encode(api.RegisterAgentResponse{
		Agent:            api.Agent{ID: req.ID, Name: req.Name, Status: "enrolled", EnrolledAt: time.Now()},
		AgentKey:         key,
		CommsURLs:        []string{"https://comms.example:7443"},
		ReleasePublicKey: f.releaseKey,
	})
}

func startMgmt(t *testing.T) (*fakeMgmt, *httptest.Server, string) {
	t.Helper()
	f := &fakeMgmt{keys: map[string]string{}}
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return f, srv, caFile
}

func TestEnrollWritesIdentityAndKeepsID(t *testing.T) {
	f, srv, caFile := startMgmt(t)
	releasePub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.releaseKey = base64.StdEncoding.EncodeToString(releasePub)
	dir := filepath.Join(t.TempDir(), "data")
	opts := agent.EnrollOptions{Server: srv.URL, Token: "good-token", CACertFile: caFile, DataDir: dir, Name: "web-1", Version: "1.0.0"}
	id1, err := agent.Enroll(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(id1.AgentID); err != nil || id1.AgentID != strings.ToLower(id1.AgentID) {
		t.Fatalf("agent id %q is not a lowercase UUID", id1.AgentID)
	}
	fi, err := os.Stat(filepath.Join(dir, agent.IdentityFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity.json: %v, mode %v", err, fi.Mode())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode %v", di.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, agent.ConfigFile)); !os.IsNotExist(err) {
		t.Fatal("enroll wrote agent.yaml")
	}
	ca, _ := os.ReadFile(filepath.Join(dir, agent.CAFile))
	want, _ := os.ReadFile(caFile)
	if string(ca) != string(want) {
		t.Fatal("ca.crt is not a copy of the CA file")
	}
	loaded, err := agent.LoadIdentity(dir)
	if err != nil || loaded.AgentID != id1.AgentID || loaded.AgentKey != id1.AgentKey || loaded.Name != "web-1" ||
		loaded.Server != srv.URL || len(loaded.CommsURLs) != 1 || loaded.CommsURLs[0] != "https://comms.example:7443" || loaded.EnrolledAt.IsZero() {
		t.Fatalf("identity = %+v, %v", loaded, err)
	}
	// The release key is pinned with the identity.
	if pub, err := loaded.ReleasePublicKey(); err != nil || !pub.Equal(releasePub) {
		t.Fatalf("release key = %x, %v; want %x", pub, err, releasePub)
	}
	r := f.reqs[0]
	if r.CurrentKey != "" || r.Hostname == "" || !strings.HasPrefix(r.OS, "linux") || r.Arch == "" || r.Version != "1.0.0" {
		t.Fatalf("register request = %+v", r)
	}

	// Re-enroll: same id, proven with the current key; --comms-url wins.
	opts.CommsURLs = []string{"https://10.0.0.1:7443", "https://10.0.0.2:7443"}
	id2, err := agent.Enroll(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if id2.AgentID != id1.AgentID || f.reqs[1].CurrentKey != id1.AgentKey || id2.AgentKey == id1.AgentKey {
		t.Fatalf("re-enroll: id %s→%s, current key %q", id1.AgentID, id2.AgentID, f.reqs[1].CurrentKey)
	}
	if loaded, _ := agent.LoadIdentity(dir); loaded.AgentKey != id2.AgentKey || len(loaded.CommsURLs) != 2 || loaded.CommsURLs[1] != "https://10.0.0.2:7443" {
		t.Fatalf("identity after re-enroll = %+v", loaded)
	}
}

func TestEnrollErrorsAreOneLine(t *testing.T) {
	_, srv, caFile := startMgmt(t)
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(otherCA, selfSignedCA(t), 0o644)
	other := httptest.NewTLSServer(http.NotFoundHandler())
	other.Close()
	closed := other.URL

	tests := []struct {
		name string
		opts agent.EnrollOptions
		want string
	}{
		{"bad token", agent.EnrollOptions{Server: srv.URL, Token: "bad", CACertFile: caFile}, "invalid or expired enrollment token"},
		{"wrong CA", agent.EnrollOptions{Server: srv.URL, Token: "good-token", CACertFile: otherCA}, "not signed by the given CA"},
		{"unreachable", agent.EnrollOptions{Server: closed, Token: "good-token", CACertFile: caFile}, "cannot reach"},
		{"missing CA file", agent.EnrollOptions{Server: srv.URL, Token: "good-token", CACertFile: "/nonexistent/ca.pem"}, "read CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.DataDir = t.TempDir()
			_, err := agent.Enroll(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(tt.opts.DataDir, agent.IdentityFile)); !os.IsNotExist(err) {
				t.Fatal("identity written after a failed enrollment")
			}
		})
	}
}

func TestEnrollReleaseKey(t *testing.T) {
	f, srv, caFile := startMgmt(t)
	opts := func() agent.EnrollOptions {
		return agent.EnrollOptions{Server: srv.URL, Token: "good-token", CACertFile: caFile, DataDir: t.TempDir()}
	}
	// A server that stores no files gives no key: enrollment works, and
	// the identity says there is none.
	id, err := agent.Enroll(context.Background(), opts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.ReleasePublicKey(); err == nil || !strings.Contains(err.Error(), "no release key") {
		t.Errorf("no key: %v", err)
	}
	// A key that is not 32 bytes of base64 fails enrollment.
	f.releaseKey = base64.StdEncoding.EncodeToString([]byte("short"))
	o := opts()
	if _, err := agent.Enroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "invalid release key") {
		t.Errorf("bad key: %v, want an error", err)
	}
	if _, err := os.Stat(filepath.Join(o.DataDir, agent.IdentityFile)); !os.IsNotExist(err) {
		t.Error("identity written with a bad release key")
	}
}

// selfSignedCA returns the PEM of a fresh CA certificate.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
