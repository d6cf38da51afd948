package mgmt

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
)

// statuses maps domain error codes to HTTP statuses. It is the only place
// this mapping is made.
var statuses = map[tether.Code]int{
	tether.EINVALID:      http.StatusBadRequest,
	tether.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	tether.ENOTFOUND:     http.StatusNotFound,
	tether.EUNAUTHORIZED: http.StatusUnauthorized,
	tether.EEXPIRED:      http.StatusUnauthorized,
	tether.EGONE:         http.StatusUnauthorized,
	tether.EFORBIDDEN:    http.StatusForbidden,
	tether.ECONFLICT:     http.StatusConflict,
	tether.EEXHAUSTED:    http.StatusTooManyRequests,
	tether.EUNAVAILABLE:  http.StatusServiceUnavailable,
	tether.ENOTSUPPORTED: http.StatusNotImplemented,
	tether.ECANCELED:     499,
	tether.EDEADLINE:     http.StatusGatewayTimeout,
	tether.EINTERNAL:     http.StatusInternalServerError,
}

// HTTPStatus returns the HTTP status for a domain error code.
func HTTPStatus(c tether.Code) int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := tether.ErrorCode(err)
	if code == tether.EINTERNAL {
		log.Error("management API call failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	body := api.ErrorResponse{Error: api.Error{Code: string(code), Message: tether.ErrorMessage(err)}}
	var e *tether.Error
	if errors.As(err, &e) {
		body.Error.Field = e.Field
	}
	if code == tether.EUNAUTHORIZED || code == tether.EEXPIRED || code == tether.EGONE {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
	}
	writeJSON(w, HTTPStatus(code), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
