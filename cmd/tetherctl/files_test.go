package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/mgmt"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/sqlite"
)

// realServer is the management API served over TLS by real components: a
// SQLite store and a file store in temporary directories.
type realServer struct {
	srv    *httptest.Server
	store  *sqlite.DB
	caFile string
	token  string // an operator token
}

func newRealServer(t *testing.T) *realServer {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := files.EnsureKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := files.Open(filepath.Join(dir, "files"), key, files.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hub := notify.NewHub()
	h := mgmt.New(mgmt.Options{Store: db, Commands: &command.Manager{Store: db, Notifier: hub}, Notifier: hub,
		Files: fs, Log: slog.New(slog.DiscardHandler), PollWindow: time.Minute})
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	secret, tok := authn.NewAPIToken()
	tok.Name, tok.Role, tok.CreatedAt = "ops", tether.RoleOperator, time.Now().UTC()
	if err := db.CreateToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return &realServer{srv: srv, store: db, caFile: caFile, token: secret}
}

func (s *realServer) run(t *testing.T, args ...string) result {
	t.Helper()
	return runInput(t, nil, "", append([]string{"--server", s.srv.URL, "--ca-cert", s.caFile, "--token", s.token}, args...)...)
}

func (s *realServer) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.New(api.Options{Server: s.srv.URL, Token: s.token, CACertFile: s.caFile})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// playAgent runs the agent's side of its orders until the test ends: it
// receives them and reports each as result says.
func (s *realServer) playAgent(t *testing.T, agentID string, result func(*tether.Order) (tether.OrderStatus, tether.Result)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			got, err := s.store.DeliverOrders(ctx, []tether.Delivery{{AgentID: agentID, Limit: 10}}, time.Now().UTC())
			if err == nil {
				for _, o := range got[0] {
					st, res := result(o)
					if _, err := s.store.FinishOrder(ctx, agentID, o.ID, st, res, time.Now().UTC()); err != nil && ctx.Err() == nil {
						t.Errorf("finish: %v", err)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
}

func writeBinary(t *testing.T, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tether-agent")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}

// TestFilesAndUpgradeAgainstARealServer drives files upload, list and show,
// and agents upgrade against the management API with real storage.
func TestFilesAndUpgradeAgainstARealServer(t *testing.T) {
	ctx := context.Background()
	s := newRealServer(t)
	agentID := uuid.NewString()
	reg, err := s.client(t).RegisterAgent(ctx, api.RegisterAgentRequest{ID: agentID, Name: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client(t).SetAgentGroups(ctx, agentID, api.SetAgentGroupsRequest{Groups: []string{"web"}}); err != nil {
		t.Fatal(err)
	}
	pub, _ := base64.StdEncoding.DecodeString(reg.ReleasePublicKey)

	bin, sum := writeBinary(t, 3<<20)
	up := decode[api.File](t, s.run(t, "files", "upload", bin, "--name", "tether-agent-2.0.0", "-o", "json").ok(t).stdout)
	if up.SHA256 != sum || up.Size != 3<<20 || up.Name != "tether-agent-2.0.0" || up.Uploader != "ops" {
		t.Fatalf("uploaded %+v", up)
	}
	raw, _ := hex.DecodeString(sum)
	sig, _ := base64.StdEncoding.DecodeString(up.Signature)
	if !ed25519.Verify(pub, raw, sig) {
		t.Errorf("the signature does not verify with the release key of enrollment")
	}
	r := s.run(t, "files", "upload", bin).ok(t)
	for _, want := range []string{"already on the server", "Name:", "tether-agent-2.0.0", "3.0 MiB", up.Signature} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("second upload lacks %q:\n%s", want, r.stdout)
		}
	}
	r = s.run(t, "files", "list").ok(t)
	for _, want := range []string{"SHA256", "NAME", sum, "tether-agent-2.0.0", "3.0 MiB", "ops"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("files list lacks %q:\n%s", want, r.stdout)
		}
	}
	if l := decode[api.FileList](t, s.run(t, "files", "list", "-o", "json").ok(t).stdout); len(l.Items) != 1 || l.Items[0] != up {
		t.Errorf("files list -o json: %+v", l)
	}
	if f := decode[api.File](t, s.run(t, "files", "show", sum, "-o", "json").ok(t).stdout); f != up {
		t.Errorf("files show: %+v", f)
	}

	// Upgrade the agent: the binary is on the server already, so only the
	// command is sent; the agent reports success.
	s.playAgent(t, agentID, func(o *tether.Order) (tether.OrderStatus, tether.Result) {
		var args map[string]string
		json.Unmarshal(o.Action.Args, &args)
		// What an agent checks: the signature of the digest, with the key
		// pinned at enrollment.
		if o.Action.Name == "upgrade" && files.Verify(pub, args["sha256"], args["signature"]) == nil {
			return tether.OrderSuccess, tether.Result{Message: "running " + args["version"]}
		}
		return tether.OrderFailure, tether.Result{Code: 1, Message: "bad upgrade order"}
	})
	r = s.run(t, "agents", "upgrade", "--agent", agentID, "--file", bin, "--name", "ignored", "--version", "2.0.0", "--wait").ok(t)
	for _, want := range []string{"file tether-agent-2.0.0 (" + sum + ", 3.0 MiB) already on the server", "waiting for 1 order(s)", "success", "running 2.0.0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("upgrade output lacks %q:\n%s", want, r.stdout)
		}
	}

	// A new build to the group, with -o json: uploaded, then the command.
	bin2, sum2 := writeBinary(t, 1000)
	cmd := decode[api.Command](t, s.run(t, "agents", "upgrade", "--group", "web", "--file", bin2, "--version", "2.0.1", "--timeout", "30m", "--wait", "-o", "json").ok(t).stdout)
	var args map[string]string
	json.Unmarshal(cmd.Action.Args, &args)
	if cmd.Target != (api.Target{Type: "group", ID: "web"}) || cmd.Action.Name != "upgrade" || args["version"] != "2.0.1" || args["signature"] == "" ||
		args["sha256"] != sum2 || args["file"] != "tether-agent" || cmd.Timeout != "30m0s" || cmd.Status != "success" || len(cmd.Orders) != 1 {
		t.Errorf("group upgrade: %+v, args %v", cmd, args)
	}
	if l, _ := s.client(t).ListFiles(ctx); len(l.Items) != 2 {
		t.Errorf("after the second upgrade: %d files, want 2", len(l.Items))
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"agents", "upgrade", "--file", bin, "--version", "2"}, "exactly one of --agent ID or --group NAME"},
		{[]string{"agents", "upgrade", "--agent", agentID, "--group", "web", "--file", bin, "--version", "2"}, "exactly one of --agent ID or --group NAME"},
		{[]string{"agents", "upgrade", "--agent", agentID, "--file", bin}, "--version VERSION is required"},
		{[]string{"agents", "upgrade", "--agent", agentID, "--version", "2"}, "--file BINARY is required"},
		{[]string{"agents", "upgrade", "--agent", agentID, "--file", "/nonexistent/agent", "--version", "2"}, "no such file"},
		{[]string{"files", "upload", t.TempDir()}, "not a regular file"},
	} {
		r := s.run(t, c.args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", c.args, r.code, exitUsage)
		}
		oneErrorLine(t, r.stderr, c.want)
	}
	// The server refuses: exit 1 with its reason.
	r = s.run(t, "agents", "upgrade", "--agent", uuid.NewString(), "--file", bin, "--version", "2")
	if r.code != exitFailure {
		t.Errorf("unknown agent: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "(invalid)")
	r = s.run(t, "files", "show", strings.Repeat("0", 64))
	if r.code != exitFailure {
		t.Errorf("unknown file: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, "not found")
}

// TestUpgradeFailureExits3 checks a failed upgrade makes --wait exit 3
// with the agent's reason.
func TestUpgradeFailureExits3(t *testing.T) {
	ctx := context.Background()
	s := newRealServer(t)
	agentID := uuid.NewString()
	if _, err := s.client(t).RegisterAgent(ctx, api.RegisterAgentRequest{ID: agentID}); err != nil {
		t.Fatal(err)
	}
	s.playAgent(t, agentID, func(*tether.Order) (tether.OrderStatus, tether.Result) {
		return tether.OrderFailure, tether.Result{Code: 2, Message: "signature does not verify"}
	})
	bin, _ := writeBinary(t, 10)
	r := s.run(t, "agents", "upgrade", "--agent", agentID, "--file", bin, "--version", "2", "--wait")
	if r.code != exitFailed {
		t.Fatalf("exit %d, want 3; stderr %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "signature does not verify") || !strings.Contains(r.stdout, "uploaded") {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestByteProgressBar(t *testing.T) {
	setClock(t, time.Second) // every read redraws
	var b strings.Builder
	p := &byteProgress{w: &b, show: true, total: 4 << 20}
	data, _ := readAllFrom(p.reader(strings.NewReader(strings.Repeat("x", 4<<20))))
	p.done()
	if data != 4<<20 {
		t.Fatalf("read %d bytes", data)
	}
	out := b.String()
	if !strings.HasPrefix(out, "\r[") || !strings.HasSuffix(out, "[##############################] 4.0 MiB / 4.0 MiB uploaded\n") {
		t.Errorf("bar output ends %q", out[max(0, len(out)-80):])
	}
	// Not a terminal: nothing.
	var quiet strings.Builder
	q := newByteProgress(&quiet, 4<<20)
	readAllFrom(q.reader(strings.NewReader("xyz")))
	q.done()
	if quiet.Len() != 0 {
		t.Errorf("progress written to a non-terminal: %q", quiet.String())
	}
}

func readAllFrom(r interface{ Read([]byte) (int, error) }) (int, error) {
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, err := r.Read(buf)
		total += n
		if err != nil {
			return total, nil
		}
	}
}
