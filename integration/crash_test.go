package integration_test

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recordScript appends its first argument to the file named by its second,
// then takes a little time, so that kills land while orders run: an order
// that ran leaves one line.
const recordScript = "#!/bin/sh\necho \"$1\" >> \"$2\"\nsleep 0.03\n"

// crashAgent is an enrolled agent whose active-response directory holds
// the record script, and the file that script writes to.
type crashAgent struct {
	id, dir, log string
}

func enrollCrashAgent(t testing.TB, s *server) crashAgent {
	t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	s.ctlJSON(t, &tok, "enrollment-tokens", "create", "--uses", "1", "--ttl", "1h")
	dir := filepath.Join(t.TempDir(), "agent")
	if _, stderr, code := run(t, nil, "tether-agent", "enroll", "--server", s.apiURL, "--token", tok.Token,
		"--ca-cert", s.caCert, "--data-dir", dir, "--name", "crash"); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, stderr)
	}
	var ident struct {
		AgentID string `json:"agent_id"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err := json.Unmarshal(b, &ident); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "active-response", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "record"), []byte(recordScript), 0o755); err != nil {
		t.Fatal(err)
	}
	return crashAgent{id: ident.AgentID, dir: dir, log: filepath.Join(t.TempDir(), "ran.log")}
}

// start runs the agent, with the crash point crashAt when not "".
func (a crashAgent) start(t *testing.T, crashAt string) *proc {
	t.Helper()
	cmd := exec.Command(bin("tether-agent"), "run", "--data-dir", a.dir)
	cmd.Env = os.Environ()
	if crashAt != "" {
		cmd.Env = append(cmd.Env, "TETHER_AGENT_CRASH_AT="+crashAt)
	}
	return startCmd(t, cmd)
}

// send creates an order recording n and returns its command id.
func (a crashAgent) send(t *testing.T, s *server, n int) string {
	t.Helper()
	args, _ := json.Marshal(map[string]any{"command": "record", "args": []string{strconv.Itoa(n), a.log}, "timeout": "30s"})
	var cmd commandJSON
	s.ctlJSON(t, &cmd, "commands", "send", "--agent", a.id, "active-response", "--args-json", string(args), "--timeout", "10m")
	return cmd.ID
}

// ran returns the numbers the record script wrote, in order.
func (a crashAgent) ran(t *testing.T) []int {
	t.Helper()
	b, err := os.ReadFile(a.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, line := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(line)
		if err != nil {
			t.Fatalf("record log line %q", line)
		}
		out = append(out, n)
	}
	return out
}

// orderOf reads the one order of a command.
func orderOf(t *testing.T, s *server, id string) (status, message string) {
	t.Helper()
	var cmd commandJSON
	s.ctlJSON(t, &cmd, "commands", "show", id)
	if len(cmd.Orders) != 1 {
		t.Fatalf("command %s has %d orders", id, len(cmd.Orders))
	}
	o := cmd.Orders[0]
	if o.Result != nil {
		message = o.Result.Message
	}
	return o.Status, message
}

// TestOrderSurvivesSIGKILLAtEachStep kills the agent with SIGKILL at each
// step of an order's life and starts it again: the order is never lost and
// never runs twice, and its outcome is what that step implies.
func TestOrderSurvivesSIGKILLAtEachStep(t *testing.T) {
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	for i, c := range []struct {
		step    string
		status  string
		message string
		runs    int // lines the order leaves in the record log
	}{
		// Stored, receipt not sent: the server delivers it again, the
		// agent recognises it, runs it once.
		{"stored", "success", "", 1},
		// Running persisted, handler not started: an active response is
		// not idempotent, so it fails "interrupted" and does not run.
		{"running", "failure", "interrupted", 0},
		// Result stored, not reported: reported after the restart.
		{"finished", "success", "", 1},
		// Reported, acknowledgement not recorded: reported again, and the
		// server keeps the first outcome.
		{"reported", "success", "", 1},
	} {
		t.Run(c.step, func(t *testing.T) {
			before := len(a.ran(t))
			p := a.start(t, c.step)
			id := a.send(t, s, i)
			if _, ok := p.exited(30 * time.Second); !ok {
				t.Fatalf("the agent did not reach crash point %s", c.step)
			}
			if ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the agent ended with %v, want SIGKILL", p.cmd.ProcessState)
			}
			p = a.start(t, "")
			var status, message string
			await(t, 30*time.Second, "the order's result", func() bool {
				status, message = orderOf(t, s, id)
				return status == "success" || status == "failure"
			})
			if status != c.status || (c.message != "" && message != c.message) {
				t.Fatalf("after SIGKILL at %s: %s %q, want %s %q", c.step, status, message, c.status, c.message)
			}
			// Its result was acknowledged and deleted on the agent.
			await(t, 30*time.Second, "no pending result on the agent", func() bool {
				st := agentStatus(t, a.dir)
				return st["pending_results"] == 0.0 && st["pending_orders"] == 0.0
			})
			_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
			p.exited(10 * time.Second)
			if got := a.ran(t)[before:]; len(got) != c.runs || (c.runs == 1 && got[0] != i) {
				t.Fatalf("after SIGKILL at %s the order ran %v times (record %v), want %d", c.step, len(got), got, c.runs)
			}
		})
	}
}

// TestHundredOrdersSurviveRepeatedSIGKILL queues 100 orders and kills the
// agent with SIGKILL at random moments while it works through them: every
// order ends with a result, none runs twice, and they run in creation order.
func TestHundredOrdersSurviveRepeatedSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping 100 orders under repeated SIGKILL")
	}
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	const n = 100
	ids := make([]string, n)
	for i := range n {
		ids[i] = a.send(t, s, i)
	}
	finished := func() int {
		var list struct {
			Items []struct {
				Status string `json:"status"`
			} `json:"items"`
		}
		s.ctlJSON(t, &list, "orders", "list", "--agent", a.id, "--all")
		k := 0
		for _, o := range list.Items {
			if o.Status == "success" || o.Status == "failure" {
				k++
			}
		}
		return k
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for ; kills < 12 && finished() < n; kills++ {
		p := a.start(t, "")
		time.Sleep(time.Duration(150+rng.IntN(400)) * time.Millisecond)
		_ = p.cmd.Process.Kill() // SIGKILL
		<-p.done
	}
	p := a.start(t, "")
	await(t, 2*time.Minute, "every order finished", func() bool { return finished() == n })
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	p.exited(10 * time.Second)

	ran := a.ran(t)
	if !slices.IsSorted(ran) || len(slices.Compact(slices.Clone(ran))) != len(ran) {
		t.Fatalf("after %d kills the orders ran out of order or twice: %v", kills, ran)
	}
	interrupted := 0
	for i, id := range ids {
		status, message := orderOf(t, s, id)
		switch {
		case status == "success" && slices.Contains(ran, i):
		case status == "failure" && message == "interrupted":
			interrupted++ // killed while it ran: it may or may not have written
		default:
			t.Errorf("order %d: %s %q, ran=%v", i, status, message, slices.Contains(ran, i))
		}
	}
	t.Logf("%d SIGKILLs; %d orders ran, %d interrupted", kills, len(ran), interrupted)
	if interrupted > kills {
		t.Errorf("%d orders interrupted by %d kills: at most one each", interrupted, kills)
	}
}

// TestCancelledQueuedOrderIsSkipped cancels an order the agent holds but
// has not started: the agent learns it from its poll and never runs it.
func TestCancelledQueuedOrderIsSkipped(t *testing.T) {
	s := startServer(t)
	a := enrollCrashAgent(t, s)
	slow := filepath.Join(a.dir, "active-response", "bin", "slow")
	if err := os.WriteFile(slow, []byte("#!/bin/sh\nsleep 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a.start(t, "")
	await(t, 20*time.Second, "the agent's status", func() bool { return queueOf(a.dir) != nil })
	var busy commandJSON
	s.ctlJSON(t, &busy, "commands", "send", "--agent", a.id, "active-response", "--args-json", `{"command":"slow","timeout":"1m"}`)
	queued := a.send(t, s, 1)
	await(t, 20*time.Second, "the second order queued on the agent", func() bool {
		return slices.ContainsFunc(queueOf(a.dir), func(o orderState) bool { return o.State == "pending" })
	})
	if _, stderr, code := s.ctl(t, "commands", "cancel", queued); code != 0 {
		t.Fatalf("commands cancel: exit %d %s", code, stderr)
	}
	await(t, 10*time.Second, "the agent to drop the cancelled order", func() bool {
		q := queueOf(a.dir)
		return len(q) == 1 && q[0].State == "running" // only the running one is left
	})
	await(t, 30*time.Second, "the slow order's result", func() bool {
		status, _ := orderOf(t, s, busy.ID)
		return status == "success"
	})
	if status, message := orderOf(t, s, queued); status != "failure" || message != "cancelled" {
		t.Fatalf("cancelled order: %s %q", status, message)
	}
	if ran := a.ran(t); len(ran) != 0 {
		t.Fatalf("the cancelled order ran: %v", ran)
	}
}

type orderState struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// queueOf reads the order queue from the agent's status file: nil until
// the agent wrote one, empty when it holds no order.
func queueOf(dir string) []orderState {
	b, err := os.ReadFile(filepath.Join(dir, "status.json"))
	if err != nil {
		return nil
	}
	var st struct {
		Orders []orderState `json:"orders"`
	}
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	if st.Orders == nil {
		st.Orders = []orderState{}
	}
	return st.Orders
}
