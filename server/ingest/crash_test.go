package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/ingest"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sqlite"
)

// serverDirEnv makes the test binary run as a comms server on the data
// directory it names (see TestMain), for the crash test to kill.
const serverDirEnv = "TETHER_TEST_INGEST_SERVER"

// crashAgent is the agent the test server enrolls.
const crashAgent = "0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a"

func TestMain(m *testing.M) {
	if dir := os.Getenv(serverDirEnv); dir != "" {
		if err := serve(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve runs the comms service on a real SQLite store and a real file
// sink in dir, enrolls crashAgent, writes a token for it to dir/token and
// the service's address to dir/addr, and serves until killed.
func serve(dir string) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := sqlite.Open(filepath.Join(dir, "tether.db"))
	if err != nil {
		return err
	}
	keys, err := authn.NewKeyring(ctx, db, time.Hour)
	if err != nil {
		return err
	}
	if err := db.RegisterAgent(ctx, &tether.Agent{ID: crashAgent, Name: "crash", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
		return err
	}
	token, _, err := keys.Issue(crashAgent, time.Now())
	if err != nil {
		return err
	}
	sink, err := file.Open(filepath.Join(dir, "events"), file.Options{Log: log})
	if err != nil {
		return err
	}
	svc := comms.New(comms.Options{Store: db, Sinks: []tether.Sink{sink}, Keys: keys, Presence: presence.New(db, log), Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		return err
	}
	// The address last: the test waits for it.
	if err := os.WriteFile(filepath.Join(dir, "addr.tmp"), []byte(ln.Addr().String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, "addr.tmp"), filepath.Join(dir, "addr")); err != nil {
		return err
	}
	return http.Serve(ln, svc.Handler())
}

// crashServer is one run of the test server.
type crashServer struct {
	cmd    *exec.Cmd
	exited chan error
	client commsv1connect.AgentServiceClient
	token  string
}

// startServer starts the test server on dir, with the crash point crashAt
// (none when "").
func startServer(t *testing.T, dir, crashAt string) *crashServer {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverDirEnv+"="+dir, ingest.CrashPointEnv+"="+crashAt)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &crashServer{cmd: cmd, exited: make(chan error, 1)}
	go func() { s.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		addr, err := os.ReadFile(filepath.Join(dir, "addr"))
		if err == nil {
			token, err := os.ReadFile(filepath.Join(dir, "token"))
			if err != nil {
				t.Fatal(err)
			}
			s.token = string(token)
			s.client = commsv1connect.NewAgentServiceClient(http.DefaultClient, "http://"+string(addr))
			return s
		}
		select {
		case err := <-s.exited:
			t.Fatalf("test server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("test server not listening after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// push sends a batch of n events (stateful ones keyed k0…) with sequence seq.
func (s *crashServer) push(ctx context.Context, seq uint64, n int, stateful bool) (bool, error) {
	evs := make([]*commsv1.Event, n)
	for i := range evs {
		evs[i] = &commsv1.Event{Id: fmt.Sprintf("ev-%d-%d", seq, i), Module: "crash", Type: "t",
			CollectedAt: timestamppb.Now(), Payload: fmt.Appendf(nil, `{"seq":%d,"i":%d}`, seq, i)}
	}
	if !stateful {
		req := connect.NewRequest(&commsv1.PushStatelessRequest{Sequence: seq, Events: evs})
		req.Header().Set("Authorization", "Bearer "+s.token)
		resp, err := s.client.PushStateless(ctx, req)
		if err != nil {
			return false, err
		}
		return resp.Msg.Duplicate, nil
	}
	msg := &commsv1.PushStatefulRequest{Sequence: seq}
	for i, e := range evs {
		msg.Events = append(msg.Events, &commsv1.StatefulEvent{Event: e, Key: fmt.Sprintf("k%d", i), Op: commsv1.StateOp_STATE_OP_UPSERT})
	}
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.PushStateful(ctx, req)
	if err != nil {
		return false, err
	}
	return resp.Msg.Duplicate, nil
}

// killed waits for the server to die of SIGKILL.
func (s *crashServer) killed(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("test server exited with %v, want killed by SIGKILL", err)
		}
		s.exited <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("test server still running 30s after its crash point")
	}
}

// TestCrashBetweenSteps kills the server with SIGKILL at each step of a
// batch's ingest (sequence recorded; batch in the sink; batch marked
// delivered), restarts it and retries the batch as an agent does: every
// event is in the event files exactly once, and stateful batches are in the
// state store.
func TestCrashBetweenSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dir := t.TempDir()
	const perBatch = 300
	seq := uint64(0)
	for _, step := range []string{"accepted", "written", "finished", "accepted", "written", "finished"} {
		seq++
		stateful := seq%2 == 0
		s := startServer(t, dir, step)
		if _, err := s.push(t.Context(), seq, perBatch, stateful); err == nil {
			t.Fatalf("batch %d answered although the server crashed at %s", seq, step)
		}
		s.killed(t)

		s = startServer(t, dir, "")
		dup, err := s.push(t.Context(), seq, perBatch, stateful)
		if err != nil {
			t.Fatalf("batch %d after a crash at %s: %v", seq, step, err)
		}
		if !dup {
			t.Errorf("batch %d after a crash at %s: not reported as already accepted", seq, step)
		}
		if dup, err := s.push(t.Context(), seq, perBatch, stateful); err != nil || !dup {
			t.Fatalf("batch %d once more: duplicate %v, %v", seq, dup, err)
		}
		s.cmd.Process.Kill()
		<-s.exited
		s.exited <- nil
	}

	counts := map[string]int{}
	for _, r := range readEvents(t, filepath.Join(dir, "events")) {
		counts[fmt.Sprint(r["event_id"])]++
	}
	for b := uint64(1); b <= seq; b++ {
		for i := range perBatch {
			if id := fmt.Sprintf("ev-%d-%d", b, i); counts[id] != 1 {
				t.Fatalf("event %s stored %d times, want once", id, counts[id])
			}
		}
	}
	if len(counts) != int(seq)*perBatch {
		t.Errorf("%d distinct events stored, want %d", len(counts), int(seq)*perBatch)
	}
	db, err := sqlite.Open(filepath.Join(dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.State(t.Context(), crashAgent, "crash")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != perBatch || st[0].Sequence != seq || !strings.Contains(string(st[0].Doc), fmt.Sprintf(`"seq":%d`, seq)) {
		t.Errorf("state: %d keys, first %+v; want %d keys from batch %d", len(st), st[0], perBatch, seq)
	}
}

// readEvents decodes every event file of dir, plain or compressed.
func readEvents(t *testing.T, dir string) []map[string]any {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []map[string]any
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = f
		if strings.HasSuffix(e.Name(), ".zst") {
			d, err := zstd.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			r = d
		}
		recs, err := ndjson.Decode(r)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		all = append(all, recs...)
	}
	return all
}
