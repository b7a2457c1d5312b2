package ttlguard

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const (
	tcActOK   = 0
	tcActShot = 2
)

// frame builds an Ethernet + IPv4 header with the given TTL.
func frame(ttl byte) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 50)
	ip[8] = ttl
	ip[9] = 17
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	return b
}

func TestManifestMatchesObject(t *testing.T) {
	m, spec, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckObject(spec); err != nil {
		t.Fatal(err)
	}
}

// TestVerdicts loads the object through the same manifest loader filterd
// uses and runs frames through it with BPF_PROG_TEST_RUN.
func TestVerdicts(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	m, spec, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	desc, err := m.Descriptor(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := sdk.Verify(desc); err != nil {
		t.Fatal(err)
	}
	maps, err := sdk.ScratchVNICMaps()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, mp := range maps {
			mp.Close()
		}
	}()
	params, err := sdk.ValidateParams(desc.Params, map[string]string{"min_ttl": "5"})
	if err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}, Directions: desc.Dirs(), Params: params}
	fp, err := desc.FastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	for _, tc := range []struct {
		ttl  byte
		want uint32
	}{{1, tcActShot}, {4, tcActShot}, {5, tcActOK}, {64, tcActOK}} {
		ret, err := fp.Program().Run(&ebpf.RunOptions{Data: frame(tc.ttl)})
		if err != nil {
			t.Fatal(err)
		}
		if ret != tc.want {
			t.Errorf("ttl %d: tc action %d, want %d", tc.ttl, ret, tc.want)
		}
	}
	cs, err := fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name != "ttl_drops_packets_total" || cs[0].Value != 2 {
		t.Errorf("counters %+v, want ttl_drops_packets_total = 2", cs)
	}
}
