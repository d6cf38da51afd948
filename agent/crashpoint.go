package agent

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// CrashPointEnv names the environment variable that makes the agent kill
// itself with SIGKILL at one step of an order's life, for crash tests:
// "STEP" or "STEP:N" (at the N-th time the step is reached, default 1).
// Steps: stored (orders stored, receipt not yet sent), running (running
// persisted, handler not started), finished (result stored, not reported),
// reported (result reported, acknowledgement not yet recorded); and of an
// event batch's: batched (batch handed out by the outbox, not sent), sent
// (the server acknowledged the batch, the outbox not yet told). Unset in
// normal use; it has no other effect.
const CrashPointEnv = "TETHER_AGENT_CRASH_AT"

var crash struct {
	once sync.Once
	step string
	at   int64
	hits atomic.Int64
}

// crashPoint kills the process if CrashPointEnv names this step and hit.
func crashPoint(step string) {
	crash.once.Do(func() {
		v := os.Getenv(CrashPointEnv)
		name, n, _ := strings.Cut(v, ":")
		crash.step, crash.at = name, 1
		if i, err := strconv.ParseInt(n, 10, 64); err == nil && i > 0 {
			crash.at = i
		}
	})
	if crash.step != step || crash.hits.Add(1) != crash.at {
		return
	}
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill() // SIGKILL where there are signals
	}
	select {} // the signal is on its way
}
