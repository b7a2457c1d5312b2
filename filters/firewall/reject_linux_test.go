package firewall

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestRejectRate: reject_rate=3 answers the first 3 rejected SYNs of a
// second and drops the rest (reject_limited_total); reject_rate=0 answers
// none. Every answer is a RST with good IPv4 and TCP checksums, computed
// here from scratch.
func TestRejectRate(t *testing.T) {
	policy := []byte(`{"version": 1, "defaults": {"from-vm": "reject", "to-vm": "deny"}}`)
	for _, tc := range []struct {
		rate     string
		answered uint64
	}{{"3", 3}, {"0", 0}} {
		fp, _ := testInstanceParams(t, policy, map[string]string{"reject_rate": tc.rate})
		syn := pktSpec{dir: sdk.FromVM, src: netip.MustParseAddr("10.0.0.1"), dst: netip.MustParseAddr("10.9.0.2"), proto: ProtoTCP, sport: 40000, dport: 443, flags: tcpSYN}
		var answers uint64
		for i := range 8 {
			syn.sport = uint16(40000 + i)
			frame := syn.build()
			binary.BigEndian.PutUint32(frame[14+20+4:], 1000) // seq
			pass, ans, ok := runAnswer(t, fp.Program(), frame, sdk.FromVM)
			if !ok || pass {
				t.Fatalf("rate %s: SYN %d passed", tc.rate, i)
			}
			if ans == nil {
				continue
			}
			answers++
			ip, th := ans[14:34], ans[34:]
			if len(th) != 20 || th[13] != tcpRST|tcpACK || binary.BigEndian.Uint32(th[8:]) != 1001 ||
				binary.BigEndian.Uint16(th[2:]) != syn.sport || binary.BigEndian.Uint16(th[0:]) != 443 {
				t.Fatalf("answer %x is not the RST+ACK (ack 1001) of SYN %d", ans, i)
			}
			pseudo := append(append(append([]byte{}, ip[12:20]...), 0, ProtoTCP), 0, 20)
			if fold16(uint64(onesSum(ip))) != 0xffff || fold16(uint64(onesSum(pseudo))+uint64(onesSum(th))) != 0xffff {
				t.Fatalf("answer %x: bad checksum", ans)
			}
		}
		st := fp.statsForTest(t)
		if answers != tc.answered || st[StatRejected] != tc.answered || st[StatRejectLimited] != 8-tc.answered {
			t.Errorf("reject_rate=%s: %d answers, rejected_total %d, reject_limited_total %d; want %d, %d, %d",
				tc.rate, answers, st[StatRejected], st[StatRejectLimited], tc.answered, tc.answered, 8-tc.answered)
		}
	}
}
