package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"
	"github.com/tetherhq/tether/client"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
)

type zstdReader struct{ *zstd.Decoder }

func (z zstdReader) Close() error { return nil }

// compressionServer serves f, with zstd or without, and records the
// Content-Encoding of every push.
func compressionServer(t *testing.T, f *fakeServer, withZstd bool) (*httptest.Server, func() []string) {
	t.Helper()
	f.lifetime = 15 * time.Minute
	f.tokens = map[string]bool{}
	var opts []connect.HandlerOption
	if withZstd {
		opts = append(opts, connect.WithCompression("zstd",
			func() connect.Decompressor {
				d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
				return zstdReader{d}
			},
			func() connect.Compressor { e, _ := zstd.NewWriter(nil); return e }))
	}
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(f, opts...))
	var mu sync.Mutex
	var encodings []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/PushStateless") {
			mu.Lock()
			encodings = append(encodings, r.Header.Get("Content-Encoding"))
			mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), encodings...)
	}
}

func bigPush(t *testing.T, c *client.Client, seq uint64) {
	t.Helper()
	events := make([]client.Event, 50)
	for i := range events {
		events[i] = client.Event{ID: "e" + strings.Repeat("x", i), Module: "test", Type: "line", CollectedAt: time.Now(), Payload: []byte(`{"line":"` + strings.Repeat("hello ", 20) + `"}`)}
	}
	if _, _, err := c.PushStateless(context.Background(), seq, events); err != nil {
		t.Fatalf("push %d: %v", seq, err)
	}
}

func TestPushesAreCompressed(t *testing.T) {
	for _, tt := range []struct {
		name, config string
		withZstd     bool
		want         []string // Content-Encoding of each push attempt
	}{
		{"zstd", "", true, []string{"zstd", "zstd"}},
		// A server without zstd answers UNIMPLEMENTED: the push is sent
		// again at once with gzip, and so are the next ones.
		{"server without zstd", "", false, []string{"zstd", "gzip", "gzip"}},
		{"gzip", client.CompressionGzip, true, []string{"gzip", "gzip"}},
		{"none", client.CompressionNone, true, []string{"", ""}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{}
			srv, encodings := compressionServer(t, f, tt.withZstd)
			c, err := client.New(client.Config{
				URLs: []string{srv.URL}, AgentID: "agent-1", AgentKey: "key-1",
				RootCAs:     srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs,
				Compression: tt.config,
			})
			if err != nil {
				t.Fatal(err)
			}
			bigPush(t, c, 1)
			bigPush(t, c, 2)
			if got := encodings(); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("Content-Encoding of the pushes = %q, want %q", got, tt.want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.pushes) != 2 || len(f.pushes[1].GetEvents()) != 50 {
				t.Fatalf("server got %d pushes", len(f.pushes))
			}
		})
	}
	if _, err := client.New(client.Config{URLs: []string{"https://x:1"}, AgentID: "a", AgentKey: "k", Compression: "lz4"}); err == nil {
		t.Fatal("unknown compression accepted")
	}
}
