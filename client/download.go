package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// filesPath is the path of the file endpoint on the comms listener, before
// the file's SHA-256.
const filesPath = "/api/v1/files/"

// downloadIdle is how long a download may receive no byte before it is
// abandoned as UNAVAILABLE (call Download again to resume it).
const downloadIdle = 60 * time.Second

// errStalled ends a download that received nothing for downloadIdle.
var errStalled = errors.New("no data received for " + downloadIdle.String())

// Download fetches the file the server stores under sha256 (64 lowercase
// hex digits: GET /api/v1/files/{sha256} on the comms listener, with the
// agent's token), writes its bytes from offset on to w, and returns how
// many bytes it wrote.
//
// With an offset above zero it asks for the rest of the file only (Range:
// bytes=offset- and If-Range with the file's ETag), so that a download cut
// short resumes where it stopped: keep the bytes received in a file and
// call Download again with its size. Should the server send the whole file
// instead, the first offset bytes are skipped. An offset equal to the
// file's size writes nothing and returns nil: the file is complete.
//
// Download checks nothing about the bytes: compare their SHA-256 with the
// one asked for, and verify the release signature, before using them.
//
// Errors are *Error: UNAVAILABLE when the server cannot be reached or the
// transfer was cut (or stalled for a minute: resume it), NOT_FOUND when the
// server holds no such file, OUT_OF_RANGE when offset is past its end (the
// partial file is wrong: start again from zero), PERMISSION_DENIED when the
// agent was removed. An error writing to w is INTERNAL and wraps it. Like
// the RPCs, a download answered UNAUTHENTICATED authenticates again and is
// retried once, and an unreachable URL moves the client to the next one.
func (c *Client) Download(ctx context.Context, sha256 string, w io.Writer, offset int64) (int64, error) {
	if !isSHA256(sha256) {
		return 0, invalid("sha256 %q: want 64 lowercase hex digits", sha256)
	}
	if offset < 0 {
		return 0, invalid("offset %d: want 0 or more", offset)
	}
	tok, err := c.tokenFor(ctx)
	if err != nil {
		return 0, err
	}
	n, err := c.download(ctx, tok, sha256, w, offset)
	var e *Error
	if n == 0 && errors.As(err, &e) && e.Code == connect.CodeUnauthenticated {
		c.forget(tok)
		if tok, err = c.tokenFor(ctx); err != nil {
			return 0, err
		}
		n, err = c.download(ctx, tok, sha256, w, offset)
	}
	return n, err
}

// download sends one GET, moving to another endpoint when the one tried
// cannot be reached before the transfer started.
func (c *Client) download(ctx context.Context, tok, sum string, w io.Writer, offset int64) (int64, error) {
	var last *Error
	for _, e := range c.eps.plan(ctx) {
		n, started, err := c.get(ctx, e, tok, sum, w, offset)
		if err == nil {
			c.eps.worked(e)
			return n, nil
		}
		last = err
		if !unreachable(ctx, err) {
			if ctx.Err() == nil {
				c.eps.worked(e)
			}
			return n, last
		}
		c.eps.failed(e)
		if started {
			return n, last
		}
	}
	return 0, last
}

// get downloads from one endpoint. started is true once the server
// answered with the file's bytes.
func (c *Client) get(parent context.Context, e *endpoint, tok, sum string, w io.Writer, offset int64) (n int64, started bool, err *Error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	idle := time.AfterFunc(downloadIdle, func() { cancel(errStalled) })
	defer idle.Stop()

	req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, e.url+filesPath+sum, nil)
	if rerr != nil {
		return 0, false, &Error{Code: connect.CodeInternal, Message: rerr.Error(), cause: rerr}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if c.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		req.Header.Set("If-Range", `"`+sum+`"`)
	}
	resp, herr := e.hc.Do(req)
	if herr != nil {
		return 0, false, downloadError(ctx, herr, 0)
	}
	defer resp.Body.Close()

	skip := int64(0)
	switch resp.StatusCode {
	case http.StatusOK:
		skip = offset
	case http.StatusPartialContent:
		start, _, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			return 0, false, &Error{Code: connect.CodeInternal, Message: fmt.Sprintf("download: asked for bytes from %d, the server sent Content-Range %q",
				offset, resp.Header.Get("Content-Range"))}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		_, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && size == offset {
			return 0, true, nil // complete already
		}
		return 0, false, &Error{Code: connect.CodeOutOfRange, Message: fmt.Sprintf("download: offset %d is past the end of the file (Content-Range %q)",
			offset, resp.Header.Get("Content-Range"))}
	default:
		return 0, false, httpError(resp)
	}

	body := &idleReader{r: resp.Body, timer: idle}
	if skip > 0 {
		if k, err := io.CopyN(io.Discard, body, skip); err != nil {
			return 0, true, downloadError(ctx, err, k)
		}
	}
	n, cerr := io.Copy(writerOnly{w}, body)
	if cerr != nil {
		var we writeError
		if errors.As(cerr, &we) {
			return n, true, &Error{Code: connect.CodeInternal, Message: "download: write: " + we.err.Error(), cause: we.err}
		}
		return n, true, downloadError(ctx, cerr, skip+n)
	}
	return n, true, nil
}

// downloadError converts a failed request or body read into an *Error:
// the caller's context ending keeps its code, a stall or any transport
// failure is UNAVAILABLE.
func downloadError(ctx context.Context, err error, got int64) *Error {
	if parentErr := context.Cause(ctx); parentErr != nil && !errors.Is(parentErr, errStalled) {
		return toError(parentErr)
	}
	msg := err.Error()
	if errors.Is(context.Cause(ctx), errStalled) {
		msg = errStalled.Error()
	}
	if got > 0 {
		msg = fmt.Sprintf("download cut short after %d bytes: %s", got, msg)
	} else {
		msg = "download: " + msg
	}
	return &Error{Code: connect.CodeUnavailable, Message: msg, cause: err}
}

// httpError reads an error answer of the file endpoint: a Connect error
// body {"code", "message"} when there is one, else the HTTP status.
func httpError(resp *http.Response) *Error {
	e := &Error{Code: codeOfStatus(resp.StatusCode), Message: resp.Status}
	var body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil && body.Code != "" {
		var code connect.Code
		if code.UnmarshalText([]byte(body.Code)) == nil {
			e.Code = code
		}
		e.Message = body.Message
	}
	e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	return e
}

// codeOfStatus maps an HTTP status without a Connect body (a proxy's, a
// CDN's) to a code.
func codeOfStatus(status int) connect.Code {
	switch status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound:
		return connect.CodeNotFound
	case http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case http.StatusNotImplemented:
		return connect.CodeUnimplemented
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return connect.CodeUnavailable
	}
	if status >= 500 {
		return connect.CodeInternal
	}
	return connect.CodeUnknown
}

// parseContentRange parses "bytes START-END/SIZE" (start, size) and
// "bytes */SIZE" (start -1, size).
func parseContentRange(v string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, total, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	size, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if rng == "*" {
		return -1, size, true
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err = strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return start, size, true
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// idleReader pushes back the stall timer on every read that got bytes.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.timer.Reset(downloadIdle)
	}
	return n, err
}

// writerOnly hides any ReadFrom of the destination (so io.Copy reads
// through idleReader) and marks its errors apart from the body's.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		return n, writeError{err}
	}
	return n, nil
}

type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }
