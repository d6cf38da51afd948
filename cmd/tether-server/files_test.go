package main

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
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/agent"
	"github.com/tetherhq/tether/api"
)

// getFile sends GET (or HEAD) /api/v1/files/{sum} to the comms listener
// with the JWT and extra headers, and returns the answer with its body.
func getFile(t *testing.T, hc *http.Client, n *Node, method, sum, jwt string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, n.CommsURL+"/api/v1/files/"+sum, nil)
	if err != nil {
		t.Fatal(err)
	}
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestFilesFromUploadToAgent uploads a release through the management API,
// enrolls an agent with the agent's own code, and downloads the file from
// the comms listener the way an upgrading agent does: resuming with Range,
// then checking the digest and the signature with the pinned key.
func TestFilesFromUploadToAgent(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	n := testNode(t, dataDir)
	admin := adminClient(t, n)

	release := make([]byte, 5<<20+123)
	if _, err := rand.Read(release); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(release)
	hexSum := hex.EncodeToString(sum[:])
	up, err := admin.UploadFile(ctx, api.Upload{Name: "tether-agent-linux-amd64", Body: bytes.NewReader(release), Size: int64(len(release)), SHA256: hexSum})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if up.SHA256 != hexSum || up.Size != int64(len(release)) || up.Uploader != "admin" {
		t.Fatalf("uploaded %+v", up)
	}
	if st, err := os.Stat(filepath.Join(dataDir, "release.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("release key: %v %v; want DATA/release.key with mode 0600", st, err)
	}

	// The agent enrolls and pins the release key.
	tok, err := admin.CreateEnrollmentToken(ctx, api.CreateEnrollmentTokenRequest{MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	agentDir := t.TempDir()
	ident, err := agent.Enroll(ctx, agent.EnrollOptions{Server: n.APIURL, Token: tok.Token, CACertFile: n.CACertFile, DataDir: agentDir})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	loaded, err := agent.LoadIdentity(agentDir)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := loaded.ReleasePublicKey()
	if err != nil {
		t.Fatalf("pinned key: %v", err)
	}

	hc := httpsClient(t, n)
	st, out := connectJSON(t, hc, n, "Authenticate", "", fmt.Sprintf(`{"agentId":%q,"agentKey":%q}`, ident.AgentID, ident.AgentKey))
	if st != 200 {
		t.Fatalf("Authenticate: %d %v", st, out)
	}
	jwt := out["token"].(string)

	// A download cut after 1 MiB...
	req, _ := http.NewRequest("GET", n.CommsURL+"/api/v1/files/"+hexSum, nil)
	req.Header.Set("Authorization", "Bearer "+jwt)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(release)) || resp.Header.Get("ETag") != `"`+hexSum+`"` ||
		resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET: %d, length %d, headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	got := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// ...resumes from where it stopped.
	resp, rest := getFile(t, hc, n, "GET", hexSum, jwt, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(got)), "If-Range": `"` + hexSum + `"`})
	wantRange := fmt.Sprintf("bytes %d-%d/%d", len(got), len(release)-1, len(release))
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != wantRange ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(release)-len(got)) {
		t.Fatalf("resume: %d, Content-Range %q (want %q), Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Range"), wantRange, resp.Header.Get("Content-Length"))
	}
	got = append(got, rest...)
	gotSum := sha256.Sum256(got)
	if gotSum != sum {
		t.Fatalf("the resumed download differs from the upload")
	}
	sig, err := base64.StdEncoding.DecodeString(up.Signature)
	if err != nil || !ed25519.Verify(pub, gotSum[:], sig) {
		t.Fatalf("the signature does not verify with the key pinned at enrollment")
	}

	// A middle range, a stale If-Range, a cached copy, HEAD.
	resp, part := getFile(t, hc, n, "GET", hexSum, jwt, map[string]string{"Range": "bytes=10-19"})
	if resp.StatusCode != 206 || !bytes.Equal(part, release[10:20]) {
		t.Errorf("bytes=10-19: %d, %d bytes", resp.StatusCode, len(part))
	}
	resp, whole := getFile(t, hc, n, "GET", hexSum, jwt, map[string]string{"Range": "bytes=10-19", "If-Range": `"other"`})
	if resp.StatusCode != 200 || len(whole) != len(release) {
		t.Errorf("Range with a stale If-Range: %d, %d bytes; want the whole file", resp.StatusCode, len(whole))
	}
	resp, _ = getFile(t, hc, n, "GET", hexSum, jwt, map[string]string{"If-None-Match": `"` + hexSum + `"`})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	resp, body := getFile(t, hc, n, "HEAD", hexSum, jwt, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != strconv.Itoa(len(release)) || len(body) != 0 {
		t.Errorf("HEAD: %d, Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
	}
	resp, _ = getFile(t, hc, n, "GET", hexSum, jwt, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(release))})
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d, want 416", resp.StatusCode)
	}

	// Refusals, in the Connect error format.
	other := sha256.Sum256([]byte("absent"))
	for _, c := range []struct {
		name, sum, jwt string
		status         int
		code           string
	}{
		{"no token", hexSum, "", 401, "unauthenticated"},
		{"bad token", hexSum, jwt + "x", 401, "unauthenticated"},
		{"unknown file", hex.EncodeToString(other[:]), jwt, 404, "not_found"},
		{"malformed digest", "not-a-digest", jwt, 400, "invalid_argument"},
	} {
		resp, body := getFile(t, hc, n, "GET", c.sum, c.jwt, nil)
		var er struct{ Code, Message string }
		if err := json.Unmarshal(body, &er); err != nil || resp.StatusCode != c.status || er.Code != c.code || er.Message == "" {
			t.Errorf("%s: %d %s; want %d with code %s", c.name, resp.StatusCode, body, c.status, c.code)
		}
	}
	// A removed agent's token no longer downloads.
	if err := admin.DeleteAgent(ctx, ident.AgentID); err != nil {
		t.Fatal(err)
	}
	if resp, body := getFile(t, hc, n, "GET", hexSum, jwt, nil); resp.StatusCode != 403 {
		t.Errorf("removed agent: %d %s, want 403", resp.StatusCode, body)
	}
}

// TestReleaseKeyKeptAcrossRestarts checks a restart on the same data
// directory keeps the release key and the files.
func TestReleaseKeyKeptAcrossRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.CommsAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	log := slog.New(slog.DiscardHandler)
	register := func(n *Node) string {
		t.Helper()
		resp, err := adminClient(t, n).RegisterAgent(ctx, api.RegisterAgentRequest{ID: uuid.NewString()})
		if err != nil {
			t.Fatal(err)
		}
		return resp.ReleasePublicKey
	}
	n1, err := startNode(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	key1 := register(n1)
	up, err := adminClient(t, n1).UploadFile(ctx, api.Upload{Name: "f", Body: bytes.NewReader([]byte("release")), Size: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	n2, err := startNode(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown(ctx)
	if key2 := register(n2); key2 == "" || key2 != key1 {
		t.Errorf("release key %q after a restart, %q before", key2, key1)
	}
	got, err := adminClient(t, n2).GetFile(ctx, up.SHA256)
	if err != nil || *got != *up {
		t.Errorf("file after a restart: %+v, %v; want %+v", got, err, up)
	}
}
