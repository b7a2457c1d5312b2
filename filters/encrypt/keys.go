package encrypt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyStore keeps one host's private key in a file only root can read: the
// key is generated on the host and never leaves it; only the public key is
// handed to the control plane.
type KeyStore struct {
	// Dir holds the key files; created 0700, refused when group or others
	// may enter it.
	Dir string
	// Name is the tunnel's name: the key lives in Dir/<Name>.key.
	Name string
}

// Path is the private key file.
func (s KeyStore) Path() string { return filepath.Join(s.Dir, s.Name+".key") }

func (s KeyStore) checkDir() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	st, err := os.Stat(s.Dir)
	if err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("key directory %s is not a directory", s.Dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key directory %s is mode %04o: group and others must have no access (chmod 0700 %s)", s.Dir, st.Mode().Perm(), s.Dir)
	}
	return nil
}

// LoadOrCreate returns the host's private key, generating and storing a new
// one the first time.
func (s KeyStore) LoadOrCreate() (Key, error) {
	if err := s.checkDir(); err != nil {
		return Key{}, err
	}
	k, err := s.load()
	if errors.Is(err, fs.ErrNotExist) {
		if k, err = NewPrivateKey(); err != nil {
			return Key{}, err
		}
		return k, s.Store(k)
	}
	return k, err
}

func (s KeyStore) load() (Key, error) {
	f, err := os.Open(s.Path())
	if err != nil {
		return Key{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Key{}, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Key{}, fmt.Errorf("private key %s is mode %04o: only its owner may read it (chmod 0600 %s)", s.Path(), st.Mode().Perm(), s.Path())
	}
	buf := make([]byte, 128)
	n, _ := f.Read(buf)
	k, err := ParseKey(string(buf[:n]))
	if err != nil {
		return Key{}, fmt.Errorf("private key %s: malformed (want base64 of 32 bytes)", s.Path())
	}
	return k, nil
}

// Store writes k as the host's private key, atomically (a crash leaves the
// old key or the new one, never half of either).
func (s KeyStore) Store(k Key) error {
	if err := s.checkDir(); err != nil {
		return err
	}
	tmp := s.Path() + ".new"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write private key: %w", err)
	}
	_, err = f.WriteString(k.String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.Path())
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write private key %s: %w", s.Path(), err)
	}
	return nil
}

// HostPublicKey returns, in the peers file's form (base64), the public key
// of the host's tunnel named tunnel whose private key lives in keyDir,
// creating the key pair the first time: what a control-plane agent reads to
// publish the host into the other hosts' peers files (the private key stays
// in keyDir).
func HostPublicKey(keyDir, tunnel string) (string, error) {
	k, err := KeyStore{Dir: keyDir, Name: tunnel}.LoadOrCreate()
	if err != nil {
		return "", err
	}
	return k.Public().String(), nil
}
