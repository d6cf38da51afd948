package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/client"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeServer is a small in-test AgentService.
type fakeServer struct {
	commsv1connect.UnimplementedAgentServiceHandler

	lifetime time.Duration

	mu        sync.Mutex
	tokens    map[string]bool
	nextTok   int
	authCalls int
	pushes    []*commsv1.PushStatelessRequest
	pushErr   error // returned once by PushStateless
	rejectAll bool  // every token is refused
	denied    bool  // Authenticate answers PERMISSION_DENIED
	orders    []*commsv1.Order
	pollReq   *commsv1.PollCommandsRequest
	pollLeft  time.Duration // time to the poll's deadline
	reported  []*commsv1.OrderResult
	userAgent string
}

func (f *fakeServer) Authenticate(_ context.Context, req *connect.Request[commsv1.AuthenticateRequest]) (*connect.Response[commsv1.AuthenticateResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authCalls++
	f.userAgent = req.Header().Get("User-Agent")
	if f.denied {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("agent is disabled"))
	}
	if req.Msg.GetAgentId() != "agent-1" || req.Msg.GetAgentKey() != "key-1" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("wrong agent id or key"))
	}
	f.nextTok++
	tok := "tok-" + strconv.Itoa(f.nextTok)
	f.tokens[tok] = true
	return connect.NewResponse(&commsv1.AuthenticateResponse{
		Token:     tok,
		ExpiresAt: timestamppb.New(time.Now().Add(f.lifetime)),
		AgentName: "web-1",
		Groups:    []string{"linux"},
	}), nil
}

func (f *fakeServer) check(h http.Header) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	tok := h.Get("Authorization")
	if len(tok) < 7 || !f.tokens[tok[7:]] || f.rejectAll {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid token"))
	}
	return nil
}

func (f *fakeServer) PushStateless(_ context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	if err := f.check(req.Header()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.pushErr; err != nil {
		f.pushErr = nil
		return nil, err
	}
	dup := false
	for _, p := range f.pushes {
		dup = dup || p.GetSequence() == req.Msg.GetSequence()
	}
	f.pushes = append(f.pushes, req.Msg)
	return connect.NewResponse(&commsv1.PushStatelessResponse{Accepted: uint32(len(req.Msg.GetEvents())), Duplicate: dup}), nil
}

func (f *fakeServer) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	if err := f.check(req.Header()); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pollReq = req.Msg
	f.pollLeft = time.Until(dl)
	// Every queued order counts as cancelled, and the version moves on.
	return connect.NewResponse(&commsv1.PollCommandsResponse{Orders: f.orders, ConfigVersion: "v2", CancelledOrderIds: req.Msg.QueuedOrderIds}), nil
}

func (f *fakeServer) ReportResults(_ context.Context, req *connect.Request[commsv1.ReportResultsRequest]) (*connect.Response[commsv1.ReportResultsResponse], error) {
	if err := f.check(req.Header()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reported = append(f.reported, req.Msg.GetResults()...)
	resp := &commsv1.ReportResultsResponse{}
	for _, r := range req.Msg.GetResults() {
		resp.AcknowledgedOrderIds = append(resp.AcknowledgedOrderIds, r.GetOrderId())
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeServer) GetConfig(_ context.Context, req *connect.Request[commsv1.GetConfigRequest]) (*connect.Response[commsv1.GetConfigResponse], error) {
	if err := f.check(req.Header()); err != nil {
		return nil, err
	}
	if req.Msg.GetKnownVersion() == "v2" {
		return connect.NewResponse(&commsv1.GetConfigResponse{Version: "v2", Unchanged: true}), nil
	}
	cfg, _ := structpb.NewStruct(map[string]any{"log_level": "debug"})
	return connect.NewResponse(&commsv1.GetConfigResponse{Version: "v2", Config: cfg}), nil
}

func (f *fakeServer) authCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authCalls
}

// start serves f over TLS and HTTP/2 and returns a client for it.
func start(t *testing.T, f *fakeServer, extraURLs ...string) (*client.Client, *httptest.Server) {
	t.Helper()
	if f.lifetime == 0 {
		f.lifetime = 15 * time.Minute
	}
	f.tokens = map[string]bool{}
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c, err := client.New(client.Config{
		URLs:      append(extraURLs, srv.URL),
		AgentID:   "agent-1",
		AgentKey:  "key-1",
		RootCAs:   pool,
		UserAgent: "tether-agent/test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func push(t *testing.T, c *client.Client, seq uint64) error {
	t.Helper()
	_, _, err := c.PushStateless(context.Background(), seq, []client.Event{{
		ID: "e" + strconv.FormatUint(seq, 10), Module: "test", Type: "x",
		CollectedAt: time.Now(), Payload: []byte(`{"a":1}`),
	}})
	return err
}

func TestAuthenticatesLazilyOnceAndCaches(t *testing.T) {
	f := &fakeServer{}
	c, _ := start(t, f)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if push(t, c, uint64(i+1)) != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d pushes failed", failed.Load())
	}
	if n := f.authCount(); n != 1 {
		t.Fatalf("authenticated %d times, want 1", n)
	}
	if f.userAgent != "tether-agent/test" {
		t.Fatalf("User-Agent = %q", f.userAgent)
	}
	s, err := c.Authenticate(context.Background())
	if err != nil || s.AgentName != "web-1" || len(s.Groups) != 1 || time.Until(s.ExpiresAt) < 14*time.Minute {
		t.Fatalf("session = %+v, %v", s, err)
	}
}

func TestRefreshesTokenBeforeExpiry(t *testing.T) {
	// A 500 ms token is refreshed when less than a fifth of it remains.
	f := &fakeServer{lifetime: 500 * time.Millisecond}
	c, _ := start(t, f)
	if err := push(t, c, 1); err != nil {
		t.Fatal(err)
	}
	if err := push(t, c, 2); err != nil {
		t.Fatal(err)
	}
	if n := f.authCount(); n != 1 {
		t.Fatalf("authenticated %d times before expiry, want 1", n)
	}
	time.Sleep(420 * time.Millisecond)
	if err := push(t, c, 3); err != nil {
		t.Fatal(err)
	}
	if n := f.authCount(); n != 2 {
		t.Fatalf("authenticated %d times, want 2", n)
	}
}

func TestReauthenticatesOnceOnUnauthenticated(t *testing.T) {
	f := &fakeServer{}
	c, _ := start(t, f)
	if err := push(t, c, 1); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	clear(f.tokens) // e.g. the server's signing key rotated
	f.mu.Unlock()
	if err := push(t, c, 2); err != nil {
		t.Fatalf("push after token revocation: %v", err)
	}
	if n := f.authCount(); n != 2 {
		t.Fatalf("authenticated %d times, want 2", n)
	}

	// A token refused even after re-authenticating: one retry, then the error.
	f.mu.Lock()
	f.rejectAll = true
	f.mu.Unlock()
	err := push(t, c, 3)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != connect.CodeUnauthenticated || ce.Retryable() || ce.Denied() {
		t.Fatalf("err = %#v, want UNAUTHENTICATED", err)
	}
	if n := f.authCount(); n != 3 {
		t.Fatalf("authenticated %d times, want 3", n)
	}
}

// withRetryInfo adds a google.rpc.RetryInfo detail to a Connect error.
func withRetryInfo(err error, d time.Duration) error {
	ce := err.(*connect.Error)
	detail, e := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	if e != nil {
		panic(e)
	}
	ce.AddDetail(detail)
	return ce
}

func TestErrorMapping(t *testing.T) {
	withRetryAfter := func(code connect.Code, secs string) error {
		e := connect.NewError(code, errors.New("slow down"))
		e.Meta().Set("Retry-After", secs)
		return e
	}
	tests := []struct {
		name       string
		err        error
		code       connect.Code
		retryable  bool
		denied     bool
		retryAfter time.Duration
	}{
		{"exhausted", withRetryAfter(connect.CodeResourceExhausted, "7"), connect.CodeResourceExhausted, true, false, 7 * time.Second},
		{"retry info", withRetryInfo(withRetryAfter(connect.CodeResourceExhausted, "2"), 1500*time.Millisecond), connect.CodeResourceExhausted, true, false, 1500 * time.Millisecond},
		{"retry too far", withRetryAfter(connect.CodeResourceExhausted, "864000"), connect.CodeResourceExhausted, true, false, 0},
		{"unavailable", connect.NewError(connect.CodeUnavailable, errors.New("draining")), connect.CodeUnavailable, true, false, 0},
		{"invalid", connect.NewError(connect.CodeInvalidArgument, errors.New("events[0].module: required")), connect.CodeInvalidArgument, false, false, 0},
		{"denied", connect.NewError(connect.CodePermissionDenied, errors.New("agent is disabled")), connect.CodePermissionDenied, false, true, 0},
		{"internal", connect.NewError(connect.CodeInternal, errors.New("boom")), connect.CodeInternal, false, false, 0},
	}
	f := &fakeServer{}
	c, _ := start(t, f)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.pushErr = tt.err
			f.mu.Unlock()
			err := push(t, c, 1)
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %T %v, want *client.Error", err, err)
			}
			if ce.Code != tt.code || ce.Retryable() != tt.retryable || ce.Denied() != tt.denied || ce.RetryAfter != tt.retryAfter {
				t.Fatalf("got code=%v retryable=%v denied=%v retryAfter=%v", ce.Code, ce.Retryable(), ce.Denied(), ce.RetryAfter)
			}
		})
	}
}

func TestDeniedOnAuthenticate(t *testing.T) {
	f := &fakeServer{denied: true}
	c, _ := start(t, f)
	err := push(t, c, 1)
	var ce *client.Error
	if !errors.As(err, &ce) || !ce.Denied() {
		t.Fatalf("err = %v, want PERMISSION_DENIED", err)
	}
}

func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "https://" + addr
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	c, err := client.New(client.Config{URLs: []string{closedURL(t)}, AgentID: "a", AgentKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Poll(context.Background(), client.PollRequest{Wait: time.Second})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != connect.CodeUnavailable || !ce.Retryable() {
		t.Fatalf("err = %v, want retryable UNAVAILABLE", err)
	}
}

func TestFailsOverToNextURL(t *testing.T) {
	f := &fakeServer{}
	c, srv := start(t, f, closedURL(t))
	if err := push(t, c, 1); err != nil {
		t.Fatal(err)
	}
	if c.URL() != srv.URL {
		t.Fatalf("URL() = %s, want %s", c.URL(), srv.URL)
	}
}

func TestPollDeadlineAndOrders(t *testing.T) {
	args, _ := structpb.NewStruct(map[string]any{"path": "/tmp/x"})
	created := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	f := &fakeServer{orders: []*commsv1.Order{{
		OrderId: "o1", RequestId: "r1", User: "alice",
		Action:    &commsv1.Action{Name: "get-config", Args: args, Version: "1"},
		CreatedAt: timestamppb.New(created), TimeoutAt: timestamppb.New(created.Add(5 * time.Minute)),
	}, {OrderId: "o2", Action: &commsv1.Action{Name: "restart"}}}}
	c, _ := start(t, f)
	wait := 3 * time.Second
	res, err := c.Poll(context.Background(), client.PollRequest{Wait: wait, Received: []string{"a", "b"}, Queued: []string{"c"}, ConfigVersion: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	orders := res.Orders
	if res.ConfigVersion != "v2" || len(res.Cancelled) != 1 || res.Cancelled[0] != "c" {
		t.Fatalf("poll result: version %q, cancelled %q", res.ConfigVersion, res.Cancelled)
	}
	if q := f.pollReq.GetQueuedOrderIds(); len(q) != 1 || q[0] != "c" || f.pollReq.GetConfigVersion() != "v1" {
		t.Fatalf("poll request = %v", f.pollReq)
	}
	if f.pollLeft <= wait || f.pollLeft > wait+client.PollMargin(wait)+time.Second {
		t.Fatalf("poll deadline %v after the call, want a little more than %v", f.pollLeft, wait)
	}
	if f.pollReq.GetWait().AsDuration() != wait || len(f.pollReq.GetReceivedOrderIds()) != 2 {
		t.Fatalf("poll request = %v", f.pollReq)
	}
	if len(orders) != 2 {
		t.Fatalf("got %d orders", len(orders))
	}
	o := orders[0]
	if o.ID != "o1" || o.RequestID != "r1" || o.Action != "get-config" || o.Version != "1" || o.User != "alice" ||
		!o.CreatedAt.Equal(created) || !o.TimeoutAt.Equal(created.Add(5*time.Minute)) {
		t.Fatalf("order = %+v", o)
	}
	var a map[string]string
	if err := json.Unmarshal(o.Args, &a); err != nil || a["path"] != "/tmp/x" {
		t.Fatalf("args = %s (%v)", o.Args, err)
	}
	if string(orders[1].Args) != "{}" || !orders[1].TimeoutAt.IsZero() {
		t.Fatalf("order without args = %+v", orders[1])
	}
}

func TestReportAndGetConfig(t *testing.T) {
	f := &fakeServer{}
	c, _ := start(t, f)
	acked, err := c.Report(context.Background(), []client.Result{
		{OrderID: "o1", Success: true, Message: "ok", Data: json.RawMessage(`{"pid":12}`), FinishedAt: time.Now()},
		{OrderID: "o2", Success: false, Code: 3, Message: "interrupted"},
	})
	if err != nil || len(acked) != 2 {
		t.Fatalf("acked %v, %v", acked, err)
	}
	if r := f.reported[0]; r.GetStatus() != commsv1.OrderStatus_ORDER_STATUS_SUCCESS || r.GetData().GetStructValue().GetFields()["pid"].GetNumberValue() != 12 {
		t.Fatalf("reported %v", r)
	}
	if r := f.reported[1]; r.GetStatus() != commsv1.OrderStatus_ORDER_STATUS_FAILURE || r.GetCode() != 3 {
		t.Fatalf("reported %v", r)
	}
	if _, err := c.Report(context.Background(), []client.Result{{OrderID: "o3", Data: json.RawMessage(`{bad`)}}); err == nil {
		t.Fatal("result with invalid JSON data was sent")
	}

	v, cfg, unchanged, err := c.GetConfig(context.Background(), "")
	if err != nil || v != "v2" || unchanged || string(cfg) != `{"log_level":"debug"}` {
		t.Fatalf("GetConfig = %q %s %v %v", v, cfg, unchanged, err)
	}
	v, cfg, unchanged, err = c.GetConfig(context.Background(), "v2")
	if err != nil || v != "v2" || !unchanged || cfg != nil {
		t.Fatalf("GetConfig(v2) = %q %s %v %v", v, cfg, unchanged, err)
	}
}
