package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"": 0o700, CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", name, fi.Mode(), err, want)
		}
	}
	// Loading again gives the same CA, and a loosened directory is
	// tightened.
	os.Chmod(dir, 0o755)
	again, err := LoadOrCreateCA(dir)
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("reload: %v, same CA %v", err, err == nil && again.Cert.Equal(ca.Cert))
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %o after reload, want 700", fi.Mode().Perm())
	}

	// The server certificate is kept while it covers the names, re-issued
	// when a name is added.
	c1, err := ca.ServerCert(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := ca.ServerCert(dir, []string{"localhost"})
	c3, _ := ca.ServerCert(dir, []string{"localhost", "mgr.example"})
	if !slices.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Error("server certificate re-issued though it covers the names")
	}
	leaf, _ := x509.ParseCertificate(c3.Certificate[0])
	if slices.Equal(c1.Certificate[0], c3.Certificate[0]) || !slices.Contains(leaf.DNSNames, "mgr.example") {
		t.Errorf("server certificate not re-issued for a new name: %v", leaf.DNSNames)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "mgr.example"}); err != nil {
		t.Errorf("server certificate does not verify against the CA: %v", err)
	}

	// A CSR becomes a client-auth certificate for the host, whatever
	// subject it asked for.
	csr, _, err := NewCSR("evil-admin")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, serial, err := ca.SignClient(csr, "host1")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if cert.Subject.CommonName != "host1" || cert.SerialNumber.Text(16) != serial || !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("client certificate CN %q serial %s usages %v", cert.Subject.CommonName, serial, cert.ExtKeyUsage)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	// Tampered or foreign requests are refused.
	bad := []byte(string(csr[:len(csr)-40]) + "AAAA" + string(csr[len(csr)-36:]))
	if _, _, err := ca.SignClient(bad, "host1"); err == nil {
		t.Error("a tampered CSR was signed")
	}
	if _, _, err := ca.SignClient(certPEM, "host1"); err == nil {
		t.Error("a certificate was accepted as a CSR")
	}
}
