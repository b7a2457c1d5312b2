package encap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/sdk"
)

var _ sdk.Inspector = (*fastPath)(nil)

// State is what Inspect reports: the instance's live table, read back from
// its maps (not from the file), and the host side it shares.
type State struct {
	VNI        uint32   `json:"vni"`
	Group      uint16   `json:"group"`
	MAC        string   `json:"mac"`
	LocalIP    string   `json:"local_ip"`
	VXLANDev   string   `json:"vxlan_dev"`
	Generation uint32   `json:"generation"`
	Remote     []Remote `json:"remote"`
	Members    []string `json:"members"`
	Neighbors  []Neigh  `json:"neighbors"`
	// Host is the host-wide side: the local vNICs of this segment and the
	// hosts its frames are accepted from.
	Host HostState `json:"host"`
}

// Remote is a MAC of the segment on another host.
type Remote struct {
	MAC  string `json:"mac"`
	Host string `json:"host"`
}

// Neigh is an address the filter answers ARP/ND for.
type Neigh struct {
	IP  string `json:"ip"`
	MAC string `json:"mac"`
}

// HostState is the segment as the host's registry sees it.
type HostState struct {
	LocalVNICs []LocalVNIC       `json:"local_vnics"`
	AcceptFrom []string          `json:"accept_from"`
	Counters   map[string]uint64 `json:"receive_counters"`
}

// LocalVNIC is a vNIC of the segment on this host.
type LocalVNIC struct {
	MAC     string `json:"mac"`
	Ifindex int    `json:"ifindex"`
	Group   uint16 `json:"group"`
}

// Inspect reports the live table (GET .../inspect). No query parameters.
func (f *fastPath) Inspect(ctx context.Context, query map[string]string) (any, error) {
	for k := range query {
		return nil, fmt.Errorf("%w: encap inspect takes no query parameters (got %q)", sdk.ErrInvalidParam, k)
	}
	f.mu.Lock()
	dev := f.dev
	f.mu.Unlock()
	if dev == nil {
		return nil, errClosed
	}
	var cfg encapEncapCfg
	if err := f.objs.EncapConfig.Lookup(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("read encap_config: %w", err)
	}
	st := &State{VNI: f.params.vni, Group: f.params.group, MAC: macString(f.params.mac), LocalIP: f.params.local.String(),
		VXLANDev: f.params.dev, Generation: cfg.Gen}
	var fk encapEncapFibKey
	var fv encapEncapHost
	it := f.objs.EncapFib.Iterate()
	for it.Next(&fk, &fv) {
		if fk.Gen == cfg.Gen {
			st.Remote = append(st.Remote, Remote{MAC: macString(fk.Mac), Host: hostFromRx(rxEncapHost{V6: fv.V6, Addr: fv.Addr}).String()})
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate encap_fib: %w", err)
	}
	slices.SortFunc(st.Remote, func(a, b Remote) int { return strings.Compare(a.MAC, b.MAC) })
	var m encapEncapMemberList
	if err := f.objs.EncapMembers.Lookup(cfg.Gen, &m); err != nil {
		return nil, fmt.Errorf("read encap_members: %w", err)
	}
	for _, h := range m.Hosts[:min(int(m.N), len(m.Hosts))] {
		st.Members = append(st.Members, hostFromRx(rxEncapHost{V6: h.V6, Addr: h.Addr}).String())
	}
	var nk encapEncapNeighKey
	var nv encapEncapNeighEntry
	it = f.objs.EncapNeigh.Iterate()
	for it.Next(&nk, &nv) {
		if nk.Gen != cfg.Gen {
			continue
		}
		ip := netip.AddrFrom16(nk.Ip)
		if nk.Family == 4 {
			ip = netip.AddrFrom4([4]byte(nk.Ip[:4]))
		}
		st.Neighbors = append(st.Neighbors, Neigh{IP: ip.String(), MAC: net.HardwareAddr(nv.Mac[:]).String()})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate encap_neigh: %w", err)
	}
	slices.SortFunc(st.Neighbors, func(a, b Neigh) int { return strings.Compare(a.IP, b.IP) })

	ports, err := dev.Ports()
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		if p.VNI == f.params.vni {
			st.Host.LocalVNICs = append(st.Host.LocalVNICs, LocalVNIC{MAC: macString(p.MAC), Ifindex: p.Ifindex, Group: p.Group})
		}
	}
	slices.SortFunc(st.Host.LocalVNICs, func(a, b LocalVNIC) int { return a.Ifindex - b.Ifindex })
	accepts, err := dev.Accepts(f.params.vni)
	if err != nil {
		return nil, err
	}
	for _, a := range accepts {
		st.Host.AcceptFrom = append(st.Host.AcceptFrom, a.String())
	}
	if st.Host.Counters, err = dev.Counters(); err != nil {
		return nil, err
	}
	return st, nil
}
