package testlab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// LibvirtdOptions configure a libvirtd started by [StartLibvirtd]. The zero
// value starts a plain libvirtd with no hooks.
type LibvirtdOptions struct {
	// HooksDir, when set, is what this libvirtd sees as /etc/libvirt/hooks:
	// its "qemu" file and "qemu.d/" directory are the hooks it runs. The
	// host's /etc/libvirt/hooks is not touched. libvirtd looks for hooks at
	// start-up, so HooksDir/qemu must exist before StartLibvirtd.
	HooksDir string
	// Env is added to libvirtd's environment ("KEY=value"). libvirt runs
	// hooks (and QEMU) with a clean environment: of Env only PATH and HOME
	// reach a hook (measured: PATH, HOME, LC_ALL=C). A hook under test finds
	// its configuration next to itself in HooksDir, or through PATH.
	Env []string
	// HostUUID, when set, is libvirtd.conf's host_uuid: two libvirtds on
	// one machine need distinct ones to migrate between them (libvirt
	// refuses a migration "to the same host" by this UUID).
	HostUUID string
}

// Libvirtd is a libvirtd started by the tests, private to them.
//
// It runs in its own mount namespace, where /etc/libvirt, /run/libvirt,
// /var/lib/libvirt and /var/log/libvirt are bind mounts of directories
// under Dir: the host's libvirt configuration and any system libvirtd are
// never touched, and several test binaries can each run their own. It shares
// the host's network namespace, so its taps are created next to the test's
// bridges. It is started in the foreground in its own session, with its own
// pid file, and stopped by that pid.
type Libvirtd struct {
	dir    string
	socket string
	logf   func(string, ...any)
	pid    int
	conn   *libvirt.Libvirt
	exited chan struct{} // closed once the process is reaped
	err    error         // how it exited; valid after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// labPrefix names lab directories in os.TempDir(); [reapStale] finds the
// ones whose test binary died by it.
const labPrefix = "vftestlab-lab-"

// StartLibvirtd starts a private libvirtd and stops it when t ends. It skips
// t (fails it under CI=true) when libvirt or QEMU is missing. Start one per
// test binary through [Shared] unless a test needs its own hooks: each start
// costs libvirtd's start-up and its QEMU capability probe.
func StartLibvirtd(t testing.TB, opts LibvirtdOptions) *Libvirtd {
	t.Helper()
	need(t, needRoot, needLibvirtd, needQEMU, needLibvirtUsers)
	l, err := startLibvirtd(t.Logf, opts)
	if err != nil {
		t.Fatalf("start libvirtd: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Stop(); err != nil {
			t.Errorf("stop libvirtd: %v", err)
		}
	})
	return l
}

var shared struct {
	once  sync.Once
	hooks string // HooksDir it was started with
	l     *Libvirtd
	err   error
}

// Shared returns the test binary's libvirtd, started on first use with no
// hooks. Call [StopShared] at the end of TestMain:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		testlab.StopShared()
//		os.Exit(code)
//	}
func Shared(t testing.TB) *Libvirtd {
	t.Helper()
	return sharedStart(t, LibvirtdOptions{}, false)
}

// SharedWith is [Shared] for a test binary whose tests all need the same
// options, such as a HooksDir prepared in TestMain (libvirtd reads the
// hooks directory only at start-up). The first call starts the libvirtd
// with opts; every later call must pass the same HooksDir.
func SharedWith(t testing.TB, opts LibvirtdOptions) *Libvirtd {
	t.Helper()
	return sharedStart(t, opts, true)
}

func sharedStart(t testing.TB, opts LibvirtdOptions, check bool) *Libvirtd {
	t.Helper()
	need(t, needRoot, needLibvirtd, needQEMU, needLibvirtUsers)
	shared.once.Do(func() {
		shared.hooks = opts.HooksDir
		shared.l, shared.err = startLibvirtd(stderrf, opts)
	})
	if shared.err != nil {
		t.Fatalf("start shared libvirtd: %v", shared.err)
	}
	if check && opts.HooksDir != shared.hooks {
		t.Fatalf("shared libvirtd runs with HooksDir %q, not %q: pass the same options to every SharedWith", shared.hooks, opts.HooksDir)
	}
	return shared.l
}

// StopShared stops the libvirtd of [Shared], if one was started, destroying
// any domain still defined, and removes the image directory
// BuildGuestImage(t, "") made. Errors go to stderr: TestMain has no t.
func StopShared() {
	if shared.l != nil {
		if err := shared.l.Stop(); err != nil {
			stderrf("stop shared libvirtd: %v", err)
		}
	}
	if err := removeDefaultImage(); err != nil {
		stderrf("remove guest image: %v", err)
	}
}

// stderrf logs where no test is at hand: the shared libvirtd outlives tests.
func stderrf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testlab: "+format+"\n", args...)
}

// Socket is the path of the read-write socket, for clients other than
// [Libvirtd.Virsh] and [Libvirtd.Conn] (qemu:///system?socket=PATH).
func (l *Libvirtd) Socket() string { return l.socket }

// URI is the connection URI virsh and libvirt clients use for this libvirtd.
func (l *Libvirtd) URI() string { return "qemu:///system?socket=" + l.socket }

// Dir is the libvirtd's private root: etc/ (its /etc/libvirt), run/, lib/,
// log/ (QEMU's stdout/stderr per domain in log/qemu/NAME.log) and
// libvirtd.log (the daemon's own stderr).
func (l *Libvirtd) Dir() string { return l.dir }

// PID is the process id of libvirtd, as its pid file records it.
func (l *Libvirtd) PID() int { return l.pid }

// Virsh runs virsh against this libvirtd and returns its standard output.
// The error carries virsh's standard error.
func (l *Libvirtd) Virsh(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("virsh", append([]string{"-q", "-c", l.URI()}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Conn opens a go-libvirt connection to this libvirtd, closed when t ends.
func (l *Libvirtd) Conn(t testing.TB) *libvirt.Libvirt {
	t.Helper()
	c, err := l.dial()
	if err != nil {
		t.Fatalf("connect to libvirtd: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect() })
	return c
}

func (l *Libvirtd) dial() (*libvirt.Libvirt, error) {
	c := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(l.socket), dialers.WithLocalTimeout(5*time.Second)))
	if err := c.Connect(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", l.socket, err)
	}
	return c, nil
}

// mountPoints are the directories libvirtd sees replaced by its private
// ones (name under Dir → path in its mount namespace). /run/libvirt holds
// the sockets and the QEMU driver's state (pid files, monitors); the others
// hold configuration, persistent domains, and logs.
var mountPoints = [][2]string{
	{"etc", "/etc/libvirt"},
	{"run", "/run/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"},
	{"cache", "/var/cache/libvirt"},
}

// qemuConf: no virtlogd (QEMU's stdio goes straight to a file), no
// AppArmor/SELinux labelling, QEMU as root so it reads kernels and writes
// console logs anywhere a test puts them.
const qemuConf = `# written by vnicfilter libvirt/testlab
stdio_handler = "file"
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
`

// libvirtdConf: root-only socket without polkit (there is no D-Bus here).
const libvirtdConf = `# written by vnicfilter libvirt/testlab
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
`

func startLibvirtd(logf func(string, ...any), opts LibvirtdOptions) (*Libvirtd, error) {
	reapStale(logf)
	dir, err := os.MkdirTemp("", labPrefix)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	for _, m := range mountPoints {
		if err := os.MkdirAll(filepath.Join(dir, m[0]), 0o755); err != nil {
			return nil, err
		}
		// The mount points must exist on the host; /run/libvirt does not
		// when no system libvirtd ever ran. An empty directory is left.
		if err := os.MkdirAll(m[1], 0o755); err != nil {
			return nil, fmt.Errorf("mount point: %w", err)
		}
	}
	if cache := capabilitiesCache(); cache != "" {
		// Probing QEMU's capabilities takes seconds under TCG; libvirt
		// revalidates the cache against the QEMU and libvirtd binaries.
		if err := os.Remove(filepath.Join(dir, "cache")); err == nil {
			if err := os.Symlink(cache, filepath.Join(dir, "cache")); err != nil {
				return nil, err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "qemu.conf"), []byte(qemuConf), 0o644); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "libvirtd.conf")
	confText := libvirtdConf
	if opts.HostUUID != "" {
		confText += fmt.Sprintf("host_uuid = %q\n", opts.HostUUID)
	}
	if err := os.WriteFile(conf, []byte(confText), 0o644); err != nil {
		return nil, err
	}
	if opts.HooksDir != "" {
		hooks, err := filepath.Abs(opts.HooksDir)
		if err != nil {
			return nil, err
		}
		if err := os.Symlink(hooks, filepath.Join(dir, "etc", "hooks")); err != nil {
			return nil, err
		}
	}
	if err := writeOwner(dir); err != nil {
		return nil, err
	}

	l := &Libvirtd{dir: dir, socket: filepath.Join(dir, "run", "libvirt-sock"), logf: logf, exited: make(chan struct{})}
	pidFile := filepath.Join(dir, "libvirtd.pid")
	logFile, err := os.Create(filepath.Join(dir, "libvirtd.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	// sh binds the private directories in the new mount namespace, then
	// becomes libvirtd: the pid Go starts is libvirtd's pid.
	script := `set -e
while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done
shift
exec "$@"`
	args := []string{"-c", script, "sh"}
	for _, m := range mountPoints {
		src, err := filepath.EvalSymlinks(filepath.Join(dir, m[0]))
		if err != nil {
			return nil, err
		}
		args = append(args, src, m[1])
	}
	args = append(args, "--", "libvirtd", "--pid-file", pidFile, "--config", conf)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid: true, // like setsid(1): no terminal signals from the test's session
		// A private mount namespace; Go also makes "/" recursively private
		// in it, so the bind mounts never propagate to the host.
		Unshareflags: syscall.CLONE_NEWNS,
		// A test binary killed by -timeout takes its libvirtd along; the
		// next run's reapStale kills the QEMUs it leaves.
		Pdeathsig: syscall.SIGTERM,
	}

	// Start and reap on one goroutine locked to its OS thread: Pdeathsig
	// fires when the thread that forked exits, so it must live as long as
	// libvirtd; and a fresh goroutine runs in the host's namespaces, while
	// a test's own goroutine may be locked into another network namespace.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		l.err = cmd.Wait()
		close(l.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("run libvirtd: %w", err)
	}
	l.pid = cmd.Process.Pid

	if err := l.waitReady(pidFile, 30*time.Second); err != nil {
		l.kill(logf)
		return nil, fmt.Errorf("%w\nlibvirtd.log:\n%s", err, tail(filepath.Join(dir, "libvirtd.log"), 20))
	}
	conn, err := l.dial()
	if err != nil {
		l.kill(logf)
		return nil, err
	}
	l.conn = conn
	ok = true
	return l, nil
}

// waitReady waits until libvirtd wrote its pid file and accepts
// connections on its socket.
func (l *Libvirtd) waitReady(pidFile string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-l.exited:
			return fmt.Errorf("libvirtd exited at start-up: %v", l.err)
		default:
		}
		if pid, err := readPid(pidFile); err == nil {
			if pid != l.pid {
				return fmt.Errorf("pid file %s names %d, we started %d", pidFile, pid, l.pid)
			}
			if c, err := net.Dial("unix", l.socket); err == nil {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("libvirtd not ready after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop destroys and undefines every domain still known to this libvirtd
// (QEMU outlives libvirtd otherwise), ends libvirtd by its pid — SIGTERM,
// SIGKILL after 10 s — and removes its directory. Safe to call twice.
func (l *Libvirtd) Stop() error {
	l.stopOnce.Do(func() {
		logf := l.logf
		var errs []error
		if l.conn != nil {
			errs = append(errs, destroyAll(l.conn, logf))
			_ = l.conn.Disconnect()
		}
		errs = append(errs, l.kill(logf))
		errs = append(errs, killQEMUs(filepath.Join(l.dir, "run", "qemu"), logf))
		errs = append(errs, os.RemoveAll(l.dir))
		l.stopErr = errors.Join(errs...)
	})
	return l.stopErr
}

// kill ends the libvirtd we started. It signals the pid we forked — which
// the pid file must name — never a process found by name: another test
// binary's libvirtd looks just the same.
func (l *Libvirtd) kill(logf func(string, ...any)) error {
	select {
	case <-l.exited:
		return nil
	default:
	}
	if err := syscall.Kill(l.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal libvirtd %d: %w", l.pid, err)
	}
	select {
	case <-l.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	logf("libvirtd %d ignored SIGTERM for 10s; sending SIGKILL", l.pid)
	_ = syscall.Kill(l.pid, syscall.SIGKILL)
	select {
	case <-l.exited:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("libvirtd %d survived SIGKILL", l.pid)
	}
}

// destroyAll destroys every running domain and undefines every domain.
func destroyAll(c *libvirt.Libvirt, logf func(string, ...any)) error {
	doms, _, err := c.ConnectListAllDomains(1, 0)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	var errs []error
	for _, d := range doms {
		if state, _, err := c.DomainGetState(d, 0); err == nil && libvirt.DomainState(state) != libvirt.DomainShutoff {
			logf("destroying leftover domain %s", d.Name)
			if err := c.DomainDestroy(d); err != nil {
				errs = append(errs, fmt.Errorf("destroy %s: %w", d.Name, err))
			}
		}
		if err := c.DomainUndefineFlags(d, 0); err != nil {
			errs = append(errs, fmt.Errorf("undefine %s: %w", d.Name, err))
		}
	}
	return errors.Join(errs...)
}

// killQEMUs kills QEMU processes whose pid files are left in the QEMU
// driver's state directory: libvirtd removes them when it stops a domain,
// so any left belong to a domain libvirtd could not destroy.
func killQEMUs(stateDir string, logf func(string, ...any)) error {
	files, _ := filepath.Glob(filepath.Join(stateDir, "*.pid"))
	var errs []error
	for _, f := range files {
		pid, err := readPid(f)
		if err != nil || !isProcess(pid, "qemu-system") {
			continue
		}
		logf("killing leftover QEMU %d (%s)", pid, filepath.Base(f))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill QEMU %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// capabilitiesCache is a directory kept across runs for libvirt's QEMU
// capability cache, or "" when there is no user cache directory.
func capabilitiesCache() string {
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	d := filepath.Join(base, "vnicfilter", "testlab-libvirt-cache")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return ""
	}
	return d
}

// writeOwner records which process owns a lab directory (see [ownerTag]),
// so a later run can tell a crashed run's libvirtd from a live one's.
func writeOwner(dir string) error {
	tag, err := ownerTag()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "owner"), []byte(tag+"\n"), 0o644)
}

// reapStale cleans up after test binaries that died without stopping their
// libvirtd: for each lab directory whose owner process is gone, it destroys
// the domains through the lab's socket, ends libvirtd by the pid in the
// lab's pid file, kills QEMUs left by pid file, and removes the directory;
// it also removes their default image directories.
// Labs of live processes — other test binaries running now — are left alone.
func reapStale(logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), labPrefix+"*"))
	images, _ := filepath.Glob(filepath.Join(os.TempDir(), imagePrefix+"*"))
	for _, dir := range images {
		if b, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil && !ownerAlive(strings.TrimSpace(string(b))) {
			_ = os.RemoveAll(dir)
		}
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue // being created, or not ours
		}
		owner := strings.TrimSpace(string(b))
		if ownerAlive(owner) {
			continue // another test binary's lab, in use
		}
		logf("reaping lab %s of dead test process (%s)", dir, owner)
		if pid, err := readPid(filepath.Join(dir, "libvirtd.pid")); err == nil && isProcess(pid, "libvirtd") {
			l := &Libvirtd{dir: dir, socket: filepath.Join(dir, "run", "libvirt-sock")}
			if c, err := l.dial(); err == nil {
				_ = destroyAll(c, logf)
				_ = c.Disconnect()
			}
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 100 && isProcess(pid, "libvirtd"); i++ {
				time.Sleep(100 * time.Millisecond)
			}
			if isProcess(pid, "libvirtd") {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = killQEMUs(filepath.Join(dir, "run", "qemu"), logf)
		_ = os.RemoveAll(dir)
	}
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// isProcess reports whether pid is alive and runs a binary whose name
// starts with prefix (so a reused pid is not mistaken for ours).
func isProcess(pid int, prefix string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	return strings.HasPrefix(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), prefix)
}

// procStartTime is field 22 of /proc/PID/stat: when the process started,
// in clock ticks since boot.
func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces; fields after ")" are safe.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f[19], nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
