package agent

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// DefaultDataDir is the data directory when none is given.
const DefaultDataDir = "/var/lib/tether-agent"

// File names inside the data directory.
const (
	IdentityFile   = "identity.json"
	CAFile         = "ca.crt"
	ConfigFile     = "agent.yaml"
	DBFile         = "agent.db"
	StatusFile     = "status.json"
	DeadLetterFile = "dead-letter.ndjson"
)

// ErrNotEnrolled means the data directory holds no identity.
var ErrNotEnrolled = errors.New("not enrolled: run `tether-agent enroll` first")

// Identity is what enrollment stores in identity.json.
type Identity struct {
	AgentID  string `json:"agent_id"`
	AgentKey string `json:"agent_key"`
	Name     string `json:"name"`
	// Server is the management API URL used to enroll.
	Server     string    `json:"server"`
	CommsURLs  []string  `json:"comms_urls"`
	EnrolledAt time.Time `json:"enrolled_at"`
	// ReleaseKey is the server's release-signing public key, pinned at
	// enrollment: the standard base64 of its 32 Ed25519 bytes ("" when the
	// server gave none). Files to install (upgrades) must carry its
	// signature; see ReleasePublicKey.
	ReleaseKey string `json:"release_public_key,omitempty"`
}

// ReleasePublicKey returns the release-signing public key pinned at
// enrollment. A file is genuine when its SHA-256 digest is the one the
// order names and ed25519.Verify(key, digest[:], signature) holds, with the
// order's base64 signature decoded: the server signs exactly the 32 raw
// bytes of the digest.
func (id Identity) ReleasePublicKey() (ed25519.PublicKey, error) {
	if id.ReleaseKey == "" {
		return nil, errors.New("no release key: the server gave none at enrollment (enroll again with a server that stores files)")
	}
	return decodeReleaseKey(id.ReleaseKey)
}

func decodeReleaseKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("release key %q: want the base64 of %d bytes", s, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// LoadIdentity reads DATA_DIR/identity.json; ErrNotEnrolled when absent.
func LoadIdentity(dataDir string) (Identity, error) {
	id, err := readIdentity(dataDir)
	if err != nil {
		return id, err
	}
	return id, id.checkComplete(dataDir)
}

// readIdentity decodes DATA_DIR/identity.json without checking that it is
// complete; ErrNotEnrolled when absent.
func readIdentity(dataDir string) (Identity, error) {
	var id Identity
	err := readJSONFile(filepath.Join(dataDir, IdentityFile), &id)
	if errors.Is(err, fs.ErrNotExist) {
		return id, ErrNotEnrolled
	}
	if err != nil {
		return id, fmt.Errorf("read identity: %w", err)
	}
	return id, nil
}

// checkComplete returns an error when the identity read from dataDir lacks
// what run needs.
func (id Identity) checkComplete(dataDir string) error {
	if id.AgentID == "" || id.AgentKey == "" || len(id.CommsURLs) == 0 {
		return fmt.Errorf("read identity: %s is incomplete: enroll again", filepath.Join(dataDir, IdentityFile))
	}
	return nil
}
