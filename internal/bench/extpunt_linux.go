package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// loadExtPunt loads the slow-ext case's external filter into the daemon
// when a selected case uses it: a slow-path-only manifest whose process is
// this very binary. A failure skips the case, it does not end the run.
func loadExtPunt(ctx context.Context, o Options, d *daemon, cs []benchCase, c *collected) {
	uses := slices.ContainsFunc(cs, func(bc benchCase) bool {
		return slices.ContainsFunc(bc.chain, func(f api.FilterSpec) bool { return f.Name == ExtPuntFilter })
	})
	if !uses {
		return
	}
	self, err := os.Executable()
	if err == nil {
		m := map[string]any{
			"name": ExtPuntFilter, "version": "1.0.0", "abi": sdk.ABIVersion,
			"summary":  "vfbench: pass every frame through an external slow-path process",
			"failmode": "closed", "slowpath": map[string]any{"command": []string{self}},
		}
		var b []byte
		if b, err = json.Marshal(m); err == nil {
			_, err = d.client.LoadFilter(ctx, api.LoadFilterRequest{Manifest: b})
		}
	}
	if err != nil {
		for _, bc := range cs {
			if slices.ContainsFunc(bc.chain, func(f api.FilterSpec) bool { return f.Name == ExtPuntFilter }) {
				c.skipped[bc.name] = fmt.Sprintf("load the external slow-path filter: %v", err)
			}
		}
		logf(o.Log, "NOTE: external slow-path filter not loaded: %v", err)
	}
}
