package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
)

// Upload is a file to send with UploadFile.
type Upload struct {
	// Name is the file's name (required): at most 255 bytes, without
	// slashes, backslashes or control characters.
	Name string
	// Body is read to its end and streamed to the server.
	Body io.Reader
	// Size is the length of Body, sent as Content-Length so that the
	// server refuses a file over its limit before it is sent (-1: unknown).
	Size int64
	// SHA256, when set, is the lowercase hex SHA-256 of Body: the server
	// refuses the upload if the bytes it received differ.
	SHA256 string
}

// UploadFile streams a file to the server (POST /api/v1/files), which
// stores it under its SHA-256 and signs it. Uploading bytes the server
// already holds returns their stored metadata. The upload is bounded by
// ctx only, not by the client's per-call timeout.
func (c *Client) UploadFile(ctx context.Context, up Upload) (*File, error) {
	if up.Name == "" {
		return nil, errors.New("upload file: empty name")
	}
	if up.Body == nil {
		up.Body = http.NoBody
	}
	q := url.Values{"name": {up.Name}}
	setNonEmpty(q, "sha256", up.SHA256)
	req, err := c.newRequest(ctx, http.MethodPost, "/api/v1/files", q, up.Body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if up.Size >= 0 {
		req.ContentLength = up.Size
		if up.Size == 0 {
			req.Body = http.NoBody
		}
	}
	hc := *c.http
	hc.Timeout = 0
	var out File
	if err := c.send(&hc, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListFiles returns every file stored on the server, newest first.
func (c *Client) ListFiles(ctx context.Context) (*FileList, error) {
	return call[FileList](ctx, c, http.MethodGet, "/api/v1/files", nil, nil)
}

// GetFile returns the metadata of the file with the lowercase hex SHA-256
// sum; an *APIError with Status 404 when the server does not hold it.
func (c *Client) GetFile(ctx context.Context, sum string) (*File, error) {
	if sum == "" {
		return nil, errors.New("get file: empty sha256")
	}
	return call[File](ctx, c, http.MethodGet, "/api/v1/files/"+url.PathEscape(sum), nil, nil)
}

// IsNotFound reports whether err is the server's answer 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}
