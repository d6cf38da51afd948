package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"github.com/tetherhq/tether/server/pki"
)

// The baseline is what the platform alone costs: a bare Go HTTP/2 server
// answering the same comms API, through the same Connect handlers, the
// same TLS (an ECDSA P-256 certificate, as Tether makes) and the same
// compressions, with no authentication (the token is the agent id), no
// storage (orders live in a map until delivered) and no event sink.

const baselineLong = `baseline-server serves the comms API as a bare Go HTTP/2 server: no
authentication (any agent key is accepted; the token is the agent id), no
storage, no event sink, the same TLS and protocol. tether-loadtest --baseline
starts one itself; run it by hand to look at it alone.

On start it writes DIR/ca.crt and prints one JSON line on stdout:
{"url": "https://127.0.0.1:PORT", "ca_cert": "DIR/ca.crt"}.

Besides the comms API it answers, for the load program:
  POST /control/v1/commands?agent=ID   one order to an agent
  POST /control/v1/commands?all=1      one order to every agent seen
  GET  /control/v1/stats               {"polls_waiting": N}`

func baselineCommand(stdout io.Writer) *cobra.Command {
	var listen, dir string
	cmd := &cobra.Command{
		Use:   "baseline-server",
		Short: "Serve the comms API with a bare Go HTTP/2 server (no auth, no storage), for comparison",
		Long:  baselineLong,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveBaseline(cmd.Context(), listen, dir, stdout)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for ca.crt (default: a new temporary directory)")
	return cmd
}

type baselineInfo struct {
	URL    string `json:"url"`
	CACert string `json:"ca_cert"`
}

func serveBaseline(ctx context.Context, listen, dir string, stdout io.Writer) error {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "tether-baseline-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	ca, _, err := pki.NewCA("tether-loadtest baseline CA")
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.IssueServer([]string{"127.0.0.1", "localhost"})
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	b := &baseline{agents: map[string]*baseAgent{}}
	mux := http.NewServeMux()
	path, h := commsv1connect.NewAgentServiceHandler(b,
		connect.WithCompression("zstd",
			func() connect.Decompressor {
				d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20))
				return zstdDecoder{d}
			},
			func() connect.Compressor { e, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1)); return e },
		),
		connect.WithCompressMinBytes(1<<10),
	)
	mux.Handle(path, h)
	mux.HandleFunc("POST /control/v1/commands", b.serveCommand)
	mux.HandleFunc("GET /control/v1/stats", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]int64{"polls_waiting": b.waiting.Load()})
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	info, _ := json.Marshal(baselineInfo{URL: "https://" + ln.Addr().String(), CACert: caFile})
	fmt.Fprintln(stdout, string(info))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		return err
	}
}

// zstdDecoder adapts a zstd decoder to connect.Decompressor, which pools
// it: its Close keeps it usable (zstd.Decoder's Close would end it).
type zstdDecoder struct{ *zstd.Decoder }

func (d zstdDecoder) Close() error { return nil }

// baseline is the bare comms service.
type baseline struct {
	commsv1connect.UnimplementedAgentServiceHandler

	mu      sync.Mutex
	agents  map[string]*baseAgent
	waiting atomic.Int64
}

type baseAgent struct {
	orders []*commsv1.Order
	wake   chan struct{} // set while a poll waits
}

func (b *baseline) agent(id string) *baseAgent {
	a := b.agents[id]
	if a == nil {
		a = &baseAgent{}
		b.agents[id] = a
	}
	return a
}

func agentOf(h http.Header) string {
	return strings.TrimPrefix(h.Get("Authorization"), "Bearer ")
}

func (b *baseline) Authenticate(_ context.Context, req *connect.Request[commsv1.AuthenticateRequest]) (*connect.Response[commsv1.AuthenticateResponse], error) {
	id := req.Msg.GetAgentId()
	b.mu.Lock()
	b.agent(id)
	b.mu.Unlock()
	return connect.NewResponse(&commsv1.AuthenticateResponse{
		Token: id, ExpiresAt: timestamppb.New(time.Now().Add(15 * time.Minute)), AgentName: id,
	}), nil
}

func (b *baseline) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	id := agentOf(req.Header())
	wait := 50 * time.Second
	if w := req.Msg.GetWait(); w != nil {
		wait = w.AsDuration()
	}
	b.mu.Lock()
	a := b.agent(id)
	if len(a.orders) == 0 {
		wake := make(chan struct{}, 1)
		a.wake = wake
		b.mu.Unlock()
		b.waiting.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-wake:
		}
		t.Stop()
		b.waiting.Add(-1)
		b.mu.Lock()
		if a.wake == wake {
			a.wake = nil
		}
	}
	orders := a.orders
	a.orders = nil
	b.mu.Unlock()
	return connect.NewResponse(&commsv1.PollCommandsResponse{Orders: orders}), nil
}

func (b *baseline) ReportResults(_ context.Context, req *connect.Request[commsv1.ReportResultsRequest]) (*connect.Response[commsv1.ReportResultsResponse], error) {
	ids := make([]string, len(req.Msg.GetResults()))
	for i, r := range req.Msg.GetResults() {
		ids[i] = r.GetOrderId()
	}
	return connect.NewResponse(&commsv1.ReportResultsResponse{AcknowledgedOrderIds: ids}), nil
}

func (b *baseline) PushStateless(_ context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	return connect.NewResponse(&commsv1.PushStatelessResponse{Accepted: uint32(len(req.Msg.GetEvents()))}), nil
}

func (b *baseline) PushStateful(_ context.Context, req *connect.Request[commsv1.PushStatefulRequest]) (*connect.Response[commsv1.PushStatefulResponse], error) {
	return connect.NewResponse(&commsv1.PushStatefulResponse{Accepted: uint32(len(req.Msg.GetEvents()))}), nil
}

func (b *baseline) GetConfig(context.Context, *connect.Request[commsv1.GetConfigRequest]) (*connect.Response[commsv1.GetConfigResponse], error) {
	return connect.NewResponse(&commsv1.GetConfigResponse{Unchanged: true}), nil
}

// serveCommand queues one order for an agent, or for every agent.
func (b *baseline) serveCommand(w http.ResponseWriter, r *http.Request) {
	reqID := uuid.NewString()
	now := timestamppb.Now()
	b.mu.Lock()
	var to []*baseAgent
	if r.URL.Query().Get("all") != "" {
		for _, a := range b.agents {
			to = append(to, a)
		}
	} else {
		to = append(to, b.agent(r.URL.Query().Get("agent")))
	}
	for _, a := range to {
		a.orders = append(a.orders, &commsv1.Order{
			OrderId: uuid.NewString(), RequestId: reqID, Action: &commsv1.Action{Name: loadAction}, CreatedAt: now,
		})
		if a.wake != nil {
			a.wake <- struct{}{}
			a.wake = nil
		}
	}
	b.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]string{"id": reqID})
}

// baselineProc is a baseline server started by this program, as a target.
type baselineProc struct {
	cmd  *exec.Cmd
	url  string
	pool *x509.CertPool
	http *http.Client
	done chan struct{}
}

// startBaseline starts `tether-loadtest baseline-server` and waits for its
// address.
func startBaseline(ctx context.Context, stderr io.Writer) (*baselineProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "baseline-server")
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &baselineProc{cmd: cmd, done: make(chan struct{})}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the baseline server exited: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out); _ = cmd.Wait(); close(p.done) }()
	var info baselineInfo
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		p.stop()
		return nil, fmt.Errorf("baseline said %q: %w", line, err)
	}
	if p.pool, err = loadRoots(info.CACert); err != nil {
		p.stop()
		return nil, err
	}
	p.url = info.URL
	p.http = controlClient(p.pool)
	return p, nil
}

func (p *baselineProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *baselineProc) name() string          { return "baseline" }
func (p *baselineProc) roots() *x509.CertPool { return p.pool }
func (p *baselineProc) pid() int              { return p.cmd.Process.Pid }

func (p *baselineProc) identities(_ context.Context, n int, progress func(int)) ([]identity, error) {
	ids := make([]identity, n)
	for i := range ids {
		id := uuid.NewString()
		ids[i] = identity{ID: id, Key: id, CommsURL: p.url} // any key will do
	}
	progress(n)
	return ids, nil
}

func (p *baselineProc) command(ctx context.Context, agentID string) (string, error) {
	return p.post(ctx, "/control/v1/commands?agent="+agentID)
}

func (p *baselineProc) groupCommand(ctx context.Context) (string, error) {
	return p.post(ctx, "/control/v1/commands?all=1")
}

func (p *baselineProc) post(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ID == "" {
		return "", errors.Join(errors.New("baseline command: bad answer"), err)
	}
	return out.ID, nil
}

func (p *baselineProc) pollsWaiting(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/control/v1/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		PollsWaiting int `json:"polls_waiting"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.PollsWaiting, err
}
