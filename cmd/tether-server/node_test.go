package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether/api"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
)

// testNode starts a node on :0 ports in a temporary data directory.
func testNode(t *testing.T, dataDir string) *Node {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = dataDir
	cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.PollWait = Duration(2 * time.Second)
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := startNode(context.Background(), cfg, log)
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
	return n
}

func adminClient(t *testing.T, n *Node) *api.Client {
	t.Helper()
	c, err := api.New(api.Options{Server: n.APIURL, Token: n.AdminToken, CACertFile: n.CACertFile})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enrollRaw registers an agent through the management API the way an agent
// would and returns its id and key.
func enrollRaw(t *testing.T, n *Node) (string, string) {
	t.Helper()
	ctx := context.Background()
	tok, err := adminClient(t, n).CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{Groups: []string{"test"}, MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.New(api.Options{Server: n.APIURL, Token: tok.Token, CACertFile: n.CACertFile})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	resp, err := c.RegisterAgent(ctx, api.RegisterAgentRequest{ID: id, Hostname: "test-host"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.CommsURLs) != 1 || resp.CommsURLs[0] != n.CommsURL {
		t.Fatalf("comms_urls = %v, want [%s]", resp.CommsURLs, n.CommsURL)
	}
	return id, resp.AgentKey
}

func httpsClient(t *testing.T, n *Node) *http.Client {
	t.Helper()
	pemData, err := os.ReadFile(n.CACertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// connectJSON calls a comms RPC the way curl would: POST with a JSON body.
func connectJSON(t *testing.T, hc *http.Client, n *Node, method, jwt, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", n.CommsURL+"/tether.comms.v1.AgentService/"+method, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: answer is not JSON: %q", method, data)
	}
	return resp.StatusCode, out
}

func TestConnectJSONAsCurlWould(t *testing.T) {
	n := testNode(t, t.TempDir())
	id, key := enrollRaw(t, n)
	hc := httpsClient(t, n)

	st, out := connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
	if st != 200 || out["token"] == nil {
		t.Fatalf("Authenticate: %d %v", st, out)
	}
	jwt := out["token"].(string)

	st, out = connectJSON(t, hc, n, "PollCommands", jwt, `{"wait":"0.2s"}`)
	if st != 200 {
		t.Fatalf("PollCommands: %d %v", st, out)
	}
	payload := "eyJsaW5lIjoiaGVsbG8ifQ==" // {"line":"hello"}
	st, out = connectJSON(t, hc, n, "PushStateless", jwt,
		`{"sequence":"1","events":[{"id":"e1","module":"logcollector","type":"line","collectedAt":"2026-11-23T18:00:00Z","payload":"`+payload+`"}]}`)
	if st != 200 || out["accepted"] != float64(1) {
		t.Fatalf("PushStateless: %d %v", st, out)
	}
	st, out = connectJSON(t, hc, n, "PushStateless", jwt,
		`{"sequence":"1","events":[{"id":"e1","module":"logcollector","type":"line","collectedAt":"2026-11-23T18:00:00Z","payload":"`+payload+`"}]}`)
	if st != 200 || out["duplicate"] != true {
		t.Fatalf("resent batch: %d %v, want duplicate", st, out)
	}
	files, _ := filepath.Glob(filepath.Join(n.cfg.DataDir, "events", "*.ndjson"))
	var all []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all = append(all, b...)
	}
	if c := bytes.Count(all, []byte(`"event_id":"e1"`)); c != 1 {
		t.Fatalf("event e1 stored %d times in %v, want once:\n%s", c, files, all)
	}

	// Malformed and invalid requests name their fault.
	st, out = connectJSON(t, hc, n, "PushStateless", jwt, `{"sequence":"2","events":[{"id":"e2","module":"Bad Module","type":"x","collectedAt":"2026-11-23T18:00:00Z"}]}`)
	if st != 400 || out["code"] != "invalid_argument" || !strings.Contains(out["message"].(string), "events[0].module") {
		t.Fatalf("bad module: %d %v", st, out)
	}
	st, out = connectJSON(t, hc, n, "PushStateless", jwt, `{"sequence":"2","events":[{]`)
	if st != 400 || out["code"] != "invalid_argument" {
		t.Fatalf("malformed JSON: %d %v", st, out)
	}
}

func TestCommsRefusesBadCredentials(t *testing.T) {
	n := testNode(t, t.TempDir())
	id, key := enrollRaw(t, n)
	hc := httpsClient(t, n)

	st, out := connectJSON(t, hc, n, "PollCommands", "", `{}`)
	if st != 401 || out["code"] != "unauthenticated" {
		t.Fatalf("no token: %d %v", st, out)
	}
	st, out = connectJSON(t, hc, n, "PollCommands", "eyJhbGciOiJub25lIn0.e30.", `{}`)
	if st != 401 || out["code"] != "unauthenticated" {
		t.Fatalf("forged token: %d %v", st, out)
	}
	st, out = connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"wrong"}`)
	if st != 401 {
		t.Fatalf("wrong key: %d %v", st, out)
	}
	// An expired token, signed by the node's own key.
	ctx := context.Background()
	keys := n.keys
	expired, _, err := keys.Issue(id, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	st, out = connectJSON(t, hc, n, "PollCommands", expired, `{}`)
	if st != 401 || !strings.Contains(out["message"].(string), "expired") {
		t.Fatalf("expired token: %d %v", st, out)
	}

	// A deleted agent is refused (PERMISSION_DENIED), including a poll that
	// is already waiting, within seconds.
	_, out = connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
	jwt := out["token"].(string)
	type result struct {
		st  int
		out map[string]any
	}
	done := make(chan result, 1)
	go func() {
		st, out := connectJSON(t, hc, n, "PollCommands", jwt, `{"wait":"30s"}`)
		done <- result{st, out}
	}()
	time.Sleep(200 * time.Millisecond) // let the poll start waiting
	start := time.Now()
	if err := adminClient(t, n).DeleteAgent(ctx, id); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.st != 403 || r.out["code"] != "permission_denied" {
			t.Fatalf("waiting poll after delete: %d %v", r.st, r.out)
		}
		t.Logf("waiting poll refused %s after the delete", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("waiting poll not refused within 5s of the delete")
	}
	st, out = connectJSON(t, hc, n, "PushStateless", jwt, `{"sequence":"1","events":[{"id":"e","module":"m","type":"t","collectedAt":"2026-11-23T18:00:00Z"}]}`)
	if st != 403 || out["code"] != "permission_denied" {
		t.Fatalf("push after delete: %d %v", st, out)
	}
}

func TestCommsRefusesOversizedBodyUnread(t *testing.T) {
	n := testNode(t, t.TempDir())
	hc := httpsClient(t, n)
	// A body that claims 64 MiB and would stream forever: the answer must
	// come without the server reading it all.
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for i := 0; i < 1024; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", n.CommsURL+"/tether.comms.v1.AgentService/PushStateless", pr)
	req.ContentLength = 64 << 20
	req.Header.Set("Content-Type", "application/proto")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pr.CloseWithError(io.ErrClosedPipe)
	// A Connect error that agents do not retry: the same body can never
	// pass.
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(data, []byte(`"code":"invalid_argument"`)) {
		t.Fatalf("oversized body: status %d, %s", resp.StatusCode, data)
	}

	// Without a Content-Length (chunked), the limit applies while reading.
	big := bytes.Repeat([]byte{0x0a}, 9<<20)
	req, _ = http.NewRequest("POST", n.CommsURL+"/tether.comms.v1.AgentService/PushStateless", io.MultiReader(bytes.NewReader(big)))
	req.Header.Set("Content-Type", "application/proto")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(data, []byte(`"code":"invalid_argument"`)) {
		t.Fatalf("9 MiB chunked body: status %d, %s", resp.StatusCode, data)
	}
}

func TestGRPCCall(t *testing.T) {
	n := testNode(t, t.TempDir())
	id, key := enrollRaw(t, n)
	pemData, _ := os.ReadFile(n.CACertFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	conn, err := grpc.NewClient(strings.TrimPrefix(n.CommsURL, "https://"),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var auth commsv1.AuthenticateResponse
	err = conn.Invoke(ctx, "/tether.comms.v1.AgentService/Authenticate", &commsv1.AuthenticateRequest{AgentId: id, AgentKey: key}, &auth)
	if err != nil || auth.Token == "" {
		t.Fatalf("gRPC Authenticate: %v", err)
	}
	var poll commsv1.PollCommandsResponse
	err = conn.Invoke(ctx, "/tether.comms.v1.AgentService/PollCommands", &commsv1.PollCommandsRequest{}, &poll)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC poll without token: %v, want Unauthenticated", err)
	}
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+auth.Token)
	// Reflection lists the service, as grpcurl would ask.
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if svcs := rr.GetListServicesResponse().GetService(); len(svcs) == 0 || svcs[0].Name != "tether.comms.v1.AgentService" {
		t.Fatalf("reflection services: %v", svcs)
	}
	var cfg commsv1.GetConfigResponse
	if err := conn.Invoke(actx, "/tether.comms.v1.AgentService/GetConfig", &commsv1.GetConfigRequest{}, &cfg); err != nil || cfg.Version == "" {
		t.Fatalf("gRPC GetConfig: %v %v", err, &cfg)
	}
}

func TestRestartKeepsDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n1, err := startNode(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if !n1.FirstStart || n1.AdminToken == "" {
		t.Fatalf("first start: FirstStart=%v token=%q", n1.FirstStart, n1.AdminToken)
	}
	st, err := os.Stat(filepath.Join(dir, adminTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v %v", st, err)
	}
	ca1, _ := os.ReadFile(n1.CACertFile)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The bootstrap admin token is a person's, and the only token.
	toks, err := adminClient(t, n1).ListTokens(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks.Items) != 1 || toks.Items[0].Name != "admin" || toks.Items[0].Role != "admin" ||
		toks.Items[0].Kind != api.KindUser || toks.Items[0].CreatedBy != "" {
		t.Fatalf("tokens after the first start: %+v; want the bootstrap admin token, of kind user", toks.Items)
	}
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	n2, err := startNode(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown(ctx)
	ca2, _ := os.ReadFile(n2.CACertFile)
	if n2.FirstStart || n2.AdminToken != n1.AdminToken || !bytes.Equal(ca1, ca2) {
		t.Fatalf("restart changed the data directory: first=%v token same=%v ca same=%v", n2.FirstStart, n2.AdminToken == n1.AdminToken, bytes.Equal(ca1, ca2))
	}
	if _, err := adminClient(t, n2).ListAgents(ctx, api.AgentQuery{}); err != nil {
		t.Fatalf("admin token after restart: %v", err)
	}
}

func TestBusyPortIsAClearError(t *testing.T) {
	busy := testNode(t, t.TempDir())
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.CommsAddr = "127.0.0.1:0"
	cfg.APIAddr = strings.TrimPrefix(busy.APIURL, "https://")
	_, err := startNode(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "api_addr") {
		t.Fatalf("start on a busy port: %v", err)
	}
}

// TestEveryProtocol calls the comms API with Connect (protobuf and JSON),
// gRPC and gRPC-Web, over HTTP/1.1 and HTTP/2.
func TestEveryProtocol(t *testing.T) {
	n := testNode(t, t.TempDir())
	id, key := enrollRaw(t, n)
	pemData, _ := os.ReadFile(n.CACertFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	h1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}, // no HTTP/2
	}}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	cases := []struct {
		name string
		hc   *http.Client
		opts []connect.ClientOption
		h2   bool
	}{
		{"connect proto http1", h1, nil, false},
		{"connect json http1", h1, []connect.ClientOption{connect.WithProtoJSON()}, false},
		{"grpc-web http1", h1, []connect.ClientOption{connect.WithGRPCWeb()}, false},
		{"connect proto http2", h2, nil, true},
		{"grpc-web http2", h2, []connect.ClientOption{connect.WithGRPCWeb()}, true},
		{"grpc http2", h2, []connect.ClientOption{connect.WithGRPC()}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var proto string
			hc := *c.hc
			inner := hc.Transport
			hc.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := inner.RoundTrip(r)
				if err == nil {
					proto = resp.Proto
				}
				return resp, err
			})
			cl := commsv1connect.NewAgentServiceClient(&hc, n.CommsURL, c.opts...)
			ctx := context.Background()
			auth, err := cl.Authenticate(ctx, connect.NewRequest(&commsv1.AuthenticateRequest{AgentId: id, AgentKey: key}))
			if err != nil {
				t.Fatal(err)
			}
			req := connect.NewRequest(&commsv1.GetConfigRequest{})
			req.Header().Set("Authorization", "Bearer "+auth.Msg.Token)
			if _, err := cl.GetConfig(ctx, req); err != nil {
				t.Fatal(err)
			}
			if want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[c.h2]; proto != want {
				t.Fatalf("spoke %s, want %s", proto, want)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDeliveryReceiptsResultsAndMetrics drives one order through the comms
// API by hand: redelivery until the receipt, an idempotent report, and the
// metrics that record it.
func TestDeliveryReceiptsResultsAndMetrics(t *testing.T) {
	n := testNode(t, t.TempDir())
	id, key := enrollRaw(t, n)
	hc := httpsClient(t, n)
	cl := commsv1connect.NewAgentServiceClient(hc, n.CommsURL)
	ctx := context.Background()
	auth, err := cl.Authenticate(ctx, connect.NewRequest(&commsv1.AuthenticateRequest{AgentId: id, AgentKey: key}))
	if err != nil {
		t.Fatal(err)
	}
	poll := func(received ...string) []*commsv1.Order {
		t.Helper()
		req := connect.NewRequest(&commsv1.PollCommandsRequest{Wait: durationpb.New(300 * time.Millisecond), ReceivedOrderIds: received})
		req.Header().Set("Authorization", "Bearer "+auth.Msg.Token)
		resp, err := cl.PollCommands(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.Orders
	}
	// A poll waiting when the order is created answers at once.
	type res struct {
		orders []*commsv1.Order
		at     time.Time
	}
	got := make(chan res, 1)
	go func() {
		req := connect.NewRequest(&commsv1.PollCommandsRequest{Wait: durationpb.New(20 * time.Second)})
		req.Header().Set("Authorization", "Bearer "+auth.Msg.Token)
		resp, err := cl.PollCommands(ctx, req)
		if err != nil {
			t.Error(err)
			got <- res{}
			return
		}
		got <- res{resp.Msg.Orders, time.Now()}
	}()
	time.Sleep(200 * time.Millisecond)
	created, err := adminClient(t, n).CreateCommand(ctx, api.CreateCommandRequest{
		Target: api.Target{Type: "agent", ID: id}, Action: api.Action{Name: "get-config"},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := <-got
	if len(first.orders) != 1 || first.orders[0].OrderId != created.Orders[0].OrderID {
		t.Fatalf("waiting poll got %v", first.orders)
	}
	t.Logf("waiting poll answered %s after the order was created", first.at.Sub(created.CreatedAt))

	// Not acknowledged: delivered again. Acknowledged: not any more.
	again := poll()
	if len(again) != 1 || again[0].OrderId != first.orders[0].OrderId {
		t.Fatalf("unacknowledged order not redelivered: %v", again)
	}
	if rest := poll(again[0].OrderId); len(rest) != 0 {
		t.Fatalf("acknowledged order delivered again: %v", rest)
	}
	report := func() []string {
		req := connect.NewRequest(&commsv1.ReportResultsRequest{Results: []*commsv1.OrderResult{{
			OrderId: again[0].OrderId, Status: commsv1.OrderStatus_ORDER_STATUS_SUCCESS, Message: "done",
		}}})
		req.Header().Set("Authorization", "Bearer "+auth.Msg.Token)
		resp, err := cl.ReportResults(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.AcknowledgedOrderIds
	}
	if acked := report(); len(acked) != 1 {
		t.Fatalf("report not acknowledged: %v", acked)
	}
	if acked := report(); len(acked) != 1 {
		t.Fatalf("second report not acknowledged: %v", acked)
	}
	cmd, err := adminClient(t, n).GetCommand(ctx, created.ID)
	if err != nil || cmd.Status != "success" || cmd.Orders[0].Attempts != 2 || cmd.Orders[0].Result.Message != "done" {
		t.Fatalf("command after report: %+v %v", cmd, err)
	}

	resp, err := hc.Get(n.APIURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`tether_orders_created_total{action="get-config",target="agent"} 1`,
		`tether_orders_finished_total{action="get-config",status="success"} 1`,
		`tether_order_delivery_seconds_count 1`,
		`tether_order_completion_seconds_count 1`,
		`tether_polls_waiting 0`,
		`tether_event_streams 0`,
		`tether_orders{action="get-config",status="success"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestServerCommands runs the server actions through the management API:
// rotate-signing-key keeps old tokens valid; reload-config applies log_level.
func TestServerCommands(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfgFile, []byte("log_level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := serverFlags{configFile: cfgFile, dataDir: filepath.Join(dir, "data"), commsAddr: "127.0.0.1:0", apiAddr: "127.0.0.1:0"}
	cfg, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	log := newLogger(&cfg, io.Discard)
	n, err := startNode(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	id, key := enrollRaw(t, n)
	hc := httpsClient(t, n)
	_, out := connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
	oldJWT := out["token"].(string)

	ctx := context.Background()
	c := adminClient(t, n)
	run := func(action string) *api.Command {
		t.Helper()
		created, err := c.CreateCommand(ctx, api.CreateCommandRequest{Target: api.Target{Type: "server"}, Action: api.Action{Name: action}})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			cmd, err := c.GetCommand(ctx, created.ID)
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Status == "success" || cmd.Status == "failure" {
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not finish: %+v", action, cmd)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cmd := run("rotate-signing-key")
	if cmd.Status != "success" || !strings.Contains(string(cmd.Orders[0].Result.Data), "kid") {
		t.Fatalf("rotate-signing-key: %+v", cmd.Orders[0])
	}
	if st, out := connectJSON(t, hc, n, "GetConfig", oldJWT, `{}`); st != 200 {
		t.Fatalf("a token signed before the rotation was refused: %d %v", st, out)
	}
	_, out = connectJSON(t, hc, n, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
	if newJWT := out["token"].(string); strings.Split(newJWT, ".")[0] == strings.Split(oldJWT, ".")[0] {
		t.Fatal("new tokens still carry the old kid")
	}

	if err := os.WriteFile(cfgFile, []byte("log_level: debug\npoll_wait: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = run("reload-config")
	if cmd.Status != "success" || !strings.Contains(cmd.Orders[0].Result.Message, "log_level") ||
		!strings.Contains(cmd.Orders[0].Result.Message, "poll_wait") || !log.Enabled(ctx, slog.LevelDebug) {
		t.Fatalf("reload-config: %+v (debug enabled: %v)", cmd.Orders[0].Result, log.Enabled(ctx, slog.LevelDebug))
	}
}
