package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// Error is the error of every call of a Client.
type Error struct {
	// Code is the Connect code of the failure. Network failures are
	// CodeUnavailable; a call cut short by its context is CodeCanceled or
	// CodeDeadlineExceeded.
	Code connect.Code
	// Message is the server's (or the transport's) reason.
	Message string
	// RetryAfter is the delay the server asked for, or zero: the
	// google.rpc.RetryInfo error detail's retry_delay when the error has
	// one, else the Retry-After metadata (seconds).
	RetryAfter time.Duration

	cause error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Code.String() + ": " + e.Message
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.cause }

// Retryable reports whether the same call may succeed later: the server is
// unavailable or overloaded (UNAVAILABLE, RESOURCE_EXHAUSTED), the call timed
// out (DEADLINE_EXCEEDED), or the network failed. Keep the data and retry
// with a backoff (at least RetryAfter).
func (e *Error) Retryable() bool {
	switch e.Code {
	case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeDeadlineExceeded:
		return true
	}
	return false
}

// Denied reports whether the server refused the agent itself
// (PERMISSION_DENIED): it was deleted or disabled, and should stop.
func (e *Error) Denied() bool { return e.Code == connect.CodePermissionDenied }

// toError converts any error of a call into an *Error.
func toError(err error) *Error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	e := &Error{Code: connect.CodeUnknown, Message: err.Error(), cause: err}
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		e.Code = cerr.Code()
		e.Message = cerr.Message()
		e.RetryAfter = retryDelay(cerr)
	}
	switch {
	case errors.Is(err, context.Canceled):
		e.Code = connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		e.Code = connect.CodeDeadlineExceeded
	case e.Code == connect.CodeUnknown || e.Code == connect.CodeInternal || e.Code == connect.CodeCanceled:
		// connect-go reports a connection the server cut while the
		// request was written (a broken pipe, a reset) as CANCELED, as
		// if the caller had gone: for the caller, the server is
		// unavailable.
		if isNetwork(err) {
			e.Code = connect.CodeUnavailable
		}
	}
	return e
}

func isNetwork(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// maxRetryAfter bounds the delay a server may ask for: a larger one is
// ignored (the caller backs off as usual).
const maxRetryAfter = 24 * time.Hour

// retryDelay is the delay an error asks for: its RetryInfo detail, else
// its Retry-After metadata.
func retryDelay(cerr *connect.Error) time.Duration {
	for _, d := range cerr.Details() {
		v, err := d.Value()
		if err != nil {
			continue
		}
		if ri, ok := v.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			if d := ri.GetRetryDelay().AsDuration(); d > 0 && d < maxRetryAfter {
				return d
			}
		}
	}
	return parseRetryAfter(cerr.Meta().Get("Retry-After"))
}

func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 && n < maxRetryAfter.Seconds() {
		return time.Duration(n * float64(time.Second))
	}
	return 0
}

func invalid(format string, args ...any) *Error {
	return &Error{Code: connect.CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}
