package agent

import "github.com/tetherhq/tether/internal/crashpoint"

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

// crashPoint kills the process if CrashPointEnv names this step and hit.
var crashPoint = crashpoint.New(CrashPointEnv).At
