package testkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		ci, met    bool
		skip, fail bool
	}{
		{ci: false, met: true},
		{ci: true, met: true},
		{ci: false, met: false, skip: true},
		{ci: true, met: false, fail: true},
	} {
		t.Run(fmt.Sprintf("ci=%v,met=%v", tc.ci, tc.met), func(t *testing.T) {
			skip, fail := decide(tc.ci, tc.met)
			if skip != tc.skip || fail != tc.fail {
				t.Errorf("decide(%v, %v) = skip %v, fail %v; want skip %v, fail %v",
					tc.ci, tc.met, skip, fail, tc.skip, tc.fail)
			}
		})
	}
}

func TestRequirementString(t *testing.T) {
	for r, want := range map[Requirement]string{
		Root: "root", BPF: "bpf", TCX: "tcx", Iperf3: "iperf3", Tshark: "tshark",
		Requirement(42): "Requirement(42)", Requirement(-1): "Requirement(-1)",
	} {
		if got := r.String(); got != want {
			t.Errorf("Requirement(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}

// TestNeedProbes runs every probe so a broken probe shows up as a reason in
// the log rather than as a mysterious skip elsewhere.
func TestNeedProbes(t *testing.T) {
	Need(t, Root)
	for _, r := range []Requirement{Root, BPF, TCX, Iperf3, Tshark} {
		if reason := probe(r); reason != "" {
			t.Logf("%s unmet: %s", r, reason)
		} else {
			t.Logf("%s met", r)
		}
	}
	if !isBPFFS(bpffsPath) && probe(BPF) == "" {
		t.Errorf("BPF met but %s is not bpffs", bpffsPath)
	}
}

// nsInode returns the inode identifying the namespace mounted at path.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// assertNoRefsInProcess fails t if any thread or open fd of this process
// still refers to a namespace in inodes: such a reference would keep the
// namespace alive after its mount is gone.
//
// A thread whose goroutine ended while locked in a namespace (how nsutil
// discards threads it could not restore) is terminated by the runtime
// asynchronously: give such threads up to two seconds to go, so a loaded
// machine does not fail the check, while a thread that stays does.
func assertNoRefsInProcess(t *testing.T, inodes map[uint64]string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = left[:0]
		links, _ := filepath.Glob("/proc/self/task/*/ns/net")
		fds, _ := filepath.Glob("/proc/self/fd/*")
		for _, l := range append(links, fds...) {
			target, err := os.Readlink(l)
			if err != nil {
				continue // the thread or fd went away meanwhile
			}
			var ino uint64
			if _, err := fmt.Sscanf(target, "net:[%d]", &ino); err != nil {
				continue
			}
			if name, ok := inodes[ino]; ok {
				left = append(left, fmt.Sprintf("%s still refers to netns %s (%s)", l, name, target))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range left {
		t.Error(l)
	}
}

func TestLab(t *testing.T) {
	Need(t, Root)
	inodes := map[uint64]string{}
	var paths []string

	t.Run("host with two VMs", func(t *testing.T) {
		host := NewHost(t)
		a := host.AddVM(t, "a")
		b := host.AddVM(t, "b")
		for _, p := range []string{host.Path, a.Path, b.Path} {
			paths = append(paths, p)
			inodes[nsInode(t, p)] = p
		}

		t.Run("addressing", func(t *testing.T) {
			if a.TapName != "vnet1" || b.TapName != "vnet2" {
				t.Errorf("taps %s, %s; want vnet1, vnet2", a.TapName, b.TapName)
			}
			if got, want := b.IPv4.String(), "10.99.0.2/24"; got != want {
				t.Errorf("b.IPv4 = %s, want %s", got, want)
			}
			if got, want := b.IPv6.String(), "fd99::2/64"; got != want {
				t.Errorf("b.IPv6 = %s, want %s", got, want)
			}
			if got, want := b.MAC.String(), "02:76:66:00:00:02"; got != want {
				t.Errorf("b.MAC = %s, want %s", got, want)
			}
			eth, err := b.Handle().LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			if got := eth.Attrs().HardwareAddr.String(); got != b.MAC.String() {
				t.Errorf("eth0 in b has MAC %s, want %s", got, b.MAC)
			}
		})

		t.Run("taps are bridge ports", func(t *testing.T) {
			br := host.Ifindex(t, host.Bridge)
			for _, vm := range []*VM{a, b} {
				if got := host.Ifindex(t, vm.TapName); got != vm.TapIndex {
					t.Errorf("ifindex of %s = %d, TapIndex = %d", vm.TapName, got, vm.TapIndex)
				}
				tap, err := host.Handle().LinkByName(vm.TapName)
				if err != nil {
					t.Fatal(err)
				}
				if tap.Attrs().MasterIndex != br {
					t.Errorf("%s master = %d, want br0 (%d)", vm.TapName, tap.Attrs().MasterIndex, br)
				}
			}
		})

		t.Run("Do switches namespace", func(t *testing.T) {
			err := host.Do(func() error {
				_, err := netlink.LinkByName(host.Bridge)
				return err
			})
			if err != nil {
				t.Errorf("br0 not visible from host.Do: %v", err)
			}
			err = a.Do(func() error {
				_, err := netlink.LinkByName(host.Bridge)
				return err
			})
			var notFound netlink.LinkNotFoundError
			if !errors.As(err, &notFound) {
				t.Errorf("br0 lookup from vm a: got %v, want LinkNotFoundError", err)
			}
		})

		t.Run("ping", func(t *testing.T) {
			for _, tc := range []struct {
				name     string
				from, to *VM
				v6       bool
			}{
				{"a to b v4", a, b, false},
				{"b to a v4", b, a, false},
				{"a to b v6", a, b, true},
				{"b to a v6", b, a, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					dst := tc.to.IPv4.IP
					if tc.v6 {
						dst = tc.to.IPv6.IP
					}
					if err := tc.from.Ping(t, dst, 3); err != nil {
						t.Error(err)
					}
				})
			}
		})

		t.Run("ping to nobody fails", func(t *testing.T) {
			t.Parallel()
			err := a.Ping(t, net.ParseIP("10.99.0.200"), 1)
			if err == nil {
				t.Fatal("ping to an absent address succeeded")
			}
			if !strings.Contains(err.Error(), "10.99.0.1") || !strings.Contains(err.Error(), "10.99.0.200") {
				t.Errorf("error %q does not name source and destination", err)
			}
		})

		t.Run("tcp echo", func(t *testing.T) {
			for _, addr := range []string{"10.99.0.2:7777", "[fd99::2]:7777"} {
				t.Run(addr, func(t *testing.T) { tcpEcho(t, a, b, addr) })
			}
		})

		t.Run("udp", func(t *testing.T) {
			srv, err := b.ListenUDP("10.99.0.2:0")
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cli, err := a.DialUDP(ctx, srv.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "hello" || !from.IP.Equal(a.IPv4.IP) {
				t.Errorf("got %q from %s, want \"hello\" from %s", buf[:n], from, a.IPv4.IP)
			}
		})

		t.Run("Command runs in the namespace", func(t *testing.T) {
			out, err := a.Command(context.Background(), "cat", "/proc/net/dev").CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if !strings.Contains(string(out), "eth0:") || strings.Contains(string(out), "vnet") {
				t.Errorf("vm a sees devices:\n%s", out)
			}
			out, err = host.Command(context.Background(), "cat", "/proc/net/dev").CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if !strings.Contains(string(out), "br0:") || !strings.Contains(string(out), a.TapName+":") {
				t.Errorf("host sees devices:\n%s", out)
			}
		})

		t.Run("iperf3", func(t *testing.T) {
			Need(t, Iperf3)
			b.Iperf3Server(t, 5201)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := a.Command(ctx, "iperf3", "-c", b.IPv4.IP.String(), "-p", "5201", "-t", "1").CombinedOutput()
			if err != nil {
				t.Fatalf("iperf3 client: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "receiver") {
				t.Errorf("iperf3 client output lacks a summary:\n%s", out)
			}
		})
	})

	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after cleanup (stat: %v)", p, err)
		}
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, p := range paths {
			if strings.Contains(string(mounts), " "+p+" ") {
				t.Errorf("%s still mounted after cleanup", p)
			}
		}
	}
	assertNoRefsInProcess(t, inodes)
}

// tcpEcho has a serve on addr and a write a line and read it back.
func tcpEcho(t *testing.T, client, server *VM, addr string) {
	l, err := server.ListenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialTCP(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, "hello from", client.Label); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello from " + client.Label + "\n"; line != want {
		t.Errorf("echo = %q, want %q", line, want)
	}
}

// TestParallelHosts builds several labs at once, as parallel tests in
// different packages do, and checks they neither collide nor leak.
func TestParallelHosts(t *testing.T) {
	Need(t, Root)
	const n = 4
	names := make(chan string, 3*n)
	t.Run("group", func(t *testing.T) {
		for i := range n {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				host := NewHost(t)
				a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
				names <- host.Path
				names <- a.Path
				names <- b.Path
				if err := a.Ping(t, b.IPv4.IP, 1); err != nil { // the first packet must get through
					t.Error(err)
				}
			})
		}
	})
	close(names)
	seen := map[string]bool{}
	for p := range names {
		if seen[p] {
			t.Errorf("namespace %s handed out twice", p)
		}
		seen[p] = true
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after cleanup (stat: %v)", p, err)
		}
	}
}
