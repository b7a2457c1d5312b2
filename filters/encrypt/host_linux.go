package encrypt

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// TunnelOf returns the host tunnel an encrypt instance steers into, or nil
// for another filter's instance (or a closed one).
func TunnelOf(fp sdk.FastPath) *Tunnel {
	if f, ok := fp.(*fastPath); ok {
		return f.tunnel
	}
	return nil
}

// PeersFile is the peers file the tunnel reads; Managed reports whether it
// is filterd's API-managed document (peers=api).
func (t *Tunnel) PeersFile() (path string, managed bool) {
	return t.cfg.PeersFile, t.cfg.ManagedPeers
}

// PolicyFile is the policy file the tunnel reads ("" for none) and
// whether it is filterd's API-managed document (policy=api).
func (t *Tunnel) PolicyFile() (path string, managed bool) {
	return t.cfg.PolicyFile, t.cfg.ManagedPolicy
}

// Host describes the running tunnel for the control plane (HostInfo).
func (t *Tunnel) Host() (HostInfo, error) {
	t.mu.Lock()
	in := HostInfo{Tunnel: t.cfg.Name, Running: t.running, PublicKey: t.priv.Public().String(), KeyDir: t.cfg.KeyDir,
		ListenPort: t.peers.ListenPort, Prefixes: prefixStrings(t.peers.Prefixes), PeersFile: t.cfg.PeersFile}
	t.mu.Unlock()
	st, err := os.Stat(KeyStore{Dir: t.cfg.KeyDir, Name: t.cfg.Name}.Path())
	if err != nil {
		return in, fmt.Errorf("tunnel %s: key file: %w", t.cfg.Name, err)
	}
	in.KeyCreated = st.ModTime().UTC()
	err = nsutil.Do(t.ns, "tunnel "+t.cfg.Name, func() error {
		var err error
		in.Endpoints, err = endpoints(t.cfg.Name, in.ListenPort)
		return err
	})
	return in, err
}

// StoredHost describes the host while no tunnel runs: the key pair in
// keyDir for tunnel (generated the first time, as the tunnel would), the
// listen port and prefixes of the peers document at peersFile (managed:
// absent means empty), and the calling thread's network namespace's
// addresses.
func StoredHost(keyDir, tunnel, peersFile string, managed bool) (HostInfo, error) {
	in := HostInfo{Tunnel: tunnel, KeyDir: keyDir, PeersFile: peersFile}
	ks := KeyStore{Dir: keyDir, Name: tunnel}
	k, err := ks.LoadOrCreate()
	if err != nil {
		return in, err
	}
	in.PublicKey = k.Public().String()
	st, err := os.Stat(ks.Path())
	if err != nil {
		return in, fmt.Errorf("key file: %w", err)
	}
	in.KeyCreated = st.ModTime().UTC()
	p, err := loadPeersFile(peersFile, managed)
	if err != nil {
		return in, err
	}
	in.ListenPort, in.Prefixes = p.ListenPort, prefixStrings(p.Prefixes)
	in.Endpoints, err = endpoints(tunnel, in.ListenPort)
	return in, err
}

// endpoints lists ip:port for every global unicast address of an up
// interface of the calling thread's namespace, the tunnel's excepted.
func endpoints(tunnel string, port int) ([]Endpoint, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := []Endpoint{}
	for _, l := range links {
		a := l.Attrs()
		if a.Name == tunnel || a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok || !ip.Unmap().IsGlobalUnicast() {
				continue
			}
			out = append(out, Endpoint{Interface: a.Name, Endpoint: netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out, nil
}
