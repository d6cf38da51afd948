package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/client"
)

// fleet is the simulated agents of one run against one target.
type fleet struct {
	o      options
	agents []*simAgent
	conns  []*http.Transport
	// dialled[i] is closed once the first agent of connection i has
	// authenticated (or given up): the others wait for it, so that they
	// share its connection rather than each dial one of their own.
	dialled []chan struct{}
	track   tracker
	errs    errorCounts

	authenticated atomic.Int64

	accepted, acceptedBytes, batches atomic.Int64
	pushLatency                      sampler
}

// simAgent is one simulated agent.
type simAgent struct {
	id    string
	c     *client.Client
	conn  int  // index of its connection in fleet.conns
	first bool // the first agent of its connection
}

func tlsConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
}

// newFleet builds the agents' clients: one transport (so one TLS
// connection) per o.perConn agents, each dialling from the next source
// address.
func newFleet(o options, ids []identity, pool *x509.CertPool, commsURL string) (*fleet, error) {
	ips, err := parseSourceIPs(o.sourceIPs)
	if err != nil {
		return nil, err
	}
	f := &fleet{o: o, agents: make([]*simAgent, len(ids))}
	var hc *http.Client
	for i, id := range ids {
		if i%o.perConn == 0 {
			t := agentTransport(pool, ips, len(f.conns))
			f.conns = append(f.conns, t)
			f.dialled = append(f.dialled, make(chan struct{}))
			hc = &http.Client{Transport: t}
		}
		url := commsURL
		if url == "" {
			url = id.CommsURL
		}
		if url == "" {
			return nil, errors.New("no comms URL: pass --comms-url")
		}
		c, err := client.New(client.Config{
			URLs: []string{url}, AgentID: id.ID, AgentKey: id.Key, HTTPClient: hc,
			UserAgent: "tether-loadtest/" + buildVersion(), Version: "loadtest",
		})
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", id.ID, err)
		}
		f.agents[i] = &simAgent{id: id.ID, c: c, conn: len(f.conns) - 1, first: i%o.perConn == 0}
	}
	return f, nil
}

// agentTransport is the HTTP transport of one simulated connection.
func agentTransport(pool *x509.CertPool, ips []net.IP, n int) *http.Transport {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if len(ips) > 0 {
		dialer.LocalAddr = &net.TCPAddr{IP: ips[n%len(ips)]}
	}
	return &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig(pool),
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 30 * time.Second,
		IdleConnTimeout:     5 * time.Minute,
		MaxIdleConnsPerHost: 1,
	}
}

func (f *fleet) close() {
	for _, t := range f.conns {
		t.CloseIdleConnections()
	}
}

// run is one agent's life until ctx ends: authenticate, then long-poll,
// answering every order at once.
func (f *fleet) run(ctx context.Context, a *simAgent) {
	if a.first {
		defer func() {
			select {
			case <-f.dialled[a.conn]:
			default:
				close(f.dialled[a.conn])
			}
		}()
	} else {
		select {
		case <-f.dialled[a.conn]:
		case <-ctx.Done():
			return
		}
	}
	for attempt := 0; ; attempt++ {
		_, err := a.c.Authenticate(ctx)
		if err == nil {
			if a.first {
				close(f.dialled[a.conn])
			}
			break
		}
		if ctx.Err() != nil {
			return
		}
		f.errs.add("authenticate", err)
		if !backoff(ctx, err, attempt) {
			return
		}
	}
	f.authenticated.Add(1)
	var received []string
	for attempt := 0; ctx.Err() == nil; {
		res, err := a.c.Poll(ctx, client.PollRequest{Wait: f.o.pollWait, Received: received})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.errs.add("poll", err)
			if !backoff(ctx, err, attempt) {
				return
			}
			attempt++
			continue
		}
		attempt = 0
		received = received[:0]
		if len(res.Orders) == 0 {
			continue
		}
		now := time.Now()
		results := make([]client.Result, len(res.Orders))
		requests := make(map[string]string, len(res.Orders))
		for i, o := range res.Orders {
			f.track.delivered(o.RequestID, now)
			received = append(received, o.ID)
			requests[o.ID] = o.RequestID
			results[i] = client.Result{OrderID: o.ID, Success: true, Message: "ok", FinishedAt: now}
		}
		f.report(ctx, a, results, requests)
	}
}

func (f *fleet) report(ctx context.Context, a *simAgent, results []client.Result, requests map[string]string) {
	for attempt := 0; ; attempt++ {
		acked, err := a.c.Report(ctx, results)
		if err == nil {
			now := time.Now()
			for _, id := range acked {
				f.track.resulted(requests[id], now)
			}
			return
		}
		f.errs.add("report", err)
		if !backoff(ctx, err, attempt) {
			return
		}
	}
}

// push sends the agent's events until ctx ends: a batch every
// o.batchInterval, each of o.eventsPerSec × interval events.
func (f *fleet) push(ctx context.Context, a *simAgent, payload []byte) {
	per := max(1, int(f.o.eventsPerSec*f.o.batchInterval.Seconds()+0.5))
	events := make([]client.Event, per)
	for i := range events {
		events[i] = client.Event{Module: "loadtest", Type: "sample", Payload: payload}
	}
	// A sequence above any an earlier run of this identity used.
	seq := uint64(time.Now().UnixNano())
	n := 0
	// Spread the agents' batches over the interval.
	t := time.NewTimer(rand.N(f.o.batchInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		for i := range events {
			n++
			events[i].ID = strconv.Itoa(n)
			events[i].CollectedAt = start
		}
		for attempt := 0; ; attempt++ {
			sent := time.Now()
			accepted, _, err := a.c.PushStateless(ctx, seq, events)
			if err == nil {
				f.pushLatency.add(float64(time.Since(sent)) / float64(time.Millisecond))
				f.accepted.Add(int64(accepted))
				f.acceptedBytes.Add(int64(accepted * len(payload)))
				f.batches.Add(1)
				break
			}
			if ctx.Err() != nil {
				return
			}
			f.errs.add("push", err)
			if !backoff(ctx, err, attempt) {
				return
			}
		}
		seq++
		t.Reset(max(0, f.o.batchInterval-time.Since(start)))
	}
}

// backoff waits before a retry: the server's delay when it gave one,
// else an exponential delay with jitter. It returns false when ctx ended
// or the error is not worth a retry.
func backoff(ctx context.Context, err error, attempt int) bool {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Denied() {
		return false
	}
	d := time.Second << min(attempt, 5)
	d = d/2 + rand.N(d/2+1)
	if errors.As(err, &ce) && ce.RetryAfter > 0 {
		d = ce.RetryAfter + rand.N(ce.RetryAfter/4+1)
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// tracker follows commands by request id, from the agents' side.
type tracker struct {
	mu   sync.Mutex
	reqs map[string]*requestTrack
}

type requestTrack struct {
	delivered, results          int
	firstDelivery, lastDelivery time.Time
	firstResult, lastResult     time.Time
}

func (t *tracker) get(id string) *requestTrack {
	if t.reqs == nil {
		t.reqs = map[string]*requestTrack{}
	}
	r := t.reqs[id]
	if r == nil {
		r = &requestTrack{}
		t.reqs[id] = r
	}
	return r
}

func (t *tracker) delivered(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.get(id)
	r.delivered++
	widen(&r.firstDelivery, &r.lastDelivery, at)
}

func (t *tracker) resulted(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.get(id)
	r.results++
	widen(&r.firstResult, &r.lastResult, at)
}

// widen moves first and last out to at.
func widen(first, last *time.Time, at time.Time) {
	if first.IsZero() || at.Before(*first) {
		*first = at
	}
	if at.After(*last) {
		*last = at
	}
}

// snapshot returns a copy of the request's track.
func (t *tracker) snapshot(id string) requestTrack {
	t.mu.Lock()
	defer t.mu.Unlock()
	return *t.get(id)
}

// errorCounts counts failures by call and code.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errorCounts) add(call string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[call+" "+errorCode(err)]++
}

func (e *errorCounts) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

// errorCode names an error by its code: the Connect code of the comms
// API, the HTTP status of the management API.
func errorCode(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code.String()
	}
	var ae *api.APIError
	if errors.As(err, &ae) {
		return "http_" + strconv.Itoa(ae.Status)
	}
	if code := connect.CodeOf(err); code != connect.CodeUnknown {
		return code.String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline_exceeded"
	}
	return "transport"
}

// sampler keeps up to maxSamples values, a uniform sample of all it saw
// (reservoir sampling).
type sampler struct {
	mu   sync.Mutex
	vals []float64
	seen int
}

const maxSamples = 200_000

func (s *sampler) add(v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen++
	if len(s.vals) < maxSamples {
		s.vals = append(s.vals, v)
		return
	}
	if i := rand.N(s.seen); i < maxSamples {
		s.vals[i] = v
	}
}

func (s *sampler) values() []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]float64(nil), s.vals...)
}
