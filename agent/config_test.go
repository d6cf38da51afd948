package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/agent/modules"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    agent.Config
		wantErr string // substring
	}{
		{name: "empty", yaml: "", want: agent.DefaultConfig()},
		{name: "all keys", yaml: "poll_wait: 20s\nbatch_max_events: 50\nbatch_interval: 250ms\nlog_level: DEBUG\n" +
			"batch_max_bytes: 256KiB\noutbox_max_bytes: 2GiB\noutbox_fsync_window: 0s\nrate_limit_events: 12.5\nrate_limit_bytes: 100000\ncompression: GZIP\n",
			want: agent.Config{PollWait: 20 * time.Second, BatchMaxEvents: 50, BatchInterval: 250 * time.Millisecond, LogLevel: "debug",
				BatchMaxBytes: 256 << 10, OutboxMaxBytes: 2 << 30, OutboxFsyncWindow: 0, RateLimitEvents: 12.5, RateLimitBytes: 100000, Compression: "gzip",
				Modules: modules.DefaultConfig()}},
		{name: "unknown key", yaml: "poll_wait: 20s\npoll_wiat: 3s\n", wantErr: `unknown key "poll_wiat" (known keys: poll_wait, batch_max_events, batch_interval, log_level, active_response, batch_max_bytes, outbox_max_bytes, outbox_fsync_window, rate_limit_events, rate_limit_bytes, compression, health, inventory, logcollector, plugins)`},
		{name: "decimal size", yaml: "outbox_max_bytes: 1.5 GB\n", want: withEvents(func(c *agent.Config) { c.OutboxMaxBytes = 1_500_000_000 })},
		{name: "outbox too small", yaml: "outbox_max_bytes: 1000\n", wantErr: `outbox_max_bytes: "1000" is not valid: want a size from 1MiB to 1TiB, like "1GiB" or a number of bytes`},
		{name: "bad size unit", yaml: "outbox_max_bytes: 1 GiG\n", wantErr: "outbox_max_bytes:"},
		{name: "batch bytes too big", yaml: "batch_max_bytes: 16MiB\n", wantErr: "batch_max_bytes: \"16MiB\" is not valid: want a size from 1KiB to 4MiB"},
		{name: "fsync window too long", yaml: "outbox_fsync_window: 2s\n", wantErr: "outbox_fsync_window: \"2s\" is not valid: want a duration from 0s to 1s"},
		{name: "negative rate", yaml: "rate_limit_events: -1\n", wantErr: "rate_limit_events: \"-1\" is not valid: want events per second, 0 for no limit"},
		{name: "byte rate", yaml: "rate_limit_bytes: 512KiB\n", want: withEvents(func(c *agent.Config) { c.RateLimitBytes = 512 << 10 })},
		{name: "bad byte rate", yaml: "rate_limit_bytes: fast\n", wantErr: "rate_limit_bytes: \"fast\" is not valid"},
		{name: "bad compression", yaml: "compression: lz4\n", wantErr: `compression: "lz4" is not valid: want one of zstd, gzip, none`},
		{name: "bad duration", yaml: "poll_wait: soon\n", wantErr: `poll_wait: "soon" is not valid: want a duration from 1s to 5m0s`},
		{name: "duration too long", yaml: "poll_wait: 1h\n", wantErr: "poll_wait:"},
		{name: "interval too short", yaml: "batch_interval: 1ms\n", wantErr: "batch_interval:"},
		{name: "batch too big", yaml: "batch_max_events: 20000\n", wantErr: `batch_max_events: "20000" is not valid: want an integer from 1 to 10000`},
		{name: "batch not a number", yaml: "batch_max_events: many\n", wantErr: "batch_max_events:"},
		{name: "bad level", yaml: "log_level: loud\n", wantErr: `log_level: "loud" is not valid: want one of debug, info, warn, error`},
		{name: "not a mapping", yaml: "- a\n- b\n", wantErr: "not a YAML mapping"},
		{name: "active response dirs", yaml: "active_response:\n  bin_dirs: [/opt/ar/bin, /usr/local/lib/ar/]\n",
			want: withBinDirs("/opt/ar/bin", "/usr/local/lib/ar")},
		{name: "active response empty", yaml: "active_response: {bin_dirs: []}\n", want: agent.DefaultConfig()},
		{name: "active response relative dir", yaml: "active_response:\n  bin_dirs: [bin]\n",
			wantErr: `active_response.bin_dirs: "bin" is not valid: want an absolute directory path`},
		{name: "active response root", yaml: "active_response:\n  bin_dirs: [/]\n", wantErr: "the root directory would allow every executable"},
		{name: "active response not a list", yaml: "active_response:\n  bin_dirs: /opt/ar\n", wantErr: "active_response.bin_dirs: want a list"},
		{name: "active response nested list", yaml: "active_response:\n  bin_dirs: [[/opt]]\n", wantErr: "active_response.bin_dirs:"},
		{name: "active response unknown key", yaml: "active_response:\n  dirs: [/opt]\n", wantErr: `active_response: unknown key "dirs" (known keys: bin_dirs)`},
		{name: "active response not a mapping", yaml: "active_response: /opt\n", wantErr: "active_response: want a mapping"},
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
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func withEvents(f func(*agent.Config)) agent.Config {
	c := agent.DefaultConfig()
	f(&c)
	return c
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if cfg, err := agent.LoadConfig(path, false); err != nil || !reflect.DeepEqual(cfg, agent.DefaultConfig()) {
		t.Fatalf("missing default file: %+v, %v", cfg, err)
	}
	if _, err := agent.LoadConfig(path, true); err == nil {
		t.Fatal("missing explicit file: no error")
	}
	os.WriteFile(path, []byte("log_level: warn\n"), 0o644)
	if cfg, err := agent.LoadConfig(path, true); err != nil || cfg.LogLevel != "warn" || cfg.PollWait != 50*time.Second {
		t.Fatalf("got %+v, %v", cfg, err)
	}
}

func TestApplyCentralOverridesLocalAndKeepsItOnError(t *testing.T) {
	local, err := agent.ParseConfig([]byte("poll_wait: 20s\nlog_level: warn\n"))
	if err != nil {
		t.Fatal(err)
	}
	eff, err := agent.ApplyCentral(local, json.RawMessage(`{"log_level":"debug","batch_max_events":10}`))
	if err != nil || eff.LogLevel != "debug" || eff.BatchMaxEvents != 10 || eff.PollWait != 20*time.Second {
		t.Fatalf("ApplyCentral = %+v, %v", eff, err)
	}
	for _, doc := range []string{"", "null"} {
		if eff, err := agent.ApplyCentral(local, json.RawMessage(doc)); err != nil || !reflect.DeepEqual(eff, local) {
			t.Fatalf("ApplyCentral(%q) = %+v, %v; want the local configuration", doc, eff, err)
		}
	}
	for doc, want := range map[string]string{
		`{"batch_max_events":0}`: "batch_max_events",
		`{"frobnicate":1}`:       `unknown key "frobnicate"`,
		`[1,2]`:                  "not a YAML mapping",
		`{"active_response":{"bin_dirs":["/bin"]}}`: "active_response: not allowed here",
	} {
		eff, err := agent.ApplyCentral(local, json.RawMessage(doc))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "centralized configuration: ") || !reflect.DeepEqual(eff, local) {
			t.Errorf("ApplyCentral(%s) = %+v, %v; want the local configuration and an error naming %q", doc, eff, err, want)
		}
	}
}

func withBinDirs(dirs ...string) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.ActiveResponse.BinDirs = dirs
	return cfg
}
