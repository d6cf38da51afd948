package mgmt_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/mgmt"
)

// upload is a POST /api/v1/files of body with the query q.
type upload struct {
	query url.Values
	token string
	body  []byte
	want  int
	// invalid marks a request the document must refuse too.
	invalid bool
}

func (e *env) uploadRequest(t *testing.T, u upload) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+"/api/v1/files?"+u.query.Encode(), bytes.NewReader(u.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if u.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	return req
}

// upload sends u, checks its status, and validates the request and the
// answer against the OpenAPI document, like do.
func (c *checker) upload(t *testing.T, u upload) []byte {
	t.Helper()
	req := c.e.uploadRequest(t, u)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("upload: not in the OpenAPI document: %v", err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: c.opts}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case u.invalid && err == nil:
		t.Errorf("upload %v: the document accepts a request the test made invalid", u.query)
	case !u.invalid && err != nil:
		t.Errorf("upload %v: request does not match the document: %v", u.query, err)
	}
	resp, body := send(t, c.e.uploadRequest(t, u))
	if resp.StatusCode != u.want {
		t.Errorf("upload %v: status %d, want %d; body: %s", u.query, resp.StatusCode, u.want, body)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: c.opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(body)); err != nil {
		t.Errorf("upload %v: %d response does not match the document: %v\nbody: %s", u.query, resp.StatusCode, err, body)
	}
	if resp.StatusCode/100 == 2 {
		c.mark(route.Method + " " + route.Path)
	}
	return body
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// exerciseFiles runs the files part of the scenario: uploads, lists,
// shows, the release key of enrollment, and upgrade commands naming files.
func exerciseFiles(t *testing.T, c *checker, agentID string) {
	t.Helper()
	admin, operator, viewer, registrar := c.e.tokens[tether.RoleAdmin], c.e.tokens[tether.RoleOperator],
		c.e.tokens[tether.RoleViewer], c.e.tokens[tether.RoleRegistrar]

	// An agent enrolls: it receives the release key.
	var reg api.RegisterAgentResponse
	decodeInto(t, c.do(t, call{method: "POST", path: "/api/v1/agents", token: registrar, want: 201,
		body: api.RegisterAgentRequest{ID: uuid.NewString(), Hostname: "files-1"}}), &reg)
	pub, err := base64.StdEncoding.DecodeString(reg.ReleasePublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("release_public_key %q: want the base64 of 32 bytes", reg.ReleasePublicKey)
	}

	// Larger than the 1 MiB limit of JSON bodies: the upload streams.
	agentBin := randomBytes(t, 3<<20+5)
	before := time.Now().UTC().Add(-time.Second)
	var up api.File
	decodeInto(t, c.upload(t, upload{query: url.Values{"name": {"tether-agent-linux-amd64"}}, token: operator, body: agentBin, want: 201}), &up)
	if up.Name != "tether-agent-linux-amd64" || up.Size != int64(len(agentBin)) || up.SHA256 != sha256Hex(agentBin) ||
		up.Uploader != "test-operator" || up.UploadedAt.Before(before) {
		t.Errorf("uploaded %+v", up)
	}
	// The signature verifies with the key of enrollment, over the raw
	// digest.
	sum := sha256.Sum256(agentBin)
	sig, _ := base64.StdEncoding.DecodeString(up.Signature)
	if !ed25519.Verify(pub, sum[:], sig) {
		t.Errorf("the signature %q does not verify with the release key of enrollment", up.Signature)
	}
	if err := files.Verify(pub, up.SHA256, up.Signature); err != nil {
		t.Errorf("files.Verify: %v", err)
	}
	// The same bytes again: 200, the first upload's metadata.
	var again api.File
	decodeInto(t, c.upload(t, upload{query: url.Values{"name": {"other-name"}}, token: admin, body: agentBin, want: 200}), &again)
	if again != up {
		t.Errorf("second upload of the same bytes: %+v, want %+v", again, up)
	}
	plugin := []byte("#!/bin/sh\necho plugin\n")
	var pl api.File
	decodeInto(t, c.upload(t, upload{query: url.Values{"name": {"plugin.sh"}, "sha256": {sha256Hex(plugin)}}, token: admin, body: plugin, want: 201}), &pl)
	if pl.Uploader != "test-admin" || pl.Size != int64(len(plugin)) {
		t.Errorf("uploaded %+v", pl)
	}
	empty := []byte{}
	c.upload(t, upload{query: url.Values{"name": {"empty"}}, token: admin, body: empty, want: 201})

	var list api.FileList
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/files", token: viewer, want: 200}), &list)
	if len(list.Items) != 3 || list.Items[1].SHA256 != pl.SHA256 || list.Items[2] != up {
		t.Errorf("files: %+v; want empty, the plugin, the agent", list)
	}
	var shown api.File
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/files/" + up.SHA256, token: viewer, want: 200}), &shown)
	if shown != up {
		t.Errorf("shown %+v, want %+v", shown, up)
	}

	// Upgrade commands name stored files with their signature.
	upgrade := func(sha, sig string) api.CreateCommandRequest {
		args, _ := json.Marshal(map[string]string{"version": "2.0.0", "sha256": sha, "file": "tether-agent", "signature": sig})
		return api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: agentID}, Action: api.Action{Name: "upgrade", Args: args}}
	}
	c.do(t, call{method: "POST", path: "/api/v1/commands", token: operator, want: 201, body: upgrade(up.SHA256, up.Signature)})

	errCases := []struct {
		call
		code, field string
	}{
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400, body: upgrade(sha256Hex([]byte("absent")), up.Signature)}, "invalid", "action.args.sha256"},
		{call{method: "POST", path: "/api/v1/commands", token: operator, want: 400, body: upgrade(up.SHA256, pl.Signature)}, "invalid", "action.args.signature"},
		{call{method: "GET", path: "/api/v1/files/" + sha256Hex([]byte("absent")), token: viewer, want: 404}, "not_found", ""},
		{call{method: "GET", path: "/api/v1/files/" + strings.ToUpper(up.SHA256), token: viewer, want: 400, invalid: true}, "invalid", "sha256"},
		{call{method: "GET", path: "/api/v1/files", token: registrar, want: 403}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/files/" + up.SHA256, token: registrar, want: 403}, "forbidden", ""},
		{call{method: "GET", path: "/api/v1/files", want: 401, invalid: true}, "unauthorized", ""},
	}
	for _, ec := range errCases {
		t.Run(fmt.Sprintf("%d %s %s", ec.want, ec.method, ec.path), func(t *testing.T) {
			wantError(t, c.do(t, ec.call), ec.code, ec.field)
		})
	}
	uploadErrs := []struct {
		upload
		code, field string
	}{
		{upload{query: url.Values{"name": {"x"}}, token: viewer, body: plugin, want: 403}, "forbidden", ""},
		{upload{query: url.Values{"name": {"x"}}, token: registrar, body: plugin, want: 403}, "forbidden", ""},
		{upload{query: url.Values{"name": {"x"}}, body: plugin, want: 401, invalid: true}, "unauthorized", ""},
		{upload{query: url.Values{}, token: operator, body: plugin, want: 400, invalid: true}, "invalid", "name"},
		{upload{query: url.Values{"name": {"a/b"}}, token: operator, body: plugin, want: 400}, "invalid", "name"},
		{upload{query: url.Values{"name": {"x"}, "sha256": {"xyz"}}, token: operator, body: plugin, want: 400, invalid: true}, "invalid", "sha256"},
		{upload{query: url.Values{"name": {"x"}, "sha256": {up.SHA256}}, token: operator, body: plugin, want: 400}, "invalid", "sha256"},
	}
	for _, ec := range uploadErrs {
		t.Run(fmt.Sprintf("%d upload %v", ec.want, ec.query), func(t *testing.T) {
			wantError(t, c.upload(t, ec.upload), ec.code, ec.field)
		})
	}
	decodeInto(t, c.do(t, call{method: "GET", path: "/api/v1/files", token: viewer, want: 200}), &list)
	if len(list.Items) != 3 {
		t.Errorf("refused uploads stored files: %+v", list)
	}
}

func TestUploadTooLarge(t *testing.T) {
	e := newEnvWith(t, func(o *mgmt.Options) { o.Files = openFiles(t, files.Options{MaxBytes: 1000}) })
	operator := e.tokens[tether.RoleOperator]
	post := func(body io.Reader, length int64) (int, api.Error) {
		t.Helper()
		req := e.uploadRequest(t, upload{query: url.Values{"name": {"big"}}, token: operator})
		req.Body, req.ContentLength = io.NopCloser(body), length
		resp, data := send(t, req)
		var er api.ErrorResponse
		_ = json.Unmarshal(data, &er)
		return resp.StatusCode, er.Error
	}
	// Announced too large: refused before the body is read. The body
	// never ends, so reading it would hang the test.
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go pw.Write(make([]byte, 100))
	status, er := post(pr, 10<<20)
	if status != 413 || er.Code != "too_large" || !strings.Contains(er.Message, "limit of 1000 bytes") {
		t.Errorf("announced 10 MiB: %d %+v; want 413 naming the limit", status, er)
	}
	// Not announced (chunked): refused once the limit is passed.
	status, er = post(bytes.NewReader(make([]byte, 1001)), -1)
	if status != 413 || er.Code != "too_large" {
		t.Errorf("chunked 1001 bytes: %d %+v; want 413", status, er)
	}
	status, _ = post(bytes.NewReader(make([]byte, 1000)), -1)
	if status != 201 {
		t.Errorf("1000 bytes: %d, want 201", status)
	}
	code, data := e.do(t, "GET", "/api/v1/files", operator, nil)
	var list api.FileList
	decodeInto(t, data, &list)
	if code != 200 || len(list.Items) != 1 || list.Items[0].Size != 1000 {
		t.Errorf("files after the refused uploads: %d %+v; want the 1000 bytes only", code, list)
	}
}

func TestFilesNotSupportedWithoutStore(t *testing.T) {
	e := newEnvWith(t, func(o *mgmt.Options) { o.Files = nil })
	code, data := e.do(t, "GET", "/api/v1/files", e.tokens[tether.RoleViewer], nil)
	if code != http.StatusNotImplemented {
		t.Errorf("list without a file store: %d %s, want 501", code, data)
	}
	var reg api.RegisterAgentResponse
	_, data = e.do(t, "POST", "/api/v1/agents", e.tokens[tether.RoleAdmin], api.RegisterAgentRequest{ID: uuid.NewString()})
	decodeInto(t, data, &reg)
	if reg.AgentKey == "" || reg.ReleasePublicKey != "" {
		t.Errorf("registration without a file store: %+v; want no release key", reg)
	}
}
