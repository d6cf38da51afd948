package integration_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/client"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"github.com/tetherhq/tether/server/postgres/pgtest"
)

// The cluster test runs what docs/cluster.md describes, with real parts:
// three tether-server nodes on one PostgreSQL database, HAProxy in front
// of them balancing every request round robin (no stickiness; TLS ended
// and re-encrypted, HTTP/2 on both sides), NATS JetStream as the event
// sink, and tether-agent processes enrolled and connected through the
// balancer. It needs PostgreSQL (TETHER_TEST_POSTGRES, default
// 127.0.0.1:5432), NATS with JetStream (TETHER_TEST_NATS, default
// 127.0.0.1:4222) and the haproxy program; without them it is skipped,
// except under CI=true, where it fails.

const (
	clusterNodes    = 3
	clusterPollWait = 20 * time.Second // the agents' long-poll window
	wakeOrders      = 100              // orders of the cross-node wake-up measurement
	loadEvents      = 5000             // test-load events per load agent…
	loadRate        = 500              // …queued at this rate per second
	ordersPerPhase  = 8                // group commands before the kill, and again after it
)

// TestClusterBehindLoadBalancer shows, with three nodes behind HAProxy:
//   - an order created through one node reaches the agent whose long-poll
//     another node holds, at once (which node answered the poll is read
//     from the nodes' metrics); the latency is logged, never asserted;
//   - a node killed with SIGKILL while agents push events and run orders
//     loses no event (every event is in the stream exactly once) and no
//     order (those created before and after the kill all finish, each run
//     once, in creation order), and the agents carry on through the
//     other nodes;
//   - a node's restart is invisible to tetherctl beyond a retry.
func TestClusterBehindLoadBalancer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the cluster test")
	}
	balancer, program := needBalancer(t)
	natsURL := needNATS(t)
	db := freshDatabase(t)
	stream, prefix := uniqueStream(t, natsURL)
	began := time.Now()

	c := startCluster(t, balancer, program, db.url, natsURL, stream, prefix)
	t.Logf("cluster up in %s: %d nodes, %s in front: comms %s, management %s", time.Since(began).Round(time.Millisecond),
		len(c.nodes), balancer, c.lbComms, c.lb.apiURL)

	wake := c.enroll(t, "wake-1", "wake")
	var load []*clusterAgent
	for i := range 3 {
		load = append(load, c.enroll(t, fmt.Sprintf("load-%d", i+1), "load"))
	}
	c.checkProtocols(t, wake)
	wake.start(t, "")
	awaitActive(t, c.lb, wake)

	t.Log("== a command created through one node reaches an agent polling another")
	c.measureWake(t, wake, wakeOrders)

	// The user: tetherctl through the balancer, all along from here.
	user := c.startUser(t, wake.id)

	t.Log("== SIGKILL of a node loses no event and no order")
	events := openStream(t, stream)
	victim := c.killNodeUnderLoad(t, load, events)

	t.Log("== restarts are invisible to users beyond a retry")
	// The killed node comes back…
	victim.start(t)
	c.awaitServing(t, victim)
	// …and another is restarted the way an upgrade does it.
	other := c.nodes[(slices.Index(c.nodes, victim)+1)%len(c.nodes)]
	stopped := time.Now()
	other.stop(t)
	other.start(t)
	t.Logf("%s restarted (SIGTERM, start) in %s", other.name, time.Since(stopped).Round(time.Millisecond))
	c.awaitServing(t, other)
	user.stop()
	st := user.stats()
	t.Logf("tetherctl through the balancer during the kill and restarts: %d operations, %d needed a retry, %d failed twice",
		st.ops, st.retried, len(st.failures))
	for _, f := range st.failures {
		t.Errorf("tetherctl failed twice: %s", f)
	}
	if st.ops < 5 {
		t.Errorf("only %d tetherctl operations ran", st.ops)
	}
	// Every agent is still active, and still answers commands.
	for _, a := range append([]*clusterAgent{wake}, load...) {
		awaitActive(t, c.lb, a)
	}
	var cmd commandJSON
	c.lb.ctlJSON(t, &cmd, "commands", "send", "--group", "load", "get-config", "--wait", "--timeout", "1m")
	if cmd.Status != "success" || len(cmd.Orders) != len(load) {
		t.Errorf("get-config to the load agents after the restarts: %+v", cmd)
	}

	t.Log("== PostgreSQL lost for a while: nothing is lost, the cluster recovers by itself")
	c.storeOutage(t, db, wake, load, events)
	t.Logf("cluster test done in %s", time.Since(began).Round(time.Millisecond))
}

// cluster is the nodes, the balancer and what a user needs to reach them.
type cluster struct {
	nodes   []*clusterNode
	lb      *server // the management API through the balancer, with the admin token and the balancer's CA
	lbComms string  // the comms API through the balancer
	nodeCA  string  // the cluster's CA (the nodes' DATA/tls/ca.crt)
	lbHTTP  *http.Client
	// passthrough: the balancer passes TLS through and balances
	// connections, not requests.
	passthrough bool
	dir         string
}

// clusterNode is one tether-server process, on fixed ports so that it
// comes back where the balancer expects it.
type clusterNode struct {
	name                string
	dataDir, configFile string
	commsPort, apiPort  int
	p                   *proc
	api                 *api.Client // its management API, directly
	http                *http.Client
}

func (n *clusterNode) apiURL() string { return fmt.Sprintf("https://127.0.0.1:%d", n.apiPort) }

// start runs the node and waits until it serves.
func (n *clusterNode) start(t *testing.T) {
	t.Helper()
	n.launch(t)
	n.awaitUp(t)
}

// launch starts the node's process.
func (n *clusterNode) launch(t *testing.T) {
	t.Helper()
	n.p = start(t, "tether-server", "run", "--data-dir", n.dataDir, "--config", n.configFile,
		"--comms-addr", fmt.Sprintf("127.0.0.1:%d", n.commsPort), "--api-addr", fmt.Sprintf("127.0.0.1:%d", n.apiPort))
}

// awaitUp waits until the node printed its URLs.
func (n *clusterNode) awaitUp(t *testing.T) {
	t.Helper()
	await(t, 60*time.Second, n.name+" to serve", func() bool {
		if code, done := n.p.exited(0); done {
			t.Fatalf("%s exited with %d:\n%s", n.name, code, n.p.Output())
		}
		return len(urlLine.FindAllString(n.p.Output(), -1)) == 2
	})
}

// ready reports whether the node's /readyz answers 200.
func (n *clusterNode) ready(t *testing.T) bool {
	t.Helper()
	resp, err := n.http.Get(n.apiURL() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop stops the node the way a service manager does: SIGTERM, then
// waiting for it to drain and exit.
func (n *clusterNode) stop(t *testing.T) {
	t.Helper()
	_ = n.p.cmd.Process.Signal(syscall.SIGTERM)
	if code, ok := n.p.exited(30 * time.Second); !ok || code != 0 {
		t.Fatalf("%s after SIGTERM: exited %v, code %d\n%s", n.name, ok, code, n.p.Output())
	}
}

// metrics scrapes the node's /metrics: unlabelled samples by name,
// labelled ones by name and labels as printed.
func (n *clusterNode) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	return scrapeMetrics(t, n.http, n.apiURL())
}

// scrapeMetrics reads the /metrics of the management API at apiURL.
func scrapeMetrics(t testing.TB, hc *http.Client, apiURL string) map[string]float64 {
	t.Helper()
	resp, err := hc.Get(apiURL + "/metrics")
	if err != nil {
		t.Fatalf("%s/metrics: %v", apiURL, err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s/metrics: %v", apiURL, err)
	}
	return m
}

// startCluster starts the nodes on one store, then HAProxy in front of
// them, and checks the nodes share one identity.
func startCluster(t *testing.T, balancer, program, storeURL, natsURL, stream, prefix string) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir()}
	ports := freePorts(t, 2*clusterNodes+2)
	lbComms, lbAPI := ports[2*clusterNodes], ports[2*clusterNodes+1]
	c.lbComms = fmt.Sprintf("https://127.0.0.1:%d", lbComms)
	cfg := fmt.Sprintf(`store: %q
comms_urls: [%q]
poll_wait: %s
sweep_interval: 1s
events:
  files: false
  nats:
    urls: [%q]
    stream: %s
    subject_prefix: %s
    dedup_window: 10m
    max_age: 1h
`, storeURL, c.lbComms, clusterPollWait, natsURL, stream, prefix)
	for i := range clusterNodes {
		n := &clusterNode{name: fmt.Sprintf("node-%d", i+1), commsPort: ports[2*i], apiPort: ports[2*i+1]}
		dir := filepath.Join(c.dir, n.name)
		n.dataDir, n.configFile = filepath.Join(dir, "data"), filepath.Join(dir, "server.yaml")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.configFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	// The nodes start together on the new store: they agree on one CA,
	// one release key and one admin token.
	for _, n := range c.nodes {
		n.launch(t)
	}
	for _, n := range c.nodes {
		n.awaitUp(t)
	}
	var admin string
	var ca []byte
	for _, n := range c.nodes {
		b, err := os.ReadFile(filepath.Join(n.dataDir, "tls", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if ca != nil && !bytes.Equal(b, ca) {
			t.Fatalf("%s has another CA than node-1", n.name)
		}
		ca = b
		tok, err := os.ReadFile(filepath.Join(n.dataDir, "admin.token"))
		if err == nil {
			if admin != "" {
				t.Fatal("two nodes created an admin token")
			}
			admin = strings.TrimSpace(string(tok))
		}
	}
	if admin == "" {
		t.Fatal("no node created the admin token")
	}
	c.nodeCA = filepath.Join(c.nodes[0].dataDir, "tls", "ca.crt")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	for _, n := range c.nodes {
		n.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		var err error
		if n.api, err = api.New(api.Options{Server: n.apiURL(), Token: admin, CACertPEM: ca}); err != nil {
			t.Fatal(err)
		}
	}

	// The balancer presents a certificate of its own (as it would for a
	// public name) and verifies the nodes' certificates with the
	// cluster's CA.
	//
	// Passed through (TETHER_TEST_LB=haproxy-tcp or nginx-tcp), TLS goes
	// from the agents to the nodes, which they trust; the balancer
	// balances connections.
	lbCert, lbCA := writeBalancerCert(t, c.dir)
	if c.passthrough = strings.HasSuffix(balancer, "-tcp"); c.passthrough {
		lbCA = c.nodeCA
	}
	c.lb = &server{apiURL: fmt.Sprintf("https://127.0.0.1:%d", lbAPI), caCert: lbCA, adminToken: admin}
	var config string
	switch balancer {
	case "haproxy":
		config = haproxyConfig(c, lbCert, lbComms, lbAPI)
	case "haproxy-tcp":
		config = haproxyTCPConfig(c, lbComms, lbAPI)
	case "nginx":
		config = nginxConfig(c, lbCert, lbComms, lbAPI)
	case "nginx-tcp":
		config = nginxStreamConfig(c, lbComms, lbAPI)
	}
	conf := filepath.Join(c.dir, "balancer.conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	check, run := exec.Command(program, "-c", "-f", conf), exec.Command(program, "-db", "-f", conf)
	if strings.HasPrefix(balancer, "nginx") {
		check = exec.Command(program, "-t", "-p", c.dir, "-e", "stderr", "-c", conf)
		run = exec.Command(program, "-p", c.dir, "-e", "stderr", "-c", conf)
	}
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s\n%s", strings.Join(check.Args, " "), err, out, config)
	}
	lb := startCmd(t, run)
	lbPool := x509.NewCertPool()
	pemCA, _ := os.ReadFile(lbCA)
	lbPool.AppendCertsFromPEM(pemCA)
	c.lbHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: lbPool}}}
	await(t, 30*time.Second, "the balancer to answer /readyz", func() bool {
		if code, done := lb.exited(0); done {
			t.Fatalf("%s exited with %d:\n%s", balancer, code, lb.Output())
		}
		return c.lbReady()
	})
	if !c.passthrough {
		// Metrics are scraped from each node, not through the balancer.
		resp, err := c.lbHTTP.Get(c.lb.apiURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("/metrics through the balancer: %s, want 403", resp.Status)
		}
	}
	return c
}

// lbReady reports whether /readyz through the balancer answers 200: the
// balancer has a node to send requests to.
func (c *cluster) lbReady() bool {
	resp, err := c.lbHTTP.Get(c.lb.apiURL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// haproxyConfig balances every request round robin over the nodes: TLS
// ends at the balancer and starts again to the nodes (HTTP/2 on both
// sides, so gRPC clients work too). A node is taken out when its
// /readyz fails (a node shutting down answers 503 at once), and a
// request that could not reach a node is sent to another. Comms calls
// are all safe to send again (pushes carry their sequence, results are
// idempotent, a poll only reads), so a comms call cut by a node's death
// before any answer is retried on another node too; management calls
// are not (a POST may have committed).
func haproxyConfig(c *cluster, certFile string, commsPort, apiPort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 90s
    timeout server 90s
    timeout http-request 10s
    timeout http-keep-alive 90s
    timeout check 2s
    retries 3
    option redispatch 1

frontend comms
    bind 127.0.0.1:%d ssl crt "%s" alpn h2,http/1.1
    default_backend tether_comms

frontend management
    bind 127.0.0.1:%d ssl crt "%s" alpn h2,http/1.1
    http-request deny if { path_beg /metrics }
    default_backend tether_management

backend tether_comms
    balance roundrobin
    retry-on conn-failure empty-response response-timeout
    option httpchk GET /readyz
    http-check expect status 200
    default-server ssl verify required ca-file "%s" alpn h2,http/1.1 check check-ssl check-alpn http/1.1 inter 500ms fall 1 rise 2
`, commsPort, certFile, apiPort, certFile, c.nodeCA)
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d port %d\n", n.name, n.commsPort, n.apiPort)
	}
	fmt.Fprintf(&b, `
backend tether_management
    balance roundrobin
    retry-on conn-failure
    option httpchk GET /readyz
    http-check expect status 200
    default-server ssl verify required ca-file "%s" alpn h2,http/1.1 check check-alpn http/1.1 inter 500ms fall 1 rise 2
`, c.nodeCA)
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d\n", n.name, n.apiPort)
	}
	return b.String()
}

// clusterAgent is an agent enrolled through the balancer; its
// active-response script "record" appends its argument to log.
type clusterAgent struct {
	id, name, dir, log string
	p                  *proc
}

// enroll creates an enrollment token and enrolls an agent through the
// balancer, trusting the balancer's CA only.
func (c *cluster) enroll(t *testing.T, name, group string) *clusterAgent {
	t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	c.lb.ctlJSON(t, &tok, "enrollment-tokens", "create", "--group", group, "--uses", "1", "--ttl", "1h")
	a := &clusterAgent{name: name, dir: filepath.Join(c.dir, name), log: filepath.Join(c.dir, name+"-ran.log")}
	if _, stderr, code := run(t, nil, "tether-agent", "enroll", "--server", c.lb.apiURL, "--token", tok.Token,
		"--ca-cert", c.lb.caCert, "--data-dir", a.dir, "--name", name); code != 0 {
		t.Fatalf("enroll %s through the balancer: exit %d: %s", name, code, stderr)
	}
	var ident struct {
		AgentID   string   `json:"agent_id"`
		CommsURLs []string `json:"comms_urls"`
	}
	b, _ := os.ReadFile(filepath.Join(a.dir, "identity.json"))
	if err := json.Unmarshal(b, &ident); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ident.CommsURLs, []string{c.lbComms}) {
		t.Fatalf("%s was given comms URLs %v, want the balancer's %s", name, ident.CommsURLs, c.lbComms)
	}
	a.id = ident.AgentID
	bin := filepath.Join(a.dir, "active-response", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\necho \"$1\" >> %q\nsleep 0.25\n", a.log)
	if err := os.WriteFile(filepath.Join(bin, "record"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	writeAgentConfig(t, a.dir, fmt.Sprintf("poll_wait: %s\nbatch_max_events: 100\nbatch_interval: 50ms\noutbox_fsync_window: 20ms\n", clusterPollWait))
	return a
}

// start runs the agent, with a test load when load is not "".
func (a *clusterAgent) start(t *testing.T, load string) {
	t.Helper()
	cmd := exec.Command(bin("tether-agent"), "run", "--data-dir", a.dir)
	cmd.Env = os.Environ()
	if load != "" {
		cmd.Env = append(cmd.Env, "TETHER_AGENT_TEST_LOAD="+load)
	}
	a.p = startCmd(t, cmd)
}

// ran returns the numbers the record script wrote, in order.
func (a *clusterAgent) ran(t *testing.T) []int {
	t.Helper()
	return crashAgent{log: a.log}.ran(t)
}

func awaitActive(t *testing.T, lb *server, a *clusterAgent) {
	t.Helper()
	await(t, 30*time.Second, a.name+" to be active", func() bool {
		var got agentJSON
		lb.ctlJSON(t, &got, "agents", "show", a.id)
		return got.Status == "active"
	})
}

// checkProtocols authenticates as the agent through the balancer with
// each protocol the comms API speaks: Connect over HTTP/2 (what
// tether-agent uses), gRPC over HTTP/2, gRPC-Web over HTTP/1.1, and plain
// JSON over HTTP/1.1 as curl sends it.
func (c *cluster) checkProtocols(t *testing.T, a *clusterAgent) {
	t.Helper()
	var ident struct {
		AgentID  string `json:"agent_id"`
		AgentKey string `json:"agent_key"`
	}
	b, _ := os.ReadFile(filepath.Join(a.dir, "identity.json"))
	if err := json.Unmarshal(b, &ident); err != nil {
		t.Fatal(err)
	}
	roots := c.lbHTTP.Transport.(*http.Transport).TLSClientConfig.RootCAs
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for _, p := range []struct {
		name  string
		hc    *http.Client
		opts  []connect.ClientOption
		proto int
	}{
		{"connect", h2, nil, 2},
		{"grpc", h2, []connect.ClientOption{connect.WithGRPC()}, 2},
		{"grpc-web", h1, []connect.ClientOption{connect.WithGRPCWeb()}, 1},
		{"connect+json", h1, []connect.ClientOption{connect.WithProtoJSON()}, 1},
	} {
		var proto int
		hc := &http.Client{Timeout: p.hc.Timeout, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := p.hc.Transport.RoundTrip(r)
			if err == nil {
				proto = resp.ProtoMajor
			}
			return resp, err
		})}
		cl := commsv1connect.NewAgentServiceClient(hc, c.lbComms, p.opts...)
		resp, err := cl.Authenticate(context.Background(), connect.NewRequest(&commsv1.AuthenticateRequest{AgentId: ident.AgentID, AgentKey: ident.AgentKey}))
		if err != nil || resp.Msg.Token == "" || proto != p.proto {
			t.Fatalf("Authenticate with %s through the balancer: %v (HTTP/%d, want HTTP/%d)", p.name, err, proto, p.proto)
		}
		_, err = cl.Authenticate(context.Background(), connect.NewRequest(&commsv1.AuthenticateRequest{AgentId: ident.AgentID, AgentKey: "wrong"}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("Authenticate with %s and a wrong key through the balancer: %v, want unauthenticated", p.name, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// waitingPolls returns the long-polls each node holds.
func (c *cluster) waitingPolls(t *testing.T) []int {
	t.Helper()
	out := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = int(n.metrics(t)["tether_polls_waiting"])
	}
	return out
}

// deliveries returns each node's count and sum of
// tether_order_delivery_seconds: the orders its polls delivered, and their
// time from creation.
func (c *cluster) deliveries(t *testing.T) (count, sum []float64) {
	t.Helper()
	for _, n := range c.nodes {
		m := n.metrics(t)
		count = append(count, m["tether_order_delivery_seconds_count"])
		sum = append(sum, m["tether_order_delivery_seconds_sum"])
	}
	return count, sum
}

// measureWake creates orders for an agent whose long-poll one node holds,
// each through another node, and reads from the nodes' metrics which node
// delivered it and how long after its creation.
func (c *cluster) measureWake(t *testing.T, a *clusterAgent, orders int) {
	ctx := context.Background()
	var cross []time.Duration
	moved := 0
	for i := range orders {
		holder := -1
		await(t, 2*clusterPollWait, "the agent's long-poll to be held", func() bool {
			polls := c.waitingPolls(t)
			holder = slices.Index(polls, 1)
			sum := 0
			for _, p := range polls {
				sum += p
			}
			return sum == 1 && holder >= 0
		})
		creator := (holder + 1 + i%(len(c.nodes)-1)) % len(c.nodes)
		count0, sum0 := c.deliveries(t)
		cmd, err := c.nodes[creator].api.CreateCommand(ctx, api.CreateCommandRequest{
			Target: api.Target{Type: "agent", ID: a.id}, Action: api.Action{Name: "get-config"}, Timeout: "1m"})
		if err != nil {
			t.Fatalf("create a command through %s: %v", c.nodes[creator].name, err)
		}
		await(t, 2*clusterPollWait, "the order's result", func() bool {
			got, err := c.nodes[creator].api.GetCommand(ctx, cmd.ID)
			if err != nil {
				t.Fatal(err)
			}
			return got.Status == api.StatusSuccess
		})
		count1, sum1 := c.deliveries(t)
		deliverer := -1
		for k := range c.nodes {
			if count1[k]-count0[k] == 1 {
				deliverer = k
			}
		}
		if deliverer != holder {
			moved++ // the poll ended before the order came (its window, a race): not a sample
			continue
		}
		cross = append(cross, time.Duration((sum1[deliverer]-sum0[deliverer])*float64(time.Second)))
	}
	if len(cross) < orders*9/10 {
		t.Fatalf("only %d of %d orders were delivered by the node that held the poll", len(cross), orders)
	}
	slices.Sort(cross)
	p := func(q float64) time.Duration { return cross[min(len(cross)-1, int(q*float64(len(cross))))] }
	t.Logf("cross-node wake-up, order created through node A → long-poll held by node B answers it: "+
		"%d orders, p50 %s, p99 %s, max %s (%d left out: the poll had moved)",
		len(cross), p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond),
		cross[len(cross)-1].Round(10*time.Microsecond), moved)
	// Not a speed check: a poll that no other node woke would answer only
	// at the end of its window.
	if late := cross[len(cross)-1]; late > clusterPollWait/2 {
		t.Errorf("an order waited %s for a poll held by another node (window %s): the node was not woken", late, clusterPollWait)
	}
}

// killNodeUnderLoad starts the load agents, queues orders for them, kills
// the node holding the most long-polls with SIGKILL while they work,
// queues more orders, and checks that every order finishes, each run once
// and in order, and that every event is in the stream exactly once. It
// returns the killed node.
func (c *cluster) killNodeUnderLoad(t *testing.T, load []*clusterAgent, s *eventStream) *clusterNode {
	for _, a := range load {
		a.start(t, fmt.Sprintf("%d:%d", loadEvents, loadRate))
	}
	await(t, 30*time.Second, "every load agent's first events in the stream", func() bool {
		s.read(t)
		for _, a := range load {
			if len(s.seen[a.id]) == 0 {
				return false
			}
		}
		return true
	})
	var ids []string
	for i := range ordersPerPhase {
		ids = append(ids, c.sendRecord(t, i))
	}
	polls := c.waitingPolls(t)
	victim := c.nodes[slices.Index(polls, slices.Max(polls))]
	held := 0
	for _, p := range polls {
		held += p
	}
	s.read(t)
	inStream := s.total()
	ran := 0
	for _, a := range load {
		ran += len(a.ran(t))
	}
	_ = victim.p.cmd.Process.Kill() // SIGKILL
	<-victim.p.done
	killed := time.Now()
	t.Logf("killed %s (SIGKILL) holding %d of %d long-polls, with %d of %d test events in the stream and %d of %d orders run",
		victim.name, slices.Max(polls), held, inStream, len(load)*loadEvents, ran, len(load)*ordersPerPhase)
	if inStream >= len(load)*loadEvents {
		t.Errorf("the load was over before the kill: it shows nothing")
	}

	for i := range ordersPerPhase {
		ids = append(ids, c.sendRecord(t, ordersPerPhase+i))
	}
	c.awaitRecords(t, load, ids, 2*ordersPerPhase)
	t.Logf("%d orders (%d before the kill, %d after) finished %s after the kill", len(ids)*len(load),
		ordersPerPhase*len(load), ordersPerPhase*len(load), time.Since(killed).Round(time.Millisecond))

	s.awaitAll(t, load, loadEvents)
	msgs, size := s.size(t)
	t.Logf("%d test events in the stream, each once, %s after the kill (%d messages read in all; the stream stores %d bytes a message)",
		s.total(), time.Since(killed).Round(time.Millisecond), s.messages, size/max(msgs, 1))
	var live []float64
	for _, n := range c.nodes {
		if n != victim {
			live = append(live, n.metrics(t)["tether_events_received_total{module=\"testload\"}"])
		}
	}
	t.Logf("test events accepted by the surviving nodes: %v", live)
	return victim
}

// sendRecord creates, through the balancer, an order for every load agent
// to run its record script with n, and returns the command's id.
func (c *cluster) sendRecord(t *testing.T, n int) string {
	t.Helper()
	args, _ := json.Marshal(map[string]any{"command": "record", "args": []string{strconv.Itoa(n)}, "timeout": "30s"})
	var cmd commandJSON
	c.lb.ctlJSON(t, &cmd, "commands", "send", "--group", "load", "active-response", "--args-json", string(args), "--timeout", "3m")
	return cmd.ID
}

// awaitRecords waits until the commands ids finished, and checks that
// each of their orders succeeded and that each agent ran 0 to n-1 once
// each, in order.
func (c *cluster) awaitRecords(t *testing.T, agents []*clusterAgent, ids []string, n int) {
	t.Helper()
	await(t, 2*time.Minute, "every order to finish", func() bool {
		for _, id := range ids {
			var cmd commandJSON
			c.lb.ctlJSON(t, &cmd, "commands", "show", id)
			if cmd.Status != "success" && cmd.Status != "failure" {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		var cmd commandJSON
		c.lb.ctlJSON(t, &cmd, "commands", "show", id)
		for _, o := range cmd.Orders {
			if o.Status != "success" {
				t.Errorf("command %s: order %s %s %+v", id, o.OrderID, o.Status, o.Result)
			}
		}
	}
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	for _, a := range agents {
		if got := a.ran(t); !slices.Equal(got, want) {
			t.Errorf("%s ran the orders %v, want each once in creation order %v", a.name, got, want)
		}
	}
}

// storeOutage makes the cluster's database refuse connections and ends
// the nodes' sessions, for a few seconds, while the load agents push
// events: the nodes turn unready, the balancer answers 503, agents keep
// their events; once the database is back, the nodes recover by
// themselves, every event reaches the stream once, orders flow, and
// polls are woken across nodes again.
func (c *cluster) storeOutage(t *testing.T, db *testDB, wake *clusterAgent, load []*clusterAgent, s *eventStream) {
	for _, a := range load {
		_ = a.p.cmd.Process.Signal(syscall.SIGTERM)
		a.p.exited(10 * time.Second)
		a.start(t, fmt.Sprintf("%d:%d", 2*loadEvents, loadRate))
	}
	await(t, 30*time.Second, "the load agents' new events in the stream", func() bool {
		s.read(t)
		for _, a := range load {
			if len(s.seen[a.id]) <= loadEvents {
				return false
			}
		}
		return true
	})
	reconnects := 0.0
	for _, n := range c.nodes {
		reconnects += n.metrics(t)["tether_cluster_reconnects"]
	}
	cut := time.Now()
	db.allowConnections(t, false)
	await(t, 30*time.Second, "every node to be unready", func() bool {
		for _, n := range c.nodes {
			if n.ready(t) {
				return false
			}
		}
		return true
	})
	t.Logf("database refused and sessions ended: every node unready after %s", time.Since(cut).Round(time.Millisecond))
	_, stderr, code := c.lb.ctl(t, "agents", "list")
	if code == 0 {
		t.Errorf("tetherctl agents list succeeded without the database")
	}
	t.Logf("tetherctl agents list meanwhile: exit %d: %s", code, strings.TrimSpace(stderr))
	time.Sleep(5 * time.Second) // the outage
	s.read(t)
	during := s.total()
	db.allowConnections(t, true)
	back := time.Now()
	await(t, 60*time.Second, "every node to be ready", func() bool {
		for _, n := range c.nodes {
			if !n.ready(t) {
				return false
			}
		}
		return true
	})
	ready := time.Since(back)
	await(t, 30*time.Second, "the balancer to take the nodes back", c.lbReady)
	t.Logf("database back after an outage of %s: every node ready %s later, the balancer sends them requests %s later",
		back.Sub(cut).Round(time.Millisecond), ready.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	var ids []string
	for i := range ordersPerPhase {
		ids = append(ids, c.sendRecord(t, 2*ordersPerPhase+i))
	}
	c.awaitRecords(t, load, ids, 3*ordersPerPhase)
	s.awaitAll(t, load, 2*loadEvents)
	t.Logf("%d test events in the stream, each once, %s after the database came back (%d when it did)",
		s.total(), time.Since(back).Round(time.Millisecond), during)
	// Each node listens to the others again: it connects again with a
	// backoff (up to 10 s between attempts), then catches up.
	await(t, 30*time.Second, "every node to listen to the others again", func() bool {
		for _, n := range c.nodes {
			if n.metrics(t)["tether_cluster_listening"] != 1 {
				return false
			}
		}
		return true
	})
	t.Logf("every node listens to the others again %s after the database came back", time.Since(back).Round(time.Millisecond))
	after := 0.0
	for _, n := range c.nodes {
		after += n.metrics(t)["tether_cluster_reconnects"]
	}
	if after <= reconnects {
		t.Errorf("no node re-established its listening connection (reconnects %v, then %v)", reconnects, after)
	}
	// Polls are woken across nodes again (measured with the wake agent's
	// poll alone).
	for _, a := range load {
		_ = a.p.cmd.Process.Signal(syscall.SIGTERM)
		a.p.exited(10 * time.Second)
	}
	c.measureWake(t, wake, 20)
}

// awaitServing waits until the balancer sends the node requests again: a
// long-poll is held by it. Passed through, agents keep the connections
// they have to the other nodes, so the node only has to be ready.
func (c *cluster) awaitServing(t *testing.T, n *clusterNode) {
	t.Helper()
	if c.passthrough {
		await(t, 30*time.Second, n.name+" to be ready", func() bool { return n.ready(t) })
		return
	}
	await(t, 4*clusterPollWait, n.name+" to hold a long-poll again", func() bool {
		return n.metrics(t)["tether_polls_waiting"] > 0
	})
}

// user runs tetherctl through the balancer in a loop, as a person or a
// script would, trying each operation a second time when it fails.
type user struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	st     userStats
}

type userStats struct {
	ops, retried int
	failures     []string
}

func (c *cluster) startUser(t *testing.T, agentID string) *user {
	ctx, cancel := context.WithCancel(context.Background())
	u := &user{cancel: cancel, done: make(chan struct{})}
	env := append(os.Environ(), "TETHER_SERVER="+c.lb.apiURL, "TETHER_CA_CERT="+c.lb.caCert, "TETHER_TOKEN="+c.lb.adminToken)
	ops := [][]string{
		{"agents", "list", "-o", "json"},
		{"commands", "send", "--agent", agentID, "get-config", "--wait", "--timeout", "1m", "-o", "json"},
		{"orders", "list", "--agent", agentID, "-o", "json"},
	}
	attempt := func(args []string) error {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin("tetherctl"), args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("tetherctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		if !json.Valid(stdout.Bytes()) {
			return fmt.Errorf("tetherctl %s: not JSON: %q", strings.Join(args, " "), stdout.String())
		}
		return nil
	}
	go func() {
		defer close(u.done)
		for i := 0; ctx.Err() == nil; i++ {
			args := ops[i%len(ops)]
			err := attempt(args)
			if ctx.Err() != nil {
				return
			}
			retried := false
			if err != nil {
				retried = true
				time.Sleep(time.Second)
				if err2 := attempt(args); err2 != nil && ctx.Err() == nil {
					err = fmt.Errorf("%v; then %v", err, err2)
				} else {
					err = nil
				}
			}
			u.mu.Lock()
			u.st.ops++
			if retried {
				u.st.retried++
			}
			if err != nil {
				u.st.failures = append(u.st.failures, err.Error())
			}
			u.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	t.Cleanup(u.stop)
	return u
}

func (u *user) stop() {
	u.cancel()
	<-u.done
}

func (u *user) stats() userStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

// eventStream reads the test stream with an ordered consumer, keeping
// count of the test-load events of each agent by number.
type eventStream struct {
	js       jetstream.JetStream
	name     string
	cons     jetstream.Consumer
	seen     map[string]map[int]int // agent id → event number → times
	messages int
}

func openStream(t *testing.T, stream string) *eventStream {
	t.Helper()
	nc, err := nats.Connect(natsTestURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consume stream %s: %v", stream, err)
	}
	return &eventStream{js: js, name: stream, cons: cons, seen: map[string]map[int]int{}}
}

// read takes every message the stream holds that was not read yet.
func (s *eventStream) read(t *testing.T) {
	t.Helper()
	for {
		batch, err := s.cons.FetchNoWait(1000)
		if err != nil {
			t.Fatalf("read the stream: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			s.messages++
			h := m.Headers()
			if h.Get("Tether-Module") != "testload" {
				continue
			}
			k, err := strconv.Atoi(strings.TrimPrefix(h.Get("Tether-Event-Id"), "testload-"))
			if err != nil {
				t.Fatalf("test event id %q", h.Get("Tether-Event-Id"))
			}
			agent := h.Get("Tether-Agent-Id")
			if s.seen[agent] == nil {
				s.seen[agent] = map[int]int{}
			}
			s.seen[agent][k]++
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read the stream: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

// awaitAll waits until the stream holds events 0 to n-1 of every agent,
// and checks each is there once.
func (s *eventStream) awaitAll(t *testing.T, agents []*clusterAgent, n int) {
	t.Helper()
	await(t, 2*time.Minute, "every test event in the stream", func() bool {
		s.read(t)
		for _, a := range agents {
			if len(s.seen[a.id]) < n {
				return false
			}
		}
		return true
	})
	s.read(t)
	for _, a := range agents {
		checkOnce(t, s.seen[a.id], func(int) bool { return true }, n)
		if len(s.seen[a.id]) != n {
			t.Errorf("%s: %d distinct test events in the stream, want %d", a.name, len(s.seen[a.id]), n)
		}
	}
}

// size returns the messages the stream holds and their bytes as stored.
func (s *eventStream) size(t *testing.T) (msgs, bytes uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, s.name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs, info.State.Bytes
}

// total is the number of test events read, duplicates included.
func (s *eventStream) total() int {
	n := 0
	for _, m := range s.seen {
		for _, c := range m {
			n += c
		}
	}
	return n
}

// needBalancer returns the balancer the test runs and its program, or
// skips the test (fails it under CI) when it is not installed. It is
// haproxy, or with TETHER_TEST_LB one of the other configurations of
// docs/cluster.md: haproxy-tcp (TLS passed through), nginx, nginx-tcp.
func needBalancer(t *testing.T) (balancer, program string) {
	t.Helper()
	balancer = cmp.Or(os.Getenv("TETHER_TEST_LB"), "haproxy")
	name, _, _ := strings.Cut(balancer, "-")
	if !slices.Contains([]string{"haproxy", "haproxy-tcp", "nginx", "nginx-tcp"}, balancer) {
		t.Fatalf("TETHER_TEST_LB=%s: want haproxy, haproxy-tcp, nginx or nginx-tcp", balancer)
	}
	if balancer == "nginx-tcp" {
		if _, err := os.Stat(nginxStreamModule); err != nil {
			missing(t, "nginx's stream module is not installed", err, "install it (Debian: apt-get install libnginx-mod-stream)")
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/" + name); err2 == nil {
			return balancer, "/usr/sbin/" + name
		}
		missing(t, name+" is not installed", err, "install it (Debian: apt-get install "+name+")")
	}
	return balancer, path
}

func natsTestURL() string {
	if u := os.Getenv("TETHER_TEST_NATS"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// needNATS returns the URL of a NATS server with JetStream, or skips the
// test (fails it under CI).
func needNATS(t *testing.T) string {
	t.Helper()
	u := natsTestURL()
	how := "start nats-server -js on 127.0.0.1:4222, or set TETHER_TEST_NATS=nats://HOST:PORT"
	nc, err := nats.Connect(u, nats.Timeout(3*time.Second))
	if err != nil {
		missing(t, "NATS is not reachable at "+u, err, how)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		missing(t, "NATS at "+u+" has no JetStream", err, how)
	}
	return u
}

func missing(t *testing.T, what string, err error, how string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %v\n(CI=true: the cluster test must run; .ci/run starts PostgreSQL and NATS and installs haproxy)", what, err)
	}
	t.Skipf("%s: %v\nskipping the cluster test; to run it, %s", what, err, how)
}

// testDB is a database of this run on the test PostgreSQL server.
type testDB struct {
	name, url string
	base      string // the server's URL (its database is not this one)
}

// freshDatabase creates a database for this run on the test PostgreSQL
// server (see pgtest), dropped at the end.
func freshDatabase(t *testing.T) *testDB {
	t.Helper()
	db := &testDB{base: pgtest.ServerURL(t)}
	var b [6]byte
	rand.Read(b[:])
	db.name = "tether_cluster_" + hex.EncodeToString(b[:])
	db.exec(t, "CREATE DATABASE "+db.name)
	t.Cleanup(func() { db.exec(t, "DROP DATABASE IF EXISTS "+db.name+" WITH (FORCE)") })
	u, err := url.Parse(db.base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db.name
	q := u.Query()
	q.Set("application_name", "tether-cluster-test")
	u.RawQuery = q.Encode()
	db.url = u.String()
	return db
}

// exec runs SQL on the server's own database.
func (db *testDB) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.base)
	if err != nil {
		t.Fatalf("connect to the test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// allowConnections lets sessions into the database, or refuses them and
// ends those open: to its clients, the database is gone.
func (db *testDB) allowConnections(t *testing.T, allow bool) {
	t.Helper()
	db.exec(t, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", db.name, allow))
	if !allow {
		db.exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db.name)
	}
}

// uniqueStream names a stream and subject prefix of this run's own, and
// deletes the stream (which the first node creates) at the end.
func uniqueStream(t *testing.T, natsURL string) (stream, prefix string) {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	stream, prefix = "TETHER_CLUSTER_TEST_"+strings.ToUpper(id), "tethercluster"+id+".events"
	t.Cleanup(func() {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			t.Errorf("delete stream %s: %v", stream, err)
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Errorf("delete stream %s: %v", stream, err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", stream, err)
		}
	})
	return stream, prefix
}

// freePorts returns n TCP ports free on 127.0.0.1 now.
//
// They are drawn below the kernel's range of ephemeral ports, which the
// processes' own outgoing connections (to PostgreSQL, NATS, the nodes)
// take their local ports from: a node listens on its ports again after a
// restart, and an outgoing connection must not have taken one meanwhile.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11000 {
				low = v
			}
		}
	}
	var out []int
	var b [2]byte
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no %d free ports below %d", n, low)
		}
		rand.Read(b[:])
		port := 10000 + (int(b[0])<<8|int(b[1]))%(low-10000)
		if slices.Contains(out, port) {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		defer ln.Close()
		out = append(out, port)
	}
	return out
}

// writeBalancerCert writes a CA and, signed by it, a certificate for
// 127.0.0.1 and localhost with its key, in the one PEM file haproxy
// takes. It returns that file and the CA's certificate.
func writeBalancerCert(t testing.TB, dir string) (certFile, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "balancer test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, caFile = filepath.Join(dir, "balancer.pem"), filepath.Join(dir, "balancer-ca.crt")
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(certFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, caFile
}

// haproxyTCPConfig passes TLS through to the nodes (mode tcp): each
// connection goes to the node with the fewest, and stays there. Nodes are
// checked on /readyz of their management listener, over TLS.
func haproxyTCPConfig(c *cluster, commsPort, apiPort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 4096

defaults
    mode tcp
    timeout connect 2s
    timeout client 150s
    timeout server 150s
    timeout check 2s
    retries 3
    option redispatch 1

frontend comms
    bind 127.0.0.1:%d
    default_backend tether_comms

frontend management
    bind 127.0.0.1:%d
    default_backend tether_management

backend tether_comms
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check check-ssl verify required ca-file "%s" inter 500ms fall 1 rise 2
`, commsPort, apiPort, c.nodeCA)
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d port %d\n", n.name, n.commsPort, n.apiPort)
	}
	fmt.Fprintf(&b, `
backend tether_management
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check check-ssl verify required ca-file "%s" inter 500ms fall 1 rise 2
`, c.nodeCA)
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d\n", n.name, n.apiPort)
	}
	return b.String()
}

// nginxStreamModule is where Debian's libnginx-mod-stream puts the module.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// nginxStreamConfig passes TLS through to the nodes (nginx's stream
// module): each connection goes to the node with the fewest.
func nginxStreamConfig(c *cluster, commsPort, apiPort int) string {
	var comms, mgmt strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&comms, "        server 127.0.0.1:%d max_fails=1 fail_timeout=5s;\n", n.commsPort)
		fmt.Fprintf(&mgmt, "        server 127.0.0.1:%d max_fails=1 fail_timeout=5s;\n", n.apiPort)
	}
	return fmt.Sprintf(`load_module "%s";
daemon off;
worker_processes 1;
pid nginx.pid;
events { worker_connections 4096; }
stream {
    upstream tether_comms {
        least_conn;
%s    }
    upstream tether_management {
%s    }
    server {
        listen 127.0.0.1:%d;
        proxy_pass tether_comms;
        proxy_connect_timeout 2s;
        proxy_timeout 150s;
    }
    server {
        listen 127.0.0.1:%d;
        proxy_pass tether_management;
        proxy_connect_timeout 2s;
        proxy_timeout 1h;
    }
}
`, nginxStreamModule, comms.String(), mgmt.String(), commsPort, apiPort)
}

// nginxConfig is the nginx configuration of docs/cluster.md on the
// test's ports: every request balanced round robin, TLS ended and
// re-encrypted; Connect and gRPC-Web calls are proxied over HTTP/1.1,
// native gRPC calls (content type application/grpc…) with grpc_pass over
// HTTP/2, through an upstream of their own (nginx cannot share kept-alive
// upstream connections between the two). nginx has no active health checks: a node that refuses or
// fails a call is skipped for fail_timeout, and comms calls (all safe to
// send again) go to the next node on an error, a timeout or a 502-504.
func nginxConfig(c *cluster, certFile string, commsPort, apiPort int) string {
	var comms, mgmt strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&comms, "        server 127.0.0.1:%d max_fails=1 fail_timeout=5s;\n", n.commsPort)
		fmt.Fprintf(&mgmt, "        server 127.0.0.1:%d max_fails=1 fail_timeout=5s;\n", n.apiPort)
	}
	return fmt.Sprintf(`daemon off;
worker_processes 1;
pid nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    upstream tether_comms {
%s        keepalive 32;
    }
    upstream tether_comms_grpc {
%s        keepalive 32;
    }
    upstream tether_management {
%s        keepalive 8;
    }
    map $http_content_type $tether_grpc {
        "~^application/grpc(\\+[a-z]+)?(;.*)?$" 1;
        default 0;
    }
    server {
        listen 127.0.0.1:%d ssl http2;
        ssl_certificate "%s";
        ssl_certificate_key "%s";
        client_max_body_size 9m;
        location / {
            if ($tether_grpc) {
                error_page 418 = @grpc;
                return 418;
            }
            proxy_pass https://tether_comms;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate "%s";
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_read_timeout 90s;
            proxy_send_timeout 90s;
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
        }
        location @grpc {
            grpc_pass grpcs://tether_comms_grpc;
            grpc_ssl_verify on;
            grpc_ssl_trusted_certificate "%s";
            grpc_ssl_name localhost;
            grpc_read_timeout 90s;
            grpc_send_timeout 90s;
            grpc_next_upstream error timeout non_idempotent;
        }
    }
    server {
        listen 127.0.0.1:%d ssl http2;
        ssl_certificate "%s";
        ssl_certificate_key "%s";
        client_max_body_size 1g;
        location /metrics {
            return 403;
        }
        location / {
            proxy_pass https://tether_management;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate "%s";
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout;
        }
    }
}
`, comms.String(), comms.String(), mgmt.String(), commsPort, certFile, certFile, c.nodeCA, c.nodeCA, apiPort, certFile, certFile, c.nodeCA)
}

// BenchmarkNodeMemoryPerAgent measures what a connected agent costs a
// node: n agents (the Go client, one connection each) hold a long-poll on
// one tether-server, connected directly and through HAProxy ending TLS;
// the node's memory before and after, from its own metrics, divided by n.
// Each iteration is one measurement: run it with -benchtime 1x,
//
//	go test ./integration -run '^$' -bench NodeMemoryPerAgent -benchtime 1x
//
// docs/cluster.md (sizing) has the figures.
func BenchmarkNodeMemoryPerAgent(b *testing.B) {
	const n = 2000
	for _, via := range []string{"direct", "haproxy"} {
		b.Run(via, func(b *testing.B) {
			var haproxy string
			if via == "haproxy" {
				var err error
				if haproxy, err = exec.LookPath("haproxy"); err != nil {
					if haproxy, err = exec.LookPath("/usr/sbin/haproxy"); err != nil {
						b.Skip("haproxy is not installed")
					}
				}
			}
			for range b.N {
				s := serverWith(b, "poll_wait: 100s\nmax_poll_wait: 120s\n")
				pemCA, err := os.ReadFile(s.caCert)
				if err != nil {
					b.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pemCA)
				hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
				comms, agentCAs := s.commsURL, pool
				var lb *proc
				if via == "haproxy" {
					comms, agentCAs, lb = balanceOne(b, haproxy, s)
				}
				ctx, cancel := context.WithCancel(context.Background())
				admin, err := api.New(api.Options{Server: s.apiURL, Token: s.adminToken, CACertFile: s.caCert})
				if err != nil {
					b.Fatal(err)
				}
				et, err := admin.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{MaxUses: n, TTL: "1h"})
				if err != nil {
					b.Fatal(err)
				}
				enroll, _ := api.New(api.Options{Server: s.apiURL, Token: et.Token, CACertFile: s.caCert})
				clients := make([]*client.Client, n)
				for i := range clients {
					id := uuid.NewString()
					reg, err := enroll.RegisterAgent(ctx, api.RegisterAgentRequest{ID: id, Name: fmt.Sprintf("mem-%d", i)})
					if err != nil {
						b.Fatal(err)
					}
					if clients[i], err = client.New(client.Config{URLs: []string{comms}, AgentID: id, AgentKey: reg.AgentKey, RootCAs: agentCAs}); err != nil {
						b.Fatal(err)
					}
				}
				before := scrapeMetrics(b, hc, s.apiURL)
				var lbBefore float64
				if lb != nil {
					lbBefore = rssBytes(lb.cmd.Process.Pid)
				}
				var wg sync.WaitGroup
				for _, c := range clients {
					wg.Go(func() {
						for ctx.Err() == nil {
							_, _ = c.Poll(ctx, client.PollRequest{Wait: 100 * time.Second})
						}
					})
				}
				await(b, 2*time.Minute, "every agent's long-poll held", func() bool {
					return scrapeMetrics(b, hc, s.apiURL)["tether_polls_waiting"] >= n
				})
				time.Sleep(2 * time.Second) // let the last connections settle
				after := scrapeMetrics(b, hc, s.apiURL)
				if lb != nil {
					b.ReportMetric((rssBytes(lb.cmd.Process.Pid)-lbBefore)/n/1024, "haproxy-rss-KiB/agent")
				}
				cancel()
				wg.Wait()
				per := func(k string) float64 { return (after[k] - before[k]) / n }
				b.ReportMetric(per("process_resident_memory_bytes")/1024, "rss-KiB/agent")
				b.ReportMetric((per("go_memstats_heap_inuse_bytes")+per("go_memstats_stack_inuse_bytes"))/1024, "heap+stack-KiB/agent")
				b.ReportMetric(per("go_goroutines"), "goroutines/agent")
			}
		})
	}
}

// balanceOne puts HAProxy, configured as the cluster test's, in front of
// one node and returns its comms URL, the CA of its certificate and its
// process.
func balanceOne(b *testing.B, haproxy string, s *server) (string, *x509.CertPool, *proc) {
	b.Helper()
	commsU, _ := url.Parse(s.commsURL)
	apiU, _ := url.Parse(s.apiURL)
	commsPort, _ := strconv.Atoi(commsU.Port())
	apiPort, _ := strconv.Atoi(apiU.Port())
	dir := b.TempDir()
	c := &cluster{nodeCA: s.caCert, nodes: []*clusterNode{{name: "node-1", commsPort: commsPort, apiPort: apiPort}}}
	ports := freePorts(b, 2)
	cert, ca := writeBalancerCert(b, dir)
	conf := filepath.Join(dir, "haproxy.cfg")
	config := strings.Replace(haproxyConfig(c, cert, ports[0], ports[1]), "maxconn 4096", "maxconn 9000", 1)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		b.Fatal(err)
	}
	p := startCmd(b, exec.Command(haproxy, "-db", "-f", conf))
	pemCA, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	lb := fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	await(b, 30*time.Second, "haproxy", func() bool {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", ports[1]))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return lb, pool, p
}
