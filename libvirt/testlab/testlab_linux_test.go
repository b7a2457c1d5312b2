package testlab

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// TestTwoGuestsPingEachOther boots two guests on one bridge in parallel,
// each pinging the other from boot, and proves everything is gone after.
func TestTwoGuestsPingEachOther(t *testing.T) {
	l := StartLibvirtd(t, LibvirtdOptions{})
	img, err := BuildGuestImage(t, "")
	if err != nil {
		t.Fatalf("build guest image: %v", err)
	}
	t.Logf("guest image: kernel %s, initrd %s", img.Kernel, img.Initrd)

	var qemuPids []int
	t.Run("boot", func(t *testing.T) {
		br := NewBridge(t)
		type peer struct{ name, mac, ip string }
		peers := []peer{
			{"vft-a-" + randomHex(2), "52:54:00:88:00:05", "10.88.0.5"},
			{"vft-b-" + randomHex(2), "52:54:00:88:00:06", "10.88.0.6"},
		}
		guests := make([]*Guest, len(peers))
		for i, p := range peers {
			other := peers[1-i]
			guests[i] = l.DefineGuest(t, img, GuestSpec{
				Name: p.name,
				NICs: []NIC{{Bridge: br, MAC: p.mac, Alias: "ua-net0"}},
				Cmdline: map[string]string{
					"vf.ip":  p.ip + "/24",
					"vf.cmd": "ping -c 60 " + other.ip,
				},
			})
		}

		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, len(guests))
		for i, g := range guests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				if err := g.Start(); err != nil {
					errs[i] = err
					return
				}
				started := time.Since(start)
				if err := g.WaitConsole(ctx, "VFGUEST READY"); err != nil {
					errs[i] = err
					return
				}
				ready := time.Since(start)
				peerIP := peers[1-i].ip
				if err := g.WaitConsole(ctx, "bytes from "+peerIP); err != nil {
					errs[i] = err
					return
				}
				t.Logf("%s: start returned after %v, READY after %v, first reply from %s after %v; %s",
					g.Name, started.Round(time.Millisecond), ready.Round(time.Millisecond), peerIP,
					time.Since(start).Round(time.Millisecond), markerLine(g.Console(), "VFGUEST READY"))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}

		ports, err := BridgePorts(br)
		if err != nil {
			t.Fatalf("ports of %s: %v", br, err)
		}
		for _, g := range guests {
			taps, err := g.Taps()
			if err != nil {
				t.Fatal(err)
			}
			if len(taps) != 1 || !slices.Contains(ports, taps[0]) {
				t.Errorf("%s: taps %v, want one port of %s (ports %v)", g.Name, taps, br, ports)
			}
			pid, err := g.PID()
			if err != nil {
				t.Fatal(err)
			}
			qemuPids = append(qemuPids, pid)
			t.Logf("%s: tap %v on %s, QEMU pid %d", g.Name, taps, br, pid)
		}
		if t.Failed() {
			for _, g := range guests {
				t.Logf("%s console:\n%s", g.Name, g.Console())
			}
		}
		start := time.Now()
		if err := DestroyGuests(guests...); err != nil {
			t.Fatal(err)
		}
		t.Logf("destroyed both guests in %v", time.Since(start).Round(time.Millisecond))
		for _, pid := range qemuPids {
			if processExists(pid) {
				t.Errorf("QEMU %d still runs after destroy", pid)
			}
		}
		// Undefined by DefineGuest's cleanup, before the bridge goes.
	})

	if out, err := l.Virsh("list", "--all", "--name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("domains left after the guests' cleanup: %q (%v)", out, err)
	}
	for _, pid := range qemuPids {
		if processExists(pid) {
			t.Errorf("QEMU %d still runs after destroy", pid)
		}
	}
	pid, dir := l.PID(), l.Dir()
	if err := l.Stop(); err != nil {
		t.Fatalf("stop libvirtd: %v", err)
	}
	if processExists(pid) {
		t.Errorf("libvirtd %d still runs after Stop", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab directory %s left behind (%v)", dir, err)
	}
}

// TestShared checks the per-binary libvirtd answers and is one instance.
func TestShared(t *testing.T) {
	a, b := Shared(t), Shared(t)
	if a != b {
		t.Fatal("Shared started two libvirtds")
	}
	out, err := a.Virsh("uri")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != a.URI() {
		t.Errorf("virsh uri = %q, want %q", got, a.URI())
	}
	c := a.Conn(t)
	if _, err := c.ConnectGetLibVersion(); err != nil {
		t.Errorf("go-libvirt: %v", err)
	}
	// The host's libvirt directories are untouched: the socket is private.
	if _, err := os.Stat("/run/libvirt/libvirt-sock"); err == nil {
		t.Log("note: a system libvirtd socket exists at /run/libvirt/libvirt-sock (not ours)")
	}
}

// TestHooksDir checks that HooksDir is the hooks directory libvirtd runs,
// and what of Env reaches a hook: libvirt gives hooks a clean environment
// with only PATH, HOME and LC_ALL=C, so PATH is the one knob.
func TestHooksDir(t *testing.T) {
	hooks := t.TempDir()
	out := hooks + "/calls"
	script := fmt.Sprintf("#!/bin/sh\necho \"$1 $2 $3 ${PATH%%%%:*} ${VFTEST_MARK:-unset}\" >> %s\n", out)
	if err := os.WriteFile(hooks+"/qemu", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	l := StartLibvirtd(t, LibvirtdOptions{
		HooksDir: hooks,
		Env:      []string{"PATH=/vftest/bin:" + os.Getenv("PATH"), "VFTEST_MARK=set"},
	})
	img, err := BuildGuestImage(t, "")
	if err != nil {
		t.Fatal(err)
	}
	g := l.DefineGuest(t, img, GuestSpec{NICs: []NIC{{Bridge: NewBridge(t)}}})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Destroy(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	var phases []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || f[0] != g.Name || f[3] != "/vftest/bin" || f[4] != "unset" {
			t.Errorf("hook call %q: want %q, op, sub-op, PATH from Env, VFTEST_MARK unset", line, g.Name)
			continue
		}
		phases = append(phases, f[1]+" "+f[2])
	}
	want := []string{"prepare begin", "start begin", "started begin", "stopped end", "release end"}
	if !slices.Equal(phases, want) {
		t.Errorf("hook phases %q, want %q", phases, want)
	}
}

// markerLine returns the console line holding marker.
func markerLine(console, marker string) string {
	for _, line := range strings.Split(console, "\n") {
		if strings.Contains(line, marker) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
