package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/client"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
)

// fileServer serves one file the way the comms listener does, and can cut
// the first transfer short, ignore Range, or refuse a token once.
type fileServer struct {
	f    *fakeServer
	data []byte
	sum  string

	mu          sync.Mutex
	cutOnce     bool // the first GET stops after half the bytes
	ignoreRange bool // answer 200 with the whole file, like a cache that ignores Range
	refuseOnce  bool // answer the first GET 401
	ranges      []string
	ifRanges    []string
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.f.check(r.Header); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"code":"unauthenticated","message":"invalid token"}`))
		return
	}
	if r.PathValue("sha256") != s.sum {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"code":"not_found","message":"no file ` + r.PathValue("sha256") + `"}`))
		return
	}
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.ifRanges = append(s.ifRanges, r.Header.Get("If-Range"))
	cut, ignore, refuse := s.cutOnce, s.ignoreRange, s.refuseOnce
	s.cutOnce, s.refuseOnce = false, false
	s.mu.Unlock()
	switch {
	case refuse:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"code":"unauthenticated","message":"token expired"}`))
	case cut:
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		w.WriteHeader(http.StatusOK)
		w.Write(s.data[:len(s.data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case ignore:
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		w.Write(s.data)
	default:
		w.Header().Set("ETag", `"`+s.sum+`"`)
		http.ServeContent(w, r, "tether-agent", time.Time{}, bytes.NewReader(s.data))
	}
}

func startFiles(t *testing.T, size int) (*client.Client, *fileServer) {
	t.Helper()
	f := &fakeServer{lifetime: 15 * time.Minute, tokens: map[string]bool{}}
	data := make([]byte, size)
	rand.Read(data)
	sum := sha256.Sum256(data)
	fs := &fileServer{f: f, data: data, sum: hex.EncodeToString(sum[:])}
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(f))
	mux.Handle("GET /api/v1/files/{sha256}", fs)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{
		URLs:     []string{closedURL(t), srv.URL},
		AgentID:  "agent-1",
		AgentKey: "key-1",
		RootCAs:  srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, fs
}

func TestDownloadResumesWhereItStopped(t *testing.T) {
	c, fs := startFiles(t, 1<<20)
	fs.cutOnce = true
	ctx := context.Background()
	var got bytes.Buffer
	n, err := c.Download(ctx, fs.sum, &got, 0)
	var ce *client.Error
	if !errors.As(err, &ce) || !ce.Retryable() || n != int64(got.Len()) || n == 0 || n >= int64(len(fs.data)) {
		t.Fatalf("cut download: n=%d (buffer %d) err=%v, want a retryable error after some bytes", n, got.Len(), err)
	}
	n2, err := c.Download(ctx, fs.sum, &got, n)
	if err != nil || n+n2 != int64(len(fs.data)) || !bytes.Equal(got.Bytes(), fs.data) {
		t.Fatalf("resumed download: n=%d err=%v, %d bytes, equal=%v", n2, err, got.Len(), bytes.Equal(got.Bytes(), fs.data))
	}
	if want := "bytes=" + strconv.FormatInt(n, 10) + "-"; fs.ranges[1] != want || fs.ifRanges[1] != `"`+fs.sum+`"` {
		t.Fatalf("second request: Range %q If-Range %q, want %q and the ETag", fs.ranges[1], fs.ifRanges[1], want)
	}
	if fs.ranges[0] != "" {
		t.Fatalf("first request sent Range %q", fs.ranges[0])
	}
}

func TestDownloadSkipsWhatItHasWhenRangeIsIgnored(t *testing.T) {
	c, fs := startFiles(t, 100_000)
	fs.ignoreRange = true
	got := bytes.NewBuffer(append([]byte(nil), fs.data[:40_000]...))
	n, err := c.Download(context.Background(), fs.sum, got, 40_000)
	if err != nil || n != 60_000 || !bytes.Equal(got.Bytes(), fs.data) {
		t.Fatalf("n=%d err=%v equal=%v", n, err, bytes.Equal(got.Bytes(), fs.data))
	}
}

func TestDownloadOfACompleteFileWritesNothing(t *testing.T) {
	c, fs := startFiles(t, 1000)
	var got bytes.Buffer
	if n, err := c.Download(context.Background(), fs.sum, &got, 1000); err != nil || n != 0 || got.Len() != 0 {
		t.Fatalf("offset = size: n=%d err=%v", n, err)
	}
	_, err := c.Download(context.Background(), fs.sum, &got, 1001)
	if codeOf(err) != connect.CodeOutOfRange {
		t.Fatalf("offset past the end: %v, want OUT_OF_RANGE", err)
	}
}

func TestDownloadErrors(t *testing.T) {
	c, fs := startFiles(t, 1000)
	ctx := context.Background()
	var got bytes.Buffer
	missing := "0000000000000000000000000000000000000000000000000000000000000000"
	_, err := c.Download(ctx, missing, &got, 0)
	if codeOf(err) != connect.CodeNotFound || err.(*client.Error).Message != "no file "+missing {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := c.Download(ctx, "ABC", &got, 0); codeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad digest: %v", err)
	}
	// A token refused once: the client authenticates again and retries.
	before := fs.f.authCount()
	fs.refuseOnce = true
	if n, err := c.Download(ctx, fs.sum, &got, 0); err != nil || n != 1000 {
		t.Fatalf("after a refused token: n=%d err=%v", n, err)
	}
	if fs.f.authCount() != before+1 {
		t.Fatalf("authenticated %d times, want once more", fs.f.authCount()-before)
	}
	// A failing writer is INTERNAL and wraps the cause.
	errDisk := errors.New("disk full")
	if _, err := c.Download(ctx, fs.sum, failingWriter{errDisk}, 0); codeOf(err) != connect.CodeInternal || !errors.Is(err, errDisk) {
		t.Fatalf("write error: %v", err)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func codeOf(err error) connect.Code {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return connect.CodeUnknown
}
