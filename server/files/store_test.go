package files_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/files"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// newStore opens a store in a temporary directory with a new key and a
// clock that advances a second at each upload.
func newStore(t *testing.T, dir string, o files.Options) *files.Store {
	t.Helper()
	key, err := files.EnsureKey(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if o.Now == nil {
		var mu sync.Mutex
		now := t0
		o.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Second)
			return now
		}
	}
	s, err := files.Open(dir, key, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sha(b []byte) string {
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

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestPutStatOpenList(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "files")
	s := newStore(t, dir, files.Options{})
	agentBin, plugin := randomBytes(t, 3<<20+17), []byte("plugin v1")

	info, created, err := s.Put(ctx, "tether-agent-linux-amd64", "ops", bytes.NewReader(agentBin), sha(agentBin))
	if err != nil || !created {
		t.Fatalf("put: %v, created %v", err, created)
	}
	want := files.Info{Name: "tether-agent-linux-amd64", Size: int64(len(agentBin)), SHA256: sha(agentBin),
		UploadedAt: t0.Add(time.Second), Uploader: "ops", Signature: info.Signature}
	if *info != want {
		t.Errorf("info %+v, want %+v", *info, want)
	}
	if err := files.Verify(s.PublicKey(), info.SHA256, info.Signature); err != nil {
		t.Errorf("signature: %v", err)
	}
	// Exactly the raw digest is signed.
	sum := sha256.Sum256(agentBin)
	if !ed25519.Verify(s.PublicKey(), sum[:], mustB64(t, info.Signature)) {
		t.Errorf("the signature is not Ed25519 over the raw SHA-256 digest")
	}
	if _, _, err := s.Put(ctx, "plugin", "admin", bytes.NewReader(plugin), ""); err != nil {
		t.Fatal(err)
	}

	got, err := s.Stat(info.SHA256)
	if err != nil || *got != *info {
		t.Errorf("stat: %+v, %v", got, err)
	}
	f, meta, err := s.Open(info.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(data, agentBin) || *meta != *info {
		t.Errorf("open: %d bytes, meta %+v", len(data), meta)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "plugin" || list[1].SHA256 != info.SHA256 {
		t.Errorf("list: %+v; want plugin then the agent", list)
	}
	st, err := os.Stat(filepath.Join(dir, info.SHA256))
	if err != nil || st.Size() != int64(len(agentBin)) || st.Mode().Perm() != 0o600 {
		t.Errorf("blob: %v, %v", st, err)
	}

	// Another store on the directory (a restart) sees the same files.
	s2 := newStore(t, dir, files.Options{})
	list2, err := s2.List()
	if err != nil || len(list2) != 2 || *list2[1] != *info {
		t.Errorf("after reopening: %+v, %v", list2, err)
	}
	if !s2.PublicKey().Equal(s.PublicKey()) {
		t.Errorf("the release key changed across a restart")
	}

	for _, bad := range []string{"", "ABC", strings.Repeat("g", 64), strings.Repeat("A", 64)} {
		if _, err := s.Stat(bad); tether.ErrorCode(err) != tether.EINVALID {
			t.Errorf("stat %q: %v, want invalid", bad, err)
		}
	}
	if _, err := s.Stat(sha([]byte("absent"))); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("stat absent: %v, want not found", err)
	}
	if _, _, err := s.Open(sha([]byte("absent"))); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("open absent: %v, want not found", err)
	}
}

func TestPutSameBytesKeepsTheFirst(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, filepath.Join(t.TempDir(), "files"), files.Options{})
	first, created, err := s.Put(ctx, "a", "alice", strings.NewReader("same"), "")
	if err != nil || !created {
		t.Fatal(err, created)
	}
	again, created, err := s.Put(ctx, "b", "bob", strings.NewReader("same"), "")
	if err != nil || created || *again != *first {
		t.Errorf("second put: %+v created %v err %v; want the first, not created", again, created, err)
	}
}

func TestPutConcurrentSameBytes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "files")
	s := newStore(t, dir, files.Options{})
	data := randomBytes(t, 1<<20)
	var wg sync.WaitGroup
	var mu sync.Mutex
	createdN := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, created, err := s.Put(ctx, "f"+string(rune('0'+i)), "u", bytes.NewReader(data), "")
			if err != nil {
				t.Error(err)
			}
			if created {
				mu.Lock()
				createdN++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if createdN != 1 {
		t.Errorf("%d uploads created the file, want 1", createdN)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{sha(data), sha(data) + ".json"}) {
		t.Errorf("directory holds %v", got)
	}
}

func TestPutTooLarge(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "files")
	s := newStore(t, dir, files.Options{MaxBytes: 1000})
	_, _, err := s.Put(ctx, "big", "u", bytes.NewReader(make([]byte, 1001)), "")
	if tether.ErrorCode(err) != tether.ETOOLARGE || !strings.Contains(tether.ErrorMessage(err), "1000 bytes") {
		t.Errorf("1001 bytes: %v, want too_large naming the limit", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("a refused upload left %v", got)
	}
	if _, _, err := s.Put(ctx, "fits", "u", bytes.NewReader(make([]byte, 1000)), ""); err != nil {
		t.Errorf("1000 bytes: %v", err)
	}
}

// failAfter accepts n bytes, then fails every write with err.
type failAfter struct {
	w   io.Writer
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n, _ := f.w.Write(p[:f.n])
		f.n = 0
		return n, f.err
	}
	f.n -= len(p)
	return f.w.Write(p)
}

func TestPutDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "files")
	s := newStore(t, dir, files.Options{})
	files.SetWriteHook(s, func(w io.Writer) io.Writer { return &failAfter{w: w, n: 300 << 10, err: syscall.ENOSPC} })
	_, _, err := s.Put(ctx, "agent", "u", bytes.NewReader(randomBytes(t, 1<<20)), "")
	if tether.ErrorCode(err) != tether.EUNAVAILABLE || !strings.Contains(tether.ErrorMessage(err), "disk is full") {
		t.Errorf("full disk: %v (%q), want unavailable saying the disk is full", err, tether.ErrorMessage(err))
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("a failed upload left %v", got)
	}
	// Another disk error is internal, and leaves nothing either.
	files.SetWriteHook(s, func(w io.Writer) io.Writer { return &failAfter{w: w, n: 10, err: syscall.EIO} })
	if _, _, err := s.Put(ctx, "agent", "u", strings.NewReader(strings.Repeat("x", 100)), ""); tether.ErrorCode(err) != tether.EINTERNAL {
		t.Errorf("I/O error: %v, want internal", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("a failed upload left %v", got)
	}
}

func TestPutRefusesWrongDigestAndName(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "files")
	s := newStore(t, dir, files.Options{})
	_, _, err := s.Put(ctx, "f", "u", strings.NewReader("damaged"), sha([]byte("original")))
	if e, ok := err.(*tether.Error); !ok || e.Code != tether.EINVALID || e.Field != "sha256" {
		t.Errorf("wrong digest: %v, want invalid sha256", err)
	}
	if _, _, err := s.Put(ctx, "f", "u", strings.NewReader("x"), "XYZ"); tether.ErrorCode(err) != tether.EINVALID {
		t.Errorf("malformed digest: %v", err)
	}
	if _, _, err := s.Put(ctx, "../etc/passwd", "u", strings.NewReader("x"), ""); tether.ErrorCode(err) != tether.EINVALID {
		t.Errorf("bad name: %v", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("refused uploads left %v", got)
	}
}

func TestPutCanceled(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "files")
	s := newStore(t, dir, files.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Put(ctx, "f", "u", strings.NewReader("x"), ""); tether.ErrorCode(err) != tether.ECANCELED {
		t.Errorf("canceled: %v", err)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("part"))
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	if _, _, err := s.Put(context.Background(), "f", "u", pr, ""); tether.ErrorCode(err) != tether.EINVALID {
		t.Errorf("body cut short: %v, want invalid", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("a canceled upload left %v", got)
	}
}

func TestOpenCleansUpAfterACrash(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "files")
	newStore(t, dir, files.Options{})
	data := []byte("agent v2")
	// A crash mid-upload leaves a temporary file; a crash between the
	// rename and the metadata leaves a file without metadata.
	if err := os.WriteFile(filepath.Join(dir, ".upload-123"), []byte("agent"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sha(data)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, dir, files.Options{})
	if got := entries(t, dir); !slices.Equal(got, []string{sha(data)}) {
		t.Errorf("after reopening: %v; want the partial upload removed", got)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("list: %v %v; a file without metadata is not listed", list, err)
	}
	if _, _, err := s.Open(sha(data)); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("open a file without metadata: %v, want not found", err)
	}
	info, created, err := s.Put(ctx, "agent", "u", bytes.NewReader(data), "")
	if err != nil || !created || info.Size != int64(len(data)) {
		t.Fatalf("upload again: %+v %v %v", info, created, err)
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"tether-agent-linux-amd64": true, "Agent 2.0 (beta).tar.gz": true, "é": true,
		"": false, ".": false, "..": false, "a/b": false, `a\b`: false, "a\nb": false, "\x00": false,
		strings.Repeat("a", 255): true, strings.Repeat("a", 256): false, "\xff": false,
	} {
		if err := files.CheckName("name", name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

func TestEnsureKey(t *testing.T) {
	dir := t.TempDir()
	key, err := files.EnsureKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, files.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v; want mode 0600", st, err)
	}
	again, err := files.EnsureKey(dir)
	if err != nil || !again.Equal(key) {
		t.Errorf("second start: a different key (%v)", err)
	}
	// The public key file is rewritten when missing.
	os.Remove(filepath.Join(dir, files.PublicKeyFile))
	if _, err := files.EnsureKey(dir); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, files.PublicKeyFile))
	if err != nil || !strings.HasPrefix(string(pub), "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("public key file: %q %v", pub, err)
	}
	if err := os.WriteFile(filepath.Join(dir, files.KeyFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := files.EnsureKey(dir); err == nil || !strings.Contains(err.Error(), files.KeyFile) {
		t.Errorf("damaged key: %v, want an error naming the file", err)
	}
}

func TestVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	sum := sha256.Sum256([]byte("release"))
	hexSum := hex.EncodeToString(sum[:])
	sig := files.Sign(key, sum)
	if len(sig) != 88 {
		t.Errorf("signature %q: want 88 base64 characters", sig)
	}
	if err := files.Verify(pub, hexSum, sig); err != nil {
		t.Errorf("verify: %v", err)
	}
	otherSum := sha256.Sum256([]byte("other"))
	for _, c := range []struct {
		pub      ed25519.PublicKey
		sum, sig string
	}{
		{other, hexSum, sig},
		{pub, hex.EncodeToString(otherSum[:]), sig},
		{pub, hexSum, "not base64"},
		{pub, "xyz", sig},
		{nil, hexSum, sig},
	} {
		if files.Verify(c.pub, c.sum, c.sig) == nil {
			t.Errorf("Verify(%x, %s, %s) accepted", c.pub, c.sum, c.sig)
		}
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
