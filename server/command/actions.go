package command

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/tetherhq/tether"
)

// ArgType is the JSON type of an action argument.
type ArgType string

// Argument types.
const (
	ArgString   ArgType = "string"
	ArgNumber   ArgType = "number"
	ArgBool     ArgType = "boolean"
	ArgStrings  ArgType = "string[]"
	ArgDuration ArgType = "duration" // a string such as "30s"
)

// Arg declares one argument of a built-in action.
type Arg struct {
	Name     string
	Type     ArgType
	Required bool
	// Pattern, when set, is a regular expression a string argument must
	// match.
	Pattern *regexp.Regexp
	Doc     string
}

// Spec declares a built-in action: where it runs and the arguments it
// takes. Actions without a Spec (plugin actions) are passed to agents
// unchecked.
type Spec struct {
	Name string
	// Server is true for actions a server node executes itself (target
	// type server); false for agent actions.
	Server bool
	Args   []Arg
	Doc    string
}

var (
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// signatureRE is the standard base64 of a 64-byte Ed25519 signature.
	signatureRE = regexp.MustCompile(`^[A-Za-z0-9+/]{86}==$`)
)

// builtins are the actions Tether itself implements.
var builtins = map[string]Spec{
	"restart":    {Name: "restart", Doc: "restart the agent process; success is reported once it is back"},
	"get-config": {Name: "get-config", Doc: "return the agent's effective configuration"},
	"set-config": {Name: "set-config", Doc: "fetch, validate and apply the centralized configuration without restarting"},
	"upgrade": {Name: "upgrade", Doc: "download, verify and install another agent binary, rolling back if it does not come up", Args: []Arg{
		{Name: "version", Type: ArgString, Required: true, Doc: "the version being installed"},
		{Name: "sha256", Type: ArgString, Required: true, Pattern: sha256RE, Doc: "lowercase hex SHA-256 of the file: the agent downloads GET /api/v1/files/{sha256} from the comms listener"},
		{Name: "file", Type: ArgString, Required: true, Doc: "the name the file was uploaded under (for logs and results)"},
		{Name: "signature", Type: ArgString, Required: true, Pattern: signatureRE, Doc: "standard base64 of the release-signing key's Ed25519 signature of the 32 raw bytes of the SHA-256 digest"},
		{Name: "rollback_after", Type: ArgDuration, Doc: "how long the new binary has to reach the server before the agent puts the previous one back (1s to 24h, default 2m)"},
	}},
	"active-response": {Name: "active-response", Doc: "run an allowlisted executable with arguments, without a shell; its exit code and output are the result", Args: []Arg{
		{Name: "command", Type: ArgString, Required: true, Doc: "executable name inside an allowlisted directory of the agent (DATA/active-response/bin, or active_response.bin_dirs of its agent.yaml)"},
		{Name: "args", Type: ArgStrings, Doc: "its arguments, passed as they are (no shell)"},
		{Name: "timeout", Type: ArgDuration, Doc: "time limit, e.g. 30s (the order's own window still applies); at the limit its process group is killed"},
	}},
	"set-group": {Name: "set-group", Doc: "replace the agent's groups and refresh its configuration", Args: []Arg{
		{Name: "groups", Type: ArgStrings, Required: true, Doc: "the new list of groups"},
	}},
	"rotate-signing-key": {Name: "rotate-signing-key", Server: true, Doc: "add a new JWT signing key; tokens signed by older keys stay valid until they expire"},
	"reload-config":      {Name: "reload-config", Server: true, Doc: "re-read the server configuration file"},
}

// Builtins lists the built-in actions, by name.
func Builtins() []Spec {
	out := make([]Spec, 0, len(builtins))
	for _, s := range builtins {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// checkAction validates the action against its target type and, for a
// built-in action, its argument schema. Errors name the field at fault,
// for example "action.args.sha256".
func checkAction(target tether.TargetType, a tether.Action) error {
	spec, builtin := builtins[a.Name]
	switch {
	case target == tether.TargetServer && (!builtin || !spec.Server):
		return tether.FieldError("action.name", "%q is not a server action (server actions: %s)", a.Name, serverActions())
	case target != tether.TargetServer && builtin && spec.Server:
		return tether.FieldError("action.name", "%q runs on a server node: use target type \"server\"", a.Name)
	case !builtin:
		return nil
	}
	args := map[string]json.RawMessage{}
	if len(a.Args) > 0 {
		if err := json.Unmarshal(a.Args, &args); err != nil {
			return tether.FieldError("action.args", "want a JSON object")
		}
	}
	known := map[string]bool{}
	for _, arg := range spec.Args {
		known[arg.Name] = true
		raw, ok := args[arg.Name]
		field := "action.args." + arg.Name
		if !ok || string(raw) == "null" {
			if arg.Required {
				return tether.FieldError(field, "required by %s", a.Name)
			}
			continue
		}
		if err := checkArg(arg, raw); err != nil {
			return tether.FieldError(field, "%v", err)
		}
	}
	names := make([]string, 0, len(args))
	for name := range args {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !known[name] {
			return tether.FieldError("action.args."+name, "%s takes no argument %q", a.Name, name)
		}
	}
	return nil
}

func checkArg(arg Arg, raw json.RawMessage) error {
	switch arg.Type {
	case ArgString, ArgDuration:
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return fmt.Errorf("want a string")
		}
		if arg.Type == ArgDuration {
			if d, err := time.ParseDuration(s); err != nil || d <= 0 {
				return fmt.Errorf("want a positive duration such as \"30s\"")
			}
		}
		if arg.Pattern != nil && !arg.Pattern.MatchString(s) {
			return fmt.Errorf("%q does not match %s", s, arg.Pattern)
		}
	case ArgNumber:
		var f float64
		if json.Unmarshal(raw, &f) != nil {
			return fmt.Errorf("want a number")
		}
	case ArgBool:
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return fmt.Errorf("want true or false")
		}
	case ArgStrings:
		var l []string
		if json.Unmarshal(raw, &l) != nil {
			return fmt.Errorf("want an array of strings")
		}
	}
	return nil
}

func serverActions() string {
	var names []string
	for _, s := range Builtins() {
		if s.Server {
			names = append(names, s.Name)
		}
	}
	return fmt.Sprint(names)
}
