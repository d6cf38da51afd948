package tether

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code classifies an Error. Each transport maps codes to its own status
// values in exactly one place (Connect codes in server/comms, HTTP statuses in
// server/api).
type Code string

// Error codes.
const (
	ECONFLICT     Code = "conflict"      // the action conflicts with the current state
	EINTERNAL     Code = "internal"      // an unexpected failure; details are logged, not shown
	EINVALID      Code = "invalid"       // the input is malformed or out of range
	ENOTFOUND     Code = "not_found"     // the entity does not exist
	EUNAUTHORIZED Code = "unauthorized"  // missing, expired or forged credentials
	EFORBIDDEN    Code = "forbidden"     // valid credentials that may not do this
	EEXHAUSTED    Code = "exhausted"     // a limit was reached (uses, rate, capacity)
	EUNAVAILABLE  Code = "unavailable"   // the service cannot serve now; retry later
	ETOOLARGE     Code = "too_large"     // a request or field is over its size limit
	EEXPIRED      Code = "expired"       // a credential or entity is past its expiry
	EGONE         Code = "gone"          // a credential was revoked or used up
	ECANCELED     Code = "canceled"      // the caller went away
	EDEADLINE     Code = "deadline"      // the operation ran out of time
	ENOTSUPPORTED Code = "not_supported" // the operation is not implemented here
)

// Error is Tether's application error. Its Message is safe to show to the
// user who caused it; anything else stays in the wrapped error, which is
// logged and never sent.
type Error struct {
	Code    Code
	Message string
	// Field names the request field at fault, for EINVALID and ETOOLARGE.
	Field string
	// RetryAfter, for EEXHAUSTED and EUNAVAILABLE, is how long the caller
	// should wait before it tries again (zero: no advice). Each transport
	// carries it in its own way (server/comms: a Retry-After header or
	// trailer and a google.rpc.RetryInfo error detail).
	RetryAfter time.Duration
	// Err is the underlying cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" && msg == "" {
		msg = e.Field + " is invalid"
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, msg, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError returns an EINVALID error naming the field at fault.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, ECANCELED or
// EDEADLINE for context errors, EINTERNAL for anything else, and "" for nil.
func ErrorCode(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled):
		return ECANCELED
	case errors.Is(err, context.DeadlineExceeded):
		return EDEADLINE
	}
	return EINTERNAL
}

// ErrorMessage returns the user-safe message of err: the message of the first
// *Error in its chain, or "internal error" for anything else.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		if e.Message == "" {
			return string(e.Code)
		}
		return e.Message
	case errors.Is(err, context.Canceled):
		return "request canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	}
	return "internal error"
}

// NotFound returns an ENOTFOUND error for the named kind and id.
func NotFound(kind, id string) *Error {
	return &Error{Code: ENOTFOUND, Message: fmt.Sprintf("%s %q not found", kind, id)}
}
