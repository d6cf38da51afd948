package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestLimitsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("max_connections: 5000\nmax_waiting_polls: 4000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	if err := readConfigFile(&cfg, path); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConnections != 5000 || cfg.MaxWaitingPolls != 4000 {
		t.Fatalf("from the file: %d, %d", cfg.MaxConnections, cfg.MaxWaitingPolls)
	}

	// Flags win over the file; a flag not given leaves the file's value.
	var f serverFlags
	cmd := &cobra.Command{}
	f.register(cmd, "")
	if err := cmd.Flags().Parse([]string{"--config", path, "--max-connections", "3"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.config()
	if err != nil || cfg.MaxConnections != 3 || cfg.MaxWaitingPolls != 4000 {
		t.Fatalf("with --max-connections 3: %d, %d, %v", cfg.MaxConnections, cfg.MaxWaitingPolls, err)
	}

	for _, c := range []struct {
		name    string
		edit    func(*Config)
		wantKey string
	}{
		{"negative connections", func(c *Config) { c.MaxConnections = -1 }, "max_connections"},
		{"negative polls", func(c *Config) { c.MaxWaitingPolls = -1 }, "max_waiting_polls"},
		{"automatic", func(c *Config) { c.MaxConnections, c.MaxWaitingPolls = 0, 0 }, ""},
	} {
		cfg := defaultConfig()
		c.edit(&cfg)
		err := cfg.validate()
		if c.wantKey == "" && err != nil || c.wantKey != "" && (err == nil || !strings.HasPrefix(err.Error(), c.wantKey+":")) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.wantKey)
		}
	}
}

func TestResolveLimits(t *testing.T) {
	for _, c := range []struct {
		name                   string
		conns, polls, fdLimit  int
		wantConns, wantCeiling int
		wantPolls              int
		wantAuto               bool
		wantErr                string
	}{
		// 20,000 − 1,024 = 18,976 for connections; 5% of it (948) for those turned away.
		{name: "automatic", fdLimit: 20_000, wantConns: 18_028, wantCeiling: 18_976, wantPolls: 18_028, wantAuto: true},
		// The overflow is at most 1,000.
		{name: "automatic, large", fdLimit: 1 << 20, wantConns: 1<<20 - 1024 - 1000, wantCeiling: 1<<20 - 1024, wantPolls: 1<<20 - 1024 - 1000, wantAuto: true},
		// A small limit keeps a quarter of it.
		{name: "automatic, small", fdLimit: 1024, wantConns: 768 - 38, wantCeiling: 768, wantPolls: 768 - 38, wantAuto: true},
		{name: "automatic, unknown", wantConns: 10_000, wantCeiling: 10_500, wantPolls: 10_000, wantAuto: true},
		{name: "configured", conns: 3, polls: 2, fdLimit: 20_000, wantConns: 3, wantCeiling: 3 + 16, wantPolls: 2},
		{name: "polls follow", conns: 1000, fdLimit: 20_000, wantConns: 1000, wantCeiling: 1050, wantPolls: 1000},
		// The ceiling never passes what the open files allow.
		{name: "ceiling capped", conns: 18_900, fdLimit: 20_000, wantConns: 18_900, wantCeiling: 18_976, wantPolls: 18_900},
		{name: "all the room", conns: 18_976, fdLimit: 20_000, wantConns: 18_976, wantCeiling: 18_976, wantPolls: 18_976},
		{name: "too many", conns: 18_977, fdLimit: 20_000, wantErr: "max_connections: 18977 is more than this process may hold open: its open-file limit is 20000"},
		{name: "unknown limit", conns: 50_000, wantConns: 50_000, wantCeiling: 51_000, wantPolls: 50_000},
	} {
		cfg := defaultConfig()
		cfg.MaxConnections, cfg.MaxWaitingPolls = c.conns, c.polls
		l, err := resolveLimits(cfg, c.fdLimit)
		if c.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), c.wantErr) {
				t.Errorf("%s: %v, want %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || l.maxConns != c.wantConns || l.ceiling != c.wantCeiling || l.maxPolls != c.wantPolls || l.auto != c.wantAuto {
			t.Errorf("%s: %+v %v, want connections %d, ceiling %d, polls %d, auto %v", c.name, l, err, c.wantConns, c.wantCeiling, c.wantPolls, c.wantAuto)
		}
	}
}
