package comms

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// Limits of the comms API, documented in agent.proto.
const (
	maxEventsPerBatch  = 10_000
	maxEventIDBytes    = 128
	maxEventTypeBytes  = 128
	maxPayloadBytes    = 1 << 20
	maxStateKeyBytes   = 256
	maxResultsPerCall  = 1_000
	maxResultMessage   = 4 << 10
	maxResultDataBytes = 1 << 20
	maxReceivedIDs     = 1_000
	// maxSequence is the largest batch sequence: stores keep it as a
	// signed 64-bit integer.
	maxSequence = 1<<63 - 1
)

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// eventFromProto validates one event and converts it. Errors name fields
// relative to the event ("module"); the caller places them with under.
func eventFromProto(e *commsv1.Event) (tether.Event, error) {
	if e == nil {
		return tether.Event{}, errMissing("event")
	}
	switch {
	case e.Id == "" || len(e.Id) > maxEventIDBytes:
		return tether.Event{}, tether.FieldError("id", "want 1 to %d bytes", maxEventIDBytes)
	case !tether.ValidModule(e.Module):
		return tether.Event{}, tether.FieldError("module", "want 1 to 64 characters of a-z, 0-9, '_', '.', '-'")
	case e.Type == "" || len(e.Type) > maxEventTypeBytes || !utf8.ValidString(e.Type):
		return tether.Event{}, tether.FieldError("type", "want 1 to %d bytes of UTF-8", maxEventTypeBytes)
	case e.CollectedAt == nil:
		return tether.Event{}, tether.FieldError("collected_at", "required")
	case e.CollectedAt.CheckValid() != nil:
		return tether.Event{}, tether.FieldError("collected_at", "not a valid timestamp")
	case len(e.Payload) > maxPayloadBytes:
		return tether.Event{}, &tether.Error{Code: tether.ETOOLARGE, Field: "payload", Message: fmt.Sprintf("payload: larger than %d bytes", maxPayloadBytes)}
	}
	ev := tether.Event{
		ID: e.Id, Module: e.Module, Type: e.Type,
		CollectedAt: e.CollectedAt.AsTime(), Payload: e.Payload,
	}
	switch e.Encoding {
	case commsv1.PayloadEncoding_PAYLOAD_ENCODING_UNSPECIFIED, commsv1.PayloadEncoding_PAYLOAD_ENCODING_JSON:
		ev.Encoding = tether.EncodingJSON
		if len(e.Payload) > 0 && !json.Valid(e.Payload) {
			return tether.Event{}, tether.FieldError("payload", "not valid JSON (set encoding to PAYLOAD_ENCODING_PROTOBUF for binary payloads)")
		}
	case commsv1.PayloadEncoding_PAYLOAD_ENCODING_PROTOBUF:
		ev.Encoding = tether.EncodingProtobuf
	default:
		return tether.Event{}, tether.FieldError("encoding", "unknown value %d", e.Encoding)
	}
	return ev, nil
}

func statefulFromProto(se *commsv1.StatefulEvent) (tether.Event, error) {
	if se == nil {
		return tether.Event{}, errMissing("event")
	}
	ev, err := eventFromProto(se.Event)
	if err != nil {
		return ev, under("event", err)
	}
	if se.Key == "" || len(se.Key) > maxStateKeyBytes || !utf8.ValidString(se.Key) {
		return ev, tether.FieldError("key", "want 1 to %d bytes of UTF-8", maxStateKeyBytes)
	}
	ev.Key = se.Key
	switch se.Op {
	case commsv1.StateOp_STATE_OP_UPSERT:
		ev.Op = tether.StateUpsert
		if ev.Encoding != tether.EncodingJSON || len(ev.Payload) == 0 {
			return ev, tether.FieldError("event.payload", "an upsert needs a JSON document")
		}
	case commsv1.StateOp_STATE_OP_DELETE:
		ev.Op = tether.StateDelete
	default:
		return ev, tether.FieldError("op", "want STATE_OP_UPSERT or STATE_OP_DELETE")
	}
	return ev, nil
}

func orderToProto(o *tether.Order) (*commsv1.Order, error) {
	var args *structpb.Struct
	if len(o.Action.Args) > 0 {
		var m map[string]any
		if err := json.Unmarshal(o.Action.Args, &m); err != nil {
			return nil, fmt.Errorf("order %s: decode args: %w", o.ID, err)
		}
		s, err := structpb.NewStruct(m)
		if err != nil {
			return nil, fmt.Errorf("order %s: convert args: %w", o.ID, err)
		}
		args = s
	}
	return &commsv1.Order{
		OrderId:   o.ID,
		RequestId: o.RequestID,
		Action:    &commsv1.Action{Name: o.Action.Name, Args: args, Version: o.Action.Version},
		CreatedAt: timestamp(o.CreatedAt),
		TimeoutAt: timestamp(o.TimeoutAt),
		User:      o.User,
	}, nil
}

// resultFromProto validates one result and converts it. Errors name fields
// relative to the result, as eventFromProto's do.
func resultFromProto(r *commsv1.OrderResult) (string, tether.OrderStatus, tether.Result, error) {
	var res tether.Result
	if r == nil {
		return "", "", res, errMissing("result")
	}
	if !tether.ValidID(r.OrderId) {
		return "", "", res, tether.FieldError("order_id", "want an order id (a lowercase UUID)")
	}
	var st tether.OrderStatus
	switch r.Status {
	case commsv1.OrderStatus_ORDER_STATUS_SUCCESS:
		st = tether.OrderSuccess
	case commsv1.OrderStatus_ORDER_STATUS_FAILURE:
		st = tether.OrderFailure
	default:
		return "", "", res, tether.FieldError("status", "want ORDER_STATUS_SUCCESS or ORDER_STATUS_FAILURE")
	}
	if len(r.Message) > maxResultMessage || !utf8.ValidString(r.Message) {
		return "", "", res, tether.FieldError("message", "want at most %d bytes of UTF-8", maxResultMessage)
	}
	res.Code, res.Message = int(r.Code), r.Message
	if r.Data != nil {
		data, err := protojson.Marshal(r.Data)
		if err != nil {
			return "", "", res, tether.FieldError("data", "not a JSON value")
		}
		if len(data) > maxResultDataBytes {
			return "", "", res, &tether.Error{Code: tether.ETOOLARGE, Field: "data", Message: "data: larger than 1 MiB"}
		}
		res.Data = data
	}
	return r.OrderId, st, res, nil
}

// errMissing is the error for a nil list element; under names its position.
func errMissing(what string) *tether.Error {
	return &tether.Error{Code: tether.EINVALID, Message: "missing " + what}
}

// under places a field error of an element at its position in the request:
// "module" under "events[3]" becomes "events[3].module". Positions are built
// only for the one element at fault, not for every element checked.
func under(prefix string, err error) error {
	var e *tether.Error
	if !errors.As(err, &e) {
		return err
	}
	field := prefix
	msg := e.Message
	if e.Field != "" {
		field = prefix + "." + e.Field
		msg = strings.TrimPrefix(msg, e.Field+": ")
	}
	return &tether.Error{Code: e.Code, Field: field, Message: field + ": " + msg, Err: e.Err}
}

// fieldIndex names a list element: fieldIndex("events", 3) is "events[3]".
func fieldIndex(name string, i int) string { return name + "[" + strconv.Itoa(i) + "]" }
