package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigFile(t *testing.T) {
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"empty", "", ""},
		{"store", "store: postgres://tether@db.example.com/tether?sslmode=verify-full\n", ""},
		{"full", "comms_addr: 127.0.0.1:1\npoll_wait: 10s\ntls:\n  cert_file: a\n  key_file: b\n  ca_file: c\nevents:\n  max_file_bytes: 100\nfiles:\n  max_bytes: 2147483648\n", ""},
		{"unknown files key", "files:\n  max_size: 1\n", `unknown key "files.max_size"`},
		{"events", "events:\n  max_file_bytes: 1048576\n  max_file_age: 10m\n  compress: false\n  retention: 168h\n  max_total_bytes: 1073741824\n", ""},
		{"unknown events key", "events:\n  max_age: 1h\n", `unknown key "events.max_age"`},
		{"ingest", "ingest:\n  agent_events_per_sec: 1000\n  agent_events_burst: 5000\n  agent_bytes_per_sec: 1048576\n  agent_bytes_burst: 0\n  max_inflight_batches: 16\n  max_inflight_bytes: 67108864\n  busy_retry_delay: 2s\n", ""},
		{"unknown ingest key", "ingest:\n  events_per_sec: 1\n", `unknown key "ingest.events_per_sec"`},
		{"unknown key", "poll_wiat: 5s\n", `unknown key "poll_wiat"`},
		{"unknown nested key", "tls:\n  cert: x\n", `unknown key "tls.cert"`},
		{"bad duration", "poll_wait: five\n", `"five" is not a duration`},
		{"not a mapping", "- a\n", "not a YAML mapping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := defaultConfig()
			err := readConfigFile(&cfg, path)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		edit    func(*Config)
		wantKey string
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad addr", func(c *Config) { c.APIAddr = "x" }, "api_addr"},
		{"wait above max", func(c *Config) { c.PollWait = Duration(time.Hour) }, "poll_wait"},
		{"tiny body", func(c *Config) { c.MaxBodyBytes = 10 }, "max_body_bytes"},
		{"ttl", func(c *Config) { c.TokenTTL = Duration(time.Second) }, "token_ttl"},
		{"half tls", func(c *Config) { c.TLS.CertFile = "x" }, "tls.cert_file"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "log_level"},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, "log_format"},
		{"files max", func(c *Config) { c.Files.MaxBytes = 0 }, "files.max_bytes"},
		{"event file size", func(c *Config) { c.Events.MaxFileBytes = 0 }, "events.max_file_bytes"},
		{"event file age", func(c *Config) { c.Events.MaxFileAge = Duration(time.Millisecond) }, "events.max_file_age"},
		{"event retention", func(c *Config) { c.Events.Retention = Duration(time.Second) }, "events.retention"},
		{"no event retention", func(c *Config) { c.Events.Retention, c.Events.MaxTotalBytes = 0, 0 }, ""},
		{"event total", func(c *Config) { c.Events.MaxTotalBytes = 1 << 20 }, "events.max_total_bytes"},
		{"agent events", func(c *Config) { c.Ingest.AgentEventsPerSec = -1 }, "ingest.agent_events_per_sec"},
		{"agent bytes", func(c *Config) { c.Ingest.AgentBytesBurst = -1 }, "ingest.agent_bytes_burst"},
		{"inflight batches", func(c *Config) { c.Ingest.MaxInflightBatches = -1 }, "ingest.max_inflight_batches"},
		{"inflight bytes", func(c *Config) { c.Ingest.MaxInflightBytes = -1 }, "ingest.max_inflight_bytes"},
		{"busy delay", func(c *Config) { c.Ingest.BusyRetryDelay = 0 }, "ingest.busy_retry_delay"},
		{"no ingest limits", func(c *Config) { c.Ingest = IngestConfig{BusyRetryDelay: Duration(time.Second)} }, ""},
		{"postgres store", func(c *Config) { c.Store = "postgres://tether@db/tether?sslmode=verify-full" }, ""},
		{"postgresql store", func(c *Config) { c.Store = "postgresql://tether@db/tether" }, ""},
		{"other store", func(c *Config) { c.Store = "mysql://tether@db/tether" }, "store"},
		{"store path", func(c *Config) { c.Store = "/var/lib/tether/tether.db" }, "store"},
	}
	for _, c := range cases {
		cfg := defaultConfig()
		c.edit(&cfg)
		err := cfg.validate()
		if c.wantKey == "" && err != nil || c.wantKey != "" && (err == nil || !strings.Contains(err.Error(), c.wantKey)) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.wantKey)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"run", "--bogus"}} {
		var out, errb strings.Builder
		if code := Main(t.Context(), args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}
