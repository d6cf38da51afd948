package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
)

// Failover tunes how a Client chooses among its comms endpoints. The zero
// value is the defaults.
type Failover struct {
	// Avoid is how long an endpoint that could not be reached is passed
	// over (5 s by default). It doubles with each further failure in a
	// row, up to MaxAvoid (5 min by default), and the first success
	// clears it. Each period is drawn at random between its half and its
	// whole, so that agents do not all come back at once.
	Avoid, MaxAvoid time.Duration
	// Rebalance is how long the client keeps to an endpoint that works
	// before drawing one again at random among those that work (10 min by
	// default, ±25%; negative: never), so that agents spread again over a
	// node that came back or was added.
	Rebalance time.Duration
	// Resolve is how often host names are resolved again (5 min by
	// default), and sooner when every endpoint failed.
	Resolve time.Duration
}

// Defaults of Failover.
const (
	DefaultAvoid     = 5 * time.Second
	DefaultMaxAvoid  = 5 * time.Minute
	DefaultRebalance = 10 * time.Minute
	DefaultResolve   = 5 * time.Minute
)

const (
	// resolveTimeout bounds a resolution of the host names.
	resolveTimeout = 5 * time.Second
	// minResolveGap is the least time between two resolutions.
	minResolveGap = 10 * time.Second
)

// Resolver looks up the addresses of a host name; *net.Resolver is one.
type Resolver interface {
	LookupHost(ctx context.Context, host string) (addrs []string, err error)
}

func (f Failover) withDefaults() Failover {
	if f.Avoid <= 0 {
		f.Avoid = DefaultAvoid
	}
	if f.MaxAvoid < f.Avoid {
		f.MaxAvoid = max(DefaultMaxAvoid, f.Avoid)
	}
	if f.Rebalance == 0 {
		f.Rebalance = DefaultRebalance
	}
	if f.Resolve <= 0 {
		f.Resolve = DefaultResolve
	}
	return f
}

// endpoint is one place calls go to: a comms URL, or one of the addresses
// its host name resolves to.
type endpoint struct {
	url  string // base URL as configured: its host is what TLS verifies and Host carries
	addr string // the IP:port dialled; "" dials the URL's host
	hc   *http.Client
	svcs [sendKinds]commsv1connect.AgentServiceClient

	// Guarded by endpoints.mu.
	failures   int
	avoidUntil time.Time
}

// endpoints is the set of endpoints and which one is in use.
type endpoints struct {
	f        Failover
	resolver Resolver
	build    func(url, addr string) *endpoint
	urls     []string
	expand   []bool // by URL: its host is a name to resolve

	mu        sync.Mutex
	list      []*endpoint
	cur       *endpoint
	since     time.Time     // when cur was chosen
	stay      time.Duration // how long to keep cur (Rebalance, with jitter)
	resolved  time.Time     // when the last resolution started
	resolving bool
}

// newEndpoints returns one endpoint per URL, starting at one drawn at
// random. Host names are resolved on the first call (see plan).
func newEndpoints(f Failover, resolver Resolver, urls []string, expand []bool, build func(url, addr string) *endpoint) *endpoints {
	p := &endpoints{f: f, resolver: resolver, build: build, urls: urls, expand: expand}
	for _, u := range urls {
		p.list = append(p.list, build(u, ""))
	}
	p.choose(time.Now())
	return p
}

// plan returns the endpoints a call tries, in order: the one in use, then
// the others that work in random order, then those avoided, the soonest
// back first.
func (p *endpoints) plan(ctx context.Context) []*endpoint {
	p.maybeResolve(ctx)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || p.cur.avoided(now) || (p.f.Rebalance > 0 && now.Sub(p.since) >= p.stay) {
		p.choose(now)
	}
	out := make([]*endpoint, 0, len(p.list))
	out = append(out, p.cur)
	var avoided []*endpoint
	for _, i := range rand.Perm(len(p.list)) {
		e := p.list[i]
		switch {
		case e == p.cur:
		case e.avoided(now):
			avoided = append(avoided, e)
		default:
			out = append(out, e)
		}
	}
	slices.SortFunc(avoided, func(a, b *endpoint) int { return a.avoidUntil.Compare(b.avoidUntil) })
	return append(out, avoided...)
}

// choose draws the endpoint in use among those that work, or takes the
// one soonest back when none does. The caller holds mu.
func (p *endpoints) choose(now time.Time) {
	var ok []*endpoint
	for _, e := range p.list {
		if !e.avoided(now) {
			ok = append(ok, e)
		}
	}
	if len(ok) > 0 {
		p.cur = ok[rand.IntN(len(ok))]
	} else {
		p.cur = slices.MinFunc(p.list, func(a, b *endpoint) int { return a.avoidUntil.Compare(b.avoidUntil) })
	}
	p.since, p.stay = now, p.stayFor()
}

// stayFor draws how long to keep an endpoint chosen now: Rebalance ±25%.
func (p *endpoints) stayFor() time.Duration {
	if p.f.Rebalance <= 0 {
		return 0 // never rebalance (plan checks Rebalance first)
	}
	return p.f.Rebalance*3/4 + rand.N(p.f.Rebalance/2+1)
}

// worked records that e answered. It becomes the endpoint in use when the
// one in use is avoided (the call failed over to e).
func (p *endpoints) worked(e *endpoint) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	e.failures, e.avoidUntil = 0, time.Time{}
	if p.cur != e && (p.cur == nil || p.cur.avoided(now)) {
		p.cur, p.since, p.stay = e, now, p.stayFor()
	}
}

// failed records that e could not be reached: it is avoided for a while,
// longer with each failure in a row.
func (p *endpoints) failed(e *endpoint) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	e.failures++
	d := p.f.Avoid << min(e.failures-1, 20)
	if d > p.f.MaxAvoid || d <= 0 {
		d = p.f.MaxAvoid
	}
	e.avoidUntil = now.Add(d/2 + rand.N(d/2+1))
}

func (e *endpoint) avoided(now time.Time) bool { return now.Before(e.avoidUntil) }

// current returns the endpoint in use.
func (p *endpoints) current() *endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// maybeResolve resolves the host names when it is time: on the first call
// (waiting for it), then every Resolve or when every endpoint is avoided
// (in the background).
func (p *endpoints) maybeResolve(ctx context.Context) {
	if !slices.Contains(p.expand, true) {
		return
	}
	now := time.Now()
	p.mu.Lock()
	first := p.resolved.IsZero()
	due := first || now.Sub(p.resolved) >= p.f.Resolve
	if !due && now.Sub(p.resolved) >= minResolveGap {
		due = !slices.ContainsFunc(p.list, func(e *endpoint) bool { return !e.avoided(now) })
	}
	if !due || p.resolving {
		p.mu.Unlock()
		return
	}
	p.resolving, p.resolved = true, now
	p.mu.Unlock()
	if first {
		p.resolve(ctx)
	} else {
		go p.resolve(context.WithoutCancel(ctx))
	}
}

// resolve looks up the host names and makes one endpoint per address of a
// name that has several; a name with one address, or whose lookup failed,
// keeps the endpoints it had. Endpoints that remain keep their health.
func (p *endpoints) resolve(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	type key struct{ url, addr string }
	var want []key
	found := map[string][]string{}
	for i, raw := range p.urls {
		if !p.expand[i] {
			continue
		}
		u, _ := url.Parse(raw)
		addrs, err := p.resolver.LookupHost(ctx, u.Hostname())
		if err != nil {
			continue
		}
		slices.Sort(addrs)
		addrs = slices.Compact(addrs)
		port := u.Port()
		if port == "" {
			port = "443"
			if u.Scheme == "http" {
				port = "80"
			}
		}
		for i, a := range addrs {
			addrs[i] = net.JoinHostPort(a, port)
		}
		found[raw] = addrs
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolving = false
	for i, raw := range p.urls {
		addrs, ok := found[raw]
		switch {
		case !p.expand[i]:
			want = append(want, key{raw, ""})
		case !ok: // the lookup failed: keep what there is
			for _, e := range p.list {
				if e.url == raw {
					want = append(want, key{e.url, e.addr})
				}
			}
		case len(addrs) < 2:
			want = append(want, key{raw, ""})
		default:
			for _, a := range addrs {
				want = append(want, key{raw, a})
			}
		}
	}
	had := map[key]*endpoint{}
	for _, e := range p.list {
		had[key{e.url, e.addr}] = e
	}
	list := make([]*endpoint, 0, len(want))
	for _, k := range want {
		e := had[k]
		if e == nil {
			e = p.build(k.url, k.addr)
		}
		list = append(list, e)
	}
	p.list = list
	if !slices.Contains(list, p.cur) {
		p.choose(time.Now())
	}
}

// newTransport returns the HTTP transport of an endpoint: one per endpoint,
// so that a connection to one address never carries a call meant for
// another. With addr set, it dials addr whatever the URL's host resolves to
// (TLS still verifies the URL's host name), and uses no proxy.
func newTransport(roots *x509.CertPool, addr string) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   4,
	}
	if addr != "" {
		t.Proxy = nil
		t.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}
	}
	return t
}

// resolvable reports whether the host of u is a name worth resolving here:
// not an IP address, and not reached through a proxy (which resolves it).
func resolvable(u *url.URL) bool {
	if net.ParseIP(u.Hostname()) != nil {
		return false
	}
	proxy, err := http.ProxyFromEnvironment(&http.Request{URL: u})
	return err == nil && proxy == nil
}
