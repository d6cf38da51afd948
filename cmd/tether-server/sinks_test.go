package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhq/tether/server/sink/natsjs"
)

func TestNATSConfig(t *testing.T) {
	const full = `events:
  files: false
  nats:
    urls: [nats://n1:4222, tls://n2:4222]
    stream: EVENTS
    subject_prefix: acme.tether
    publish_timeout: 5s
    dedup_window: 10m
    replicas: 3
    max_age: 168h
    max_bytes: 1073741824
    ca_file: /etc/nats/ca.pem
    cert_file: /etc/nats/client.pem
    key_file: /etc/nats/client-key.pem
    creds_file: /etc/nats/tether.creds
`
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"defaults", "", ""},
		{"full", full, ""},
		{"user", "events:\n  nats:\n    urls: [nats://n1:4222]\n    user: tether\n    password: x\n", ""},
		{"no age limit", "events:\n  nats:\n    urls: [nats://n1:4222]\n    max_age: 0s\n", ""},
		{"unknown key", "events:\n  nats:\n    url: nats://n1:4222\n", `unknown key "events.nats.url"`},
		{"no sink", "events:\n  files: false\n", "events.files"},
		{"bad url", "events:\n  nats:\n    urls: [\"http://n1:4222\"]\n", "events.nats.urls"},
		{"no host", "events:\n  nats:\n    urls: [\"n1:4222\"]\n", "events.nats.urls"},
		{"stream", "events:\n  nats:\n    urls: [nats://n1]\n    stream: a.b\n", "events.nats.stream"},
		{"prefix", "events:\n  nats:\n    urls: [nats://n1]\n    subject_prefix: a.>\n", "events.nats.subject_prefix"},
		{"timeout", "events:\n  nats:\n    urls: [nats://n1]\n    publish_timeout: 1ms\n", "events.nats.publish_timeout"},
		{"window", "events:\n  nats:\n    urls: [nats://n1]\n    dedup_window: 0s\n", "events.nats.dedup_window"},
		{"replicas", "events:\n  nats:\n    urls: [nats://n1]\n    replicas: 7\n", "events.nats.replicas"},
		{"age below window", "events:\n  nats:\n    urls: [nats://n1]\n    max_age: 1m\n", "events.nats.max_age"},
		{"bytes", "events:\n  nats:\n    urls: [nats://n1]\n    max_bytes: -1\n", "events.nats.max_bytes"},
		{"half cert", "events:\n  nats:\n    urls: [nats://n1]\n    cert_file: c.pem\n", "events.nats.cert_file"},
		{"password alone", "events:\n  nats:\n    urls: [nats://n1]\n    password: x\n", "events.nats.password"},
		{"two auths", "events:\n  nats:\n    urls: [nats://n1]\n    user: u\n    token: t\n", "events.nats.creds_file, events.nats.user, events.nats.token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := defaultConfig()
			err := readConfigFile(&cfg, path)
			if err == nil {
				err = cfg.validate()
			}
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
		})
	}

	cfg := defaultConfig()
	if err := readConfigFile(&cfg, writeTemp(t, full)); err != nil {
		t.Fatal(err)
	}
	o := cfg.Events.NATS.options(nil)
	if o.Stream != "EVENTS" || o.SubjectPrefix != "acme.tether" || o.DedupWindow != 10*time.Minute ||
		o.MaxAge != 168*time.Hour || o.Replicas != 3 || len(o.URLs) != 2 || o.CredsFile != "/etc/nats/tether.creds" {
		t.Errorf("options = %+v", o)
	}
	cfg.Events.NATS.MaxAge = 0
	if o := cfg.Events.NATS.options(nil); o.MaxAge >= 0 {
		t.Errorf("max_age 0: MaxAge = %s, want negative (no limit)", o.MaxAge)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startNATS starts a NATS server with JetStream in the test's process and
// returns its URL.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL()
}

// A node publishes the events it accepts to NATS JetStream, with the event
// files or without them, and a resent batch is stored once.
func TestNodeNATSSink(t *testing.T) {
	for _, files := range []bool{false, true} {
		t.Run(fmt.Sprintf("files=%v", files), func(t *testing.T) {
			url := startNATS(t)
			cfg := defaultConfig()
			cfg.DataDir = t.TempDir()
			cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.Events.Files = files
			cfg.Events.NATS.URLs = []string{url}
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			n, err := startNode(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := n.Shutdown(ctx); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			})

			id, key := enrollRaw(t, n)
			hc := httpsClient(t, n)
			st, out := connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
			if st != 200 {
				t.Fatalf("Authenticate: %d %v", st, out)
			}
			jwt := out["token"].(string)
			push := `{"sequence":"1","events":[` +
				`{"id":"e1","module":"logcollector","type":"line","collectedAt":"2026-11-23T18:00:00Z","payload":"eyJsaW5lIjoiaGVsbG8ifQ=="},` +
				`{"id":"e2","module":"acme.scan","type":"finding","collectedAt":"2026-11-23T18:00:01Z"}]}`
			if st, out := connectJSON(t, hc, n, "PushStateless", jwt, push); st != 200 || out["accepted"] != float64(2) {
				t.Fatalf("PushStateless: %d %v", st, out)
			}
			if st, out := connectJSON(t, hc, n, "PushStateless", jwt, push); st != 200 || out["duplicate"] != true {
				t.Fatalf("resent batch: %d %v, want duplicate", st, out)
			}

			msgs := streamMessages(t, url, natsjs.DefaultStream)
			if len(msgs) != 2 {
				t.Fatalf("%d messages in the stream, want 2", len(msgs))
			}
			for i, want := range []struct{ subject, event string }{
				{"tether.events.logcollector", "e1"}, {"tether.events.acme_scan", "e2"},
			} {
				m := msgs[i]
				if m.Subject() != want.subject || m.Headers().Get(natsjs.HeaderEventID) != want.event ||
					m.Headers().Get(natsjs.HeaderAgentID) != id || !strings.Contains(string(m.Data()), `"agent_id":"`+id+`"`) {
					t.Errorf("message %d: %s %v %s", i, m.Subject(), m.Headers(), m.Data())
				}
			}
			_, err = os.Stat(filepath.Join(cfg.DataDir, "events"))
			if files != (err == nil) {
				t.Errorf("events.files %v: DATA/events: %v", files, err)
			}
		})
	}
}

func streamMessages(t *testing.T, url, stream string) []jetstream.Msg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}
