package mirror

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestSPANToMonitorVNIC: with sink=vnic://<monitor tap>, every frame a
// sends and receives reaches the monitoring VM whole, byte-identical to a
// capture inside a, while a's own traffic is untouched.
func TestSPANToMonitorVNIC(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b, mon := host.AddVM(t, "a"), host.AddVM(t, "b"), host.AddVM(t, "monitor")
	capM := startCapture(t, mon.Do, "eth0")
	capA := startCapture(t, a.Do, "eth0")
	fp := attach(t, host, a, map[string]string{"sink": "vnic://" + mon.TapName})
	traffic(t, a, b)
	time.Sleep(100 * time.Millisecond)
	inVM, atMon := capA.Stop(), capM.Stop()
	want := between(inVM, a.IPv4.IP, b.IPv4.IP)
	if len(want) < 10 {
		t.Fatalf("only %d frames between a and b captured in a", len(want))
	}
	sameFrames(t, "frames at the monitor VM", between(atMon, a.IPv4.IP, b.IPv4.IP), want)
	if m := counter(t, fp, "mirrored_packets_total"); m < uint64(len(want)) {
		t.Errorf("mirrored_packets_total %d < %d frames", m, len(want))
	}
	if f := counter(t, fp, "span_failed_packets_total"); f != 0 {
		t.Errorf("%d clones failed", f)
	}
}

func TestSPANBadMonitor(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a := host.AddVM(t, "a")
	for _, tc := range []struct{ sink, want string }{
		{"vnic://nosuch0", "monitor vNIC nosuch0"},
		{"vnic://" + a.TapName, "the mirrored vNIC itself"},
	} {
		params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"sink": tc.sink})
		if err != nil {
			t.Fatal(err)
		}
		err = host.Do(func() error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: a.TapName, Ifindex: a.TapIndex}, Directions: sdk.DirBoth, Params: params}
			maps, err := sdk.ScratchVNICMaps()
			if err != nil {
				return err
			}
			defer func() {
				for _, m := range maps {
					m.Close()
				}
			}()
			fp, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
			if err == nil {
				fp.Close()
			}
			return err
		})
		if !errors.Is(err, sdk.ErrInvalidParam) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidParam naming %q", tc.sink, err, tc.want)
		}
	}
	if _, err := ParseConfig(mustValid(t, map[string]string{"sink": "vnic://x", "snaplen": "64"})); !errors.Is(err, sdk.ErrInvalidParam) {
		t.Errorf("snaplen on a SPAN mirror: %v", err)
	}
}

func mustValid(t *testing.T, raw map[string]string) sdk.Params {
	t.Helper()
	p, err := sdk.ValidateParams(Descriptor.Params, raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
