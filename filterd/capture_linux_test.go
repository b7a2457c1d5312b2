package filterd_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestCapture runs `vfctl capture` against a vNIC with a chain and one
// without: tshark reads each file with the vNIC as every packet's
// interface and the right direction, and when the capture ends the chains
// are as before.
func TestCapture(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.Tshark)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, vm := range []*testkit.VM{a, b} { // a has a chain, b none
		file := filepath.Join(dir, vm.Label+".pcapng")
		cmd := exec.Command(filepath.Join(binDir, "vfctl"), "--socket", filepath.Join(d.dir, "filterd.sock"),
			"capture", vm.TapName, "-w", file, "--duration", "2s", "--proto", "1")
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for the capture's slot to be in place, then ping.
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if v, err := d.client.VNIC(ctx, vm.TapName); err == nil && len(v.Slots) > 0 && v.Slots[len(v.Slots)-1].Filter == "mirror" {
				break
			}
		}
		for range 3 { // Ping returns at the first reply: 3 requests, 3 replies
			if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("vfctl capture %s: %v\n%s", vm.TapName, err, out)
		}
		rows := testkit.TsharkFields(t, file, "frame.interface_name", "frame.packet_flags_direction", "eth.src", "icmp.type")
		if len(rows) < 6 {
			t.Fatalf("%s: %d packets captured, want the 3 echo requests and 3 replies\n%s", vm.TapName, len(rows), out)
		}
		for i, r := range rows {
			dirFlag, _ := strconv.ParseUint(r[1], 0, 32)
			want := uint64(2) // outbound at the vNIC: delivered to the VM
			if r[2] == vm.MAC.String() {
				want = 1 // inbound: sent by the VM
			}
			if r[0] != vm.TapName || dirFlag != want || r[3] == "" {
				t.Errorf("%s packet %d: interface %q direction %d icmp %q, want %q %d and ICMP only", vm.TapName, i+1, r[0], dirFlag, r[3], vm.TapName, want)
			}
		}
	}
	// vfctl top sees a's traffic.
	go func() { _ = a.Ping(t, b.IPv4.IP, 1) }()
	if out, err := d.vfctl("top", "-n", "1", "--interval", "500ms"); err != nil || !strings.Contains(out, a.TapName) || !strings.Contains(out, "IN pps") {
		t.Errorf("vfctl top: %v\n%s", err, out)
	}

	// Afterwards: a has its one filter again, b no chain at all.
	if v, err := d.client.VNIC(ctx, a.TapName); err != nil || len(v.Slots) != 1 || v.Slots[0].Filter != "count" {
		t.Errorf("a after its capture: %+v %v", v, err)
	}
	if _, err := d.client.VNIC(ctx, b.TapName); !api.IsCode(err, api.CodeNotAttached) {
		t.Errorf("b after its capture: %v, want no chain", err)
	}
	// A capture interrupted by filterd's death is removed by its restart.
	cmd := exec.Command(filepath.Join(binDir, "vfctl"), "--socket", filepath.Join(d.dir, "filterd.sock"), "capture", a.TapName, "-w", filepath.Join(dir, "cut.pcapng"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if v, err := d.client.VNIC(ctx, a.TapName); err == nil && len(v.Slots) == 2 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("capture slot never appeared")
		}
	}
	d.kill()
	d.start()
	if v, err := d.client.VNIC(ctx, a.TapName); err != nil || len(v.Slots) != 1 || v.Slots[0].Filter != "count" {
		t.Errorf("a after filterd restarted mid-capture: %+v %v", v, err)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Errorf("traffic after the interrupted capture: %v", err)
	}

	// Errors name the problem.
	for q, code := range map[string]string{"colour": api.CodeBadRequest, "duration": api.CodeBadRequest} {
		_, err := d.client.Capture(ctx, a.TapName, map[string]string{q: "x"})
		if !api.IsCode(err, code) {
			t.Errorf("capture ?%s=x: %v, want %s", q, err, code)
		}
	}
	if _, err := d.client.Capture(ctx, "nosuch0", nil); !api.IsCode(err, api.CodeNoSuchDevice) {
		t.Errorf("capture of a missing device: %v", err)
	}
}
