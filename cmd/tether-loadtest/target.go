package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/tetherhq/tether/api"
)

// loadAction is the action of the commands the load program sends; its
// simulated agents answer it at once with success.
const loadAction = "loadtest.echo"

// identity is what enrollment gave one simulated agent.
type identity struct {
	Server   string `json:"server"`
	Group    string `json:"group"`
	ID       string `json:"id"`
	Key      string `json:"key"`
	CommsURL string `json:"comms_url"`
}

// target is the server under test: Tether through its management API, or
// the baseline.
type target interface {
	name() string
	// roots verifies the comms listener's certificate.
	roots() *x509.CertPool
	// identities returns n agent identities, enrolling those missing.
	identities(ctx context.Context, n int, progress func(done int)) ([]identity, error)
	// command sends one command to an agent and returns its request id.
	command(ctx context.Context, agentID string) (string, error)
	// groupCommand sends one command to every simulated agent.
	groupCommand(ctx context.Context) (string, error)
	// pollsWaiting is the number of long-polls the server holds.
	pollsWaiting(ctx context.Context) (int, error)
	// pid is the server's process id (0: unknown).
	pid() int
}

// tetherTarget is a Tether server.
type tetherTarget struct {
	o     options
	admin *api.Client
	pool  *x509.CertPool
	http  *http.Client
}

func newTetherTarget(o options) (*tetherTarget, error) {
	admin, err := api.New(api.Options{Server: o.server, Token: o.token, CACertFile: o.caCert, Timeout: 2 * time.Minute})
	if err != nil {
		return nil, err
	}
	pool, err := loadRoots(o.caCert)
	if err != nil {
		return nil, err
	}
	return &tetherTarget{o: o, admin: admin, pool: pool, http: controlClient(pool)}, nil
}

func loadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return x509.SystemCertPool()
	}
	pemData, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

func (t *tetherTarget) name() string          { return "tether" }
func (t *tetherTarget) roots() *x509.CertPool { return t.pool }
func (t *tetherTarget) pid() int              { return t.o.serverPID }

func (t *tetherTarget) identities(ctx context.Context, n int, progress func(int)) ([]identity, error) {
	have, err := readIdentities(t.o.identities, t.o.server, t.o.group)
	if err != nil {
		return nil, err
	}
	if len(have) >= n {
		progress(n)
		return have[:n], nil
	}
	if _, err := t.admin.CreateGroup(ctx, api.CreateGroupRequest{Name: t.o.group, Description: "agents simulated by tether-loadtest"}); err != nil {
		var ae *api.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			return nil, fmt.Errorf("create group %s: %w", t.o.group, err)
		}
	}
	missing := n - len(have)
	tok, err := t.admin.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{
		Name: "tether-loadtest", Groups: []string{t.o.group}, TTL: "6h", MaxUses: missing,
	})
	if err != nil {
		return nil, fmt.Errorf("create enrollment token: %w", err)
	}
	reg, err := api.New(api.Options{Server: t.o.server, Token: tok.Token, CACertFile: t.o.caCert, Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	save, closeSave, err := appendIdentities(t.o.identities)
	if err != nil {
		return nil, err
	}
	defer closeSave()

	var lim *rate.Limiter
	if t.o.enrollRate > 0 {
		lim = rate.NewLimiter(rate.Limit(t.o.enrollRate), max(1, int(t.o.enrollRate/10)))
	}
	out := make([]identity, missing)
	var (
		next    atomic.Int64
		done    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failed  error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := tick(time.Second, func() { progress(len(have) + int(done.Load())) })
	defer stop()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= missing || ctx.Err() != nil {
					return
				}
				if lim != nil && lim.Wait(ctx) != nil {
					return
				}
				id, err := t.enroll(ctx, reg)
				if err != nil {
					errOnce.Do(func() { failed = err; cancel() })
					return
				}
				out[i] = id
				if err := save(id); err != nil {
					errOnce.Do(func() { failed = err; cancel() })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	progress(len(have) + int(done.Load()))
	if failed != nil {
		return nil, fmt.Errorf("enroll: %w", failed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return append(have, out...), nil
}

func (t *tetherTarget) enroll(ctx context.Context, reg *api.Client) (identity, error) {
	id := uuid.NewString()
	resp, err := reg.RegisterAgent(ctx, api.RegisterAgentRequest{
		ID: id, Name: "load-" + id[:8], Hostname: "load-" + id[:8], OS: "linux", Arch: "amd64", Version: "loadtest",
	})
	if err != nil {
		return identity{}, err
	}
	comms := t.o.commsURL
	if comms == "" && len(resp.CommsURLs) > 0 {
		comms = resp.CommsURLs[0]
	}
	return identity{Server: t.o.server, Group: t.o.group, ID: id, Key: resp.AgentKey, CommsURL: comms}, nil
}

func (t *tetherTarget) command(ctx context.Context, agentID string) (string, error) {
	c, err := t.admin.CreateCommand(ctx, api.CreateCommandRequest{
		Target: api.Target{Type: "agent", ID: agentID}, Action: api.Action{Name: loadAction}, Timeout: "5m",
	})
	if err != nil {
		return "", err
	}
	return c.ID, nil
}

func (t *tetherTarget) groupCommand(ctx context.Context) (string, error) {
	c, err := t.admin.CreateCommand(ctx, api.CreateCommandRequest{
		Target: api.Target{Type: "group", ID: t.o.group}, Action: api.Action{Name: loadAction}, Timeout: "10m",
	})
	if err != nil {
		return "", err
	}
	return c.ID, nil
}

// pollsWaiting reads the tether_polls_waiting gauge of the node's /metrics.
func (t *tetherTarget) pollsWaiting(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(t.o.server, "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "tether_polls_waiting "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(v), err
		}
	}
	return 0, errors.New("GET /metrics: no tether_polls_waiting")
}

// controlClient calls the servers' HTTP endpoints outside the agents'
// connections.
func controlClient(pool *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tlsConfig(pool)
	t.Proxy = nil
	return &http.Client{Transport: t, Timeout: time.Minute}
}

// readIdentities reads the identities of file enrolled on server into
// group (none when the file does not exist).
func readIdentities(file, server, group string) ([]identity, error) {
	if file == "" {
		return nil, nil
	}
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	defer f.Close()
	var out []identity
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		var id identity
		if err := json.Unmarshal(sc.Bytes(), &id); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, line, err)
		}
		if id.Server == server && id.Group == group {
			out = append(out, id)
		}
	}
	return out, sc.Err()
}

// appendIdentities returns a function that appends an identity to file
// (nothing when file is empty).
func appendIdentities(file string) (func(identity) error, func(), error) {
	if file == "" {
		return func(identity) error { return nil }, func() {}, nil
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("identities file: %w", err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(f)
	save := func(id identity) error {
		b, _ := json.Marshal(id)
		mu.Lock()
		defer mu.Unlock()
		_, err := w.Write(append(b, '\n'))
		return err
	}
	closeFn := func() {
		mu.Lock()
		defer mu.Unlock()
		_ = w.Flush()
		_ = f.Close()
	}
	return save, closeFn, nil
}

// tick calls f every d until the returned function is called.
func tick(d time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
