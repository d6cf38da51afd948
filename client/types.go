package client

import (
	"bytes"
	"encoding/json"
	"time"

	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Session describes the agent as the server knows it, as returned by
// Authenticate.
type Session struct {
	AgentName string
	Groups    []string
	// ExpiresAt is when the current token stops being accepted.
	ExpiresAt time.Time
}

// Event is one thing an agent module observed.
type Event struct {
	// ID is unique among the events of this agent (at most 128 bytes).
	ID string `json:"id"`
	// Module produced the event: 1 to 64 characters of [a-z0-9_.-].
	Module string `json:"module"`
	// Type is the kind of event within the module.
	Type string `json:"type"`
	// CollectedAt is when the agent collected the event.
	CollectedAt time.Time `json:"collected_at"`
	// Payload is the body, opaque to the server (at most 1 MiB): one JSON
	// value, or protobuf bytes when Protobuf is true.
	Payload []byte `json:"payload,omitempty"`
	// Protobuf says Payload is not JSON but protobuf (or other) bytes.
	Protobuf bool `json:"protobuf,omitempty"`
}

// StateChange is a change to one keyed document of a module: an upsert of
// the Event's (JSON) payload, or a delete of the key.
type StateChange struct {
	Event
	// Key names the document within the module (1 to 256 bytes).
	Key string `json:"key"`
	// Delete removes the key; the payload is then ignored.
	Delete bool `json:"delete,omitempty"`
}

// Order is one command for this agent.
type Order struct {
	ID        string `json:"id"`
	RequestID string `json:"request_id"`
	// Action is the action's name, for example "restart".
	Action string `json:"action"`
	// Args is the action's arguments, a JSON object ("{}" when none).
	Args json.RawMessage `json:"args"`
	// Version is the version of the arguments' schema (empty: current).
	Version string `json:"version,omitempty"`
	// User asked for it.
	User      string    `json:"user,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// TimeoutAt is the end of the order's window: an order not started by
	// then must not be started. Zero when the server set none.
	TimeoutAt time.Time `json:"timeout_at"`
}

// Result is the outcome of an executed order.
type Result struct {
	OrderID string `json:"order_id"`
	Success bool   `json:"success"`
	// Code is an action-specific code, for example an exit code.
	Code int `json:"code"`
	// Message is a human-readable summary (at most 4 KiB).
	Message string `json:"message"`
	// Data is action-specific data, any JSON value (optional).
	Data       json.RawMessage `json:"data,omitempty"`
	FinishedAt time.Time       `json:"finished_at"`
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func eventToProto(e Event) *commsv1.Event {
	enc := commsv1.PayloadEncoding_PAYLOAD_ENCODING_JSON
	if e.Protobuf {
		enc = commsv1.PayloadEncoding_PAYLOAD_ENCODING_PROTOBUF
	}
	return &commsv1.Event{
		Id:          e.ID,
		Module:      e.Module,
		Type:        e.Type,
		CollectedAt: tsOrNil(e.CollectedAt),
		Payload:     e.Payload,
		Encoding:    enc,
	}
}

func stateChangeToProto(c StateChange) *commsv1.StatefulEvent {
	op := commsv1.StateOp_STATE_OP_UPSERT
	if c.Delete {
		op = commsv1.StateOp_STATE_OP_DELETE
	}
	return &commsv1.StatefulEvent{Event: eventToProto(c.Event), Key: c.Key, Op: op}
}

func orderFromProto(o *commsv1.Order) (Order, error) {
	out := Order{
		ID:        o.GetOrderId(),
		RequestID: o.GetRequestId(),
		Action:    o.GetAction().GetName(),
		Version:   o.GetAction().GetVersion(),
		User:      o.GetUser(),
		CreatedAt: timeOf(o.GetCreatedAt()),
		TimeoutAt: timeOf(o.GetTimeoutAt()),
		Args:      json.RawMessage("{}"),
	}
	if args := o.GetAction().GetArgs(); args != nil {
		b, err := compactJSON(args)
		if err != nil {
			return Order{}, err
		}
		out.Args = b
	}
	return out, nil
}

func resultToProto(r Result) (*commsv1.OrderResult, error) {
	status := commsv1.OrderStatus_ORDER_STATUS_FAILURE
	if r.Success {
		status = commsv1.OrderStatus_ORDER_STATUS_SUCCESS
	}
	out := &commsv1.OrderResult{
		OrderId:    r.OrderID,
		Status:     status,
		Code:       int32(r.Code),
		Message:    r.Message,
		FinishedAt: tsOrNil(r.FinishedAt),
	}
	if len(r.Data) > 0 {
		v := &structpb.Value{}
		if err := protojson.Unmarshal(r.Data, v); err != nil {
			return nil, invalid("result of order %s: data is not valid JSON: %v", r.OrderID, err)
		}
		out.Data = v
	}
	return out, nil
}

// compactJSON encodes m with protojson, without the random spacing protojson
// adds.
func compactJSON(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
