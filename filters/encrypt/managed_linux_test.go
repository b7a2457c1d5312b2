package encrypt

import (
	"errors"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

func TestPeersAPIParam(t *testing.T) {
	p, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"peers": PeersAPI})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tunnelConfig(p, "/var/lib/vnicfilter")
	if err != nil || !cfg.ManagedPeers || cfg.PeersFile != "/var/lib/vnicfilter/encrypt/peers.json" {
		t.Fatalf("peers=api under filterd: %+v %v", cfg, err)
	}
	// Outside filterd (no state directory) peers=api names nothing.
	if _, err := tunnelConfig(p, ""); !errors.Is(err, sdk.ErrInvalidParam) {
		t.Fatalf("peers=api without filterd: %v", err)
	}
	p, _ = sdk.ValidateParams(Descriptor.Params, map[string]string{"peers": "/etc/peers.json"})
	if cfg, err := tunnelConfig(p, "/var/lib/vnicfilter"); err != nil || cfg.ManagedPeers || cfg.PeersFile != "/etc/peers.json" {
		t.Fatalf("peers=FILE: %+v %v", cfg, err)
	}
}
