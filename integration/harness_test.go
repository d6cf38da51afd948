package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
		"./cmd/tether-server", "./cmd/tether-agent", "./cmd/tetherctl", "./cmd/tether-loadtest")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// proc is a running program whose output is captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// start runs a program in the background; it is killed at the end of the
// test if still running.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(bin(name), args...))
}

// startCmd starts cmd in the background, capturing its output; it is
// stopped (SIGTERM, then SIGKILL) at the end of the test if still running,
// and its output is logged if the test failed.
func startCmd(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", strings.Join(cmd.Args, " "), p.Output())
		}
	})
	return p
}

// exited waits up to d for the process to exit and returns its exit code.
func (p *proc) exited(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return 0, false
	}
}

// run runs a program to completion and returns its stdout, stderr and exit
// code.
func run(t testing.TB, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// await polls cond until it returns true or the deadline passes.
func await(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// server is a running tether-server and what a user needs to reach it.
type server struct {
	*proc
	dataDir, apiURL, commsURL, caCert, adminToken string
}

var urlLine = regexp.MustCompile(`(?m)^(Comms API|Management API):\s+(\S+)$`)

func startServer(t testing.TB, extra ...string) *server {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfg, []byte("poll_wait: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "--data-dir", filepath.Join(dir, "data"), "--comms-addr", "127.0.0.1:0",
		"--api-addr", "127.0.0.1:0", "--config", cfg}, extra...)
	p := start(t, "tether-server", args...)
	s := &server{proc: p, dataDir: filepath.Join(dir, "data")}
	await(t, 30*time.Second, "server URLs", func() bool {
		m := urlLine.FindAllStringSubmatch(p.Output(), -1)
		for _, x := range m {
			if x[1] == "Comms API" {
				s.commsURL = x[2]
			} else {
				s.apiURL = x[2]
			}
		}
		return s.commsURL != "" && s.apiURL != ""
	})
	s.caCert = filepath.Join(s.dataDir, "tls", "ca.crt")
	tok, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.adminToken = strings.TrimSpace(string(tok))
	if !strings.Contains(p.Output(), s.adminToken) {
		t.Fatal("first start did not print the admin token")
	}
	return s
}

// ctl runs tetherctl against the server with the admin token.
func (s *server) ctl(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	return run(t, []string{"TETHER_SERVER=" + s.apiURL, "TETHER_CA_CERT=" + s.caCert, "TETHER_TOKEN=" + s.adminToken}, "tetherctl", args...)
}

// ctlJSON runs tetherctl -o json and decodes its output, failing the test on
// a non-zero exit.
func (s *server) ctlJSON(t testing.TB, out any, args ...string) {
	t.Helper()
	stdout, stderr, code := s.ctl(t, append(args, "-o", "json")...)
	if code != 0 {
		t.Fatalf("tetherctl %v: exit %d: %s", args, code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		t.Fatalf("tetherctl %v: output is not JSON: %v\n%s", args, err, stdout)
	}
}

// readEvents returns every event line the server's file sink holds, in
// its plain files and in the zstd copies of the closed ones (a file being
// compressed is read once, from whichever of the two it reads first).
func readEvents(t *testing.T, dataDir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	eachEventLine(t, dataDir, func(f string, line []byte) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: bad line %q: %v", f, line, err)
		}
		out = append(out, m)
	})
	return out
}

// eachEventLine calls fn with every complete line of the file sink's files,
// compressed ones included; a last line still being written is skipped.
func eachEventLine(t *testing.T, dataDir string, fn func(file string, line []byte)) {
	t.Helper()
	plain, _ := filepath.Glob(filepath.Join(dataDir, "events", "*.ndjson"))
	compressed, _ := filepath.Glob(filepath.Join(dataDir, "events", "*.ndjson.zst"))
	done := map[string]bool{}
	for _, f := range append(compressed, plain...) {
		base := strings.TrimSuffix(f, ".zst")
		if done[base] {
			continue
		}
		fh, err := os.Open(f)
		if errors.Is(err, fs.ErrNotExist) && !strings.HasSuffix(f, ".zst") {
			fh, err = os.Open(f + ".zst") // compressed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		done[base] = true
		var r io.Reader = fh
		if strings.HasSuffix(fh.Name(), ".zst") {
			dec, err := zstd.NewReader(fh)
			if err != nil {
				t.Fatal(err)
			}
			r = dec.IOReadCloser()
		}
		b, err := io.ReadAll(r)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			b = b[:i+1]
		} else {
			continue
		}
		for line := range bytes.Lines(b) {
			fn(f, bytes.TrimSuffix(line, []byte("\n")))
		}
	}
}
