package mirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// Address and port pools shared by the random matches and frames, so that
// frames hit, almost hit and miss the matches' terms.
var (
	diffAddrs4 = []string{"10.0.0.1", "10.0.0.2", "10.0.1.1", "10.1.0.1", "192.168.1.1", "0.0.0.0", "255.255.255.255"}
	diffAddrs6 = []string{"2001:db8::1", "2001:db8::2", "2001:db8:0:1::1", "2001:db8:1::1", "fd00::1",
		"2001:db8::1:0:0:1", "2001:db8::8000:0:0:1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
	diffPorts  = []uint16{0, 53, 80, 443, 1024, 40000, 65535}
	diffProtos = []uint8{6, 17, 1, 58, 132, 47}
)

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

// randMatchText makes a random match in the grammar; ParseMatch may still
// refuse it (families or proto in conflict), and the caller tries again.
func randMatchText(rng *rand.Rand) string {
	v6 := rng.IntN(2) == 0
	prefix := func() string {
		a, bits := netip.MustParseAddr(pick(rng, diffAddrs4)), pick(rng, []int{0, 8, 16, 23, 24, 31, 32, 32})
		if v6 {
			a, bits = netip.MustParseAddr(pick(rng, diffAddrs6)), pick(rng, []int{0, 16, 32, 48, 63, 64, 65, 96, 127, 128, 128})
		}
		return netip.PrefixFrom(a, bits).Masked().String()
	}
	ports := func() string {
		lo := pick(rng, diffPorts)
		if rng.IntN(2) == 0 {
			return strconv.Itoa(int(lo))
		}
		hi := uint16(min(int(lo)+rng.IntN(2000), 65535))
		return fmt.Sprintf("%d-%d", lo, hi)
	}
	var terms []string
	for _, t := range []struct {
		key string
		val func() string
	}{
		{"src", prefix}, {"dst", prefix}, {"host", prefix},
		{"proto", func() string { return strconv.Itoa(int(pick(rng, diffProtos))) }},
		{"sport", ports}, {"dport", ports}, {"port", ports},
	} {
		if rng.IntN(3) == 0 {
			terms = append(terms, t.key+"="+t.val())
		}
	}
	if rng.IntN(3) == 0 {
		terms = append(terms, "bidir")
	}
	rng.Shuffle(len(terms), func(i, j int) { terms[i], terms[j] = terms[j], terms[i] })
	return strings.Join(terms, ",")
}

// randFrame makes an Ethernet frame: mostly IPv4 or IPv6 with TCP, UDP,
// ICMP and others, some with IPv6 extension headers and fragments; some
// malformed (bad version or header length, cut short, too many extension
// headers), some not IP at all.
func randFrame(rng *rand.Rand) []byte {
	f := make([]byte, 14, 128)
	copy(f, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1})
	proto := pick(rng, diffProtos)
	l4 := binary.BigEndian.AppendUint16(nil, pick(rng, diffPorts))
	l4 = binary.BigEndian.AppendUint16(l4, pick(rng, diffPorts))
	l4 = append(l4, make([]byte, rng.IntN(24))...)
	switch k := rng.IntN(20); {
	case k < 8: // IPv4
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ihl := 5
		if rng.IntN(8) == 0 {
			ihl = rng.IntN(16)
		}
		ver := 4
		if rng.IntN(20) == 0 {
			ver = rng.IntN(16)
		}
		ip := make([]byte, max(20, ihl*4))
		ip[0], ip[8], ip[9] = byte(ver<<4|ihl), 64, proto
		if rng.IntN(5) == 0 {
			binary.BigEndian.PutUint16(ip[6:], pick(rng, []uint16{0x2000, 0x0001, 0x2010, 0x4000, 0x1fff}))
		}
		s, d := netip.MustParseAddr(pick(rng, diffAddrs4)).As4(), netip.MustParseAddr(pick(rng, diffAddrs4)).As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		f = append(append(f, ip...), l4...)
	case k < 17: // IPv6
		binary.BigEndian.PutUint16(f[12:], 0x86DD)
		ip := make([]byte, 40)
		ip[0], ip[7] = 0x60, 64
		if rng.IntN(20) == 0 {
			ip[0] = byte(rng.IntN(16) << 4)
		}
		s, d := netip.MustParseAddr(pick(rng, diffAddrs6)).As16(), netip.MustParseAddr(pick(rng, diffAddrs6)).As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		var chain []uint8
		if rng.IntN(2) == 0 {
			for range rng.IntN(9) {
				chain = append(chain, pick(rng, []uint8{ipv6HopByHop, ipv6Routing, ipv6DestOpts, ipv6Fragment}))
			}
		}
		chain = append(chain, proto)
		ip[6] = chain[0]
		var ext []byte
		for i := range len(chain) - 1 {
			n := 0
			if chain[i] != ipv6Fragment {
				n = rng.IntN(3)
			}
			e := make([]byte, 8*(n+1))
			e[0], e[1] = chain[i+1], byte(n)
			if chain[i] == ipv6Fragment && rng.IntN(2) == 0 {
				off := pick(rng, []uint16{1, 2, 0x1fff, uint16(rng.IntN(0x2000))})
				binary.BigEndian.PutUint16(e[2:], off<<3|uint16(rng.IntN(2))) // M bit alone: a first fragment
			}
			ext = append(ext, e...)
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)))
		f = append(append(append(f, ip...), ext...), l4...)
	case k < 18: // ARP, VLAN, an 802.3 length
		binary.BigEndian.PutUint16(f[12:], pick(rng, []uint16{0x0806, 0x8100, 0x0100}))
		f = append(f, make([]byte, 46)...)
	default: // noise behind an IP ethertype
		binary.BigEndian.PutUint16(f[12:], pick(rng, []uint16{0x0800, 0x86DD}))
		for range rng.IntN(80) {
			f = append(f, byte(rng.IntN(256)))
		}
	}
	if rng.IntN(6) == 0 && len(f) > 14 {
		f = f[:14+rng.IntN(len(f)-14)]
	}
	return f
}

// TestMatchDifferential runs mirror.c (BPF_PROG_TEST_RUN) and Match.Matches
// on random IPv4/IPv6/TCP/UDP/ICMP/malformed frames under random matches,
// and fails on the first frame they disagree on: mirrored or not.
func TestMatchDifferential(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VF_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with VF_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	matches, frames := 300, 150
	if testing.Short() {
		matches = 20
	}
	dir := t.TempDir()
	var mirrored, total, refused int
	for i := range matches {
		text := randMatchText(rng)
		m, err := ParseMatch(text)
		if err != nil {
			continue // refused (e.g. src IPv4 with dst IPv6): TestParseMatch covers it
		}
		fp := loadTestRun(t, map[string]string{"sink": filepath.Join(dir, fmt.Sprintf("%d.pcapng", i)), "match": text, "rate": "0", "snaplen": "64"})
		stats := fp.(*fastPath).objs.MirrorStats
		unmatched := func() uint64 {
			n, _, err := sdk.SumPerCPU(stats, uint32(4)) // MS_UNMATCHED
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		prev := unmatched()
		for j := range frames {
			frame := randFrame(rng)
			ret, err := fp.Program().Run(&ebpf.RunOptions{Data: frame})
			if errors.Is(err, unix.EINVAL) && len(frame) < 14+40 {
				refused++ // the test harness wants a whole IP header
				continue
			}
			if err != nil {
				t.Fatalf("test run of %x: %v", frame, err)
			}
			if ret != 0 {
				t.Fatalf("seed %d match %q frame %d: verdict %d, want TC_ACT_OK", seed, text, j, ret)
			}
			now := unmatched()
			got, want := now == prev, m.Matches(frame)
			prev = now
			if got != want {
				t.Fatalf("seed %d match %q frame %d: kernel mirrored=%v, model %v\nframe %x", seed, text, j, got, want, frame)
			}
			total++
			if got {
				mirrored++
			}
		}
		fp.Close()
	}
	t.Logf("%d frames, %d mirrored; %d short frames refused by BPF_PROG_TEST_RUN", total, mirrored, refused)
	if total == 0 || mirrored == 0 || mirrored == total {
		t.Errorf("%d of %d frames mirrored: the random matches do not discriminate", mirrored, total)
	}
}
