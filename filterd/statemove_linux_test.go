package filterd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// movePolicy is default-deny both ways; the VM may open TCP connections
// to port 5001 (a service it uses) and nothing else. Replies flow only
// through the connection table, so a flow whose table entry is missing
// after a move is cut: its first packets at the destination are the
// server's data, which no rule allows.
const movePolicy = `{
  "version": 1,
  "defaults": {"from-vm": "deny", "to-vm": "deny"},
  "rules": [
    {"name": "use-service", "direction": "from-vm", "proto": "tcp", "dst_ports": [5001], "action": "allow"}
  ]
}`

// TestStateFollowsVM moves a VM that is downloading over a long TCP
// stream from one vNIC to another (the namespace form of a live
// migration): with the firewall's state exported and imported the stream
// goes on; with the transfer switched off the same move cuts it, which
// proves the test can fail.
func TestStateFollowsVM(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	for _, transfer := range []bool{true, false} {
		name := map[bool]string{true: "with-state", false: "without-state"}[transfer]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			moveVM(t, transfer)
		})
	}
}

func moveVM(t *testing.T, transfer bool) {
	host := testkit.NewHost(t)
	vm, server := host.AddVM(t, "vm"), host.AddVM(t, "server")
	d := newDaemon(t, host)
	ctx := context.Background()
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(movePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	chain := api.ChainRequest{Filters: []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": policy}}}}
	if _, err := d.client.SetChain(ctx, vm.TapName, chain); err != nil {
		t.Fatal(err)
	}

	// The server streams to the VM until the test ends.
	ln, err := server.ListenTCP(net.JoinHostPort(server.IPv4.IP.String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, zeroReader{})
	}()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := vm.DialTCP(dctx, net.JoinHostPort(server.IPv4.IP.String(), "5001"))
	if err != nil {
		t.Fatalf("connect through the firewall: %v", err)
	}
	defer conn.Close()
	var got atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			got.Add(int64(n))
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	waitBytes := func(what string, min int64, within time.Duration) bool {
		t.Helper()
		for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if got.Load() >= min {
				return true
			}
		}
		return false
	}
	if !waitBytes("before the move", 8<<20, 10*time.Second) {
		t.Fatalf("only %d bytes before the move", got.Load())
	}

	// The move: the destination vNIC gets the same chain (and, with
	// transfer, the source's state) before the VM resumes on it.
	newTap := vm.Replug(t)
	if _, err := d.client.SetChain(ctx, newTap, chain); err != nil {
		t.Fatal(err)
	}
	var imported *api.ImportResult
	if transfer {
		bundle, err := d.client.ExportState(ctx, vm.TapName)
		if err != nil {
			t.Fatalf("export: %v", err)
		}
		if imported, err = d.client.ImportState(ctx, newTap, bundle); err != nil {
			t.Fatalf("import: %v", err)
		}
		t.Logf("imported %+v (%d bytes)", imported.Slots, len(bundle))
		if len(imported.Slots) != 1 || imported.Slots[0].Entries < 1 {
			t.Fatalf("import result %+v: want the firewall's flows", imported)
		}
	}
	oldTap := vm.TapName
	vm.Cutover(t)
	moved := got.Load()
	if err := d.client.Detach(ctx, oldTap); err != nil && !api.IsCode(err, api.CodeNotAttached) {
		t.Logf("detach source %s: %v", oldTap, err)
	}

	flowed := waitBytes("after the move", moved+8<<20, 5*time.Second)
	select {
	case err := <-readErr:
		t.Fatalf("stream ended across the move: %v", err)
	default:
	}
	if transfer && !flowed {
		t.Fatalf("with state transfer the stream stalled: %d bytes after the move", got.Load()-moved)
	}
	if !transfer && flowed {
		t.Fatalf("without state transfer the stream went on (%d bytes): the test cannot tell the difference", got.Load()-moved)
	}
	t.Logf("transfer=%v: %d MiB before the move, %d MiB after", transfer, moved>>20, (got.Load()-moved)>>20)

	// A damaged or foreign bundle is refused and leaves the chain be.
	if transfer {
		bundle, err := d.client.ExportState(ctx, vm.TapName)
		if err != nil {
			t.Fatal(err)
		}
		bad := append([]byte(nil), bundle...)
		bad[len(bad)-1] ^= 0xff
		for what, b := range map[string][]byte{"damaged": bad, "not a bundle": []byte("hello"), "truncated": bundle[:len(bundle)/2]} {
			_, err := d.client.ImportState(ctx, vm.TapName, b)
			if !api.IsCode(err, api.CodeBadState) {
				t.Errorf("%s bundle: %v, want %s", what, err, api.CodeBadState)
			}
		}
		if out, err := d.vfctl("vnic", "import", vm.TapName, "/dev/null"); err == nil || !strings.Contains(out, "magic") {
			t.Errorf("vfctl vnic import of an empty file: %v\n%s", err, out)
		}
		if !waitBytes("after refused imports", got.Load()+4<<20, 5*time.Second) {
			t.Error("stream stalled after refused imports")
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestStateMove100k moves 100,000 connections between two vNICs through
// the API (export, bundle, import) five times, each into a fresh chain,
// and reports the median time, the size and filterd's CPU time per move
// (user+system: a figure the machine's load does not inflate); the
// in-process part is BenchmarkStateMove100k in filters/firewall, the move
// between two filterds over mutual TLS TestMigrateState100k.
func TestStateMove100k(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	vm := host.AddVM(t, "vm")
	d := newDaemon(t, host)
	ctx := context.Background()
	chain := bigChain(t)
	if _, err := d.client.SetChain(ctx, vm.TapName, chain); err != nil {
		t.Fatal(err)
	}
	dst := vm.Replug(t)
	const n = 100_000
	fillFlows(t, d, vm.TapName, n)
	var took, cpu []time.Duration
	size := 0
	for range moveRuns {
		if _, err := d.client.SetChain(ctx, dst, chain); err != nil {
			t.Fatal(err)
		}
		cpu0 := procCPU(t, d.cmd.Process.Pid)
		start := time.Now()
		bundle, err := d.client.ExportState(ctx, vm.TapName)
		if err != nil {
			t.Fatal(err)
		}
		r, err := d.client.ImportState(ctx, dst, bundle)
		if err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		cpu = append(cpu, procCPU(t, d.cmd.Process.Pid)-cpu0)
		if len(r.Slots) != 1 || r.Slots[0].Entries != n {
			t.Fatalf("import %+v: want %d flows", r, n)
		}
		size = len(bundle)
		if err := d.client.Detach(ctx, dst); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("moved %d flows (%.1f MB bundle) through the API: p50 %v over %d runs (all: %v); filterd CPU per move p50 %v",
		n, float64(size)/1e6, median(took), moveRuns, took, median(cpu))
}

// moveRuns is how many moves the 100k tests time.
const moveRuns = 5

// bigChain is a firewall chain with room for 131,072 flows.
func bigChain(t *testing.T) api.ChainRequest {
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(movePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	return api.ChainRequest{Filters: []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": policy, "conntrack_size": "131072"}}}}
}

// fillFlows writes n established flows into the firewall's connection
// table of vnic's chain, straight into the pinned map: with an hour to
// live, so their last packet was days ago (an established flow lives five
// days after its last packet).
func fillFlows(t *testing.T, d *daemon, vnic string, n int) {
	writeFlows(t, d, vnic, 0, n, sdk.KtimeNow()+uint64(time.Hour))
}

// writeFlows writes flows first..first+n-1 with the given expiry (ktime).
func writeFlows(t *testing.T, d *daemon, vnic string, first, n int, expires uint64) {
	t.Helper()
	ct, err := ebpf.LoadPinnedMap(filepath.Join(d.root, vnic, "slot0", "fw_conntrack"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	if ct.KeySize() != 40 || ct.ValueSize() != 48 {
		t.Fatalf("fw_conntrack entries are %d+%d bytes; this test writes 40+48", ct.KeySize(), ct.ValueSize())
	}
	keys, vals := make([][40]byte, n), make([][48]byte, n)
	for j := range n {
		i := first + j
		k := keys[j][:]
		k[0], k[3] = 10, 1 // local 10.0.0.1
		k[16], k[17], k[18], k[19] = 10, 1, byte(i>>16), byte(i>>8)
		binary.LittleEndian.PutUint16(k[32:], uint16(1024+i%60000))
		binary.LittleEndian.PutUint16(k[34:], 5001)
		k[36], k[37] = 6, 4
		v := vals[j][:]
		binary.LittleEndian.PutUint64(v, expires)
		v[40] = 3 // established
	}
	for done := 0; done < n; {
		end := min(done+4096, n)
		m, err := ct.BatchUpdate(keys[done:end], vals[done:end], nil)
		done += m
		if err != nil {
			t.Fatalf("fill after %d: %v", done, err)
		}
	}
}

// procCPU is a process's user+system CPU time so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
