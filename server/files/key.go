package files

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tetherhq/tether"
)

// File names of the release-signing key in the server's data directory.
const (
	KeyFile       = "release.key" // PKCS #8 PEM, 0600
	PublicKeyFile = "release.pub" // PKIX PEM, 0644, for operators
)

// EnsureKey loads the release-signing key from DIR/release.key, creating
// it (0600) when the file does not exist, and writes its public key to
// DIR/release.pub (0644) when that file is missing or differs.
func EnsureKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	var key ed25519.PrivateKey
	switch {
	case err == nil:
		if key, err = ParseKey(data); err != nil {
			return nil, fmt.Errorf("release-signing key %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate release-signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode release-signing key: %w", err)
		}
		if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("write release-signing key: %w", err)
		}
	default:
		return nil, fmt.Errorf("read release-signing key: %w", err)
	}
	if err := writePublicKey(dir, key); err != nil {
		return nil, err
	}
	return key, nil
}

// writePublicKey writes the public half of key to DIR/release.pub (0644)
// when that file is missing or differs.
func writePublicKey(dir string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode release public key: %w", err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pubPath := filepath.Join(dir, PublicKeyFile)
	if old, err := os.ReadFile(pubPath); err != nil || string(old) != string(pub) {
		if err := writeFileAtomic(pubPath, pub, 0o644); err != nil {
			return fmt.Errorf("write release public key: %w", err)
		}
	}
	return nil
}

// ParseKey decodes a PEM block "PRIVATE KEY" holding a PKCS #8 Ed25519 key.
func ParseKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM block \"PRIVATE KEY\"")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an Ed25519 key", k)
	}
	return key, nil
}

// Sign returns the signature of a file whose SHA-256 digest is sum, as the
// package documentation describes it: Ed25519 over the 32 raw bytes of the
// digest, in standard base64.
func Sign(key ed25519.PrivateKey, sum [sha256.Size]byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(key, sum[:]))
}

// Verify checks a signature made by Sign for the file whose digest is the
// lowercase hex sha256.
func Verify(pub ed25519.PublicKey, sha256Hex, signature string) error {
	sum, err := hex.DecodeString(sha256Hex)
	if err != nil || len(sum) != sha256.Size {
		return errors.New("the digest is not 64 hex digits")
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("the signature is not the base64 of 64 bytes")
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, sum, sig) {
		return errors.New("the signature does not match the file's digest and the release key")
	}
	return nil
}

// EncodePublicKey returns the standard base64 of the 32 bytes of pub, the
// form the registration answer carries.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, fsynced and renamed; the directory is fsynced too.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// KeySecret is the name of the release-signing key in the store's secrets
// (PKCS #8 PEM).
const KeySecret = "release-signing-key"

// Secrets holds named cluster secrets (see tether.KeyStore).
type Secrets interface {
	Secret(ctx context.Context, name string) ([]byte, error)
	PutSecretOnce(ctx context.Context, name string, value []byte) ([]byte, error)
}

// EnsureSharedKey returns the release-signing key of the nodes that share
// the store, and writes its public key to DIR/release.pub (0644) when that
// file is missing or differs. The key lives in the store; no node writes it
// to a file.
//
//   - When the store holds a key, it is the one. A DIR/release.key of
//     another key is an error: agents enrolled through that data directory
//     pinned its key.
//   - Otherwise a key found in DIR/release.key (from a node that ran before
//     its key moved to the store) is stored, so that a node keeps the key
//     its agents pinned when it moves to the store.
//   - Otherwise a new key is created and stored, unless another node stored
//     one first: then the key is that one.
func EnsureSharedKey(ctx context.Context, store Secrets, dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	local, localErr := os.ReadFile(path)
	if localErr != nil && !errors.Is(localErr, os.ErrNotExist) {
		return nil, fmt.Errorf("read release-signing key: %w", localErr)
	}
	stored, err := store.Secret(ctx, KeySecret)
	switch {
	case err == nil:
	case tether.ErrorCode(err) != tether.ENOTFOUND:
		return nil, fmt.Errorf("read the release-signing key from the store: %w", err)
	case localErr == nil:
		if _, err := ParseKey(local); err != nil {
			return nil, fmt.Errorf("release-signing key %s: %w", path, err)
		}
		if stored, err = store.PutSecretOnce(ctx, KeySecret, local); err != nil {
			return nil, fmt.Errorf("store the release-signing key: %w", err)
		}
	default:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate release-signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode release-signing key: %w", err)
		}
		if stored, err = store.PutSecretOnce(ctx, KeySecret, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return nil, fmt.Errorf("store the release-signing key: %w", err)
		}
	}
	key, err := ParseKey(stored)
	if err != nil {
		return nil, fmt.Errorf("the release-signing key in the store: %w", err)
	}
	if localErr == nil {
		if mine, err := ParseKey(local); err != nil || !mine.Equal(key) {
			return nil, fmt.Errorf("%s is not the release-signing key of the store's other nodes: the agents "+
				"enrolled through this data directory pinned it, and would refuse the files the others sign. "+
				"Move it aside to use the store's key (and enroll those agents again)", path)
		}
	}
	if err := writePublicKey(dir, key); err != nil {
		return nil, err
	}
	return key, nil
}
