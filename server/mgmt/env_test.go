package mgmt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/authn"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/live"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/mgmt"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/presence"
	"github.com/tetherhq/tether/server/sqlite"
)

const pollWindow = 50 * time.Second

var commsURLs = []string{"https://tether.example:7443"}

// env is a management API served over plain HTTP by real components: a
// SQLite store in a temporary directory, the in-process notifier, the
// presence tracker and the command manager.
type env struct {
	store    *sqlite.DB
	presence *presence.Tracker
	// hub is the notifier: subscribe to see an agent's long-polls woken.
	hub *notify.Hub
	// events is the feed of accepted batches of the event stream: write
	// batches to it as the ingest would.
	events *live.Hub
	srv    *httptest.Server
	// tokens holds a bearer token of each role.
	tokens map[tether.Role]string
}

func newEnv(t *testing.T) *env { t.Helper(); return newEnvWith(t, nil) }

// newEnvWith is newEnv with edit applied to the options of the API.
func newEnvWith(t testing.TB, edit func(*mgmt.Options)) *env {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	// Closed after the server (cleanups run last in, first out); a test
	// may close it earlier.
	t.Cleanup(func() { _ = db.Close() })
	log := slog.New(slog.DiscardHandler)
	fs := openFiles(t, files.Options{})
	hub := notify.NewHub()
	// Few streams and short queues: the tests reach both limits.
	events := live.New(live.Options{MaxSubscribers: 4, QueueEvents: 1})
	t.Cleanup(func() { events.Close() })
	pres := presence.New(db, log)
	o := mgmt.Options{
		Store:      db,
		Commands:   &command.Manager{Store: db, Notifier: hub},
		Notifier:   hub,
		Presence:   pres,
		Log:        log,
		PollWindow: pollWindow,
		CommsURLs:  commsURLs,
		Metrics:    metrics.New().Handler(),
		Files:      fs,
		Events:     events,
	}
	if edit != nil {
		edit(&o)
	}
	srv := httptest.NewServer(mgmt.New(o))
	t.Cleanup(srv.Close)
	e := &env{store: db, presence: pres, hub: hub, events: o.Events, srv: srv, tokens: map[tether.Role]string{}}
	for _, r := range tether.Roles {
		e.tokens[r] = e.newToken(t, r, nil)
	}
	return e
}

// openFiles opens a file store, with a new release-signing key, in a
// temporary directory.
func openFiles(t testing.TB, o files.Options) *files.Store {
	t.Helper()
	dir := t.TempDir()
	key, err := files.EnsureKey(dir)
	if err != nil {
		t.Fatalf("release key: %v", err)
	}
	fs, err := files.Open(filepath.Join(dir, "files"), key, o)
	if err != nil {
		t.Fatalf("open file store: %v", err)
	}
	return fs
}

// newToken creates a token of the role directly in the store, lets edit
// change it before it is stored, and returns its bearer string.
func (e *env) newToken(t testing.TB, role tether.Role, edit func(*tether.Token)) string {
	t.Helper()
	secret, tok := authn.NewAPIToken()
	tok.Role = role
	tok.Name = "test-" + string(role)
	tok.CreatedAt = time.Now().UTC()
	if edit != nil {
		edit(tok)
	}
	if err := e.store.CreateToken(context.Background(), tok); err != nil {
		t.Fatalf("create %s token: %v", role, err)
	}
	return secret
}

// request builds a request to the server. body is sent as is when it is a
// string or []byte, as JSON otherwise, and not at all when nil.
func (e *env) request(t *testing.T, method, path, token string, body any) *http.Request {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// send sends req and returns the response with its body read.
func send(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, data
}

// do sends a request and returns the status and body.
func (e *env) do(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	resp, data := send(t, e.request(t, method, path, token, body))
	return resp.StatusCode, data
}

// decodeInto decodes a JSON body into v.
func decodeInto(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, data, err)
	}
}
