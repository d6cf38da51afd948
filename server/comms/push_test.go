package comms_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/ingest"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sink/file"
	"github.com/tetherhq/tether/server/sink/ndjson"
	"github.com/tetherhq/tether/server/sqlite"
)

// pushEnv is a comms service on a real SQLite store and a real file sink,
// served over HTTP/1.1 and HTTP/2 with TLS.
type pushEnv struct {
	db      *sqlite.DB
	keys    *authn.Keyring
	events  string // the file sink's directory
	metrics *metrics.Metrics
	srv     *httptest.Server
}

// testBodyLimit is the request size limit of pushEnv's service.
const testBodyLimit = 1 << 20

// compressFiles makes newPushEnv's file sink compress closed files, as
// tether-server does by default (tests read plain files).
var compressFiles = false

func newPushEnv(t testing.TB, limits ingest.Limits, more ...tether.Sink) *pushEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := authn.NewKeyring(context.Background(), db, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &pushEnv{db: db, keys: keys, events: filepath.Join(dir, "events"), metrics: metrics.New()}
	sink, err := file.Open(e.events, file.Options{Uncompressed: !compressFiles})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	svc := comms.New(comms.Options{Store: db, Sinks: append([]tether.Sink{sink}, more...), Keys: keys, Presence: presence.New(db, log),
		Log: log, Metrics: e.metrics, MaxBodyBytes: testBodyLimit, Limits: limits})
	e.srv = httptest.NewUnstartedServer(svc.Handler())
	e.srv.EnableHTTP2 = true
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// agent registers an agent and returns its id and a token.
func (e *pushEnv) agent(t testing.TB) (string, string) {
	t.Helper()
	id := uuid.NewString()
	if err := e.db.RegisterAgent(context.Background(), &tether.Agent{ID: id, Name: "a", KeyHash: make([]byte, 32)}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.keys.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id, tok
}

// client returns a Connect client of the service, with zstd registered.
func (e *pushEnv) client(opts ...connect.ClientOption) commsv1connect.AgentServiceClient {
	opts = append([]connect.ClientOption{connect.WithAcceptCompression("zstd",
		func() connect.Decompressor { d, _ := zstd.NewReader(nil); return zstdDecompressor{d} },
		func() connect.Compressor { c, _ := zstd.NewWriter(nil); return c },
	)}, opts...)
	return commsv1connect.NewAgentServiceClient(e.srv.Client(), e.srv.URL, opts...)
}

type zstdDecompressor struct{ *zstd.Decoder }

func (d zstdDecompressor) Close() error { return nil }

// stored returns the event records the file sink holds, by agent.
func (e *pushEnv) stored(t *testing.T, agent string) []map[string]any {
	t.Helper()
	entries, err := os.ReadDir(e.events)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, ent := range entries {
		f, err := os.Open(filepath.Join(e.events, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ndjson.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r["agent_id"] == agent {
				out = append(out, r)
			}
		}
	}
	return out
}

// events returns n stateless events of about size payload bytes each.
func events(seq uint64, n, size int) []*commsv1.Event {
	out := make([]*commsv1.Event, n)
	filler := strings.Repeat("x", max(0, size-19)) // a payload of about size bytes
	for i := range out {
		out[i] = &commsv1.Event{
			Id: fmt.Sprintf("ev-%d-%d", seq, i), Module: "logcollector", Type: "line",
			CollectedAt: timestamppb.Now(),
			Payload:     fmt.Appendf(nil, `{"i":%d,"line":"%s"}`, i, filler),
		}
	}
	return out
}

func push(ctx context.Context, c commsv1connect.AgentServiceClient, token string, msg *commsv1.PushStatelessRequest) (*commsv1.PushStatelessResponse, error) {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+token)
	resp, err := c.PushStateless(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func wantCode(t *testing.T, err error, code connect.Code, msg string) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code {
		t.Fatalf("error %v, want %s", err, code)
	}
	if !strings.Contains(ce.Message(), msg) {
		t.Fatalf("message %q does not contain %q", ce.Message(), msg)
	}
	return ce
}

// TestPushCompressed pushes batches compressed with zstd and gzip, with
// the Connect protocol and gRPC, and a retry of each: each event is stored
// once.
func TestPushCompressed(t *testing.T) {
	e := newPushEnv(t, ingest.Limits{})
	id, tok := e.agent(t)
	seq := uint64(0)
	for _, tt := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect+zstd", []connect.ClientOption{connect.WithSendCompression("zstd")}},
		{"connect+gzip", []connect.ClientOption{connect.WithSendGzip()}},
		{"grpc+zstd", []connect.ClientOption{connect.WithGRPC(), connect.WithSendCompression("zstd")}},
		{"grpc+gzip", []connect.ClientOption{connect.WithGRPC(), connect.WithSendGzip()}},
		{"connect+json", []connect.ClientOption{connect.WithProtoJSON(), connect.WithSendCompression("zstd")}},
	} {
		seq++
		msg := &commsv1.PushStatelessRequest{Sequence: seq, Events: events(seq, 500, 200)}
		c := e.client(tt.opts...)
		for try := range 2 {
			resp, err := push(t.Context(), c, tok, msg)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if resp.Accepted != 500 || resp.Duplicate != (try == 1) {
				t.Fatalf("%s try %d: answer %v", tt.name, try, resp)
			}
		}
	}
	recs := e.stored(t, id)
	if len(recs) != int(seq)*500 {
		t.Fatalf("%d events stored, want %d", len(recs), seq*500)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if r["agent_name"] != "a" { // the agent's name, from its cached record
			t.Fatalf("agent_name %v, want a", r["agent_name"])
		}
		ev := r["event_id"].(string)
		if seen[ev] {
			t.Fatalf("event %s stored twice", ev)
		}
		seen[ev] = true
	}
}

// zstdBomb returns a zstd frame of RLE blocks that decompresses to n zero
// bytes, followed by a corrupt block when corrupt is set: a decoder that
// reads past n bytes fails on it.
func zstdBomb(n int64, corrupt bool) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3} // magic, no content size, window 128 KiB
	for n > 0 {
		size := min(n, 128<<10)
		n -= size
		last := uint32(0)
		if n == 0 && !corrupt {
			last = 1
		}
		hdr := last | 1<<1 | uint32(size)<<3 // RLE block of size bytes
		b = append(b, byte(hdr), byte(hdr>>8), byte(hdr>>16), 0)
	}
	if corrupt {
		b = append(b, 1|3<<1, 0, 0) // reserved block type
	}
	return b
}

// gzipBomb returns gzip members that decompress to n zero bytes in all
// (n a multiple of 1 MiB), followed by garbage when corrupt is set.
func gzipBomb(t *testing.T, n int64, corrupt bool) []byte {
	var member bytes.Buffer
	w, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	if _, err := w.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	out := bytes.Repeat(member.Bytes(), int(n>>20))
	if corrupt {
		out = append(out, "not gzip at all"...)
	}
	return out
}

// post sends a raw Connect request and returns the status, the headers
// and the error body.
func (e *pushEnv) post(t *testing.T, token, encoding string, body io.Reader, length int64) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+"/tether.comms.v1.AgentService/PushStateless", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Authorization", "Bearer "+token)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("status %d, body %q: not a Connect error", resp.StatusCode, data)
		}
	}
	return resp.StatusCode, resp.Header, out
}

// TestPushZipBombs sends bodies that decompress far past the limit: they
// are refused with invalid_argument once the limit is passed. Each bomb is
// corrupt just past twice the limit, so a server that read on (connect-go's
// own limit reads to the end to report the size) would answer another
// error; and a 16 GiB one shows the answer does not wait for the end.
func TestPushZipBombs(t *testing.T) {
	e := newPushEnv(t, ingest.Limits{})
	id, tok := e.agent(t)
	for _, tt := range []struct {
		name, encoding string
		body           []byte
	}{
		{"zstd", "zstd", zstdBomb(2*testBodyLimit+128<<10, true)},
		{"zstd 16 GiB", "zstd", zstdBomb(16<<30, false)},
		{"gzip", "gzip", gzipBomb(t, 2*testBodyLimit+1<<20, true)},
		{"gzip 512 MiB", "gzip", gzipBomb(t, 512<<20, false)},
	} {
		if len(tt.body) > testBodyLimit {
			t.Fatalf("%s: a %d-byte body: over the limit before decompression", tt.name, len(tt.body))
		}
		status, _, body := e.post(t, tok, tt.encoding, bytes.NewReader(tt.body), int64(len(tt.body)))
		if status != http.StatusBadRequest || body["code"] != "invalid_argument" ||
			!strings.Contains(fmt.Sprint(body["message"]), fmt.Sprintf("decompressed request body larger than %d bytes", testBodyLimit)) {
			t.Errorf("%s bomb (%d bytes): status %d, %v; want 400 invalid_argument, decompressed body over the limit", tt.name, len(tt.body), status, body)
		}
	}
	if n := len(e.stored(t, id)); n != 0 {
		t.Fatalf("%d events stored", n)
	}
	// A frame asking for a huge window is refused before anything is
	// allocated for it.
	window := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3, 1, 0, 0} // a 2 GiB window, an empty last raw block
	status, _, body := e.post(t, tok, "zstd", bytes.NewReader(window), int64(len(window)))
	if status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["message"]), "zstd window larger than") {
		t.Errorf("2 GiB window: status %d, %v", status, body)
	}
	// The service still works, and an honest body just under the limit
	// compressed passes.
	msg, _ := proto.Marshal(&commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 4000, 200)})
	if len(msg) > testBodyLimit || len(msg) < testBodyLimit*3/4 {
		t.Fatalf("message of %d bytes: want just under %d", len(msg), testBodyLimit)
	}
	enc, _ := zstd.NewWriter(nil)
	compressed := enc.EncodeAll(msg, nil)
	if status, _, body := e.post(t, tok, "zstd", bytes.NewReader(compressed), int64(len(compressed))); status != 200 {
		t.Fatalf("honest zstd body: status %d, %v", status, body)
	}
	if n := len(e.stored(t, id)); n != 4000 {
		t.Fatalf("%d events stored, want 4000", n)
	}
}

// TestPushOversized sends batches over the limits: a body over the
// request limit, with and without a Content-Length, and a batch of too
// many events. Each is invalid_argument (a retry cannot succeed) and
// nothing is stored.
func TestPushOversized(t *testing.T) {
	e := newPushEnv(t, ingest.Limits{})
	id, tok := e.agent(t)
	big, _ := proto.Marshal(&commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 6000, 200)})
	if len(big) < testBodyLimit+64<<10 {
		t.Fatalf("message of %d bytes: want over %d", len(big), testBodyLimit+64<<10)
	}
	for _, length := range []int64{int64(len(big)), -1} { // -1: chunked
		status, _, body := e.post(t, tok, "", bytes.NewReader(big), length)
		if status != http.StatusBadRequest || body["code"] != "invalid_argument" || !strings.Contains(fmt.Sprint(body["message"]), "request body larger than") {
			t.Errorf("body of %d bytes (length %d): status %d, %v", len(big), length, status, body)
		}
	}
	c := e.client(connect.WithGRPC())
	_, err := push(t.Context(), c, tok, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 6000, 200)})
	wantCode(t, err, connect.CodeInvalidArgument, "request body larger than")
	_, err = push(t.Context(), e.client(connect.WithSendCompression("zstd")), tok, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 10_001, 10)})
	wantCode(t, err, connect.CodeInvalidArgument, "at most 10000 per batch")
	_, err = push(t.Context(), c, tok, &commsv1.PushStatelessRequest{Sequence: 1 << 63, Events: events(1, 1, 10)})
	wantCode(t, err, connect.CodeInvalidArgument, "sequence")
	if n := len(e.stored(t, id)); n != 0 {
		t.Fatalf("%d events stored", n)
	}
}

// TestPushRateLimited pushes past an agent's rate: the push is refused
// with resource_exhausted and a delay, in the Retry-After header (429 on
// plain HTTP) and a RetryInfo detail; another agent is not affected, and
// after the delay the batch passes.
func TestPushRateLimited(t *testing.T) {
	e := newPushEnv(t, ingest.Limits{AgentEventsPerSec: 500})
	id, tok := e.agent(t)
	_, other := e.agent(t)
	c := e.client()
	if _, err := push(t.Context(), c, tok, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 1500, 50)}); err != nil {
		t.Fatal(err) // the burst is 1000: this puts the agent 500 events in debt, a second's worth
	}
	msg := &commsv1.PushStatelessRequest{Sequence: 2, Events: events(2, 10, 50)}
	_, err := push(t.Context(), c, tok, msg)
	ce := wantCode(t, err, connect.CodeResourceExhausted, "rate of 500 events/s")
	if got := ce.Meta().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1 (second)", got)
	}
	delay := retryInfo(ce)
	if delay <= 500*time.Millisecond || delay > time.Second {
		t.Errorf("RetryInfo delay = %s, want up to 1s", delay)
	}
	// gRPC carries the same in trailers.
	_, err = push(t.Context(), e.client(connect.WithGRPC()), tok, msg)
	if ce := wantCode(t, err, connect.CodeResourceExhausted, "retry in"); ce.Meta().Get("Retry-After") == "" {
		t.Errorf("gRPC: no retry-after: %v", ce.Meta())
	}
	// Plain HTTP: 429 with Retry-After.
	raw, _ := proto.Marshal(msg)
	status, h, body := e.post(t, tok, "", bytes.NewReader(raw), int64(len(raw)))
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" || body["code"] != "resource_exhausted" {
		t.Errorf("plain HTTP: status %d, Retry-After %q, %v", status, h.Get("Retry-After"), body)
	}
	if _, err := push(t.Context(), c, other, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 10, 50)}); err != nil {
		t.Fatalf("another agent: %v", err)
	}
	time.Sleep(delay)
	if _, err := push(t.Context(), c, tok, msg); err != nil {
		t.Fatalf("after the delay: %v", err)
	}
	if n := len(e.stored(t, id)); n != 1510 {
		t.Fatalf("%d events stored, want 1510", n)
	}
	scrape := e.scrape(t)
	if !strings.Contains(scrape, `tether_ingest_throttled_total{limit="agent_events"} 3`) {
		t.Errorf("metrics: no 3 throttled pushes in\n%s", grepLines(scrape, "throttled"))
	}
	for _, want := range []string{`tether_sink_write_seconds_count{sink="file"} 3`, `tether_event_batches_total{result="stored"} 3`} {
		if !strings.Contains(scrape, want) {
			t.Errorf("metrics: no %s in\n%s", want, grepLines(scrape, "sink_write|batches"))
		}
	}
}

// gateSink holds every Write until its gate is closed.
type gateSink struct {
	entered chan struct{}
	gate    chan struct{}
}

func (g *gateSink) Write(ctx context.Context, b *tether.Batch) error {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gateSink) Close() error { return nil }

// TestPushBusy fills the node's in-flight budget with a batch held in a
// slow sink: a push of another agent is refused with resource_exhausted
// and a delay between the base delay and twice it, instead of waiting.
func TestPushBusy(t *testing.T) {
	gate := &gateSink{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	e := newPushEnv(t, ingest.Limits{MaxInflightRequests: 1, BusyRetryDelay: 3 * time.Second}, gate)
	_, tok := e.agent(t)
	_, tok2 := e.agent(t)
	c := e.client()
	done := make(chan error, 1)
	go func() {
		_, err := push(context.Background(), c, tok, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 10, 50)})
		done <- err
	}()
	<-gate.entered
	_, err := push(t.Context(), c, tok2, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 10, 50)})
	ce := wantCode(t, err, connect.CodeResourceExhausted, "the server is busy")
	if got := ce.Meta().Get("Retry-After"); got < "3" || got > "6" || len(got) != 1 {
		t.Errorf("Retry-After = %q, want 3 to 6 seconds", got)
	}
	close(gate.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := push(t.Context(), c, tok2, &commsv1.PushStatelessRequest{Sequence: 1, Events: events(1, 10, 50)}); err != nil {
		t.Fatalf("once the budget is free: %v", err)
	}
}

func (e *pushEnv) scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	e.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func grepLines(s, words string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range strings.Split(words, "|") {
			if strings.Contains(l, w) && !strings.HasPrefix(l, "#") {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestPushStateful pushes state changes through the handler: upserts and
// deletes land in the state store with their batch's sequence, a late
// resend of an older batch (one that another server node took meanwhile,
// while the first attempt was stuck) changes nothing, and every change
// reaches the sink once.
func TestPushStateful(t *testing.T) {
	e := newPushEnv(t, ingest.Limits{})
	id, tok := e.agent(t)
	c := e.client(connect.WithSendCompression("zstd"))
	change := func(seq uint64, key string, op commsv1.StateOp, doc string) *commsv1.StatefulEvent {
		ev := &commsv1.Event{Id: fmt.Sprintf("st-%d-%s", seq, key), Module: "inventory", Type: "package", CollectedAt: timestamppb.Now()}
		if doc != "" {
			ev.Payload = []byte(doc)
		}
		return &commsv1.StatefulEvent{Event: ev, Key: key, Op: op}
	}
	pushState := func(seq uint64, changes ...*commsv1.StatefulEvent) *commsv1.PushStatefulResponse {
		t.Helper()
		req := connect.NewRequest(&commsv1.PushStatefulRequest{Sequence: seq, Events: changes})
		req.Header().Set("Authorization", "Bearer "+tok)
		resp, err := c.PushStateful(t.Context(), req)
		if err != nil {
			t.Fatalf("batch %d: %v", seq, err)
		}
		return resp.Msg
	}
	up, del := commsv1.StateOp_STATE_OP_UPSERT, commsv1.StateOp_STATE_OP_DELETE
	batch2 := []*commsv1.StatefulEvent{change(2, "bash", up, `{"version":"5.0"}`), change(2, "vim", up, `{"version":"8"}`), change(2, "zsh", up, `{"version":"5"}`)}
	pushState(1, change(1, "bash", up, `{"version":"5.1"}`), change(1, "curl", up, `{"version":"7"}`), change(1, "vim", up, `{"version":"9"}`))
	pushState(2, batch2...)
	pushState(3, change(3, "bash", up, `{"version":"5.2"}`), change(3, "vim", del, ""))
	if r := pushState(2, batch2...); !r.Duplicate {
		t.Fatal("batch 2 resent late: not reported as a duplicate")
	}
	if r := pushState(3, change(3, "bash", up, `{"version":"5.2"}`), change(3, "vim", del, "")); !r.Duplicate {
		t.Fatal("batch 3 resent: not reported as a duplicate")
	}
	st, err := e.db.State(t.Context(), id, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range st {
		got = append(got, fmt.Sprintf("%s=%s@%d", s.Key, s.Doc, s.Sequence))
	}
	want := []string{`bash={"version":"5.2"}@3`, `curl={"version":"7"}@1`, `zsh={"version":"5"}@2`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("state %v, want %v", got, want)
	}
	if n := len(e.stored(t, id)); n != 8 {
		t.Fatalf("%d changes in the sink, want 8", n)
	}
	// An upsert needs a JSON document; nothing of a refused batch is applied.
	req := connect.NewRequest(&commsv1.PushStatefulRequest{Sequence: 4, Events: []*commsv1.StatefulEvent{
		change(4, "curl", del, ""), change(4, "bad", up, ""),
	}})
	req.Header().Set("Authorization", "Bearer "+tok)
	_, err = c.PushStateful(t.Context(), req)
	wantCode(t, err, connect.CodeInvalidArgument, "events[1].event.payload")
	if st, _ := e.db.State(t.Context(), id, "inventory"); len(st) != 3 {
		t.Fatalf("a refused batch changed the state: %d keys", len(st))
	}
}
