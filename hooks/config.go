package hooks

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// ConfigName is the hook's configuration file, kept in libvirt's hooks
// directory (/etc/libvirt/hooks/vnicfilter.conf), beside qemu.d/ rather
// than in it: libvirt runs every executable file under qemu.d/.
const ConfigName = "vnicfilter.conf"

// Config is what the hook reads from its configuration file. libvirt runs
// hooks with a clean environment (PATH, HOME and LC_ALL=C only, measured
// on libvirt 9.0), so a file beside the hook is the only way to tell it
// where filterd listens.
type Config struct {
	// Socket is filterd's API socket; api.DefaultSocket when empty.
	Socket string
	// Timeout bounds each filterd call; DefaultTimeout when zero.
	Timeout time.Duration
	// NetworkDir holds the persistent network definitions read for
	// portgroup defaults; DefaultNetworkDir when empty.
	NetworkDir string
	// BPFFSRoot is filterd's bpffs root (filterd --bpffs-root), where the
	// hook pins drop-all guards while filterd is down; DefaultBPFFSRoot
	// when empty.
	BPFFSRoot string
	// HiddenBridge is filterd's hidden bridge (filterd --hidden-bridge):
	// a domain whose interface is on it is refused unless its tap name
	// matches HiddenAllow (the control VM). Empty: no check.
	HiddenBridge string
	// HiddenAllow are the tap name patterns allowed on the hidden bridge;
	// "vfcvm*" when empty.
	HiddenAllow []string
	// MigrateState: best-effort (default), required or off (migrate.go).
	MigrateState MigrateState
	// MarkerDir holds the markers of domains arriving by migration;
	// DefaultMarkerDir when empty.
	MarkerDir string
}

// DefaultBPFFSRoot is filterd's default bpffs root (datapath.DefaultRoot).
const DefaultBPFFSRoot = "/sys/fs/bpf/vnicfilter"

// ConfigPath returns where the hook installed as hookPath (libvirt passes
// the full path as argv[0]) finds its configuration: the hooks directory,
// the parent of qemu.d/ — or the hook's own directory when it is installed
// elsewhere (e.g. as /etc/libvirt/hooks/qemu itself).
func ConfigPath(hookPath string) string {
	dir := filepath.Dir(hookPath)
	if filepath.Base(dir) == "qemu.d" {
		dir = filepath.Dir(dir)
	}
	return filepath.Join(dir, ConfigName)
}

// LoadConfig reads a configuration file of "key=value" lines; blank lines
// and lines starting with # are ignored. A missing file gives the defaults.
// Keys: socket (path), timeout (Go duration, e.g. 10s), network-dir (path),
// bpffs-root (path; bpffs_root is accepted too), hidden-bridge (name),
// hidden-allow (comma-separated glob patterns), migrate-state
// (best-effort, required or off), marker-dir (path).
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read hook configuration: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || v == "" {
			return c, fmt.Errorf("%s:%d: want key=value, got %q", path, n, line)
		}
		switch k {
		case "socket":
			c.Socket = v
		case "network-dir":
			c.NetworkDir = v
		case "bpffs-root", "bpffs_root":
			c.BPFFSRoot = v
		case "hidden-bridge":
			c.HiddenBridge = v
		case "hidden-allow":
			c.HiddenAllow = strings.Split(v, ",")
			for _, p := range c.HiddenAllow {
				if _, err := filepath.Match(p, "x"); err != nil || p == "" {
					return c, fmt.Errorf("%s:%d: hidden-allow pattern %q is not a valid glob", path, n, p)
				}
			}
		case "migrate-state":
			c.MigrateState = MigrateState(v)
			if err := c.MigrateState.validate(); err != nil {
				return c, fmt.Errorf("%s:%d: %v", path, n, err)
			}
		case "marker-dir":
			c.MarkerDir = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return c, fmt.Errorf("%s:%d: timeout %q: want a positive duration such as 10s", path, n, v)
			}
			c.Timeout = d
		default:
			return c, fmt.Errorf("%s:%d: unknown key %q (known: socket, timeout, network-dir, bpffs-root, hidden-bridge, hidden-allow, migrate-state, marker-dir)", path, n, k)
		}
	}
	return c, sc.Err()
}

// WithDefaults fills the empty fields.
func (c Config) WithDefaults() Config {
	if c.Socket == "" {
		c.Socket = api.DefaultSocket
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.NetworkDir == "" {
		c.NetworkDir = DefaultNetworkDir
	}
	if c.BPFFSRoot == "" {
		c.BPFFSRoot = DefaultBPFFSRoot
	}
	if c.MigrateState == "" {
		c.MigrateState = MigrateBestEffort
	}
	if c.MarkerDir == "" {
		c.MarkerDir = DefaultMarkerDir
	}
	if c.HiddenBridge != "" && len(c.HiddenAllow) == 0 {
		c.HiddenAllow = []string{"vfcvm*"}
	}
	return c
}
