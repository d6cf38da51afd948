package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestDependencies checks that the agent binary links no server package and
// no SQLite driver.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/tetherhq/tether/server") || strings.HasPrefix(pkg, "modernc.org/sqlite") {
			t.Errorf("tether-agent depends on %s", pkg)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "tether-agent ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestEnrollBadTokenIsOneLine(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthorized","message":"invalid or expired enrollment token"}}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writePEM(t, ca, srv.Certificate().Raw)
	code, out, errs := run(t, "enroll", "--server", srv.URL, "--token", "nope", "--ca-cert", ca, "--data-dir", filepath.Join(dir, "data"))
	if code == 0 || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "invalid or expired enrollment token") || strings.Contains(errs, "Usage") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestRunAndStatusNotEnrolled(t *testing.T) {
	dir := t.TempDir()
	code, _, errs := run(t, "run", "--data-dir", dir)
	if code != 1 || !strings.Contains(errs, "not enrolled") {
		t.Fatalf("run: %d %q", code, errs)
	}
	code, _, errs = run(t, "status", "--data-dir", dir)
	if code != 1 || !strings.Contains(errs, "not enrolled") {
		t.Fatalf("status: %d %q", code, errs)
	}
}

func TestStatusOutput(t *testing.T) {
	dir := t.TempDir()
	ident, _ := json.Marshal(agent.Identity{AgentID: "a1", AgentKey: "k", Name: "web-1", Server: "https://m:7444", CommsURLs: []string{"https://c:7443"}})
	os.WriteFile(filepath.Join(dir, agent.IdentityFile), ident, 0o600)

	code, out, _ := run(t, "status", "--data-dir", dir)
	if code != 1 || !strings.Contains(out, "never run") {
		t.Fatalf("status before run: %d %q", code, out)
	}
	now := time.Now().UTC()
	agent.WriteStatus(dir, agent.Status{AgentID: "a1", Name: "web-1", State: "running", Connected: true, QueuedEvents: 7, PID: 1, StartedAt: now, UpdatedAt: now,
		PendingOrders: 2, Orders: []agent.OrderState{
			{ID: "o-1", Action: "active-response", State: "running", ReceivedAt: now, StartedAt: now},
			{ID: "o-2", Action: "restart", State: "pending", ReceivedAt: now, User: "alice"},
		}})
	code, out, _ = run(t, "status", "--data-dir", dir, "-o", "json")
	var st agent.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.QueuedEvents != 7 || !st.Connected {
		t.Fatalf("status -o json: %d %q", code, out)
	}
	code, out, _ = run(t, "status", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "Queued events:") || !strings.Contains(out, "web-1 (a1)") {
		t.Fatalf("status table: %d %q", code, out)
	}
	// The queue of orders, oldest first, with each one's state.
	i, j := strings.Index(out, "o-1"), strings.Index(out, "o-2")
	if i < 0 || j < i || !strings.Contains(out[i:], "running") || !strings.Contains(out[j:], "pending") || !strings.Contains(out[j:], "alice") {
		t.Fatalf("status table lacks the order queue:\n%s", out)
	}
	if code, _, errs := run(t, "status", "--data-dir", dir, "-o", "yaml"); code != 2 || !strings.Contains(errs, "want table or json") {
		t.Fatalf("status -o yaml: %d %q", code, errs)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"enroll", "run", "status"} {
		code, out, _ := run(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--data-dir") {
			t.Errorf("%s --help: %d\n%s", cmd, code, out)
		}
	}
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}
