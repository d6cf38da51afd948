package files

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tetherhq/tether"
)

// DefaultMaxBytes is the default size limit of a file: 1 GiB.
const DefaultMaxBytes = 1 << 30

// MaxNameBytes is the longest name a file may have.
const MaxNameBytes = 255

// Temporary files in the store's directory start with these prefixes.
const (
	uploadPrefix = ".upload-"
	tmpPrefix    = ".tmp-"
)

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Info describes a stored file.
type Info struct {
	// Name is the name it was first uploaded under.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of its bytes: its address.
	SHA256 string `json:"sha256"`
	// UploadedAt is when it was first uploaded; Uploader the name of the
	// token that uploaded it.
	UploadedAt time.Time `json:"uploaded_at"`
	Uploader   string    `json:"uploader"`
	// Signature is the release-signing key's signature of the digest (see
	// the package documentation).
	Signature string `json:"signature"`
}

// Options configure a Store.
type Options struct {
	// MaxBytes is the largest file accepted (0: DefaultMaxBytes).
	MaxBytes int64
	// Now returns the current time (time.Now when nil).
	Now func() time.Time
}

// Store keeps files content-addressed in a directory.
type Store struct {
	dir string
	key ed25519.PrivateKey
	o   Options
	// mu serialises the step that makes an upload visible, so that two
	// uploads of the same bytes store one metadata.
	mu sync.Mutex
	// wrap, when set (tests), wraps the writer of each upload.
	wrap func(io.Writer) io.Writer
}

// Open opens the store in dir, creating it (0700) if needed, and removes
// temporary files a crash left behind. key signs the files uploaded.
func Open(dir string, key ed25519.PrivateKey, o Options) (*Store, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("open file store: no release-signing key")
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create file store: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read file store: %w", err)
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, uploadPrefix) || strings.HasPrefix(n, tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return nil, fmt.Errorf("remove a partial upload: %w", err)
			}
		}
	}
	return &Store{dir: dir, key: key, o: o}, nil
}

// PublicKey returns the public half of the release-signing key.
func (s *Store) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// MaxBytes returns the size limit of a file.
func (s *Store) MaxBytes() int64 { return s.o.MaxBytes }

// CheckName returns an EINVALID error naming field when name cannot name
// a file: empty, longer than MaxNameBytes, not UTF-8, a control character,
// a slash or a backslash, or "." or "..".
func CheckName(field, name string) error {
	switch {
	case name == "":
		return tether.FieldError(field, "required: the file's name, such as tether-agent-linux-amd64")
	case len(name) > MaxNameBytes || !utf8.ValidString(name):
		return tether.FieldError(field, "want at most %d bytes of UTF-8", MaxNameBytes)
	case name == "." || name == "..":
		return tether.FieldError(field, "%q is not a file name", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == '\\' || unicode.IsControl(r) }):
		return tether.FieldError(field, "a name without slashes, backslashes or control characters")
	}
	return nil
}

// CheckSHA256 returns an EINVALID error naming field unless sum is 64
// lowercase hex digits.
func CheckSHA256(field, sum string) error {
	if !sha256RE.MatchString(sum) {
		return tether.FieldError(field, "want the SHA-256 of the file in lowercase hex (64 digits)")
	}
	return nil
}

// Put stores the bytes read from r under the name, uploaded by uploader,
// and returns their metadata. When want is set, the bytes must have that
// SHA-256. Bytes already stored are not stored twice: Put returns their
// metadata (first name, uploader and time) and created false.
//
// More than MaxBytes bytes is ETOOLARGE, a full disk EUNAVAILABLE; in
// either case nothing is left behind.
func (s *Store) Put(ctx context.Context, name, uploader string, r io.Reader, want string) (*Info, bool, error) {
	if err := CheckName("name", name); err != nil {
		return nil, false, err
	}
	if want != "" {
		if err := CheckSHA256("sha256", want); err != nil {
			return nil, false, err
		}
	}
	f, err := os.CreateTemp(s.dir, uploadPrefix+"*")
	if err != nil {
		return nil, false, diskError("create the upload file", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	n, sum, err := s.copy(ctx, f, r)
	if err == nil {
		err = syncClose(f)
	} else {
		f.Close()
	}
	if err != nil {
		return nil, false, err
	}
	hexSum := hex.EncodeToString(sum[:])
	if want != "" && hexSum != want {
		return nil, false, tether.FieldError("sha256", "the body's SHA-256 is %s, not %s: the upload was damaged or is not the file meant", hexSum, want)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if info, err := s.Stat(hexSum); err == nil {
		return info, false, nil
	} else if tether.ErrorCode(err) != tether.ENOTFOUND {
		return nil, false, err
	}
	blob := filepath.Join(s.dir, hexSum)
	if err := os.Rename(tmp, blob); err != nil {
		return nil, false, diskError("store the file", err)
	}
	info := &Info{
		Name: name, Size: n, SHA256: hexSum, UploadedAt: s.o.Now().UTC(), Uploader: uploader,
		Signature: Sign(s.key, sum),
	}
	meta, err := json.MarshalIndent(info, "", "  ")
	if err == nil {
		err = writeFileAtomic(s.metaPath(hexSum), append(meta, '\n'), 0o600)
	}
	if err != nil {
		// Without its metadata the file is not served: do not keep it.
		os.Remove(blob)
		return nil, false, diskError("store the file's metadata", err)
	}
	return info, true, nil
}

// copy copies r to f, at most MaxBytes, and returns the length and the
// SHA-256 of what it copied.
func (s *Store) copy(ctx context.Context, f *os.File, r io.Reader) (int64, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	var w io.Writer = f
	if s.wrap != nil {
		w = s.wrap(w)
	}
	w = &diskWriter{w}
	lr := &io.LimitedReader{R: &ctxReader{ctx: ctx, r: r}, N: s.o.MaxBytes + 1}
	n, err := io.CopyBuffer(io.MultiWriter(w, h), lr, make([]byte, 256<<10))
	var we *writeError
	switch {
	case errors.As(err, &we):
		return 0, sum, diskError("write the file", we.err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return 0, sum, &tether.Error{Code: tether.EINVALID, Message: "the body ended before its announced length", Err: err}
	case err != nil && tether.ErrorCode(err) != tether.EINTERNAL:
		return 0, sum, err
	case err != nil:
		return 0, sum, fmt.Errorf("read the upload: %w", err)
	case n > s.o.MaxBytes:
		return 0, sum, &tether.Error{Code: tether.ETOOLARGE,
			Message: fmt.Sprintf("the file is larger than the limit of %d bytes (files.max_bytes)", s.o.MaxBytes)}
	}
	h.Sum(sum[:0])
	return n, sum, nil
}

// Stat returns the metadata of the file with the SHA-256 sum: ENOTFOUND
// when it is not stored.
func (s *Store) Stat(sum string) (*Info, error) {
	if err := CheckSHA256("sha256", sum); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.metaPath(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, tether.NotFound("file", sum)
	}
	if err != nil {
		return nil, fmt.Errorf("read file metadata: %w", err)
	}
	info, err := decodeInfo(data)
	if err != nil || info.SHA256 != sum {
		return nil, fmt.Errorf("file metadata %s: damaged: %v", s.metaPath(sum), err)
	}
	return info, nil
}

// Open returns the stored file with the SHA-256 sum, open for reading,
// with its metadata: ENOTFOUND when it is not stored.
func (s *Store) Open(sum string) (*os.File, *Info, error) {
	info, err := s.Stat(sum)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, tether.NotFound("file", sum)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open stored file: %w", err)
	}
	return f, info, nil
}

// List returns the metadata of every stored file, newest first.
func (s *Store) List() ([]*Info, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read file store: %w", err)
	}
	out := []*Info{}
	for _, e := range entries {
		sum, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !sha256RE.MatchString(sum) {
			continue
		}
		info, err := s.Stat(sum)
		if tether.ErrorCode(err) == tether.ENOTFOUND {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b *Info) int {
		return cmp.Or(b.UploadedAt.Compare(a.UploadedAt), strings.Compare(a.SHA256, b.SHA256))
	})
	return out, nil
}

func (s *Store) metaPath(sum string) string { return filepath.Join(s.dir, sum+".json") }

// decodeInfo decodes and checks stored metadata.
func decodeInfo(data []byte) (*Info, error) {
	var info Info
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, err
	}
	switch {
	case CheckSHA256("sha256", info.SHA256) != nil:
		return nil, errors.New("no valid sha256")
	case CheckName("name", info.Name) != nil:
		return nil, errors.New("no valid name")
	case info.Size < 0:
		return nil, errors.New("negative size")
	}
	return &info, nil
}

// diskError makes a failure to write the store an error for the caller: a
// full disk (or quota) is EUNAVAILABLE with a message saying so; anything
// else is internal.
func diskError(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &tether.Error{Code: tether.EUNAVAILABLE, Err: err,
			Message: "the server's disk is full: no space left to store the file (free space in its data directory, then upload again)"}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func syncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return diskError("write the file", err)
	}
	return nil
}

// writeError marks an error of the disk, as opposed to one of the reader.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// diskWriter marks the errors of w as writeErrors.
type diskWriter struct{ w io.Writer }

func (w *diskWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
