package modules_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/modules"
	"github.com/tetherhq/tether/agent/store"
)

func inventoryConfig() modules.Config {
	c := noModules()
	c.Inventory = modules.InventoryConfig{Enabled: true, Interval: time.Second, ResendEvery: 24 * time.Hour}
	return c
}

// changes returns the inventory's state changes after the first skip
// records, as "KEY" (upsert) or "-KEY" (delete), packages only unless all.
func changes(t *testing.T, s *sink, skip int, all bool) []string {
	t.Helper()
	var out []string
	for _, r := range s.drain(t)[skip:] {
		if r.Event.Module != "inventory" || !r.Stateful {
			t.Fatalf("unexpected record %+v", r)
		}
		if !all && !strings.HasPrefix(r.Key, "package:") {
			continue
		}
		if r.Delete {
			out = append(out, "-"+r.Key)
		} else {
			out = append(out, r.Key)
		}
	}
	return out
}

// TestInventorySendsDifferences: the first run sends every document, the
// next ones only what changed, and a restart sends nothing unchanged.
func TestInventorySendsDifferences(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	status := filepath.Join(dir, "status")
	orig, err := os.ReadFile("testdata/dpkg-status")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(status, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	sources := func(o *modules.Options) { o.Inventory.DpkgStatus = status }
	m, stop := startManager(t, dir, s, inventoryConfig(), sources)
	await(t, 10*time.Second, "the first inventory", func() bool { return len(s.drain(t)) > 0 })
	first := changes(t, s, 0, true)
	if first[0] != "host" || !slices.Contains(first, "interface:lo") {
		t.Fatalf("first inventory: %q", first)
	}
	if got, want := changes(t, s, 0, false), []string{"package:curl:amd64", "package:libc6:i386", "package:openssl:amd64"}; !slices.Equal(got, want) {
		t.Fatalf("packages %q, want %q", got, want)
	}
	var host map[string]any
	_ = json.Unmarshal(s.drain(t)[0].Event.Payload, &host)
	if host["agent_version"] != "1.2.3" || host["hostname"] == "" {
		t.Fatalf("host document %v", host)
	}
	n := len(s.drain(t))

	// openssl upgraded, curl removed, jq installed.
	next := strings.Replace(string(orig), "Version: 3.0.15-1~deb12u1", "Version: 3.0.16-1~deb12u1", 1)
	next = strings.Replace(next, "Package: curl\nStatus: install ok installed", "Package: curl\nStatus: deinstall ok config-files", 1)
	next += "\nPackage: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2.1\nDescription: lightweight and flexible command-line JSON processor\n"
	if err := os.WriteFile(status, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, "the changes", func() bool { return len(changes(t, s, n, false)) >= 3 })
	time.Sleep(1500 * time.Millisecond) // one more run: nothing new
	if got, want := changes(t, s, n, false), []string{"package:jq:amd64", "package:openssl:amd64", "-package:curl:amd64"}; !slices.Equal(got, want) {
		t.Fatalf("changes %q, want %q", got, want)
	}
	if st, _ := m.Status()["inventory"].(map[string]any); st == nil || st["documents"].(int) < 4 {
		t.Fatalf("inventory status %v", m.Status())
	}
	stop()

	// A restart remembers what was sent.
	n = len(s.drain(t))
	m, stop = startManager(t, dir, s, inventoryConfig(), sources)
	await(t, 10*time.Second, "an inventory run", func() bool { return m.Status()["inventory"] != nil })
	if got := changes(t, s, n, true); len(got) != 0 {
		t.Fatalf("after a restart, sent again: %q", got)
	}
	stop()

	// Every resend_every, everything is sent again.
	cfg := inventoryConfig()
	cfg.Inventory.ResendEvery = time.Millisecond
	startManager(t, dir, s, cfg, sources)
	await(t, 10*time.Second, "everything again", func() bool {
		return len(changes(t, s, n, false)) == 3
	})
}

func TestHealthDocument(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	errLog := modules.NewErrorLog(3)
	cfg := noModules()
	cfg.Health = modules.HealthConfig{Enabled: true, Interval: time.Second}
	_, _ = startManager(t, dir, s, cfg, func(o *modules.Options) {
		o.Log = slogWith(errLog, o.Log)
		o.Stats = func() modules.AgentStats {
			return modules.AgentStats{OutboxEvents: 42, OutboxBytes: 4200, DroppedEvents: 7, Connected: true, LastErrors: errLog.Last()}
		}
		o.Log.Warn("something odd", "err", "disk slow")
		for i := range 4 {
			o.Log.Error("failure", "n", i)
		}
		o.Log.Info("not kept")
	})
	var recs []store.Record
	await(t, 10*time.Second, "two health documents", func() bool {
		recs = s.drain(t)
		return len(recs) >= 2
	})
	r := recs[1]
	if !r.Stateful || r.Key != "agent" || r.Event.Module != "health" || r.Event.Type != "agent" {
		t.Fatalf("record %+v", r)
	}
	var doc struct {
		modules.AgentStats
		Version    string         `json:"version"`
		PID        int            `json:"pid"`
		RSSBytes   uint64         `json:"rss_bytes"`
		CPUSeconds float64        `json:"cpu_seconds"`
		Goroutines int            `json:"goroutines"`
		Modules    map[string]any `json:"modules"`
	}
	if err := json.Unmarshal(r.Event.Payload, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OutboxEvents != 42 || doc.DroppedEvents != 7 || !doc.Connected || doc.Version != "1.2.3" || doc.PID != os.Getpid() ||
		doc.RSSBytes == 0 || doc.CPUSeconds <= 0 || doc.Goroutines == 0 {
		t.Fatalf("health document %s", r.Event.Payload)
	}
	if _, ok := doc.Modules["health"]; !ok {
		t.Fatalf("modules %v", doc.Modules)
	}
	// The last 3 warnings and errors, oldest first, with their attributes.
	var msgs []string
	for _, e := range doc.LastErrors {
		msgs = append(msgs, e.Level+" "+e.Message)
	}
	if want := []string{"error failure n=1", "error failure n=2", "error failure n=3"}; !slices.Equal(msgs, want) {
		t.Fatalf("last errors %q, want %q", msgs, want)
	}
}
