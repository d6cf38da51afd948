package agent_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/agent"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeComms is a small in-test comms API that delivers orders the way the
// protocol says (again and again until received).
type fakeComms struct {
	commsv1connect.UnimplementedAgentServiceHandler

	mu       sync.Mutex
	denied   bool
	orders   []*commsv1.Order
	received map[string]bool
	seqs     []uint64
	events   []string // module/type, in arrival order
	results  map[string]*commsv1.OrderResult
	wake     chan struct{}
}

func newFakeComms() *fakeComms {
	return &fakeComms{received: map[string]bool{}, results: map[string]*commsv1.OrderResult{}, wake: make(chan struct{}, 1)}
}

func (f *fakeComms) deny() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.denied {
		return connect.NewError(connect.CodePermissionDenied, errors.New("agent is disabled"))
	}
	return nil
}

func (f *fakeComms) Authenticate(context.Context, *connect.Request[commsv1.AuthenticateRequest]) (*connect.Response[commsv1.AuthenticateResponse], error) {
	if err := f.deny(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&commsv1.AuthenticateResponse{Token: "t", ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)), AgentName: "web-1"}), nil
}

func (f *fakeComms) PushStateless(_ context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	if err := f.deny(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seqs = append(f.seqs, req.Msg.GetSequence())
	for _, e := range req.Msg.GetEvents() {
		f.events = append(f.events, e.GetModule()+"/"+e.GetType())
	}
	return connect.NewResponse(&commsv1.PushStatelessResponse{Accepted: uint32(len(req.Msg.GetEvents()))}), nil
}

func (f *fakeComms) PushStateful(_ context.Context, req *connect.Request[commsv1.PushStatefulRequest]) (*connect.Response[commsv1.PushStatefulResponse], error) {
	if err := f.deny(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seqs = append(f.seqs, req.Msg.GetSequence())
	for _, e := range req.Msg.GetEvents() {
		f.events = append(f.events, e.GetEvent().GetModule()+"/"+e.GetKey())
	}
	return connect.NewResponse(&commsv1.PushStatefulResponse{Accepted: uint32(len(req.Msg.GetEvents()))}), nil
}

func (f *fakeComms) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	if err := f.deny(); err != nil {
		return nil, err
	}
	timer := time.NewTimer(req.Msg.GetWait().AsDuration())
	defer timer.Stop()
	for {
		f.mu.Lock()
		for _, id := range req.Msg.GetReceivedOrderIds() {
			f.received[id] = true
		}
		var out []*commsv1.Order
		for _, o := range f.orders {
			if !f.received[o.GetOrderId()] {
				out = append(out, o)
			}
		}
		f.mu.Unlock()
		if len(out) > 0 {
			return connect.NewResponse(&commsv1.PollCommandsResponse{Orders: out}), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return connect.NewResponse(&commsv1.PollCommandsResponse{}), nil
		case <-f.wake:
		}
	}
}

func (f *fakeComms) ReportResults(_ context.Context, req *connect.Request[commsv1.ReportResultsRequest]) (*connect.Response[commsv1.ReportResultsResponse], error) {
	if err := f.deny(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &commsv1.ReportResultsResponse{}
	for _, r := range req.Msg.GetResults() {
		// A report whose acknowledgement the agent did not see (it was
		// stopping) comes again: like the server, keep the first and
		// acknowledge again. A second report must say the same.
		if first, dup := f.results[r.GetOrderId()]; dup {
			if first.GetStatus() != r.GetStatus() || first.GetMessage() != r.GetMessage() {
				panic("result reported twice, differently: " + r.GetOrderId())
			}
		} else {
			f.results[r.GetOrderId()] = r
		}
		resp.AcknowledgedOrderIds = append(resp.AcknowledgedOrderIds, r.GetOrderId())
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeComms) GetConfig(context.Context, *connect.Request[commsv1.GetConfigRequest]) (*connect.Response[commsv1.GetConfigResponse], error) {
	if err := f.deny(); err != nil {
		return nil, err
	}
	cfg, _ := structpb.NewStruct(map[string]any{"batch_max_events": 500})
	return connect.NewResponse(&commsv1.GetConfigResponse{Version: "v1", Config: cfg}), nil
}

func (f *fakeComms) addOrder(id, action string) {
	f.mu.Lock()
	f.orders = append(f.orders, &commsv1.Order{OrderId: id, RequestId: "r-" + id, Action: &commsv1.Action{Name: action},
		CreatedAt: timestamppb.Now(), TimeoutAt: timestamppb.New(time.Now().Add(time.Minute)), User: "alice"})
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *fakeComms) result(id string) *commsv1.OrderResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.results[id]
}

// waitFor polls cond until it holds or 10 s passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setupAgent starts f over TLS and writes a data directory enrolled with it.
func setupAgent(t *testing.T, f *fakeComms) string {
	t.Helper()
	return setupWith(t, f, "poll_wait: 2s\nbatch_interval: 10ms\n")
}

// setupWith writes a data directory enrolled with a test server serving h.
func setupWith(t *testing.T, h commsv1connect.AgentServiceHandler, yaml string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(h))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ident, _ := json.Marshal(agent.Identity{AgentID: "0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a", AgentKey: "k", Name: "web-1",
		Server: "https://mgmt:7444", CommsURLs: []string{srv.URL}, EnrolledAt: time.Now()})
	os.WriteFile(filepath.Join(dir, agent.IdentityFile), ident, 0o600)
	os.WriteFile(filepath.Join(dir, agent.CAFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	os.WriteFile(filepath.Join(dir, agent.ConfigFile), []byte(yaml), 0o644)
	return dir
}

func startRun(dir string) (context.CancelFunc, chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, agent.RunOptions{DataDir: dir, Version: "test"}) }()
	return cancel, done
}

func wait(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRunEndToEnd(t *testing.T) {
	f := newFakeComms()
	dir := setupAgent(t, f)
	cancel, done := startRun(dir)
	defer cancel()

	waitFor(t, "start events", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.events) >= 2
	})
	f.mu.Lock()
	// The started event, then the inventory module's first documents.
	if f.events[0] != "agent/started" || f.events[1] != "inventory/host" || f.seqs[0] != 1 || f.seqs[1] != 2 {
		t.Fatalf("events %v seqs %v", f.events, f.seqs)
	}
	f.mu.Unlock()
	waitFor(t, "status with config version", func() bool {
		st, err := agent.ReadStatus(dir)
		return err == nil && st.ConfigVersion == "v1" && st.Connected && st.State == "running" && st.QueuedEvents == 0
	})

	f.addOrder("o1", "get-config")
	f.addOrder("o2", "no-such-action")
	waitFor(t, "get-config result", func() bool { return f.result("o2") != nil })
	r := f.result("o1")
	data, _ := r.GetData().MarshalJSON()
	var got struct {
		Effective map[string]any `json:"effective"`
		Local     map[string]any `json:"local"`
	}
	_ = json.Unmarshal(data, &got)
	// The centralized configuration applies over the local file, without
	// a restart.
	if r.GetStatus() != commsv1.OrderStatus_ORDER_STATUS_SUCCESS || got.Effective["batch_max_events"] != 500.0 ||
		got.Local["batch_max_events"] != 1000.0 || got.Effective["poll_wait"] != "2s" {
		t.Fatalf("get-config result %s (%s)", r.GetMessage(), data)
	}
	if r := f.result("o2"); r.GetStatus() != commsv1.OrderStatus_ORDER_STATUS_FAILURE || r.GetMessage() != `unknown action "no-such-action"` {
		t.Fatalf("unknown action result %v", r)
	}

	f.addOrder("o3", "restart")
	if err := wait(t, done); !errors.Is(err, agent.ErrRestart) {
		t.Fatalf("Run = %v, want ErrRestart", err)
	}
	if st, _ := agent.ReadStatus(dir); st.State != "restarting" {
		t.Fatalf("status after restart: %+v", st)
	}

	cancel, done = startRun(dir)
	defer cancel()
	waitFor(t, "restart result", func() bool { return f.result("o3") != nil })
	if r := f.result("o3"); r.GetStatus() != commsv1.OrderStatus_ORDER_STATUS_SUCCESS || r.GetMessage() != "agent restarted" {
		t.Fatalf("restart result %v", r)
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
	if st, _ := agent.ReadStatus(dir); st.State != "stopped" {
		t.Fatalf("status after stop: %+v", st)
	}
}

func TestRunStopsWhenRemoved(t *testing.T) {
	f := newFakeComms()
	f.denied = true
	dir := setupAgent(t, f)
	cancel, done := startRun(dir)
	defer cancel()
	err := wait(t, done)
	if !errors.Is(err, agent.ErrRemoved) || err.Error() != "agent was removed or disabled on the server" {
		t.Fatalf("Run = %v, want ErrRemoved", err)
	}
}

func TestRunNotEnrolled(t *testing.T) {
	err := agent.Run(context.Background(), agent.RunOptions{DataDir: t.TempDir()})
	if !errors.Is(err, agent.ErrNotEnrolled) {
		t.Fatalf("Run = %v", err)
	}
}
