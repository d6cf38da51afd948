package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
}

// LoadIdentity reads DATA_DIR/identity.json; ErrNotEnrolled when absent.
func LoadIdentity(dataDir string) (Identity, error) {
	var id Identity
	b, err := os.ReadFile(filepath.Join(dataDir, IdentityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return id, ErrNotEnrolled
	}
	if err != nil {
		return id, fmt.Errorf("read identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("read identity: %s: %w", filepath.Join(dataDir, IdentityFile), err)
	}
	if id.AgentID == "" || id.AgentKey == "" || len(id.CommsURLs) == 0 {
		return id, fmt.Errorf("read identity: %s is incomplete: enroll again", filepath.Join(dataDir, IdentityFile))
	}
	return id, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, fsynced, then renamed over path; the directory is fsynced too.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ensureDataDir creates dir with mode 0700 if needed.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	return nil
}
