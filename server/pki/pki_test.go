package pki_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetherhq/tether/server/pki"
)

func TestEnsureCreatesThenKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	ca, err := pki.EnsureCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	names := pki.HostNames("tether.example.com")
	cert, err := pki.EnsureServerCert(ca, dir, names)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, n := range []string{"localhost", "127.0.0.1", "tether.example.com"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: pool}); err != nil {
			t.Errorf("server certificate does not verify for %s: %v", n, err)
		}
	}
	st, err := os.Stat(filepath.Join(dir, pki.CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", st.Mode(), err)
	}

	ca2, err := pki.EnsureCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Cert.Equal(ca.Cert) {
		t.Fatal("restart replaced the CA")
	}
	cert2, err := pki.EnsureServerCert(ca2, dir, names)
	if err != nil {
		t.Fatal(err)
	}
	if !cert2.Leaf.Equal(cert.Leaf) {
		t.Fatal("restart reissued a server certificate that still fits")
	}
	cert3, err := pki.EnsureServerCert(ca2, dir, append(names, "new.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if cert3.Leaf.VerifyHostname("new.example.com") != nil {
		t.Fatal("a newly configured name did not cause a reissue")
	}
}

func TestCACertWithoutKeyIsAnError(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := pki.NewCA("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.EnsureCA(dir, "x"); err == nil {
		t.Fatal("EnsureCA accepted a CA certificate without its key")
	}
}
