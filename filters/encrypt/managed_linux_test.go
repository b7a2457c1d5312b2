package encrypt

import (
	"errors"
	"strings"
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

func TestPolicyAPIParam(t *testing.T) {
	p, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"peers": PeersAPI, "policy": PolicyAPI})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tunnelConfig(p, "/var/lib/vnicfilter")
	if err != nil || !cfg.ManagedPolicy || cfg.PolicyFile != "/var/lib/vnicfilter/encrypt/policy.json" || !cfg.ManagedPeers {
		t.Fatalf("policy=api under filterd: %+v %v", cfg, err)
	}
	if _, err := tunnelConfig(p, ""); !errors.Is(err, sdk.ErrInvalidParam) || !strings.Contains(err.Error(), "does not run under filterd") {
		t.Fatalf("policy=api without filterd: %v", err)
	}
	p, _ = sdk.ValidateParams(Descriptor.Params, map[string]string{"peers": "/etc/peers.json", "policy": PolicyAPI})
	if _, err := tunnelConfig(p, ""); !errors.Is(err, sdk.ErrInvalidParam) || !strings.Contains(err.Error(), `parameter "policy"`) {
		t.Fatalf("policy=api with a peers file, without filterd: %v", err)
	}
	p, _ = sdk.ValidateParams(Descriptor.Params, map[string]string{"peers": PeersAPI, "policy": "/etc/policy.json"})
	if cfg, err := tunnelConfig(p, "/var/lib/vnicfilter"); err != nil || cfg.ManagedPolicy || cfg.PolicyFile != "/etc/policy.json" {
		t.Fatalf("policy=FILE: %+v %v", cfg, err)
	}
}
