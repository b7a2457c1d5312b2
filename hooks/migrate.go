package hooks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
)

// The live-migration part of the hook (docs/migration.md). libvirt runs,
// on the destination, `migrate begin` (the incoming XML, before anything
// else), then `prepare begin`, `start begin` and `started begin` while it
// sets up the incoming QEMU — all of them while the guest still runs on the
// source, since the destination's vCPUs start only at the end of the
// migration (Finish phase: VIR_DOMAIN_EVENT_RESUMED_MIGRATED); no hook
// runs between the source's pause and the destination's resume. On the
// source, `stopped end` and `release end` run after the migration
// succeeded (the guest already runs on the destination).
//
//   - migrate (destination): validate the XML, and note that the domain is
//     arriving (a marker file in Hook.MarkerDir).
//   - start (destination, arriving domain): attach the chains as for any
//     start, then have filterd pull each interface's state from the source
//     filterd (mutual TLS) and import it: the bulk, taken while the guest
//     still runs on the source.
//   - stopped (source): have filterd push the final state of the domain's
//     vNICs to the destinations that pulled them, then detach as always.
//     (filterd's libvirt watcher pushes it earlier, when the source pauses
//     for the last copy: VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED.)
//   - stopped/release of a migration that failed on the destination:
//     detach there as always; the source was only read from, so its chain
//     and state are untouched.

// Mover is the part of filterd's API the migration steps use; *api.Client
// implements it. A Client that does not implement it moves no state.
type Mover interface {
	PullState(ctx context.Context, vnic string, req api.PullRequest) (*api.PullResult, error)
	Handoff(ctx context.Context, req api.HandoffRequest) (*api.HandoffResult, error)
}

var _ Mover = (*api.Client)(nil)

// MigrateState says what the hook does with a migrating domain's
// connection state.
type MigrateState string

const (
	// MigrateBestEffort (the default) moves the state; if it cannot, the
	// domain arrives with its chains (its policy enforced) but without its
	// connections, which the policy may cut, and the hook says so.
	MigrateBestEffort MigrateState = "best-effort"
	// MigrateRequired refuses the migration (the hook fails `start` on the
	// destination, libvirt aborts, the source runs on) if the state cannot
	// be moved.
	MigrateRequired MigrateState = "required"
	// MigrateOff moves no state: the switch that shows what moving it buys.
	MigrateOff MigrateState = "off"
)

// DefaultMarkerDir holds the markers of arriving domains.
const DefaultMarkerDir = "/run/vnicfilter/hook"

// markerTTL: a marker older than this is from a migration that never
// reached start here, and is ignored.
const markerTTL = time.Hour

func (h Hook) markerPath(domain string) string {
	dir := h.MarkerDir
	if dir == "" {
		dir = DefaultMarkerDir
	}
	return filepath.Join(dir, strings.ReplaceAll(domain, "/", "_")+".incoming")
}

// markIncoming notes at `migrate` that the domain arrives by migration.
func (r *run) markIncoming() error {
	if _, ok := r.Client.(Mover); !ok {
		return nil
	}
	p := r.markerPath(r.domain)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600)
}

// incoming reports (once: the marker is removed) whether the domain
// starting here arrives by migration.
func (r *run) incoming() bool {
	p := r.markerPath(r.domain)
	st, err := os.Stat(p)
	if err != nil {
		return false
	}
	_ = os.Remove(p)
	return time.Since(st.ModTime()) < markerTTL
}

// clearIncoming removes the marker of a migration that ended here before
// start (refused, cancelled).
func (r *run) clearIncoming() {
	if err := os.Remove(r.markerPath(r.domain)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.note("remove the migration marker: %v", err)
	}
}

// pullState imports, for an arriving domain, each interface's state from
// the source filterd. It returns a non-zero exit status only when the
// state is required and could not be moved; the caller then detaches the
// chains it attached.
func (r *run) pullState(ctx context.Context, chains []domainxml.Chain) int {
	if r.MigrateState == MigrateOff {
		r.note("arriving by migration: connection state not moved (migrate-state=off)")
		return 0
	}
	mv, ok := r.Client.(Mover)
	if !ok {
		return 0
	}
	owner := "libvirt:" + r.domain
	for _, c := range chains {
		req := api.PullRequest{Owner: owner}
		if c.MAC != nil {
			req.MAC = c.MAC.String()
		}
		var res *api.PullResult
		err := r.call(ctx, func(ctx context.Context) (err error) {
			res, err = mv.PullState(ctx, c.Tap, req)
			return err
		})
		if err != nil {
			if r.MigrateState == MigrateRequired {
				return r.fail("interface %s: move the connection state from the source: %v: refusing the migration (migrate-state=required; the domain runs on at the source)", c.Interface(), err)
			}
			r.note("interface %s: connection state not moved: %v: the chain enforces its policy here, connections it does not allow as new are cut", c.Interface(), err)
			continue
		}
		n := 0
		if res.Import != nil {
			for _, s := range res.Import.Slots {
				n += s.Entries
			}
		}
		r.note("interface %s: moved %d state entries (%d bytes) from %s on %s in %.0f ms", c.Interface(), n, res.Bytes, res.Source, res.Peer, res.Seconds*1000)
	}
	return 0
}

// handoff pushes, at the source's `stopped`, the final state of the
// domain's vNICs to the destinations that pulled them. Never fatal.
func (r *run) handoff(ctx context.Context) {
	mv, ok := r.Client.(Mover)
	if !ok {
		return
	}
	var res *api.HandoffResult
	err := r.call(ctx, func(ctx context.Context) (err error) {
		res, err = mv.Handoff(ctx, api.HandoffRequest{Owner: "libvirt:" + r.domain})
		return err
	})
	if err != nil {
		if _, down := r.unreachable(err); !down && !api.IsCode(err, api.CodeBadRequest) {
			r.note("push the final connection state: %v", err)
		}
		return
	}
	for _, p := range res.Pushed {
		if p.Error != "" {
			r.note("%s: final connection state not pushed to %s on %s: %s", p.VNIC, p.To, p.Peer, p.Error)
		}
	}
}

// Validate reports a bad MigrateState.
func (m MigrateState) validate() error {
	switch m {
	case "", MigrateBestEffort, MigrateRequired, MigrateOff:
		return nil
	}
	return fmt.Errorf("migrate-state %q: want best-effort, required or off", string(m))
}
