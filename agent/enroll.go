package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/tetherhq/tether/agent/modules"
	"github.com/tetherhq/tether/api"
)

// EnrollOptions are the inputs of Enroll.
type EnrollOptions struct {
	// Server is the management API URL, for example https://HOST:7444.
	Server string
	// Token is an enrollment token (or an API token allowed to register
	// agents).
	Token string
	// CACertFile is the PEM CA that signs the server's certificates; it is
	// copied to DATA_DIR/ca.crt. Empty: the system roots are trusted.
	CACertFile string
	// CommsURLs override the comms API URLs the server advertises. With
	// several (or a host name with several addresses), the agent spreads
	// its calls and fails over between them.
	CommsURLs []string
	// DataDir is the data directory (default DefaultDataDir).
	DataDir string
	// Name is the agent's display name (default: the host name).
	Name string
	// Version is the agent's version, reported to the server.
	Version string
}

// Enroll registers this installation with the server and stores the
// identity it receives in the data directory. Re-enrolling keeps the
// installation's id and proves it with the current key.
func Enroll(ctx context.Context, opts EnrollOptions) (Identity, error) {
	if opts.Server == "" {
		return Identity{}, errors.New("no server: pass --server https://HOST:7444")
	}
	if opts.Token == "" {
		return Identity{}, errors.New("no enrollment token: pass --token TOKEN")
	}
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	var caPEM []byte
	if opts.CACertFile != "" {
		var err error
		if caPEM, err = os.ReadFile(opts.CACertFile); err != nil {
			return Identity{}, fmt.Errorf("read CA certificate: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
			return Identity{}, fmt.Errorf("CA certificate %s: no PEM certificate found", opts.CACertFile)
		}
	}
	for _, u := range opts.CommsURLs {
		if err := checkURL(u); err != nil {
			return Identity{}, fmt.Errorf("--comms-url: %w", err)
		}
	}

	// Reuse the installation's id (and prove it with its key) if enrolled,
	// even when identity.json is incomplete.
	id, key := uuid.NewString(), ""
	prev, err := readIdentity(opts.DataDir)
	switch {
	case errors.Is(err, ErrNotEnrolled):
	case err != nil:
		return Identity{}, err
	case prev.AgentID != "":
		id, key = strings.ToLower(prev.AgentID), prev.AgentKey
	default:
		return Identity{}, prev.checkComplete(opts.DataDir)
	}

	host, _ := os.Hostname()
	name := opts.Name
	if name == "" {
		name = host
	}
	cl, err := api.New(api.Options{Server: opts.Server, Token: opts.Token, CACertPEM: caPEM})
	if err != nil {
		return Identity{}, err
	}
	resp, err := cl.RegisterAgent(ctx, api.RegisterAgentRequest{
		ID:         id,
		Name:       name,
		CurrentKey: key,
		Hostname:   host,
		OS:         modules.OSDescription(),
		Arch:       runtime.GOARCH,
		Version:    opts.Version,
	})
	if err != nil {
		var ae *api.APIError
		if errors.As(err, &ae) {
			return Identity{}, fmt.Errorf("enrollment refused: %s", ae.Error())
		}
		return Identity{}, err
	}

	comms := resp.CommsURLs
	if len(opts.CommsURLs) > 0 {
		comms = opts.CommsURLs
	}
	if len(comms) == 0 {
		comms = []string{defaultCommsURL(opts.Server)}
	}
	if resp.ReleasePublicKey != "" {
		if _, err := decodeReleaseKey(resp.ReleasePublicKey); err != nil {
			return Identity{}, fmt.Errorf("enrollment: the server sent an invalid %w", err)
		}
	}
	ident := Identity{
		AgentID:    resp.Agent.ID,
		AgentKey:   resp.AgentKey,
		Name:       resp.Agent.Name,
		Server:     strings.TrimRight(opts.Server, "/"),
		CommsURLs:  comms,
		EnrolledAt: time.Now().UTC().Truncate(time.Second),
		ReleaseKey: resp.ReleasePublicKey,
	}
	if ident.AgentID == "" {
		ident.AgentID = id
	}
	if ident.Name == "" {
		ident.Name = name
	}
	if ident.AgentKey == "" {
		return Identity{}, errors.New("enrollment: the server returned no agent key")
	}
	if err := ensureDataDir(opts.DataDir); err != nil {
		return Identity{}, err
	}
	caPath := filepath.Join(opts.DataDir, CAFile)
	if caPEM != nil {
		if err := writeFileAtomic(caPath, caPEM, 0o644); err != nil {
			return Identity{}, fmt.Errorf("write %s: %w", caPath, err)
		}
	} else if err := os.Remove(caPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Identity{}, fmt.Errorf("remove stale %s: %w", caPath, err)
	}
	path := filepath.Join(opts.DataDir, IdentityFile)
	if err := writeJSONFile(path, ident, 0o600); err != nil {
		return Identity{}, fmt.Errorf("write %s: %w", path, err)
	}
	return ident, nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q: want https://HOST:PORT", raw)
	}
	return nil
}

// defaultCommsURL is the server's host on the default comms port, for a
// server that advertises no comms URL.
func defaultCommsURL(server string) string {
	u, err := url.Parse(server)
	if err != nil {
		return server
	}
	return "https://" + net.JoinHostPort(u.Hostname(), "7443")
}
