package client

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Config configures a Client.
type Config struct {
	// URLs are the comms API base URLs, for example
	// https://tether.example.com:7443. At least one is required. A URL
	// whose host name resolves to several addresses counts as one
	// endpoint per address (unless HTTPClient is set or a proxy applies).
	// The client starts at an endpoint drawn at random, keeps to it while
	// it works, moves to another when it cannot be reached (a network
	// failure, UNAVAILABLE, or no answer in time) and avoids the failed
	// one for a while; see Failover.
	URLs []string
	// Failover tunes the choice among endpoints (the zero value is the
	// defaults).
	Failover Failover
	// Resolver resolves the URLs' host names (net.DefaultResolver when
	// nil).
	Resolver Resolver
	// AgentID and AgentKey are the identity received at enrollment.
	AgentID, AgentKey string
	// RootCAs verifies the server's certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// HTTPClient, when set, is used as is (RootCAs is then ignored, and
	// host names are not resolved to several endpoints). It must not set
	// a Timeout shorter than the longest poll.
	HTTPClient *http.Client
	// UserAgent is sent as the User-Agent header, for example
	// "tether-agent/1.2.0".
	UserAgent string
	// Version is the version of the agent software, sent when
	// authenticating: the server records it on the agent ("" sends none).
	Version string
	// Compression of requests of 1 KiB or more: CompressionZstd (the
	// default), CompressionGzip or CompressionNone. A server that refuses
	// zstd (UNIMPLEMENTED) is sent gzip for an hour, then zstd again.
	Compression string
}

const (
	// callTimeout bounds every call but PollCommands when the caller's
	// context has no earlier deadline.
	callTimeout = 60 * time.Second
	// refreshBefore is how long before the token's expiry the client
	// authenticates again (or a fifth of the token's lifetime, if shorter).
	refreshBefore = 60 * time.Second
)

// Client calls the comms API for one agent. It is safe for concurrent use.
type Client struct {
	cfg  Config
	eps  *endpoints
	comp sendCompression

	authSem chan struct{} // one Authenticate at a time

	mu        sync.Mutex
	token     string
	issuedAt  time.Time
	expiresAt time.Time
}

// New returns a client for cfg. It does not contact the server.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("no comms URL")
	}
	if cfg.AgentID == "" || cfg.AgentKey == "" {
		return nil, errors.New("no agent id or agent key")
	}
	c := &Client{cfg: cfg, authSem: make(chan struct{}, 1)}
	if err := c.SetCompression(cfg.Compression); err != nil {
		return nil, err
	}
	var urls []string
	var expand []bool
	for _, raw := range cfg.URLs {
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("comms URL %q: want https://HOST:PORT", raw)
		}
		if slices.Contains(urls, u.String()) {
			continue
		}
		urls = append(urls, u.String())
		expand = append(expand, cfg.HTTPClient == nil && resolvable(u))
	}
	resolver := cfg.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	c.eps = newEndpoints(cfg.Failover.withDefaults(), resolver, urls, expand, func(base, addr string) *endpoint {
		e := &endpoint{url: base, addr: addr, hc: cfg.HTTPClient}
		if e.hc == nil {
			e.hc = &http.Client{Transport: newTransport(cfg.RootCAs, addr)}
		}
		for kind := range sendKinds {
			e.svcs[kind] = commsv1connect.NewAgentServiceClient(e.hc, base, compressionOptions(kind)...)
		}
		return e
	})
	return c, nil
}

// SetCompression changes the compression of the next requests (see
// Config.Compression).
func (c *Client) SetCompression(name string) error {
	kind, err := compressionKind(name)
	if err != nil {
		return err
	}
	c.comp.kind.Store(int32(kind))
	return nil
}

// URL returns the comms URL the client currently uses.
func (c *Client) URL() string { return c.eps.current().url }

// Authenticate exchanges the agent's identity for a new token, caches it
// and returns the session. Other methods call it when needed; calling it
// directly checks the identity (PERMISSION_DENIED: the agent was removed or
// disabled; UNAUTHENTICATED: wrong id or key).
func (c *Client) Authenticate(ctx context.Context) (Session, error) {
	select {
	case c.authSem <- struct{}{}:
	case <-ctx.Done():
		return Session{}, toError(ctx.Err())
	}
	defer func() { <-c.authSem }()
	_, s, err := c.authenticate(ctx)
	return s, err
}

// authenticate calls the RPC; the caller holds authSem.
func (c *Client) authenticate(ctx context.Context) (string, Session, error) {
	msg := &commsv1.AuthenticateRequest{AgentId: c.cfg.AgentID, AgentKey: c.cfg.AgentKey, AgentVersion: c.cfg.Version}
	issued := time.Now()
	resp, err := do(ctx, c, "", callTimeout, msg, commsv1connect.AgentServiceClient.Authenticate)
	if err != nil {
		return "", Session{}, err
	}
	s := Session{AgentName: resp.GetAgentName(), Groups: resp.GetGroups(), ExpiresAt: timeOf(resp.GetExpiresAt())}
	c.mu.Lock()
	c.token, c.issuedAt, c.expiresAt = resp.GetToken(), issued, s.ExpiresAt
	c.mu.Unlock()
	return resp.GetToken(), s, nil
}

// cachedToken returns the cached token if it does not need a refresh yet.
func (c *Client) cachedToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" {
		return ""
	}
	if c.expiresAt.IsZero() {
		return c.token
	}
	margin := refreshBefore
	if life := c.expiresAt.Sub(c.issuedAt); life/5 < margin {
		margin = life / 5
	}
	if time.Until(c.expiresAt) < margin {
		return ""
	}
	return c.token
}

// tokenFor returns a valid token, authenticating if needed.
func (c *Client) tokenFor(ctx context.Context) (string, error) {
	if tok := c.cachedToken(); tok != "" {
		return tok, nil
	}
	select {
	case c.authSem <- struct{}{}:
	case <-ctx.Done():
		return "", toError(ctx.Err())
	}
	defer func() { <-c.authSem }()
	if tok := c.cachedToken(); tok != "" { // refreshed while we waited
		return tok, nil
	}
	tok, _, err := c.authenticate(ctx)
	return tok, err
}

// forget drops tok from the cache, unless another goroutine replaced it.
func (c *Client) forget(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

type method[Req, Resp any] func(commsv1connect.AgentServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)

// call runs an authenticated RPC: it authenticates when needed and, when
// the server answers UNAUTHENTICATED, authenticates again and retries once.
func call[Req, Resp any](ctx context.Context, c *Client, timeout time.Duration, msg *Req, m method[Req, Resp]) (*Resp, error) {
	tok, err := c.tokenFor(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := do(ctx, c, tok, timeout, msg, m)
	var e *Error
	if errors.As(err, &e) && e.Code == connect.CodeUnauthenticated {
		c.forget(tok)
		if tok, err = c.tokenFor(ctx); err != nil {
			return nil, err
		}
		resp, err = do(ctx, c, tok, timeout, msg, m)
	}
	return resp, err
}

// do sends one RPC, moving to another endpoint when the one tried cannot
// be reached, and sending gzip when the server refuses zstd. Errors are
// *Error.
func do[Req, Resp any](ctx context.Context, c *Client, tok string, timeout time.Duration, msg *Req, m method[Req, Resp]) (*Resp, error) {
	var last *Error
	for _, e := range c.eps.plan(ctx) {
		kind := c.comp.current(time.Now())
		resp, err := send(ctx, c, kind, e, tok, timeout, msg, m)
		if err != nil && err.Code == connect.CodeUnimplemented && kind == sendZstd && ctx.Err() == nil {
			// A server without zstd answers UNIMPLEMENTED before reading
			// the request: send it again with gzip.
			c.comp.refused(time.Now())
			resp, err = send(ctx, c, sendGzip, e, tok, timeout, msg, m)
		}
		if err == nil {
			c.eps.worked(e)
			return resp, nil
		}
		last = err
		if !unreachable(ctx, err) {
			if ctx.Err() == nil {
				c.eps.worked(e) // it answered: the call failed, not the node
			}
			return nil, last
		}
		c.eps.failed(e)
	}
	return nil, last
}

// unreachable reports whether err says the endpoint could not serve the
// call at all, so that another should be tried: a network failure or
// UNAVAILABLE, or no answer within the call's own time limit. A call that
// ended with the caller's context is not.
func unreachable(ctx context.Context, err *Error) bool {
	if ctx.Err() != nil {
		return false
	}
	return err.Code == connect.CodeUnavailable || err.Code == connect.CodeDeadlineExceeded
}

// send makes one call to the endpoint with the compression kind.
func send[Req, Resp any](ctx context.Context, c *Client, kind int, e *endpoint, tok string, timeout time.Duration, msg *Req, m method[Req, Resp]) (*Resp, *Error) {
	req := connect.NewRequest(msg)
	if tok != "" {
		req.Header().Set("Authorization", "Bearer "+tok)
	}
	if c.cfg.UserAgent != "" {
		req.Header().Set("User-Agent", c.cfg.UserAgent)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := m(e.svcs[kind], cctx, req)
	if err != nil {
		return nil, toError(err)
	}
	return resp.Msg, nil
}

// PushStateless sends a batch of append-only events under the batch
// sequence number seq (1 for an agent's first batch, then one more for each
// new batch, shared with PushStateful; a resent batch reuses its number).
// accepted is how many events the server now holds; duplicate is true when
// the server had already accepted seq. Forget the events only on success.
func (c *Client) PushStateless(ctx context.Context, seq uint64, events []Event) (accepted int, duplicate bool, err error) {
	msg := &commsv1.PushStatelessRequest{Sequence: seq, Events: make([]*commsv1.Event, len(events))}
	for i, e := range events {
		msg.Events[i] = eventToProto(e)
	}
	resp, err := call(ctx, c, callTimeout, msg, commsv1connect.AgentServiceClient.PushStateless)
	if err != nil {
		return 0, false, err
	}
	return int(resp.GetAccepted()), resp.GetDuplicate(), nil
}

// PushStateful sends a batch of state changes, applied in order; see
// PushStateless for seq and the answer.
func (c *Client) PushStateful(ctx context.Context, seq uint64, changes []StateChange) (accepted int, duplicate bool, err error) {
	msg := &commsv1.PushStatefulRequest{Sequence: seq, Events: make([]*commsv1.StatefulEvent, len(changes))}
	for i, ch := range changes {
		msg.Events[i] = stateChangeToProto(ch)
	}
	resp, err := call(ctx, c, callTimeout, msg, commsv1connect.AgentServiceClient.PushStateful)
	if err != nil {
		return 0, false, err
	}
	return int(resp.GetAccepted()), resp.GetDuplicate(), nil
}

// PollMargin is how much longer than the requested wait a poll may take
// before the client gives up on it.
func PollMargin(wait time.Duration) time.Duration { return 10*time.Second + wait/10 }

// DefaultPollWait is the server's hold time when Poll is called with a zero
// wait.
const DefaultPollWait = 50 * time.Second

// PollRequest is what a poll tells the server.
type PollRequest struct {
	// Wait is how long the server may hold the call when it has nothing to
	// say (zero: the server default, 50 s).
	Wait time.Duration
	// Received lists the ids of orders the agent stored durably since its
	// last successful poll: the server stops delivering them.
	Received []string
	// Queued lists the ids of stored orders the agent has not started (at
	// most 1,000): the server answers at once when any of them finished on
	// its side (cancelled, timed out).
	Queued []string
	// ConfigVersion is the version of the centralized configuration the
	// agent runs ("" if it does not follow it): the server answers at once
	// when the agent's configuration has another version.
	ConfigVersion string
}

// PollResult is the server's answer to a poll.
type PollResult struct {
	// Orders to run, oldest first; ignore ids already known.
	Orders []Order
	// ConfigVersion is the version of the agent's current centralized
	// configuration: fetch it with GetConfig when it is not the one the
	// agent runs.
	ConfigVersion string
	// Cancelled lists the ids among PollRequest.Queued of orders that
	// finished on the server: do not start them.
	Cancelled []string
}

// Poll long-polls the server: it answers at once when orders are waiting,
// a queued order was cancelled or the configuration version changed, else
// holds the call up to p.Wait and answers as soon as one of those happens.
func (c *Client) Poll(ctx context.Context, p PollRequest) (PollResult, error) {
	msg := &commsv1.PollCommandsRequest{ReceivedOrderIds: p.Received, QueuedOrderIds: p.Queued, ConfigVersion: p.ConfigVersion}
	hold := p.Wait
	if p.Wait > 0 {
		msg.Wait = durationpb.New(p.Wait)
	} else {
		hold = DefaultPollWait
	}
	resp, err := call(ctx, c, hold+PollMargin(hold), msg, commsv1connect.AgentServiceClient.PollCommands)
	if err != nil {
		return PollResult{}, err
	}
	res := PollResult{
		Orders:        make([]Order, 0, len(resp.GetOrders())),
		ConfigVersion: resp.GetConfigVersion(),
		Cancelled:     resp.GetCancelledOrderIds(),
	}
	for _, o := range resp.GetOrders() {
		out, err := orderFromProto(o)
		if err != nil {
			return PollResult{}, &Error{Code: connect.CodeInternal, Message: fmt.Sprintf("order %s: %v", o.GetOrderId(), err), cause: err}
		}
		res.Orders = append(res.Orders, out)
	}
	return res, nil
}

// Report sends results of executed orders and returns the order ids the
// server acknowledged: those results may be deleted. It is idempotent.
func (c *Client) Report(ctx context.Context, results []Result) (acked []string, err error) {
	msg := &commsv1.ReportResultsRequest{Results: make([]*commsv1.OrderResult, len(results))}
	for i, r := range results {
		if msg.Results[i], err = resultToProto(r); err != nil {
			return nil, err
		}
	}
	resp, err := call(ctx, c, callTimeout, msg, commsv1connect.AgentServiceClient.ReportResults)
	if err != nil {
		return nil, err
	}
	return resp.GetAcknowledgedOrderIds(), nil
}

// GetConfig fetches the agent's centralized configuration. When
// knownVersion is current, unchanged is true and cfg is nil; otherwise cfg
// is a JSON object.
func (c *Client) GetConfig(ctx context.Context, knownVersion string) (version string, cfg json.RawMessage, unchanged bool, err error) {
	msg := &commsv1.GetConfigRequest{KnownVersion: knownVersion}
	resp, err := call(ctx, c, callTimeout, msg, commsv1connect.AgentServiceClient.GetConfig)
	if err != nil {
		return "", nil, false, err
	}
	if resp.GetUnchanged() {
		return resp.GetVersion(), nil, true, nil
	}
	cfg = json.RawMessage("{}")
	if resp.GetConfig() != nil {
		if cfg, err = compactJSON(resp.GetConfig()); err != nil {
			return "", nil, false, &Error{Code: connect.CodeInternal, Message: "decode config: " + err.Error(), cause: err}
		}
	}
	return resp.GetVersion(), cfg, false, nil
}

// SetGroups carries out a set-group order: the server replaces the agent's
// groups with groups, which must be the order's own argument, and returns
// the groups as stored and the version of the configuration that follows.
func (c *Client) SetGroups(ctx context.Context, orderID string, groups []string) ([]string, string, error) {
	msg := &commsv1.SetGroupsRequest{OrderId: orderID, Groups: groups}
	resp, err := call(ctx, c, callTimeout, msg, commsv1connect.AgentServiceClient.SetGroups)
	if err != nil {
		return nil, "", err
	}
	return resp.GetGroups(), resp.GetConfigVersion(), nil
}
