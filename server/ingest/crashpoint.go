package ingest

import "github.com/tetherhq/tether/internal/crashpoint"

// CrashPointEnv names the environment variable that makes the server kill
// itself with SIGKILL at one step of a batch's ingest, for crash tests:
// "STEP" or "STEP:N" (at the N-th time the step is reached, default 1).
// Steps: accepted (sequence recorded and state applied, sinks not
// written), written (every sink holds the batch, not yet marked
// delivered), finished (marked delivered, not yet acknowledged). Unset in
// normal use; it has no other effect.
const CrashPointEnv = "TETHER_SERVER_CRASH_AT"

// crashPoint kills the process if CrashPointEnv names this step and hit.
var crashPoint = crashpoint.New(CrashPointEnv).At
