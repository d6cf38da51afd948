package comms

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether"
)

// codes maps domain error codes to Connect codes. It is the only place this
// mapping is made.
var codes = map[tether.Code]connect.Code{
	tether.EINVALID:      connect.CodeInvalidArgument,
	tether.ETOOLARGE:     connect.CodeInvalidArgument,
	tether.ENOTFOUND:     connect.CodeNotFound,
	tether.EUNAUTHORIZED: connect.CodeUnauthenticated,
	tether.EEXPIRED:      connect.CodeUnauthenticated,
	tether.EFORBIDDEN:    connect.CodePermissionDenied,
	tether.EGONE:         connect.CodePermissionDenied,
	tether.EEXHAUSTED:    connect.CodeResourceExhausted,
	tether.EUNAVAILABLE:  connect.CodeUnavailable,
	tether.ECONFLICT:     connect.CodeFailedPrecondition,
	tether.ECANCELED:     connect.CodeCanceled,
	tether.EDEADLINE:     connect.CodeDeadlineExceeded,
	tether.ENOTSUPPORTED: connect.CodeUnimplemented,
	tether.EINTERNAL:     connect.CodeInternal,
}

// ConnectCode returns the Connect code for a domain error code.
func ConnectCode(c tether.Code) connect.Code {
	if cc, ok := codes[c]; ok {
		return cc
	}
	return connect.CodeInternal
}

// HTTPStatus returns the HTTP status the Connect protocol gives a code,
// for the plain HTTP endpoints of the comms listener (files).
func HTTPStatus(c connect.Code) int {
	switch c {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// fail counts a refused call and converts its error for the wire.
func (s *Service) fail(method string, err error) error {
	ce := toConnect(s.o.Log, method, err)
	var c *connect.Error
	if errors.As(ce, &c) {
		s.o.Metrics.Rejected("comms", method, c.Code().String())
	}
	return ce
}

// toConnect turns any error into a *connect.Error whose message is safe to
// send. Internal errors are logged with their details and sent as "internal
// error".
func toConnect(log *slog.Logger, method string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code := tether.ErrorCode(err)
	if code == tether.EINTERNAL {
		log.Error("comms call failed", "method", method, "err", err)
	}
	ce = connect.NewError(ConnectCode(code), errors.New(tether.ErrorMessage(err)))
	var te *tether.Error
	if errors.As(err, &te) && te.RetryAfter > 0 {
		setRetryAfter(ce, te.RetryAfter)
	}
	return ce
}

// setRetryAfter attaches a retry delay to an error, in the two forms
// documented in docs/protocol.md: the Retry-After metadata in whole
// seconds, rounded up (an HTTP header with the Connect protocol, a trailer
// with gRPC and gRPC-Web), and a google.rpc.RetryInfo error detail with
// the exact delay.
func setRetryAfter(ce *connect.Error, d time.Duration) {
	secs := (d + time.Second - 1) / time.Second
	ce.Meta().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	if detail, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err == nil {
		ce.AddDetail(detail)
	}
}
