package natsjs_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhq/tether/server/sink/ndjson"
)

// natsServer is a real NATS server with JetStream, running in the test's
// process, its store in a temporary directory.
type natsServer struct {
	t    *testing.T
	opts server.Options
	srv  *server.Server
}

// startServer starts a server; edit changes its options (TLS, users…).
func startServer(t *testing.T, edit func(*server.Options)) *natsServer {
	t.Helper()
	ns := &natsServer{t: t, opts: server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		MaxPayload: 8 << 20, NoLog: true, NoSigs: true,
	}}
	if edit != nil {
		edit(&ns.opts)
	}
	ns.start()
	// Restarts keep the port, so that clients reconnect to it.
	ns.opts.Port = ns.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) start() {
	ns.t.Helper()
	opts := ns.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		ns.t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		ns.t.Fatal("nats server not ready")
	}
	ns.srv = srv
}

// stop shuts the server down and waits until it is; start starts it
// again on the same port and store.
func (ns *natsServer) stop() {
	if ns.srv != nil {
		ns.srv.Shutdown()
		ns.srv.WaitForShutdown()
		ns.srv = nil
	}
}

func (ns *natsServer) url() string {
	scheme := "nats"
	if ns.opts.TLSConfig != nil {
		scheme = "tls"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, ns.opts.Port)
}

// message is one message read back from a stream.
type message struct {
	subject string
	header  nats.Header
	data    []byte
	seq     uint64
}

// readStream returns every message stream holds, in stream order, reading
// them on a connection of its own made with opts.
func readStream(t *testing.T, url, stream string, opts ...nats.Option) []message {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []message
	for {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read stream %s after %d messages: %v", stream, len(out), err)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, message{subject: m.Subject(), header: m.Headers(), data: m.Data(), seq: meta.Sequence.Stream})
		if meta.Sequence.Stream >= info.State.LastSeq {
			return out
		}
	}
}

// records decodes the bodies of msgs as NDJSON records.
func records(t *testing.T, msgs []message) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range msgs {
		recs, err := ndjson.Decode(bytes.NewReader(m.data))
		if err != nil {
			t.Fatalf("message %d: %v", m.seq, err)
		}
		if len(recs) != 1 {
			t.Fatalf("message %d holds %d records, want 1", m.seq, len(recs))
		}
		out = append(out, recs[0])
	}
	return out
}
