package agent_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent"
)

// FuzzParseConfig: agent.yaml is read from disk; any bytes must give either
// a valid configuration or an error, never a panic or out-of-range values.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("poll_wait: 30s\nbatch_max_events: 500\nbatch_interval: 2s\nlog_level: debug\n"))
	f.Add([]byte("poll_wait: [1, 2]\n"))
	f.Add([]byte("outbox_max_bytes: 1.5GiB\nrate_limit_bytes: 1e300\nrate_limit_events: .Inf\nbatch_max_bytes: -1KiB\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := agent.ParseConfig(data)
		if err != nil {
			return
		}
		if cfg.PollWait < time.Second || cfg.PollWait > 5*time.Minute || cfg.BatchMaxEvents < 1 || cfg.BatchMaxEvents > 10000 ||
			cfg.BatchMaxBytes < 1<<10 || cfg.BatchMaxBytes > 4<<20 || cfg.OutboxMaxBytes < 1<<20 || cfg.OutboxMaxBytes > 1<<40 ||
			cfg.OutboxFsyncWindow < 0 || cfg.OutboxFsyncWindow > time.Second || cfg.RateLimitEvents < 0 || cfg.RateLimitBytes < 0 {
			t.Fatalf("accepted out-of-range config %+v from %q", cfg, data)
		}
	})
}

// FuzzDataFiles: identity.json and status.json are read from disk; a
// corrupt file must be an error, never a panic.
func FuzzDataFiles(f *testing.F) {
	f.Add([]byte(`{"agent_id":"0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a","agent_key":"k","comms_urls":["https://x:7443"]}`))
	f.Add([]byte(`{"agent_id":`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		for _, name := range []string{agent.IdentityFile, agent.StatusFile} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = agent.LoadIdentity(dir)
		_, _ = agent.ReadStatus(dir)
	})
}
