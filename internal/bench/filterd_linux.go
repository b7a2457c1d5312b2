package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// daemon is a filterd private to one benchmark run: its own socket, bpffs
// root and state directory, inside the benchmark's host namespace.
type daemon struct {
	proc     *child
	client   *api.Client
	tmp      string // socket, state and log
	bpffs    string // /sys/fs/bpf/vfbench-<rand>
	logPath  string
	attached map[string]bool // vNICs with a chain, detached by close
}

// findFilterd resolves the --filterd flag: the given path, else
// ./bin/filterd (what `make build` produces), else filterd on $PATH.
func findFilterd(flag string) (string, error) {
	if flag != "" {
		p, err := exec.LookPath(flag)
		if err != nil {
			return "", fmt.Errorf("filterd binary %s: %w", flag, err)
		}
		return filepath.Abs(p)
	}
	if st, err := os.Stat("bin/filterd"); err == nil && !st.IsDir() {
		return filepath.Abs("bin/filterd")
	}
	p, err := exec.LookPath("filterd")
	if err != nil {
		return "", errors.New("no filterd binary: run `make build` (it writes bin/filterd) or pass --filterd PATH; --cases baseline runs without it")
	}
	return p, nil
}

// startDaemon launches filterd inside h and waits until its API answers.
func startDaemon(ctx context.Context, bin string, h *host) (_ *daemon, err error) {
	suffix := randomHex(4)
	d := &daemon{bpffs: "/sys/fs/bpf/vfbench-" + suffix, attached: map[string]bool{}}
	d.tmp, err = os.MkdirTemp("", "vfbench-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if err != nil {
			d.close(false)
		}
	}()
	sock := filepath.Join(d.tmp, "filterd.sock")
	state := filepath.Join(d.tmp, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	d.logPath = filepath.Join(d.tmp, "filterd.log")
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, fmt.Errorf("create filterd log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	d.proc, err = startIn(h.ns.path, logf, bin, "--socket", sock, "--bpffs-root", d.bpffs, "--state-dir", state)
	if err != nil {
		return nil, err
	}
	d.client = api.NewClient(sock)
	deadline := time.Now().Add(15 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, verr := d.client.Version(cctx)
		cancel()
		switch {
		case verr == nil:
			return d, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case d.proc.exited():
			return nil, fmt.Errorf("filterd exited at start-up (%v): %s", d.proc.err, d.logTail())
		case time.Now().After(deadline):
			return nil, fmt.Errorf("filterd API on %s did not answer within 15s: %v: %s", sock, verr, d.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logTail is the end of filterd's log, for error messages.
func (d *daemon) logTail() string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return "(no log)"
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	s := strings.TrimSpace(string(b))
	if len(s) > 1500 {
		s = "…" + s[len(s)-1500:]
	}
	if s == "" {
		return "(empty log)"
	}
	return "filterd log: " + s
}

// setChain replaces vnic's datapath: detach whatever is there, then, for a
// non-nil chain, PUT the chain.
func (d *daemon) setChain(ctx context.Context, vnic string, chain []api.FilterSpec) error {
	if err := d.detach(ctx, vnic); err != nil {
		return err
	}
	if chain == nil {
		return nil
	}
	if _, err := d.client.SetChain(ctx, vnic, api.ChainRequest{Filters: chain, Owner: "vfbench"}); err != nil {
		return d.wrap(fmt.Sprintf("set chain of %s", vnic), err)
	}
	d.attached[vnic] = true
	return nil
}

// detach removes vnic's chain; no chain is not an error.
func (d *daemon) detach(ctx context.Context, vnic string) error {
	if !d.attached[vnic] {
		return nil
	}
	if err := d.client.Detach(ctx, vnic); err != nil && !api.IsCode(err, api.CodeNotAttached) {
		return d.wrap(fmt.Sprintf("detach %s", vnic), err)
	}
	delete(d.attached, vnic)
	return nil
}

// wrap adds what was asked to an API error, and says so when the daemon
// is gone: a dropped connection is then a crash, not a network problem.
func (d *daemon) wrap(what string, err error) error {
	if !d.proc.exited() {
		// A crash closes the socket before Wait returns: give it a moment.
		select {
		case <-d.proc.done:
		case <-time.After(200 * time.Millisecond):
		}
	}
	if d.proc.exited() {
		return fmt.Errorf("%s: %w (filterd exited: %v)", what, err, d.proc.err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// close detaches every chain it set (best effort), stops filterd by pid
// (SIGTERM, SIGKILL after 5s) and removes its bpffs root — which unpins
// anything left — and its temporary directory.
//
// When the run failed (failed) or filterd died under it, the log is kept
// and its path is reported: it is the daemon's only account of what
// happened.
func (d *daemon) close(failed bool) error {
	var errs []error
	crashed := d.proc != nil && d.proc.exited()
	if d.proc != nil && !crashed {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for vnic := range d.attached {
			if err := d.detach(ctx, vnic); err != nil {
				errs = append(errs, err)
			}
		}
		cancel()
		d.proc.stop(5 * time.Second)
	}
	if (failed || crashed) && d.logPath != "" {
		kept := filepath.Join(os.TempDir(), "vfbench-filterd-"+randomHex(4)+".log")
		if os.Rename(d.logPath, kept) == nil {
			what := "filterd log kept in " + kept
			if crashed {
				what = fmt.Sprintf("filterd exited during the run (%v); its log is in %s", d.proc.err, kept)
			}
			errs = append(errs, errors.New(what))
		}
	}
	if err := os.RemoveAll(d.bpffs); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d.bpffs, err))
	}
	if err := os.RemoveAll(d.tmp); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d.tmp, err))
	}
	return errors.Join(errs...)
}
