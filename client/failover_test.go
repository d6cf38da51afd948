package client_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/tetherhq/tether/client"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// tokens are the tokens any node of a test cluster issued: like JWTs
// signed with the keys of a shared store, each is valid on every node.
type tokens struct {
	mu   sync.Mutex
	next int
	ok   map[string]bool
}

func (b *tokens) issue() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	tok := "tok-" + strconv.Itoa(b.next)
	b.ok[tok] = true
	return tok
}

func (b *tokens) valid(h http.Header) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	tok := h.Get("Authorization")
	return len(tok) > 7 && b.ok[tok[7:]]
}

// node is one server node of a test cluster: a real TLS server on a fixed
// address, which the test stops and starts again.
type node struct {
	commsv1connect.UnimplementedAgentServiceHandler
	name   string
	addr   string
	tokens *tokens

	mu          sync.Mutex
	srv         *httptest.Server
	calls       int      // calls answered, Authenticate included
	hosts       []string // Host headers received
	unavailable bool     // answer every call UNAVAILABLE
	hold        bool     // hold polls until the caller or the server goes
	holding     chan struct{}
}

func (n *node) enter(h http.Header, host string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls++
	n.hosts = append(n.hosts, host)
	if n.unavailable {
		return connect.NewError(connect.CodeUnavailable, errors.New("draining"))
	}
	if h != nil && !n.tokens.valid(h) {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid token"))
	}
	return nil
}

func (n *node) Authenticate(_ context.Context, req *connect.Request[commsv1.AuthenticateRequest]) (*connect.Response[commsv1.AuthenticateResponse], error) {
	if err := n.enter(nil, req.Header().Get("Host")); err != nil {
		return nil, err
	}
	return connect.NewResponse(&commsv1.AuthenticateResponse{
		Token: n.tokens.issue(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	}), nil
}

func (n *node) PushStateless(_ context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	if err := n.enter(req.Header(), req.Header().Get("Host")); err != nil {
		return nil, err
	}
	return connect.NewResponse(&commsv1.PushStatelessResponse{Accepted: uint32(len(req.Msg.GetEvents()))}), nil
}

// PollCommands answers with the node's name as the configuration version,
// at once or, when hold is set, once the server or the caller goes.
func (n *node) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	if err := n.enter(req.Header(), req.Header().Get("Host")); err != nil {
		return nil, err
	}
	n.mu.Lock()
	hold, holding := n.hold, n.holding
	n.mu.Unlock()
	if hold {
		close(holding)
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	return connect.NewResponse(&commsv1.PollCommandsResponse{ConfigVersion: n.name}), nil
}

// start serves the node on its address (a new one on the first start).
func (n *node) start(t *testing.T) {
	t.Helper()
	addr := n.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(n))
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.StartTLS()
	n.mu.Lock()
	n.addr, n.srv = ln.Addr().String(), srv
	n.mu.Unlock()
	t.Cleanup(n.stop)
}

// stop ends the node as a crash would: its connections are cut.
func (n *node) stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

func (n *node) set(f func(*node)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(n)
}

func (n *node) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

func (n *node) url() string { return "https://" + n.addr }

// testCluster starts nodes on 127.0.0.1 and returns them with the pool of
// their CA.
func testCluster(t *testing.T, count int) ([]*node, *x509.CertPool) {
	t.Helper()
	book := &tokens{ok: map[string]bool{}}
	var nodes []*node
	for i := range count {
		n := &node{name: fmt.Sprintf("node-%d", i+1), tokens: book}
		n.start(t)
		nodes = append(nodes, n)
	}
	roots := x509.NewCertPool()
	roots.AddCert(nodes[0].srv.Certificate()) // every httptest server has the same
	return nodes, roots
}

func urls(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.url())
	}
	return out
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cfg.AgentID, cfg.AgentKey = "agent-1", "key-1"
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counts returns the calls each node answered since before.
func counts(nodes []*node, before []int) []int {
	out := make([]int, len(nodes))
	for i, n := range nodes {
		out[i] = n.count()
		if before != nil {
			out[i] -= before[i]
		}
	}
	return out
}

func TestKeepsToOneNodeWhileItWorks(t *testing.T) {
	nodes, roots := testCluster(t, 3)
	c := newClient(t, client.Config{URLs: urls(nodes), RootCAs: roots})
	for seq := range 20 {
		if err := push(t, c, uint64(seq+1)); err != nil {
			t.Fatal(err)
		}
	}
	used := 0
	for _, n := range counts(nodes, nil) {
		if n > 0 {
			used++
		}
	}
	if used != 1 {
		t.Fatalf("calls by node: %v; want them all on one", counts(nodes, nil))
	}
}

func TestAgentsStartOnNodesAtRandom(t *testing.T) {
	nodes, roots := testCluster(t, 3)
	// 60 agents: the chance that one node gets none is 3·(2/3)^60, 1e-10.
	for range 60 {
		c := newClient(t, client.Config{URLs: urls(nodes), RootCAs: roots})
		if _, err := c.Authenticate(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range counts(nodes, nil) {
		if n == 0 {
			t.Fatalf("no agent started on node %d of 3: %v", i+1, counts(nodes, nil))
		}
	}
}

func TestFailsOverWhenANodeStopsAndUsesItAgainWhenBack(t *testing.T) {
	nodes, roots := testCluster(t, 3)
	// Rebalance at once: every call draws among the nodes that work.
	c := newClient(t, client.Config{URLs: urls(nodes), RootCAs: roots,
		Failover: client.Failover{Avoid: 100 * time.Millisecond, MaxAvoid: 200 * time.Millisecond, Rebalance: time.Nanosecond}})
	seq := uint64(0)
	pushes := func(k int) {
		t.Helper()
		for range k {
			seq++
			if err := push(t, c, seq); err != nil {
				t.Fatalf("push %d: %v", seq, err)
			}
		}
	}
	pushes(60)
	for i, n := range counts(nodes, nil) {
		if n == 0 {
			t.Fatalf("node %d of 3 got no call out of 60: %v", i+1, counts(nodes, nil))
		}
	}

	// Node 1 stops: every call goes on, on the two others.
	nodes[0].stop()
	before := counts(nodes, nil)
	pushes(60)
	if got := counts(nodes, before); got[1] == 0 || got[2] == 0 {
		t.Fatalf("with node 1 stopped, calls by node: %v; want them on nodes 2 and 3", got)
	}

	// Node 1 comes back: once its avoid period is over, it gets calls again.
	nodes[0].start(t)
	before = counts(nodes, nil)
	deadline := time.Now().Add(10 * time.Second)
	for counts(nodes, before)[0] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node 1 got no call within 10 s of coming back: %v", counts(nodes, before))
		}
		pushes(1)
	}
}

func TestAvoidsANodeThatFailed(t *testing.T) {
	nodes, roots := testCluster(t, 2)
	nodes[0].set(func(n *node) { n.unavailable = true })
	c := newClient(t, client.Config{URLs: urls(nodes), RootCAs: roots,
		Failover: client.Failover{Avoid: time.Hour, Rebalance: time.Nanosecond}})
	for seq := range 20 {
		if err := push(t, c, uint64(seq+1)); err != nil {
			t.Fatal(err)
		}
	}
	// At most one call (the first, if it started there) reached node 1.
	if got := nodes[0].count(); got > 1 {
		t.Fatalf("the failed node got %d calls while avoided", got)
	}
	if c.URL() != nodes[1].url() {
		t.Fatalf("URL() = %s, want %s", c.URL(), nodes[1].url())
	}

	// When every node fails, the call fails UNAVAILABLE, having tried each.
	nodes[1].set(func(n *node) { n.unavailable = true })
	before := counts(nodes, nil)
	err := push(t, c, 21)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != connect.CodeUnavailable || !ce.Retryable() {
		t.Fatalf("err = %v, want retryable UNAVAILABLE", err)
	}
	if got := counts(nodes, before); got[0] != 1 || got[1] != 1 {
		t.Fatalf("calls by node when all fail: %v, want one each", got)
	}
}

func TestPollMovesToAnotherNodeWhenItsNodeStops(t *testing.T) {
	nodes, roots := testCluster(t, 2)
	for _, n := range nodes {
		n.set(func(n *node) { n.hold, n.holding = true, make(chan struct{}) })
	}
	c := newClient(t, client.Config{URLs: urls(nodes), RootCAs: roots, Failover: client.Failover{Rebalance: -time.Hour}})
	if _, err := c.Authenticate(context.Background()); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res client.PollResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Poll(context.Background(), client.PollRequest{Wait: 30 * time.Second})
		done <- result{res, err}
	}()
	var held, other *node
	select {
	case <-nodes[0].holding:
		held, other = nodes[0], nodes[1]
	case <-nodes[1].holding:
		held, other = nodes[1], nodes[0]
	case <-time.After(10 * time.Second):
		t.Fatal("no node holds the poll")
	}
	other.set(func(n *node) { n.hold = false })
	held.stop()
	select {
	case r := <-done:
		if r.err != nil || r.res.ConfigVersion != other.name {
			t.Fatalf("poll = %+v, %v; want the answer of %s", r.res, r.err, other.name)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the poll did not move to the other node")
	}
}

func TestNameWithSeveralAddressesIsSeveralEndpoints(t *testing.T) {
	// Three nodes on one port of 127.0.0.1, .2 and .3, under one name
	// that the httptest certificate holds.
	var nodes []*node
	book := &tokens{ok: map[string]bool{}}
	for attempt := 0; nodes == nil; attempt++ {
		if attempt == 20 {
			t.Skip("no port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3 at once")
		}
		first := &node{name: "node-1", tokens: book}
		first.start(t)
		_, port, _ := net.SplitHostPort(first.addr)
		nodes = []*node{first}
		for i := 2; i <= 3; i++ {
			addr := net.JoinHostPort(fmt.Sprintf("127.0.0.%d", i), port)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				first.stop()
				nodes = nil
				break
			}
			ln.Close()
			n := &node{name: fmt.Sprintf("node-%d", i), tokens: book, addr: addr}
			n.start(t)
			nodes = append(nodes, n)
		}
	}
	_, port, _ := net.SplitHostPort(nodes[0].addr)
	roots := x509.NewCertPool()
	roots.AddCert(nodes[0].srv.Certificate())
	resolver := resolverFunc(func(_ context.Context, host string) ([]string, error) {
		if host != "example.com" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []string{"127.0.0.3", "127.0.0.1", "127.0.0.2"}, nil
	})
	url := "https://example.com:" + port
	c := newClient(t, client.Config{URLs: []string{url}, RootCAs: roots, Resolver: resolver,
		Failover: client.Failover{Avoid: 100 * time.Millisecond, Rebalance: time.Nanosecond}})
	for seq := range 60 {
		if err := push(t, c, uint64(seq+1)); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range counts(nodes, nil) {
		if n == 0 {
			t.Fatalf("address %d of 3 got no call out of 60: %v", i+1, counts(nodes, nil))
		}
	}
	for _, n := range nodes {
		n.mu.Lock()
		for _, h := range n.hosts {
			if h != "example.com:"+port {
				t.Fatalf("%s received Host %q, want the URL's", n.name, h)
			}
		}
		n.mu.Unlock()
	}
	if c.URL() != url {
		t.Fatalf("URL() = %s, want %s", c.URL(), url)
	}
	// One address stops: calls go on at the others.
	nodes[1].stop()
	before := counts(nodes, nil)
	for seq := 61; seq <= 90; seq++ {
		if err := push(t, c, uint64(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if got := counts(nodes, before); got[0]+got[2] < 30 {
		t.Fatalf("calls by address after one stopped: %v", got)
	}
}

type resolverFunc func(ctx context.Context, host string) ([]string, error)

func (f resolverFunc) LookupHost(ctx context.Context, host string) ([]string, error) {
	return f(ctx, host)
}
