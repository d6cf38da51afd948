package agent_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/agent/modules"
)

func TestParseModuleKeys(t *testing.T) {
	def := modules.DefaultConfig()
	tests := []struct {
		name    string
		yaml    string
		want    func(*modules.Config)
		wantErr string // substring
	}{
		{name: "none", yaml: "", want: func(*modules.Config) {}},
		{name: "logcollector", yaml: "logcollector:\n  files:\n    - path: /var/log/*.log\n    - {path: /srv/app//x.log, start_at: beginning}\n  max_line_bytes: 4096\n  poll_interval: 1s\n",
			want: func(c *modules.Config) {
				c.LogCollector = modules.LogCollectorConfig{MaxLineBytes: 4096, PollInterval: time.Second, Files: []modules.LogFile{
					{Path: "/var/log/*.log", StartAt: "end"}, {Path: "/srv/app/x.log", StartAt: "beginning"}}}
			}},
		{name: "inventory and health", yaml: "inventory: {interval: 30m, resend_every: 12h}\nhealth: {enabled: false}\n",
			want: func(c *modules.Config) {
				c.Inventory.Interval, c.Inventory.ResendEvery = 30*time.Minute, 12*time.Hour
				c.Health.Enabled = false
			}},
		{name: "plugins", yaml: "plugins:\n  - name: ticker\n    command: ticker-plugin\n    args: [-v]\n    config: {interval: 10s, tags: [a]}\n  - {name: scan.v2, command: /opt/scan/bin/scan}\n",
			want: func(c *modules.Config) {
				c.Plugins = []modules.PluginConfig{
					{Name: "ticker", Command: "ticker-plugin", Args: []string{"-v"}, Config: json.RawMessage(`{"interval":"10s","tags":["a"]}`)},
					{Name: "scan.v2", Command: "/opt/scan/bin/scan"},
				}
			}},
		{name: "relative log path", yaml: "logcollector: {files: [{path: var/log/x}]}\n", wantErr: `logcollector.files[0].path: "var/log/x" is not valid: want an absolute path or glob pattern`},
		{name: "bad glob", yaml: "logcollector: {files: [{path: '/var/log/[x'}]}\n", wantErr: `logcollector.files[0].path: "/var/log/[x" is not a valid glob pattern`},
		{name: "missing path", yaml: "logcollector: {files: [{start_at: end}]}\n", wantErr: "logcollector.files[0].path: required"},
		{name: "bad start_at", yaml: "logcollector: {files: [{path: /x, start_at: middle}]}\n", wantErr: `logcollector.files[0].start_at: "middle" is not valid: want end or beginning`},
		{name: "unknown logcollector key", yaml: "logcollector: {file: []}\n", wantErr: `logcollector: unknown key "file" (known keys: files, max_line_bytes, poll_interval)`},
		{name: "line limit", yaml: "logcollector: {max_line_bytes: 10}\n", wantErr: `logcollector.max_line_bytes: "10" is not valid: want an integer from 1024 to 524288`},
		{name: "duplicate file", yaml: "logcollector: {files: [{path: /x}, {path: /x}]}\n", wantErr: `logcollector.files[1].path: "/x" is listed twice`},
		{name: "inventory interval", yaml: "inventory: {interval: 1ms}\n", wantErr: `inventory.interval: "1ms" is not valid: want a duration from 1s to 168h0m0s`},
		{name: "health enabled", yaml: "health: {enabled: maybe}\n", wantErr: `health.enabled: "maybe" is not valid: want true or false`},
		{name: "plugin name", yaml: "plugins: [{name: Ticker, command: t}]\n", wantErr: `plugins[0].name: "Ticker" is not valid`},
		{name: "plugin takes a module's name", yaml: "plugins: [{name: health, command: t}]\n", wantErr: `plugins[0].name: "health" is a module of the agent`},
		{name: "plugin command escapes", yaml: "plugins: [{name: t, command: ../bin/sh}]\n", wantErr: `plugins[0].command: "../bin/sh" is not valid`},
		{name: "plugin without command", yaml: "plugins: [{name: t}]\n", wantErr: "plugins[0].command: required"},
		{name: "plugin twice", yaml: "plugins: [{name: t, command: a}, {name: t, command: b}]\n", wantErr: `plugins[1].name: "t" is used twice`},
		{name: "plugins not a list", yaml: "plugins: {name: t}\n", wantErr: "plugins: want a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := agent.ParseConfig([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			want := def
			want.LogCollector.Files = nil
			tt.want(&want)
			if err != nil || !reflect.DeepEqual(got.Modules, want) {
				t.Fatalf("got %+v, %v; want %+v", got.Modules, err, want)
			}
		})
	}
}

// TestCentralModuleKeys: a centralized configuration sets the module keys
// over the local file, but may not start a plugin by absolute path.
func TestCentralModuleKeys(t *testing.T) {
	local, err := agent.ParseConfig([]byte("logcollector: {files: [{path: /var/log/syslog}]}\nplugins: [{name: local, command: /opt/p}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	eff, err := agent.ApplyCentral(local, json.RawMessage(`{"logcollector": {"files": [{"path": "/var/log/app/*.log"}]}, "plugins": [{"name": "ticker", "command": "ticker-plugin"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if f := eff.Modules.LogCollector.Files; len(f) != 1 || f[0].Path != "/var/log/app/*.log" {
		t.Fatalf("logcollector files %+v", f)
	}
	if p := eff.Modules.Plugins; len(p) != 1 || p[0].Name != "ticker" {
		t.Fatalf("plugins %+v", p)
	}
	_, err = agent.ApplyCentral(local, json.RawMessage(`{"plugins": [{"name": "x", "command": "/bin/sh"}]}`))
	if err == nil || !strings.Contains(err.Error(), `plugins[0].command: "/bin/sh" not allowed here`) {
		t.Fatalf("absolute plugin command from the server: %v", err)
	}
	b, _ := json.Marshal(eff)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range modules.Keys {
		if m[k] == nil {
			t.Fatalf("the configuration's JSON lacks %s: %s", k, b)
		}
	}
}
