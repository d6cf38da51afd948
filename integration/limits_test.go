package integration_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/client"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
)

// register registers an agent with the admin token and returns its id
// and key.
func (s *server) register(t *testing.T, name string) (string, string) {
	t.Helper()
	c, err := api.New(api.Options{Server: s.apiURL, Token: s.adminToken, CACertFile: s.caCert})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	var reg api.RegisterAgentResponse
	if err := c.Do(context.Background(), "POST", "/api/v1/agents", nil, api.RegisterAgentRequest{ID: id, Name: name}, &reg); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return id, reg.AgentKey
}

// caPool returns a pool holding the server's CA.
func (s *server) caPool(t *testing.T) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(s.caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return pool
}

// commsTransport returns a transport of its own to the comms listener:
// each keeps one connection open, until CloseIdleConnections.
func (s *server) commsTransport(t *testing.T) *http.Transport {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.caPool(t)}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// commsCall sends a Connect JSON call (method, body) with tr, the way
// curl would, and returns the answer's status, headers and body.
func (s *server) commsCall(t *testing.T, tr *http.Transport, method, token, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.commsURL+"/tether.comms.v1.AgentService/"+method, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// retryAfter returns the Retry-After header in seconds (0: none).
func retryAfter(h http.Header) int {
	n, _ := strconv.Atoi(h.Get("Retry-After"))
	return n
}

// TestNodeRefusesConnectionsPastItsLimit: a node with max_connections 3
// serves three connections; the agent that comes fourth is answered
// UNAVAILABLE with a message that says why and a retry delay (503 and
// Retry-After for plain HTTP); once a connection closes, it is served.
func TestNodeRefusesConnectionsPastItsLimit(t *testing.T) {
	s := startServer(t, "--max-connections", "3")
	if !strings.Contains(s.Output(), "max_connections=3") {
		t.Fatalf("the limit is not logged at start:\n%s", s.Output())
	}
	const full = "this node holds its maximum of 3 agent connections; retry later"
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.caPool(t)}}}
	var holders []*http.Transport
	for i := range 3 {
		tr := s.commsTransport(t)
		if st, _, body := s.commsCall(t, tr, "Authenticate", "", `{}`); st != http.StatusBadRequest {
			t.Fatalf("connection %d, within the limit: %d %s", i+1, st, body)
		}
		holders = append(holders, tr)
	}
	await(t, 10*time.Second, "3 connections open", func() bool {
		return scrapeMetrics(t, hc, s.apiURL)["tether_comms_connections"] == 3
	})

	// An agent built on package client: UNAVAILABLE, retryable, with the
	// message and the delay.
	id, key := s.register(t, "fourth")
	c, err := client.New(client.Config{URLs: []string{s.commsURL}, AgentID: id, AgentKey: key, RootCAs: s.caPool(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.Authenticate(ctx)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != connect.CodeUnavailable || !ce.Retryable() || !strings.Contains(ce.Message, full) {
		t.Fatalf("fourth agent: %v, want unavailable: %s", err, full)
	}
	if ce.RetryAfter < 15*time.Second || ce.RetryAfter >= 30*time.Second {
		t.Fatalf("retry delay %s, want 15s to 30s", ce.RetryAfter)
	}

	// The Connect protocol as curl speaks it, and plain HTTP: 503 and
	// Retry-After.
	st, h, body := s.commsCall(t, s.commsTransport(t), "Authenticate", "", `{}`)
	if st != http.StatusServiceUnavailable || retryAfter(h) < 15 || retryAfter(h) > 30 ||
		!strings.Contains(body, `"code":"unavailable"`) || !strings.Contains(body, full) {
		t.Fatalf("Connect JSON past the limit: %d, Retry-After %q, %s", st, h.Get("Retry-After"), body)
	}
	resp, err := (&http.Client{Transport: s.commsTransport(t)}).Get(s.commsURL + "/api/v1/files/" + strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || retryAfter(resp.Header) < 15 {
		t.Fatalf("GET past the limit: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}

	// A connection closes: the agent is served.
	holders[0].CloseIdleConnections()
	await(t, 20*time.Second, "the fourth agent served", func() bool {
		_, err := c.Authenticate(ctx)
		return err == nil
	})
	m := scrapeMetrics(t, hc, s.apiURL)
	if m[`tether_comms_connections_refused_total{how="answered"}`] < 3 || m["tether_comms_connections_max"] != 3 || m["tether_comms_connections"] != 3 {
		t.Fatalf("metrics: refused %v, max %v, open %v", m[`tether_comms_connections_refused_total{how="answered"}`],
			m["tether_comms_connections_max"], m["tether_comms_connections"])
	}
}

// otherNode is a comms endpoint that authenticates anyone.
type otherNode struct {
	commsv1connect.UnimplementedAgentServiceHandler
	calls chan struct{}
}

func (o *otherNode) Authenticate(context.Context, *connect.Request[commsv1.AuthenticateRequest]) (*connect.Response[commsv1.AuthenticateResponse], error) {
	o.calls <- struct{}{}
	return connect.NewResponse(&commsv1.AuthenticateResponse{Token: "t", ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}), nil
}

// TestAgentMovesOffAFullNode: an agent whose node is full (UNAVAILABLE
// past max_connections) moves to its other endpoint at once.
func TestAgentMovesOffAFullNode(t *testing.T) {
	s := startServer(t, "--max-connections", "1")
	if st, _, body := s.commsCall(t, s.commsTransport(t), "Authenticate", "", `{}`); st != http.StatusBadRequest {
		t.Fatalf("the one connection: %d %s", st, body)
	}
	other := &otherNode{calls: make(chan struct{}, 10)}
	mux := http.NewServeMux()
	mux.Handle(commsv1connect.NewAgentServiceHandler(other))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	pool := s.caPool(t)
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	id, key := s.register(t, "mover")
	var c *client.Client
	for c == nil || c.URL() != s.commsURL { // the client starts at an endpoint drawn at random
		var err error
		if c, err = client.New(client.Config{URLs: []string{s.commsURL, srv.URL}, AgentID: id, AgentKey: key, RootCAs: pool}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Authenticate(context.Background()); err != nil {
		t.Fatalf("with another endpoint: %v", err)
	}
	if c.URL() != srv.URL || len(other.calls) != 1 {
		t.Fatalf("the client is at %s (%d calls to the other node), want %s", c.URL(), len(other.calls), srv.URL)
	}
}

// TestNodeRefusesWaitingPollsPastItsLimit: a node with max_waiting_polls
// 2 holds two polls; a third that would wait is answered at once
// RESOURCE_EXHAUSTED with the limit and a retry delay (RetryInfo, and
// Retry-After with 429 for the Connect protocol); a poll with an order
// waiting for it is still answered with the order.
func TestNodeRefusesWaitingPollsPastItsLimit(t *testing.T) {
	s := startServer(t, "--max-waiting-polls", "2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2 {
		id, key := s.register(t, "waiting-"+strconv.Itoa(i))
		c, err := client.New(client.Config{URLs: []string{s.commsURL}, AgentID: id, AgentKey: key, RootCAs: s.caPool(t)})
		if err != nil {
			t.Fatal(err)
		}
		go c.Poll(ctx, client.PollRequest{Wait: time.Minute})
	}
	id, key := s.register(t, "third")
	c, err := client.New(client.Config{URLs: []string{s.commsURL}, AgentID: id, AgentKey: key, RootCAs: s.caPool(t)})
	if err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	await(t, 20*time.Second, "the third poll refused", func() bool {
		_, err := c.Poll(ctx, client.PollRequest{Wait: 200 * time.Millisecond})
		return errors.As(err, &ce) && ce.Code == connect.CodeResourceExhausted
	})
	if !strings.Contains(ce.Message, "this node holds its maximum of 2 waiting polls") || ce.RetryAfter < 5*time.Second || ce.RetryAfter >= 10*time.Second {
		t.Fatalf("refused poll: %q, retry delay %s (want 5s to 10s)", ce.Message, ce.RetryAfter)
	}

	// As curl would: 429, Retry-After, and the RetryInfo detail.
	tr := s.commsTransport(t)
	_, _, body := s.commsCall(t, tr, "Authenticate", "", `{"agentId":"`+id+`","agentKey":"`+key+`"}`)
	var auth struct{ Token string }
	if err := json.Unmarshal([]byte(body), &auth); err != nil || auth.Token == "" {
		t.Fatalf("Authenticate: %s", body)
	}
	st, h, body := s.commsCall(t, tr, "PollCommands", auth.Token, `{"wait":"30s"}`)
	if st != http.StatusTooManyRequests || retryAfter(h) < 5 || retryAfter(h) > 10 ||
		!strings.Contains(body, `"code":"resource_exhausted"`) || !strings.Contains(body, "google.rpc.RetryInfo") {
		t.Fatalf("Connect JSON poll past the limit: %d, Retry-After %q, %s", st, h.Get("Retry-After"), body)
	}

	// An order waiting for the agent is delivered all the same.
	admin, err := api.New(api.Options{Server: s.apiURL, Token: s.adminToken, CACertFile: s.caCert})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateCommand(ctx, api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: id}, Action: api.Action{Name: "get-config"}}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Poll(ctx, client.PollRequest{Wait: time.Minute})
	if err != nil || len(res.Orders) != 1 {
		t.Fatalf("poll with an order waiting: %d orders, %v", len(res.Orders), err)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.caPool(t)}}}
	m := scrapeMetrics(t, hc, s.apiURL)
	if m["tether_polls_refused_total"] < 2 || m["tether_polls_waiting_max"] != 2 {
		t.Fatalf("metrics: refused %v, max %v", m["tether_polls_refused_total"], m["tether_polls_waiting_max"])
	}
}
