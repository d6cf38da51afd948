package comms

import (
	"encoding/json"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
)

// FilePath is the path of the file endpoint on the comms listener, before
// the file's SHA-256.
const FilePath = "/api/v1/files/"

// serveFile serves the bytes of a stored file to an agent that sends its
// JWT as a bearer token: GET and HEAD, Range (one or several ranges, so an
// interrupted download resumes), and conditional requests with the strong
// ETag "<sha256>". Errors have the Connect error body {"code", "message"}.
func (s *Service) serveFile(w http.ResponseWriter, r *http.Request) {
	const method = "GetFile"
	if _, err := s.authenticate(r.Context(), r.Header); err != nil {
		s.failHTTP(w, method, err)
		return
	}
	if s.o.Files == nil {
		s.failHTTP(w, method, tether.Errorf(tether.ENOTSUPPORTED, "this server node stores no files"))
		return
	}
	f, info, err := s.o.Files.Open(r.PathValue("sha256"))
	if err != nil {
		s.failHTTP(w, method, err)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("ETag", `"`+info.SHA256+`"`)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	// The bytes under a digest never change; the answer is for this agent
	// only (it was authenticated).
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	http.ServeContent(w, r, info.Name, info.UploadedAt, f)
}

// failHTTP answers a plain HTTP request of the comms listener with err,
// counted like a refused RPC, in the Connect protocol's error format and
// HTTP status.
func (s *Service) failHTTP(w http.ResponseWriter, method string, err error) {
	var ce *connect.Error
	if !errors.As(s.fail(method, err), &ce) {
		ce = connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	if ce.Code() == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(HTTPStatus(ce.Code()))
	_ = json.NewEncoder(w).Encode(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{ce.Code().String(), ce.Message()})
}
