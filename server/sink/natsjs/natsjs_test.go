package natsjs_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/ingest"
	"github.com/tetherhq/tether/server/sink/natsjs"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sinktest"
	"github.com/tetherhq/tether/server/sqlite"
)

var quiet = slog.New(slog.DiscardHandler)

// streams numbers the streams of the tests that share a server.
var streams atomic.Int64

// newOptions returns options for a stream of its own on ns.
func newOptions(ns *natsServer) natsjs.Options {
	n := streams.Add(1)
	return natsjs.Options{
		URLs: []string{ns.url()}, Stream: fmt.Sprintf("EVENTS_%d", n),
		SubjectPrefix: fmt.Sprintf("t%d.events", n), PublishTimeout: 10 * time.Second, Log: quiet,
	}
}

func open(t *testing.T, o natsjs.Options) *natsjs.Sink {
	t.Helper()
	s, err := natsjs.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func write(t *testing.T, s tether.Sink, b *tether.Batch) {
	t.Helper()
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatalf("Write(%s): %v", b.ID(), err)
	}
}

func TestConformance(t *testing.T) {
	ns := startServer(t, nil)
	sinktest.Run(t, func(t *testing.T) (tether.Sink, sinktest.Reader) {
		o := newOptions(ns)
		s, err := natsjs.Open(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return s, func(t *testing.T) []map[string]any { return records(t, readStream(t, ns.url(), o.Stream)) }
	})
}

func TestStorage(t *testing.T) {
	ns := startServer(t, nil)
	sinktest.RunStorage(t, func(t *testing.T) sinktest.Storage {
		o := newOptions(ns)
		return sinktest.Storage{
			Open: func(t *testing.T) tether.Sink {
				s, err := natsjs.Open(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			Read: func(t *testing.T) []map[string]any { return records(t, readStream(t, ns.url(), o.Stream)) },
		}
	})
}

func TestMessages(t *testing.T) {
	ns := startServer(t, nil)
	o := newOptions(ns)
	s := open(t, o)
	b := sinktest.NewBatch("3f2c-agent", 42, 3)
	b.Events[1].Module = "acme.scanner"
	b.Events[2].Type = "pkg"
	write(t, s, b)

	msgs := readStream(t, ns.url(), o.Stream)
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	for i, m := range msgs {
		ev := b.Events[i]
		one := *b
		one.Events = b.Events[i : i+1]
		line, err := ndjson.AppendBatch(nil, &one)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.data, line) {
			t.Errorf("message %d: body\n%s\nwant the NDJSON line\n%s", i, m.data, line)
		}
		wantSubject := o.SubjectPrefix + "." + strings.ReplaceAll(ev.Module, ".", "_")
		if m.subject != wantSubject {
			t.Errorf("message %d: subject %q, want %q", i, m.subject, wantSubject)
		}
		for k, want := range map[string]string{
			jetstream.MsgIDHeader: fmt.Sprintf("3f2c-agent/42/%d", i),
			natsjs.HeaderAgentID:  "3f2c-agent",
			natsjs.HeaderSequence: "42",
			natsjs.HeaderEventID:  ev.ID,
			natsjs.HeaderModule:   ev.Module,
			natsjs.HeaderType:     ev.Type,
		} {
			if got := m.header.Get(k); got != want {
				t.Errorf("message %d: header %s = %q, want %q", i, k, got, want)
			}
		}
	}
}

func TestSubjectToken(t *testing.T) {
	for module, want := range map[string]string{
		"logcollector":  "logcollector",
		"acme.scan":     "acme_scan",
		"a-b_c9":        "a-b_c9",
		"":              "_",
		"m\nodule *>\"": "m_odule____",
	} {
		if got := natsjs.SubjectToken(module); got != want {
			t.Errorf("SubjectToken(%q) = %q, want %q", module, got, want)
		}
	}
}

func TestTakesPrefix(t *testing.T) {
	for _, c := range []struct {
		subjects []string
		want     bool
	}{
		{[]string{"tether.events.>"}, true},
		{[]string{"tether.>"}, true},
		{[]string{">"}, true},
		{[]string{"tether.events.*"}, true},
		{[]string{"*.events.*"}, true},
		{[]string{"other.>", "tether.events.>"}, true},
		{[]string{"tether.events"}, false},
		{[]string{"tether.events.logcollector"}, false},
		{[]string{"tether.events.*.*"}, false},
		{[]string{"tether.other.>"}, false},
		{nil, false},
	} {
		if got := natsjs.TakesPrefix(c.subjects, "tether.events"); got != c.want {
			t.Errorf("TakesPrefix(%q) = %v, want %v", c.subjects, got, c.want)
		}
	}
}

// A batch written again (the agent's resend after a failure, possibly
// through another node) is stored once; its events keep their first copy.
func TestRetriedBatchStoredOnce(t *testing.T) {
	ns := startServer(t, nil)
	o := newOptions(ns)
	s := open(t, o)
	first := sinktest.NewBatch("agent-1", 7, 5)
	write(t, s, first)
	again := *first
	again.ReceivedAt = first.ReceivedAt.Add(time.Minute)
	write(t, s, &again)
	// And through another sink on the same stream, as another node would.
	write(t, open(t, o), &again)
	next := sinktest.NewBatch("agent-1", 8, 2)
	write(t, s, next)

	recs := records(t, readStream(t, ns.url(), o.Stream))
	if len(recs) != 7 {
		t.Fatalf("%d records, want 7 (5 + 2)", len(recs))
	}
	for i, r := range recs[:5] {
		if r["received_at"] != first.ReceivedAt.Format(time.RFC3339Nano) || r["event_id"] != first.Events[i].ID {
			t.Errorf("record %d = %v, want the first copy of event %s", i, r, first.Events[i].ID)
		}
	}

	// Batches that no agent sent have no id: each write is stored.
	archived := sinktest.NewBatch("", 0, 1)
	archived.Events[0].Module = "commands"
	write(t, s, archived)
	write(t, s, archived)
	if recs := readStream(t, ns.url(), o.Stream); len(recs) != 9 {
		t.Errorf("%d records after an archive batch written twice, want 9", len(recs))
	}
}

// The server stops in the middle of a batch: Write fails; once the server
// is back, the same batch is written again and every event is stored once.
func TestServerStopsMidBatch(t *testing.T) {
	ns := startServer(t, nil)
	o := newOptions(ns)
	s := open(t, o)
	write(t, s, sinktest.NewBatch("agent-1", 1, 3))

	b := sinktest.NewBatch("agent-1", 2, 200)
	natsjs.SetAfterPublish(s, func(i int) {
		if i == 100 {
			waitStored(t, ns, o.Stream, 3+10)
			ns.stop()
		}
	})
	if err := s.Write(context.Background(), b); err == nil {
		t.Fatal("Write returned nil while the server stopped in the middle")
	} else {
		t.Logf("Write: %v", err)
	}
	natsjs.SetAfterPublish(s, nil)
	ns.start()
	before := len(readStream(t, ns.url(), o.Stream)) - 3
	if before == 0 || before == len(b.Events) {
		t.Fatalf("%d events of %d stored before the stop: want some", before, len(b.Events))
	}
	retry(t, s, b)
	recs := records(t, readStream(t, ns.url(), o.Stream))
	checkOnce(t, recs[3:], b)
	t.Logf("%d events stored before the stop, the others by the retry", before)
}

// With the server's exactly-once ingest in front: a delivery cut short by
// the server's stop is not acknowledged, stays pending, and the agent's
// resend completes it without storing an event twice.
func TestIngestCompletesCutDelivery(t *testing.T) {
	ns := startServer(t, nil)
	o := newOptions(ns)
	s := open(t, o)
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	agent := uuid.NewString()
	if err := db.RegisterAgent(context.Background(), &tether.Agent{ID: agent, Name: "a", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	in := ingest.New(ingest.Options{Store: db, Sinks: []tether.Sink{s}, Log: quiet})

	b := sinktest.NewBatch(agent, 1, 100)
	b.ReceivedAt = time.Now().UTC()
	natsjs.SetAfterPublish(s, func(i int) {
		if i == 50 {
			waitStored(t, ns, o.Stream, 10)
			ns.stop()
		}
	})
	if _, err := in.Ingest(context.Background(), b); err == nil {
		t.Fatal("Ingest returned nil while the server stopped in the middle")
	} else if tether.ErrorCode(err) != tether.EUNAVAILABLE {
		t.Fatalf("Ingest: %v, want an unavailable error", err)
	}
	natsjs.SetAfterPublish(s, nil)
	ns.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := in.Ingest(context.Background(), b)
		if err == nil {
			if res != ingest.Completed {
				t.Fatalf("resend: %v, want completed", res)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resend: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res, err := in.Ingest(context.Background(), b); err != nil || res != ingest.Duplicate {
		t.Fatalf("resend of a delivered batch: %v, %v; want duplicate", res, err)
	}
	checkOnce(t, records(t, readStream(t, ns.url(), o.Stream)), b)
}

// waitStored waits until stream holds at least n messages.
func waitStored(t *testing.T, ns *natsServer, stream string, n uint64) {
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Error(err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := js.Stream(context.Background(), stream); err == nil && st.CachedInfo().State.Msgs >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("stream %s: fewer than %d messages after 10s", stream, n)
}

// retry writes b until the sink takes it, as the agent's resends do.
func retry(t *testing.T, s tether.Sink, b *tether.Batch) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.Write(context.Background(), b)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write after the server restarted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkOnce checks that recs are b's events, each once.
func checkOnce(t *testing.T, recs []map[string]any, b *tether.Batch) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		seen[fmt.Sprint(r["event_id"])]++
	}
	for _, e := range b.Events {
		if seen[e.ID] != 1 {
			t.Errorf("event %s stored %d times, want once", e.ID, seen[e.ID])
		}
	}
	if len(recs) != len(b.Events) {
		t.Errorf("%d records, want %d", len(recs), len(b.Events))
	}
}

func TestStreamDeleted(t *testing.T) {
	ns := startServer(t, nil)
	o := newOptions(ns)
	o.PublishTimeout = 3 * time.Second
	s := open(t, o)
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(context.Background(), o.Stream); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), sinktest.NewBatch("a", 1, 3)); err == nil {
		t.Fatal("Write to a deleted stream returned nil")
	} else {
		t.Logf("Write: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.MaxPayload = 64 << 10 })
	o := newOptions(ns)
	s := open(t, o)
	b := sinktest.NewBatch("a", 1, 3)
	b.Events[2].Payload = []byte(`"` + strings.Repeat("x", 70<<10) + `"`)
	err := s.Write(context.Background(), b)
	if err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("Write of an event over max_payload: %v, want an error naming max_payload", err)
	}
	if msgs := readStream(t, ns.url(), o.Stream); len(msgs) != 0 {
		t.Errorf("%d messages of the refused batch stored", len(msgs))
	}
}

func TestCreatedStream(t *testing.T) {
	ns := startServer(t, nil)
	o := newOptions(ns)
	o.DedupWindow = 5 * time.Minute
	s := open(t, o)
	if s.DedupWindow() != 5*time.Minute {
		t.Errorf("DedupWindow() = %s, want 5m", s.DedupWindow())
	}
	cfg := streamInfo(t, ns.url(), o.Stream).Config
	if cfg.Duplicates != 5*time.Minute || cfg.MaxAge != natsjs.DefaultMaxAge || cfg.MaxBytes != -1 ||
		cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy || cfg.Discard != jetstream.DiscardOld ||
		len(cfg.Subjects) != 1 || cfg.Subjects[0] != o.SubjectPrefix+".>" {
		t.Errorf("created stream: %+v", cfg)
	}
	// A second sink (another node) uses it as it is.
	o.DedupWindow = time.Minute
	if got := open(t, o).DedupWindow(); got != 5*time.Minute {
		t.Errorf("second sink: DedupWindow() = %s, want the stream's 5m", got)
	}
}

func TestExistingStream(t *testing.T) {
	ns := startServer(t, nil)
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err = natsjs.Open(ctx, natsjs.Options{URLs: []string{ns.url()}, Stream: "OTHER", Log: quiet})
	if err == nil || !strings.Contains(err.Error(), "other.>") {
		t.Fatalf("Open on a stream that does not take the subjects: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.*"}, Duplicates: 30 * time.Second, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s := open(t, natsjs.Options{URLs: []string{ns.url()}, Stream: "MINE", SubjectPrefix: "mine", Log: quiet})
	if s.DedupWindow() != 30*time.Second {
		t.Errorf("DedupWindow() = %s, want the stream's 30s", s.DedupWindow())
	}
	write(t, s, sinktest.NewBatch("a", 1, 2))
	cfg := streamInfo(t, ns.url(), "MINE").Config
	if cfg.MaxAge != time.Hour || cfg.Duplicates != 30*time.Second {
		t.Errorf("the sink changed the stream: %+v", cfg)
	}
	if n := len(readStream(t, ns.url(), "MINE")); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
}

func streamInfo(t *testing.T, url, stream string) *jetstream.StreamInfo {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo()
}

func TestOptionsErrors(t *testing.T) {
	for name, o := range map[string]natsjs.Options{
		"stream":      {Stream: "a.b"},
		"prefix":      {SubjectPrefix: "a..b"},
		"wildcard":    {SubjectPrefix: "a.>"},
		"dedup":       {DedupWindow: time.Hour, MaxAge: time.Minute},
		"half cert":   {CertFile: "x"},
		"two auths":   {User: "u", Token: "t"},
		"no user":     {Password: "p"},
		"missing CA":  {CAFile: "/nonexistent/ca.pem"},
		"creds file":  {CredsFile: "/nonexistent/user.creds"},
		"no server":   {URLs: []string{"nats://127.0.0.1:1"}},
		"bad timeout": {PublishTimeout: -1},
	} {
		o.Log = quiet
		if o.URLs == nil {
			o.URLs = []string{"nats://127.0.0.1:1"} // never the machine's server
		}
		if s, err := natsjs.Open(context.Background(), o); err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func TestUserPassword(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.Username, o.Password = "tether", "s3cret" })
	o := newOptions(ns)
	o.User, o.Password = "tether", "wrong"
	if _, err := natsjs.Open(context.Background(), o); err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	o.Password = "s3cret"
	s := open(t, o)
	write(t, s, sinktest.NewBatch("a", 1, 2))
	if n := len(readStream(t, ns.url(), o.Stream, nats.UserInfo("tether", "s3cret"))); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
}

func TestToken(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.Authorization = "t0ken" })
	o := newOptions(ns)
	o.Token = "t0ken"
	write(t, open(t, o), sinktest.NewBatch("a", 1, 1))
	o.Token = "other"
	if _, err := natsjs.Open(context.Background(), o); err == nil {
		t.Fatal("Open with a wrong token succeeded")
	}
}

// TLS with a private CA, a client certificate the server verifies, and a
// user and password.
func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	ns := startServer(t, func(o *server.Options) {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: pki.serverCert, KeyFile: pki.serverKey, CaFile: pki.ca, Verify: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = tc, true, true, 5
		o.Username, o.Password = "tether", "s3cret"
	})
	o := newOptions(ns)
	o.CAFile, o.CertFile, o.KeyFile = pki.ca, pki.clientCert, pki.clientKey
	o.User, o.Password = "tether", "s3cret"
	s := open(t, o)
	write(t, s, sinktest.NewBatch("a", 1, 2))
	n := len(readStream(t, ns.url(), o.Stream, nats.RootCAs(pki.ca), nats.ClientCert(pki.clientCert, pki.clientKey),
		nats.UserInfo("tether", "s3cret")))
	if n != 2 {
		t.Errorf("%d messages, want 2", n)
	}

	for name, edit := range map[string]func(*natsjs.Options){
		"no client certificate": func(o *natsjs.Options) { o.CertFile, o.KeyFile = "", "" },
		"system CAs":            func(o *natsjs.Options) { o.CAFile = "" },
		"wrong password":        func(o *natsjs.Options) { o.Password = "x" },
	} {
		bad := o
		edit(&bad)
		if s, err := natsjs.Open(context.Background(), bad); err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// TestLocalServer runs against the NATS server of the machine
// (TETHER_TEST_NATS, default nats://127.0.0.1:4222). It is required when
// TETHER_TEST_NATS is set or CI=true, and skipped when the server is not
// reachable otherwise.
func TestLocalServer(t *testing.T) {
	url, required := os.LookupEnv("TETHER_TEST_NATS")
	if url == "" {
		url = natsjs.DefaultURL
	}
	required = required || os.Getenv("CI") == "true"
	host := strings.TrimPrefix(url, "nats://")
	if c, err := net.DialTimeout("tcp", host, time.Second); err != nil {
		if required {
			t.Fatalf("NATS at %s: %v", url, err)
		}
		t.Skipf("no NATS server at %s (%v): set TETHER_TEST_NATS to run against one", url, err)
	} else {
		c.Close()
	}
	id := strings.ToUpper(strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
	o := natsjs.Options{URLs: []string{url}, Stream: "TETHER_TEST_" + id, SubjectPrefix: "tethertest." + id + ".events", Log: quiet}
	s := open(t, o)
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		js.DeleteStream(context.Background(), o.Stream)
	})
	b := sinktest.NewBatch(uuid.NewString(), 1, 50)
	b.Events[3].Module = "inventory"
	write(t, s, b)
	write(t, s, b)
	write(t, open(t, o), b)
	recs := records(t, readStream(t, url, o.Stream))
	checkOnce(t, recs, b)
	if s.DedupWindow() != natsjs.DefaultDedupWindow {
		t.Errorf("DedupWindow() = %s, want %s", s.DedupWindow(), natsjs.DefaultDedupWindow)
	}
}

// The permissions operations.md gives the sink's NATS user are enough:
// create the stream, find it again, publish and receive acknowledgements.
func TestLeastPermissions(t *testing.T) {
	ns := startServer(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "tether", Password: "s3cret", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{"tether.events.>",
					"$JS.API.STREAM.INFO.TETHER_EVENTS", "$JS.API.STREAM.CREATE.TETHER_EVENTS"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
			{Username: "reader", Password: "r"},
		}
	})
	o := natsjs.Options{URLs: []string{ns.url()}, User: "tether", Password: "s3cret", Log: quiet}
	write(t, open(t, o), sinktest.NewBatch("a", 1, 2))
	write(t, open(t, o), sinktest.NewBatch("a", 2, 1)) // the stream exists now
	if n := len(readStream(t, ns.url(), natsjs.DefaultStream, nats.UserInfo("reader", "r"))); n != 3 {
		t.Errorf("%d messages, want 3", n)
	}
}

// BenchmarkWrite writes batches of 500 events to an in-process server, from
// as many writers as GOMAXPROCS, each writer an agent of its own.
func BenchmarkWrite(b *testing.B) {
	ns := startServerB(b)
	o := natsjs.Options{URLs: []string{ns.ClientURL()}, Log: quiet}
	s, err := natsjs.Open(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var agents atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		agent := fmt.Sprintf("agent-%d", agents.Add(1))
		for seq := uint64(1); pb.Next(); seq++ {
			if err := s.Write(context.Background(), sinktest.NewBatch(agent, seq, 500)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)*500/b.Elapsed().Seconds(), "events/s")
}

func startServerB(b *testing.B) *server.Server {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: b.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats server not ready")
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}
