package filterd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The host's TLS material for the hidden bridge's API (TLSDir):
//
//	ca.pem, ca-key.pem          the host CA (created at first start)
//	filterd.pem, filterd-key.pem filterd's server certificate
//
// Client certificates (the control VM's agent, an operator's vfctl) are
// issued from the same CA with `filterd issue-cert`. The directory is 0700
// and every key 0600; a directory or key others can read is refused.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca-key.pem"
	serverCertFile = "filterd.pem"
	serverKeyFile  = "filterd-key.pem"
)

// hostCA is a loaded CA.
type hostCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func checkPrivate(path string, want os.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&^want != 0 {
		return fmt.Errorf("%s has mode %04o: others may read it (want %04o; chmod it or remove the directory to start over)", path, st.Mode().Perm(), want)
	}
	return nil
}

// loadOrCreateCA opens dir's CA, creating dir and the CA if missing.
func loadOrCreateCA(dir string) (*hostCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := checkPrivate(dir, 0o700); err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		host, _ := os.Hostname()
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "vnicfilter host CA " + host},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().AddDate(10, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		if err := writeKeyPair(certPath, keyPath, der, key); err != nil {
			return nil, err
		}
	}
	if err := checkPrivate(keyPath, 0o600); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("host CA in %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("host CA in %s: not an ECDSA CA certificate", dir)
	}
	return &hostCA{cert: cert, key: key, pem: certPEM}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// issue signs a leaf certificate: a server one for ips, or a client one.
func (ca *hostCA) issue(name string, ips []net.IP, server bool, life time.Duration) (der []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(life),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	return der, key, err
}

func writeKeyPair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// IssueClientCert writes NAME.pem, NAME-key.pem and ca.pem into out: a
// client certificate of the host CA in tlsDir, for the control VM's agent
// or an operator's vfctl on the hidden bridge.
func IssueClientCert(tlsDir, name, out string, life time.Duration) error {
	ca, err := loadOrCreateCA(tlsDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	der, key, err := ca.issue(name, nil, false, life)
	if err != nil {
		return err
	}
	if err := writeKeyPair(filepath.Join(out, name+".pem"), filepath.Join(out, name+"-key.pem"), der, key); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, caCertFile), ca.pem, 0o644)
}

// serverTLS is the hidden API's TLS config: filterd's certificate for ip
// (reissued at every start), and client certificates of the host CA
// required.
func serverTLS(dir string, ip net.IP) (*tls.Config, error) {
	ca, err := loadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	der, key, err := ca.issue("filterd", []net.IP{ip}, true, 365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := writeKeyPair(filepath.Join(dir, serverCertFile), filepath.Join(dir, serverKeyFile), der, key); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}
