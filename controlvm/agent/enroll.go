package agent

import (
	"context"
	"crypto/tls"

	"fmt"
	"os"
	"path/filepath"

	"github.com/vnicfilter/vnicfilter/internal/fsutil"
	mapi "github.com/vnicfilter/vnicfilter/manager/api"
)

// Files the agent keeps in its credentials directory.
const (
	CertFile = "agent.crt"      // client certificate from the manager CA
	KeyFile  = "agent.key"      // its private key, 0600; never leaves the host
	CAFile   = "manager-ca.pem" // the manager CA, as the enrollment answer named it
)

// Enrolled reports whether dir holds the agent's credentials.
func Enrolled(dir string) bool {
	for _, f := range []string{CertFile, KeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// Enroll exchanges a single-use join token for a client certificate of
// the manager CA (the key is made here and only a CSR leaves) and writes
// the credentials into dir (0700; key 0600). caPEM is the manager CA the
// operator gave the host: the enrollment is over TLS to that CA only.
func Enroll(ctx context.Context, server string, caPEM []byte, token, host, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	e, err := mapi.Enroll(ctx, server, caPEM, token, host)
	if err != nil {
		return fmt.Errorf("enroll %s with %s: %w", host, server, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KeyFile, e.KeyPEM, 0o600}, {CertFile, e.CertPEM, 0o644}, {CAFile, e.CAPEM, 0o644}} {
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save %s: %w", f.name, err)
		}
	}
	return nil
}

// ManagerClient returns a client of the manager at server using the
// credentials in dir.
func ManagerClient(server, dir string) (*mapi.Client, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("agent certificate in %s: %w (enroll first: vfagent enroll)", dir, err)
	}
	if st, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("agent key %s is readable by others (mode %04o): chmod 600 it", filepath.Join(dir, KeyFile), st.Mode().Perm())
	}
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("manager CA: %w", err)
	}
	return mapi.NewClient(mapi.ClientOptions{Server: server, CA: ca, Certificate: &cert})
}
