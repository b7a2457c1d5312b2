package manager

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/model"
)

// The host documents' status: every case of desired against realized.
func TestDocStatus(t *testing.T) {
	desired := api.HostDocs{
		Encap:         &api.HostDoc{Hash: "e1"},
		EncryptPeers:  &api.HostDoc{Hash: "p1"},
		EncryptPolicy: &api.HostDoc{Hash: "q1", Error: "encryption pci: host h2 reports no tunnel"},
	}
	for _, tc := range []struct {
		name     string
		desired  api.HostDocs
		realized []api.RealizedDoc
		want     string // name:in_sync:error per document
		inSync   bool
	}{
		{"nothing", api.HostDocs{}, nil, "", true},
		{"all realized", api.HostDocs{Encap: desired.Encap, EncryptPeers: desired.EncryptPeers},
			[]api.RealizedDoc{{Name: "encrypt_peers", Hash: "p1"}, {Name: "encap", Hash: "e1"}},
			"encap:true: encrypt_peers:true:", true},
		{"old hash", api.HostDocs{Encap: desired.Encap}, []api.RealizedDoc{{Name: "encap", Hash: "e0"}}, "encap:false:", false},
		{"not reported", api.HostDocs{Encap: desired.Encap}, nil, "encap:false:not reported by the host", false},
		{"realized with an error", api.HostDocs{Encap: desired.Encap},
			[]api.RealizedDoc{{Name: "encap", Hash: "e1", Error: "filterd: PUT /v1/encap/fdb: entries[0].host: unknown host"}},
			"encap:false:filterd: PUT /v1/encap/fdb: entries[0].host: unknown host", false},
		// The manager could not build it: never in sync, whatever the
		// host reports, and the manager's error is shown.
		{"desired with an error", api.HostDocs{EncryptPolicy: desired.EncryptPolicy},
			[]api.RealizedDoc{{Name: "encrypt_policy", Hash: "q1"}},
			"encrypt_policy:false:encryption pci: host h2 reports no tunnel", false},
		{"desired with an error, host reports an error", api.HostDocs{EncryptPolicy: desired.EncryptPolicy},
			[]api.RealizedDoc{{Name: "encrypt_policy", Error: "some error"}},
			"encrypt_policy:false:encryption pci: host h2 reports no tunnel", false},
		// Not managed on the host: listed, in sync unless it failed.
		{"realized only", api.HostDocs{}, []api.RealizedDoc{{Name: "encap", Hash: "e0"}}, "encap:true:", true},
		{"realized only, failed", api.HostDocs{}, []api.RealizedDoc{{Name: "encap", Hash: "e0", Error: "boom"}}, "encap:false:boom", false},
		{"one of two out of sync", api.HostDocs{Encap: desired.Encap, EncryptPeers: desired.EncryptPeers},
			[]api.RealizedDoc{{Name: "encap", Hash: "e1"}, {Name: "encrypt_peers", Hash: "p0"}},
			"encap:true: encrypt_peers:false:", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, inSync := docStatus(tc.desired, tc.realized)
			var got []string
			for _, d := range docs {
				got = append(got, d.Name+":"+map[bool]string{true: "true", false: "false"}[d.InSync]+":"+d.Error)
			}
			if strings.Join(got, " ") != tc.want || inSync != tc.inSync {
				t.Fatalf("docStatus = %q, in sync %v; want %q, %v", strings.Join(got, " "), inSync, tc.want, tc.inSync)
			}
			for _, d := range docs {
				if w := tc.desired.Docs()[d.Name]; w != nil && d.DesiredHash != w.Hash {
					t.Errorf("%s: desired hash %q, want %q", d.Name, d.DesiredHash, w.Hash)
				}
			}
		})
	}
}

// The inventory's underlay address and tunnel: refusals name the field.
func TestCheckInventoryNet(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	tun := func(k, ep string) *api.Tunnel { return &api.Tunnel{PublicKey: k, Endpoint: ep} }
	for _, tc := range []struct {
		name string
		inv  api.Inventory
		want string // "" accepted
	}{
		{"none", api.Inventory{}, ""},
		{"ipv4", api.Inventory{Underlay: "192.0.2.1", Tunnel: tun(key, "192.0.2.1:51820")}, ""},
		{"ipv6", api.Inventory{Underlay: "2001:db8::1", Tunnel: tun(key, "[2001:db8::1]:51820")}, ""},
		{"underlay not an address", api.Inventory{Underlay: "host1"}, `underlay: "host1" is not an IP address`},
		{"underlay with a prefix", api.Inventory{Underlay: "192.0.2.1/24"}, `underlay: "192.0.2.1/24" is not an IP address`},
		{"underlay unspecified", api.Inventory{Underlay: "0.0.0.0"}, `underlay: "0.0.0.0" is not a unicast address`},
		{"underlay multicast", api.Inventory{Underlay: "ff02::1"}, `underlay: "ff02::1" is not a unicast address`},
		{"underlay broadcast", api.Inventory{Underlay: "255.255.255.255"}, "is not a unicast address"},
		{"underlay zone", api.Inventory{Underlay: "fe80::1%eth0"}, "underlay: \"fe80::1%eth0\" has a zone"},
		{"underlay mapped", api.Inventory{Underlay: "::ffff:192.0.2.1"}, "is IPv4-mapped: write it as IPv4 (192.0.2.1)"},
		{"key not base64", api.Inventory{Tunnel: tun("not base64!", "192.0.2.1:51820")}, `tunnel.public_key: "not base64!" is not base64`},
		{"key short", api.Inventory{Tunnel: tun(base64.StdEncoding.EncodeToString(make([]byte, 16)), "192.0.2.1:51820")}, "tunnel.public_key: 16 bytes, want 32"},
		{"key zero", api.Inventory{Tunnel: tun(base64.StdEncoding.EncodeToString(make([]byte, 32)), "192.0.2.1:51820")}, "tunnel.public_key: all zero"},
		{"endpoint without port", api.Inventory{Tunnel: tun(key, "192.0.2.1")}, `tunnel.endpoint: "192.0.2.1": want ip:port`},
		{"endpoint ipv6 without brackets", api.Inventory{Tunnel: tun(key, "2001:db8::1:51820")}, "tunnel.endpoint: \"2001:db8::1:51820\": want ip:port"},
		{"endpoint name", api.Inventory{Tunnel: tun(key, "host1:51820")}, `tunnel.endpoint: "host1:51820": want ip:port`},
		{"endpoint port 0", api.Inventory{Tunnel: tun(key, "192.0.2.1:0")}, `tunnel.endpoint: "192.0.2.1:0": port 0`},
		{"endpoint multicast", api.Inventory{Tunnel: tun(key, "224.0.0.1:51820")}, `tunnel.endpoint: "224.0.0.1:51820": address is not a unicast address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkInventory(tc.inv)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkInventory = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}
