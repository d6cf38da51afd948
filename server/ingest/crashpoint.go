package ingest

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// CrashPointEnv names the environment variable that makes the server kill
// itself with SIGKILL at one step of a batch's ingest, for crash tests:
// "STEP" or "STEP:N" (at the N-th time the step is reached, default 1).
// Steps: accepted (sequence recorded and state applied, sinks not
// written), written (every sink holds the batch, not yet marked
// delivered), finished (marked delivered, not yet acknowledged). Unset in
// normal use; it has no other effect.
const CrashPointEnv = "TETHER_SERVER_CRASH_AT"

var crash struct {
	once sync.Once
	step string
	at   int64
	hits atomic.Int64
}

// crashPoint kills the process if CrashPointEnv names this step and hit.
func crashPoint(step string) {
	crash.once.Do(func() {
		name, n, _ := strings.Cut(os.Getenv(CrashPointEnv), ":")
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
