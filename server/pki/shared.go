package pki

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tetherhq/tether"
)

// CASecret is the name of the cluster CA in the store's secrets: its
// certificate, then its key, PEM-encoded.
const CASecret = "tls/ca"

// Secrets holds named cluster secrets (see tether.KeyStore).
type Secrets interface {
	Secret(ctx context.Context, name string) ([]byte, error)
	PutSecretOnce(ctx context.Context, name string, value []byte) ([]byte, error)
}

// EnsureSharedCA returns the CA of the nodes that share the store, and
// writes its certificate to dir/ca.crt (0644; dir is created 0700) for the
// agents and tools that must trust it. The CA lives in the store, key
// included; no node writes the key to a file.
//
//   - When the store holds a CA, it is the one. A dir/ca.crt of another CA
//     is an error: that data directory was initialised with a CA of its
//     own, which the agents enrolled through it trust.
//   - Otherwise a CA found in dir (ca.crt and ca.key, from a node that ran
//     before its CA moved to the store) is stored, so that a node keeps
//     its CA when it moves to the store, or to a cluster's new store.
//   - Otherwise a new CA is created and stored, unless another node stored
//     one first: then the CA is that one.
func EnsureSharedCA(ctx context.Context, store Secrets, dir, commonName string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create TLS directory: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	localCert, certErr := os.ReadFile(certPath)
	if certErr != nil && !errors.Is(certErr, os.ErrNotExist) {
		return nil, fmt.Errorf("read CA certificate: %w", certErr)
	}
	stored, err := store.Secret(ctx, CASecret)
	switch {
	case err == nil:
	case tether.ErrorCode(err) != tether.ENOTFOUND:
		return nil, fmt.Errorf("read the cluster CA from the store: %w", err)
	case certErr == nil:
		// A CA of this data directory, from before the store kept it.
		localKey, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("%s has no key to share with the other nodes (%s): %w", certPath, keyPath, err)
		}
		if _, err := parseCA(localCert, localKey); err != nil {
			return nil, err
		}
		if stored, err = store.PutSecretOnce(ctx, CASecret, append(bytes.Clone(localCert), localKey...)); err != nil {
			return nil, fmt.Errorf("store the CA: %w", err)
		}
	default:
		ca, keyPEM, err := NewCA(commonName)
		if err != nil {
			return nil, err
		}
		if stored, err = store.PutSecretOnce(ctx, CASecret, append(bytes.Clone(ca.CertPEM), keyPEM...)); err != nil {
			return nil, fmt.Errorf("store the CA: %w", err)
		}
	}
	ca, err := parseCABundle(stored)
	if err != nil {
		return nil, fmt.Errorf("the cluster CA in the store: %w", err)
	}
	if certErr == nil {
		local, err := parseCert(localCert)
		if err != nil || !local.Equal(ca.Cert) {
			return nil, fmt.Errorf("%s is not the CA of the store's other nodes: this data directory was "+
				"initialised with a CA of its own. Move %s aside and start again: the node then uses the "+
				"store's CA, which the agents and tools enrolled through this directory must then trust", certPath, dir)
		}
		return ca, nil
	}
	if err := writeFile(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// parseCABundle reads a certificate and a key, PEM blocks one after the
// other.
func parseCABundle(data []byte) (*CA, error) {
	var certPEM, keyPEM []byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			certPEM = pem.EncodeToMemory(block)
		} else {
			keyPEM = pem.EncodeToMemory(block)
		}
	}
	if certPEM == nil || keyPEM == nil {
		return nil, errors.New("want a PEM certificate and a PEM key")
	}
	return parseCA(certPEM, keyPEM)
}
