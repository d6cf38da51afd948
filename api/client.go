package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Client calls the management API.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// Options configure a Client.
type Options struct {
	// Server is the management API's base URL, for example
	// https://tether.example.com:7444.
	Server string
	// Token is the bearer token (an API token or an enrollment token).
	Token string
	// CACertFile is a PEM file of CA certificates to trust instead of the
	// system roots (a Tether server's DIR/tls/ca.crt).
	CACertFile string
	// CACertPEM is the same, in memory; used when CACertFile is empty.
	CACertPEM []byte
	// HTTPClient, when set, is used as is (CA options are then ignored).
	HTTPClient *http.Client
	// Timeout bounds each call (default 30s).
	Timeout time.Duration
}

// New returns a client for the server in opts.
func New(opts Options) (*Client, error) {
	if opts.Server == "" {
		return nil, errors.New("no server URL: pass --server https://HOST:7444")
	}
	u, err := url.Parse(strings.TrimRight(opts.Server, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("server URL %q: want https://HOST:PORT", opts.Server)
	}
	hc := opts.HTTPClient
	if hc == nil {
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
		pemData := opts.CACertPEM
		if opts.CACertFile != "" {
			pemData, err = os.ReadFile(opts.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("read CA certificate: %w", err)
			}
		}
		if len(pemData) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemData) {
				return nil, fmt.Errorf("CA certificate: no PEM certificate found")
			}
			tlsConf.RootCAs = pool
		}
		timeout := opts.Timeout
		if timeout == 0 {
			timeout = 30 * time.Second
		}
		hc = &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				TLSClientConfig:     tlsConf,
				ForceAttemptHTTP2:   true,
				TLSHandshakeTimeout: 10 * time.Second,
				DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			},
		}
	}
	return &Client{base: u, token: opts.Token, http: hc}, nil
}

// APIError is a non-2xx answer of the management API.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code, Message and Field are those of the answer's Error body.
	Code    string
	Message string
	Field   string
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
}

// Do sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard it). path is URL-escaped: escape each
// variable segment with url.PathEscape. Non-2xx answers become *APIError;
// transport failures are described in one line.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, query, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(c.http, req, out)
}

// send sends req with hc and decodes a JSON answer into out (nil to
// discard it), as Do describes.
func (c *Client) send(hc *http.Client, req *http.Request, out any) error {
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return describeTransportError(c.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.base.Host, err)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(resp.StatusCode, data)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer from %s: %w", c.base.Host, err)
		}
	}
	return nil
}

// call is Do for the methods that answer one T.
func call[T any](ctx context.Context, c *Client, method, path string, query url.Values, body any) (*T, error) {
	var out T
	if err := c.Do(ctx, method, path, query, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// newRequest returns a request for path (escaped as Do takes it) on the
// server, with the client's bearer token.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	unescaped, err := url.PathUnescape(path)
	if err != nil {
		return nil, fmt.Errorf("request path %q: %w", path, err)
	}
	u := *c.base
	u.Path = c.base.Path + unescaped
	u.RawPath = c.base.EscapedPath() + path
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// apiError makes a non-2xx answer an *APIError.
func apiError(status int, body []byte) *APIError {
	ae := &APIError{Status: status}
	var er ErrorResponse
	if json.Unmarshal(body, &er) == nil {
		ae.Code, ae.Message, ae.Field = er.Error.Code, er.Error.Message, er.Error.Field
	}
	return ae
}

func describeTransportError(host string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certInvalid x509.CertificateInvalidError
	var tlsVerify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownAuth), errors.As(err, &tlsVerify) && errors.As(tlsVerify.Err, &unknownAuth):
		return fmt.Errorf("TLS: the certificate of %s is not signed by the given CA (check --ca-cert)", host)
	case errors.As(err, &hostErr):
		return fmt.Errorf("TLS: the certificate of %s is not valid for that name: %v", host, hostErr)
	case errors.As(err, &certInvalid):
		return fmt.Errorf("TLS: the certificate of %s is invalid: %v", host, certInvalid)
	case errors.As(err, &tlsVerify):
		return fmt.Errorf("TLS: cannot verify %s: %v", host, tlsVerify.Err)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return fmt.Errorf("cannot reach %s: %v", host, opErr.Err)
	}
	return fmt.Errorf("call %s: %w", host, err)
}

// RegisterAgent registers (enrolls) an agent; the client's token must be an
// enrollment token or carry the agents:register permission.
func (c *Client) RegisterAgent(ctx context.Context, req RegisterAgentRequest) (*RegisterAgentResponse, error) {
	return call[RegisterAgentResponse](ctx, c, http.MethodPost, "/api/v1/agents", nil, req)
}
