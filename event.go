package tether

import (
	"context"
	"encoding/json"
	"time"
)

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

// Sink receives accepted event batches. Write returns only when the batch is
// durably held by the sink (or failed); the batch is acknowledged to the agent
// only after every sink returned nil.
type Sink interface {
	Write(ctx context.Context, b *Batch) error
	Close() error
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
