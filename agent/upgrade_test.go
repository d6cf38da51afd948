package agent_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
)

// Stand-ins for agent binaries: they answer the start check (`run
// --upgrade-check`) like the real one, or fail it.
const (
	binV1     = "#!/bin/sh\necho '{\"version\":\"1.0.0\"}'\n"
	binV2     = "#!/bin/sh\necho '{\"version\":\"2.0.0\"}'\n"
	binBroken = "#!/bin/sh\necho 'tether-agent: cannot start' >&2\nexit 1\n"
)

// upgradeEnv is an enrolled data directory, a comms server that also
// serves files, a release key and an "installed" agent binary.
type upgradeEnv struct {
	f       *fakeComms
	dir     string // data directory
	exe     string // the agent's executable
	url     string // comms URL
	pub     ed25519.PublicKey
	priv    ed25519.PrivateKey
	client  *client.Client
	mu      sync.Mutex
	files   map[string][]byte // by the SHA-256 they are served under
	ranges  []string
	servers *httptest.Server
}

func newUpgradeEnv(t *testing.T) *upgradeEnv {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the stand-in binaries are shell scripts")
	}
	e := &upgradeEnv{f: newFakeComms(), files: map[string][]byte{}}
	e.pub, e.priv, _ = ed25519.GenerateKey(rand.Reader)
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(e.f))
	mux.HandleFunc("GET /api/v1/files/{sha256}", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		data, ok := e.files[r.PathValue("sha256")]
		e.ranges = append(e.ranges, r.Header.Get("Range"))
		e.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"code":"not_found","message":"no such file"}`))
			return
		}
		w.Header().Set("ETag", `"`+r.PathValue("sha256")+`"`)
		http.ServeContent(w, r, "f", time.Time{}, strings.NewReader(string(data)))
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.servers, e.url = srv, srv.URL

	e.dir = t.TempDir()
	e.writeIdentity(t, srv.URL)
	os.WriteFile(filepath.Join(e.dir, agent.CAFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	os.WriteFile(filepath.Join(e.dir, agent.ConfigFile), []byte("poll_wait: 2s\nbatch_interval: 10ms\n"), 0o644)
	e.exe = filepath.Join(t.TempDir(), "tether-agent")
	if err := os.WriteFile(e.exe, []byte(binV1), 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	e.client, err = client.New(client.Config{URLs: []string{srv.URL}, AgentID: "a", AgentKey: "k",
		RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *upgradeEnv) writeIdentity(t *testing.T, commsURL string) {
	t.Helper()
	ident, _ := json.Marshal(agent.Identity{AgentID: "0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a", AgentKey: "k", Name: "web-1",
		Server: "https://mgmt:7444", CommsURLs: []string{commsURL}, EnrolledAt: time.Now(),
		ReleaseKey: base64.StdEncoding.EncodeToString(e.pub)})
	if err := os.WriteFile(filepath.Join(e.dir, agent.IdentityFile), ident, 0o600); err != nil {
		t.Fatal(err)
	}
}

// publish serves data and returns an upgrade order for it, signed with
// the release key.
func (e *upgradeEnv) publish(id, version, data string, extra ...string) client.Order {
	sum := sha256.Sum256([]byte(data))
	hexSum := hex.EncodeToString(sum[:])
	e.mu.Lock()
	e.files[hexSum] = []byte(data)
	e.mu.Unlock()
	args := map[string]string{"version": version, "sha256": hexSum, "file": "tether-agent",
		"signature": base64.StdEncoding.EncodeToString(ed25519.Sign(e.priv, sum[:]))}
	for i := 0; i+1 < len(extra); i += 2 {
		args[extra[i]] = extra[i+1]
	}
	raw, _ := json.Marshal(args)
	return client.Order{ID: id, RequestID: "r-" + id, Action: "upgrade", Args: raw, CreatedAt: time.Now(), TimeoutAt: time.Now().Add(time.Minute)}
}

func (e *upgradeEnv) upgrader(version string) *agent.Upgrader {
	return &agent.Upgrader{DataDir: e.dir, Executable: e.exe, Version: version, Client: e.client, ReleaseKey: e.pub}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func record(t *testing.T, dir string) *agent.UpgradeRecord {
	t.Helper()
	rec, err := agent.ReadUpgradeRecord(dir)
	if err != nil || rec == nil {
		t.Fatalf("upgrade record: %v %v", rec, err)
	}
	return rec
}

// storeRunning writes o into the agent's store as running, as the old
// process left it when it restarted.
func storeRunning(t *testing.T, dir string, o client.Order) {
	t.Helper()
	db, err := store.Open(filepath.Join(dir, agent.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	added, err := db.Orders.Add([]client.Order{o})
	if err != nil || len(added) != 1 {
		t.Fatalf("add order: %v", err)
	}
	if err := db.Orders.MarkRunning(added[0].Seq); err != nil {
		t.Fatal(err)
	}
}

// runAs runs the agent as version until it returns.
func runAs(t *testing.T, dir, version string, until func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, agent.RunOptions{DataDir: dir, Version: version}) }()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case err := <-done:
			return err
		case <-deadline:
			t.Fatal("timed out")
		case <-time.After(20 * time.Millisecond):
			if until != nil && until() {
				cancel()
				return <-done
			}
		}
	}
}

func TestUpgradeResumesDownloadSwapsAndIsConfirmedByTheNewBinary(t *testing.T) {
	e := newUpgradeEnv(t)
	o := e.publish("o-1", "2.0.0", binV2)
	var args struct{ SHA256 string }
	json.Unmarshal(o.Args, &args)
	// An earlier attempt left the first bytes.
	os.MkdirAll(filepath.Join(e.dir, agent.UpgradeDir), 0o700)
	os.WriteFile(filepath.Join(e.dir, agent.UpgradeDir, args.SHA256+".part"), []byte(binV2[:10]), 0o600)

	out, err := e.upgrader("1.0.0").Handler().Run(context.Background(), o)
	if !errors.Is(err, agent.ErrRestart) {
		t.Fatalf("Run = %+v, %v; want ErrRestart", out, err)
	}
	if e.ranges[0] != "bytes=10-" {
		t.Fatalf("download Range %q, want bytes=10-", e.ranges[0])
	}
	if readFile(t, e.exe) != binV2 || readFile(t, e.exe+agent.PreviousSuffix) != binV1 {
		t.Fatal("executable not swapped, or previous binary not kept")
	}
	if st, _ := os.Stat(e.exe); st.Mode().Perm() != 0o755 {
		t.Fatalf("new binary mode %v", st.Mode())
	}
	if exists(filepath.Join(e.dir, agent.UpgradeDir, args.SHA256+".part")) {
		t.Fatal("download left behind")
	}
	rec := record(t, e.dir)
	if rec.State != agent.UpgradeProbation || rec.FromVersion != "1.0.0" || rec.ToVersion != "2.0.0" ||
		time.Until(rec.Deadline) < time.Minute || time.Until(rec.Deadline) > 2*time.Minute {
		t.Fatalf("record %+v", rec)
	}

	// The new binary starts: it reaches the server, which confirms the
	// upgrade, and reports success.
	storeRunning(t, e.dir, o)
	if err := agent.UpgradeStarting(e.dir, "2.0.0", nil); err != nil {
		t.Fatal(err)
	}
	err = runAs(t, e.dir, "2.0.0", func() bool { return e.f.result("o-1") != nil })
	if err != nil {
		t.Fatal(err)
	}
	r := e.f.result("o-1")
	if r.GetStatus() != commsv1.OrderStatus_ORDER_STATUS_SUCCESS || r.GetMessage() != "upgraded from 1.0.0 to 2.0.0" {
		t.Fatalf("result %v", r)
	}
	if v := r.GetData().GetStructValue().GetFields()["version"].GetStringValue(); v != "2.0.0" {
		t.Fatalf("result data %v", r.GetData())
	}
	if rec := record(t, e.dir); rec.State != agent.UpgradeConfirmed || rec.Starts != 1 {
		t.Fatalf("record %+v", rec)
	}
}

func TestUpgradeRefusesABadSignatureOrDigest(t *testing.T) {
	e := newUpgradeEnv(t)
	u := e.upgrader("1.0.0")

	o := e.publish("o-1", "2.0.0", binV2)
	var args map[string]string
	json.Unmarshal(o.Args, &args)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	sum, _ := hex.DecodeString(args["sha256"])
	args["signature"] = base64.StdEncoding.EncodeToString(ed25519.Sign(other, sum))
	o.Args, _ = json.Marshal(args)
	out, err := u.Handler().Run(context.Background(), o)
	if err != nil || out.Success || !strings.Contains(out.Message, "signature does not verify with the release key pinned at enrollment") ||
		!strings.HasSuffix(out.Message, "version 1.0.0 runs") {
		t.Fatalf("bad signature: %+v %v", out, err)
	}
	if readFile(t, e.exe) != binV1 || exists(e.exe+agent.PreviousSuffix) || exists(filepath.Join(e.dir, agent.UpgradeDir, args["sha256"]+".part")) {
		t.Fatal("a refused file was installed or kept")
	}

	// The server sends other bytes than the digest names.
	o = e.publish("o-2", "2.0.0", binV2)
	json.Unmarshal(o.Args, &args)
	e.mu.Lock()
	e.files[args["sha256"]] = []byte(binBroken)
	e.mu.Unlock()
	out, err = u.Handler().Run(context.Background(), o)
	if err != nil || out.Success || !strings.Contains(out.Message, "not "+args["sha256"]) {
		t.Fatalf("wrong bytes: %+v %v", out, err)
	}
	if readFile(t, e.exe) != binV1 || exists(filepath.Join(e.dir, agent.UpgradeDir, args["sha256"]+".part")) {
		t.Fatal("a refused file was installed or kept")
	}
	if rec, _ := agent.ReadUpgradeRecord(e.dir); rec != nil {
		t.Fatalf("record written for a refused file: %+v", rec)
	}

	// No release key pinned: refused before downloading.
	u.ReleaseKey = nil
	if out, _ := u.Handler().Run(context.Background(), e.publish("o-3", "2.0.0", binV2)); out.Success || !strings.Contains(out.Message, "refused") {
		t.Fatalf("no key: %+v", out)
	}
}

func TestUpgradeRollsBackABinaryThatDoesNotStart(t *testing.T) {
	e := newUpgradeEnv(t)
	out, err := e.upgrader("1.0.0").Handler().Run(context.Background(), e.publish("o-1", "2.0.0", binBroken))
	if err != nil || out.Success {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	want := "rolled back: the new binary failed its start check: exit status 1: tether-agent: cannot start; version 1.0.0 runs"
	if out.Message != want {
		t.Fatalf("message %q\nwant %q", out.Message, want)
	}
	if readFile(t, e.exe) != binV1 || exists(e.exe+agent.PreviousSuffix) {
		t.Fatal("previous binary not put back")
	}
	if rec := record(t, e.dir); rec.State != agent.UpgradeRolledBack || !rec.Restored {
		t.Fatalf("record %+v", rec)
	}

	// A binary that says it is another version is rolled back too.
	out, _ = e.upgrader("1.0.0").Handler().Run(context.Background(), e.publish("o-2", "3.0.0", binV2))
	if out.Success || !strings.Contains(out.Message, `it says it is version "2.0.0", not "3.0.0"`) || readFile(t, e.exe) != binV1 {
		t.Fatalf("wrong version: %+v", out)
	}
}

func TestUpgradeRollsBackWhenTheNewBinaryCannotReachTheServer(t *testing.T) {
	e := newUpgradeEnv(t)
	o := e.publish("o-1", "2.0.0", binV2, "rollback_after", "1s")
	if _, err := e.upgrader("1.0.0").Handler().Run(context.Background(), o); !errors.Is(err, agent.ErrRestart) {
		t.Fatal(err)
	}
	storeRunning(t, e.dir, o)

	// The new binary cannot reach the server: past the deadline it puts
	// the previous binary back and asks to be re-executed.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "https://" + ln.Addr().String()
	ln.Close()
	e.writeIdentity(t, closed)
	if err := runAs(t, e.dir, "2.0.0", nil); !errors.Is(err, agent.ErrRestart) {
		t.Fatalf("new binary: %v, want ErrRestart", err)
	}
	if readFile(t, e.exe) != binV1 {
		t.Fatal("previous binary not put back")
	}
	rec := record(t, e.dir)
	if rec.State != agent.UpgradeRolledBack || !strings.HasPrefix(rec.Reason, "version 2.0.0 did not reach the server within 1s (") {
		t.Fatalf("record %+v", rec)
	}

	// The previous binary starts again and reports the failure.
	e.writeIdentity(t, e.url)
	if err := agent.UpgradeStarting(e.dir, "1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	if err := runAs(t, e.dir, "1.0.0", func() bool { return e.f.result("o-1") != nil }); err != nil {
		t.Fatal(err)
	}
	r := e.f.result("o-1")
	if r.GetStatus() == commsv1.OrderStatus_ORDER_STATUS_SUCCESS || !strings.HasPrefix(r.GetMessage(), "rolled back: version 2.0.0 did not reach the server within 1s") ||
		!strings.HasSuffix(r.GetMessage(), "; version 1.0.0 runs") {
		t.Fatalf("result %v", r)
	}
	data := r.GetData().GetStructValue().GetFields()
	if data["version"].GetStringValue() != "1.0.0" || !data["rolled_back"].GetBoolValue() {
		t.Fatalf("result data %v", data)
	}
}

func TestUpgradeGuardRollsBackANewBinaryThatKeepsFailing(t *testing.T) {
	e := newUpgradeEnv(t)
	if _, err := e.upgrader("1.0.0").Handler().Run(context.Background(), e.publish("o-1", "2.0.0", binV2)); !errors.Is(err, agent.ErrRestart) {
		t.Fatal(err)
	}
	// A start of the old version does not count.
	if err := agent.UpgradeStarting(e.dir, "1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	for i := range agent.MaxUpgradeStarts {
		if err := agent.UpgradeStarting(e.dir, "2.0.0", nil); err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
	}
	if err := agent.UpgradeStarting(e.dir, "2.0.0", nil); !errors.Is(err, agent.ErrRestart) {
		t.Fatalf("start %d: %v, want ErrRestart", agent.MaxUpgradeStarts+1, err)
	}
	if readFile(t, e.exe) != binV1 || record(t, e.dir).Reason != "version 2.0.0 started 3 times without reaching the server" {
		t.Fatalf("not rolled back: %+v", record(t, e.dir))
	}

	// A new binary whose Run fails at start is rolled back at once.
	if _, err := e.upgrader("1.0.0").Handler().Run(context.Background(), e.publish("o-2", "2.0.0", binV2)); !errors.Is(err, agent.ErrRestart) {
		t.Fatal(err)
	}
	boom := errors.New("open store: boom")
	if err := agent.UpgradeStopped(e.dir, "2.0.0", boom, nil); !errors.Is(err, agent.ErrRestart) {
		t.Fatalf("UpgradeStopped = %v, want ErrRestart", err)
	}
	if readFile(t, e.exe) != binV1 || record(t, e.dir).Reason != "version 2.0.0 stopped at start: open store: boom" {
		t.Fatalf("not rolled back: %+v", record(t, e.dir))
	}
	// Errors of a binary not on probation pass through.
	if err := agent.UpgradeStopped(e.dir, "1.0.0", boom, nil); err != boom {
		t.Fatalf("UpgradeStopped = %v", err)
	}
}

func TestUpgradeInterruptedBeforeInstallFailsAndAlreadyRunningSucceeds(t *testing.T) {
	e := newUpgradeEnv(t)
	o := e.publish("o-1", "2.0.0", binV2)
	storeRunning(t, e.dir, o)
	if err := runAs(t, e.dir, "1.0.0", func() bool { return e.f.result("o-1") != nil }); err != nil {
		t.Fatal(err)
	}
	if r := e.f.result("o-1"); r.GetStatus() == commsv1.OrderStatus_ORDER_STATUS_SUCCESS || r.GetMessage() != "interrupted before the new binary was installed; version 1.0.0 runs" {
		t.Fatalf("result %v", r)
	}
	out, err := e.upgrader("2.0.0").Handler().Run(context.Background(), e.publish("o-2", "2.0.0", binV2))
	if err != nil || !out.Success || out.Message != "version 2.0.0 already runs: nothing to do" {
		t.Fatalf("same version: %+v %v", out, err)
	}
}

func TestUpgradeCheckReachesTheServerAndPrintsTheVersion(t *testing.T) {
	e := newUpgradeEnv(t)
	var out strings.Builder
	if err := agent.UpgradeCheck(context.Background(), agent.RunOptions{DataDir: e.dir, Version: "2.0.0"}, &out); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Version string `json:"version"`
		AgentID string `json:"agent_id"`
	}
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil || got.Version != "2.0.0" || got.AgentID == "" {
		t.Fatalf("output %q: %v", out.String(), err)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "https://" + ln.Addr().String()
	ln.Close()
	e.writeIdentity(t, closed)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := agent.UpgradeCheck(ctx, agent.RunOptions{DataDir: e.dir, Version: "2.0.0"}, &out); err == nil || !strings.HasPrefix(err.Error(), "reach the server: ") {
		t.Fatalf("unreachable server: %v", err)
	}
}
