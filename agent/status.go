package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// Status is what `tether-agent run` is doing, as written to status.json.
type Status struct {
	AgentID  string `json:"agent_id"`
	Name     string `json:"name"`
	Server   string `json:"server"`
	CommsURL string `json:"comms_url"`
	// State is "running", or "stopped" once run has exited cleanly.
	State string `json:"state"`
	// Connected is true when the last call to the comms API succeeded.
	Connected bool `json:"connected"`
	// LastError is the last call's error, when Connected is false.
	LastError  string    `json:"last_error,omitempty"`
	LastPollAt time.Time `json:"last_poll_at,omitzero"`
	// QueuedEvents and QueuedBytes are what the outbox holds, bounded by
	// OutboxMaxBytes.
	QueuedEvents   int   `json:"queued_events"`
	QueuedBytes    int64 `json:"queued_bytes"`
	OutboxMaxBytes int64 `json:"outbox_max_bytes"`
	// DroppedEvents counts the stateless events dropped because the outbox
	// was full, CompactedEvents the state changes replaced by a newer one
	// of the same key then, UnreadableEvents the records found corrupt on
	// disk: all since the outbox was created.
	DroppedEvents    uint64 `json:"dropped_events"`
	CompactedEvents  uint64 `json:"compacted_events"`
	UnreadableEvents uint64 `json:"unreadable_events,omitempty"`
	PendingOrders    int    `json:"pending_orders"`
	// PendingResults are results waiting for the server's acknowledgement.
	PendingResults int `json:"pending_results"`
	// DeadLetterBatches counts batches the server refused as invalid.
	DeadLetterBatches uint64 `json:"dead_letter_batches"`
	// ConfigVersion is the centralized configuration version held.
	ConfigVersion string `json:"config_version,omitempty"`
	// ConfigError says why the server's latest centralized configuration
	// was not applied (the previous one stays in force).
	ConfigError string    `json:"config_error,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	PID         int       `json:"pid"`
	Version     string    `json:"version"`
	// Orders is the queue of orders held, oldest first (at most
	// MaxStatusOrders; PendingOrders counts them all).
	Orders []OrderState `json:"orders,omitempty"`
	// UpdatedAt is when the file was written (about every 2 s while
	// running).
	UpdatedAt time.Time `json:"updated_at"`
}

// MaxStatusOrders is the most orders status.json lists.
const MaxStatusOrders = 50

// OrderState is one order in the agent's queue.
type OrderState struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	// State is pending (waiting its turn) or running.
	State      string    `json:"state"`
	ReceivedAt time.Time `json:"received_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	User       string    `json:"user,omitempty"`
}

// Stale reports whether the status was not refreshed recently: the agent
// that wrote it is probably not running any more.
func (s Status) Stale(now time.Time) bool {
	return s.State != "running" || now.Sub(s.UpdatedAt) > 10*time.Second
}

// ErrNoStatus means run has not written a status file yet.
var ErrNoStatus = errors.New("no status yet: the agent has not run")

// ReadStatus reads DATA_DIR/status.json.
func ReadStatus(dataDir string) (Status, error) {
	var s Status
	err := readJSONFile(filepath.Join(dataDir, StatusFile), &s)
	if errors.Is(err, fs.ErrNotExist) {
		return s, ErrNoStatus
	}
	if err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	return s, nil
}

// WriteStatus writes DATA_DIR/status.json atomically.
func WriteStatus(dataDir string, s Status) error {
	if err := writeJSONFile(filepath.Join(dataDir, StatusFile), s, 0o644); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}
