package agent

import (
	"context"
	"errors"
	"os"

	"github.com/tetherhq/tether/client"
)

// ErrRestart is returned by Run when an order asked the agent to restart:
// the caller re-executes the binary. The order stays running in the store
// and completes as a success when the agent starts again.
var ErrRestart = errors.New("restart requested")

// BuiltinHandlers returns the registry of built-in actions. effectiveConfig
// returns what get-config reports; activeResponseDirs are the directories
// active-response may run executables from (ActiveResponseDirs; none: it
// refuses every command).
func BuiltinHandlers(effectiveConfig func() any, activeResponseDirs ...string) map[string]Handler {
	return map[string]Handler{
		"active-response": ActiveResponseHandler(activeResponseDirs),
		"get-config": {
			Run: func(context.Context, client.Order) (Outcome, error) {
				return Outcome{Success: true, Message: "effective configuration", Data: effectiveConfig()}, nil
			},
		},
		"restart": {
			Run: func(context.Context, client.Order) (Outcome, error) {
				return Outcome{}, ErrRestart
			},
			Resume: func(client.Order) Outcome {
				return Outcome{Success: true, Message: "agent restarted", Data: map[string]int{"pid": os.Getpid()}}
			},
		},
	}
}
