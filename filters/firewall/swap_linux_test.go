package firewall

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestSwapPurgesRetiredGeneration: after each swap, once the background
// purge is done, the tries and the cross-product map hold exactly the
// live policy's entries and nothing of the generation the flip retired,
// and fw_dims' live half (written through the map's memory) holds the
// compiled classes — whatever the order of policies, including a swap
// back to an earlier one and an empty policy.
func TestSwapPurgesRetiredGeneration(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp := newScratch(t, allowAll, 1024)
	policy := func(n, port int) *Policy {
		var sb strings.Builder
		sb.WriteString(`{"version": 1, "rules": [`)
		for i := range n {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, `{"direction": "to-vm", "src": ["10.%d.%d.0/24", "fd00:%x::/64"], "proto": "tcp", "dst_ports": [%d], "action": "allow"},`, i/256%256, i%256, i, port+i)
			fmt.Fprintf(&sb, `{"direction": "from-vm", "src": ["10.8.0.1"], "dst": ["10.9.%d.%d"], "proto": "icmp", "icmp_type": %d, "action": "deny"}`, i/256%256, i%256, i%20)
		}
		sb.WriteString("]}")
		p, err := ParsePolicy([]byte(sb.String()), ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for step, p := range []*Policy{policy(3000, 1), policy(2000, 7), policy(3000, 1), policy(0, 0), policy(500, 3)} {
		if step == 2 || step == 4 {
			// As after an adoption or a failed write: the keys of both
			// halves unknown, so the update and the purge walk the maps.
			fp.mu.Lock()
			fp.written = [2]*genKeys{}
			fp.mu.Unlock()
		}
		if _, err := fp.UpdatePolicy(p); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		fp.mu.Lock()
		fp.waitPurge()
		fp.mu.Unlock()
		c, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		var epoch uint32
		if err := fp.objs.FwConfig.Lookup(uint32(0), &epoch); err != nil {
			t.Fatal(err)
		}
		live := epoch & 1
		var src, dst [2]int
		for _, m := range []struct {
			n    *[2]int
			name string
		}{{&src, "fw_src"}, {&dst, "fw_dst"}} {
			mp := fp.objs.FwSrc
			if m.name == "fw_dst" {
				mp = fp.objs.FwDst
			}
			var k firewallFwLpmKey
			var v uint32
			it := mp.Iterate()
			for it.Next(&k, &v) {
				m.n[k.Gen&1]++
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
		}
		var cross [2]int
		var ck firewallFwCrossKey
		var cv uint32
		it := fp.objs.FwCross.Iterate()
		for it.Next(&ck, &cv) {
			cross[ck.Tag>>2&1]++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, m := range c.Cross {
			want += len(m)
		}
		if src[1-live]+dst[1-live]+cross[1-live] != 0 {
			t.Errorf("step %d: the retired generation still holds %d+%d trie and %d cross entries", step, src[1-live], dst[1-live], cross[1-live])
		}
		if src[live] != len(c.Src) || dst[live] != len(c.Dst) || cross[live] != want {
			t.Errorf("step %d: live generation holds %d/%d/%d entries, compiled %d/%d/%d", step, src[live], dst[live], cross[live], len(c.Src), len(c.Dst), want)
		}
		// Spot-check the live half of fw_dims through the map (not the mapping).
		for _, i := range []int{dimProtoBase + 1<<8 + ProtoTCP, dimP1Base + 8, dimP2Base + 1, dimP2Base + 2999, dimP2Base + 65535} {
			var v uint32
			if err := fp.objs.FwDims.Lookup(live*dimsPerGen+uint32(i), &v); err != nil {
				t.Fatal(err)
			}
			if v != c.Dims[i] {
				t.Errorf("step %d: fw_dims[%d] = %d, compiled %d", step, i, v, c.Dims[i])
			}
		}
	}
}
