package tether

import (
	"context"
	"encoding/json"
	"strconv"
	"time"
)

// ValidModule reports whether name is a module name: 1 to 64 characters of
// [a-z0-9_.-]. Every event carries one; event filters name one.
func ValidModule(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// PayloadEncoding says how to read an event's payload bytes.
type PayloadEncoding string

// Payload encodings.
const (
	EncodingJSON     PayloadEncoding = "json"
	EncodingProtobuf PayloadEncoding = "protobuf"
)

// StateOp is what a stateful event does to its key.
type StateOp string

// State operations.
const (
	StateUpsert StateOp = "upsert"
	StateDelete StateOp = "delete"
)

// CheckStateOps checks that every event of events is stateless (no Op) or
// has a known state operation: a Store's ApplyState and BeginBatch refuse
// the batch with EINVALID otherwise.
func CheckStateOps(events []Event) error {
	for _, e := range events {
		switch e.Op {
		case "", StateUpsert, StateDelete:
		default:
			return FieldError("op", "unknown state operation %q", e.Op)
		}
	}
	return nil
}

// Event is one event as received from an agent. Stateful events have a Key
// and an Op; stateless ones have neither.
type Event struct {
	ID          string
	Module      string
	Type        string
	CollectedAt time.Time
	Payload     []byte
	Encoding    PayloadEncoding
	Key         string
	Op          StateOp
}

// Batch is one accepted push, enriched by the server.
type Batch struct {
	AgentID    string
	AgentName  string
	Groups     []string
	Sequence   uint64
	Stateful   bool
	ReceivedAt time.Time
	Events     []Event
}

// ID identifies the batch across retries: "<agent id>/<sequence>". An agent
// sends a batch again with the same sequence after a failure, so a sink that
// can de-duplicate on its own (a NATS JetStream message id, a Kafka record
// key) uses ID to store a retried batch once. It is "" for batches that no
// agent sent (Sequence 0 or no AgentID, such as archived orders): those are
// never de-duplicated.
func (b *Batch) ID() string {
	if b.AgentID == "" || b.Sequence == 0 {
		return ""
	}
	return b.AgentID + "/" + strconv.FormatUint(b.Sequence, 10)
}

// Sink receives accepted event batches. Write returns only when the batch is
// durably held by the sink (or failed); the batch is acknowledged to the agent
// only after every sink returned nil.
//
// Write may be called concurrently, and may be called again with a batch of
// the same ID (a retry after a failure, on this node or another), possibly
// with a later ReceivedAt: a sink that cannot recognise it stores it again.
// The caller does not change b nor its events once it passed them to
// Write, so a sink may keep them, read-only, after Write returned.
type Sink interface {
	Write(ctx context.Context, b *Batch) error
	Close() error
}

// A HeldSink is a Sink that can tell which events of a batch it already
// holds. Before the server writes a batch again whose earlier delivery may
// have reached the sink before a crash or a failure (a pending batch, see
// BatchStore), it asks, and writes only the events the sink lacks, so that
// each event is stored once. A sink that is not a HeldSink is given the
// whole batch again.
type HeldSink interface {
	Sink
	// Held returns the ids of the events of the agent's batch seq that the
	// sink durably holds. Nothing of that batch was written to the sink
	// before since, which bounds how far back it needs to look.
	Held(ctx context.Context, agentID string, seq uint64, since time.Time) (map[string]bool, error)
}

// StateEntry is the latest document of one (agent, module, key).
type StateEntry struct {
	AgentID string
	Module  string
	Key     string
	// Doc is the JSON document of the last upsert.
	Doc       json.RawMessage
	UpdatedAt time.Time
	// Sequence is the batch sequence of the last change.
	Sequence uint64
}
