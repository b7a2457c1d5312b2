package filterd_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/internal/badfilter"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const exampleDir = "../examples/ttlguard"

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pingTTL sends one ICMP echo request with the given IP TTL from inside vm
// to dst and reports whether a reply came back within a second.
func pingTTL(t *testing.T, vm *testkit.VM, dst net.IP, ttl int) bool {
	t.Helper()
	var conn net.PacketConn
	if err := vm.Do(func() (err error) {
		conn, err = net.ListenPacket("ip4:icmp", "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, err := conn.(*net.IPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl)
	}); err != nil || serr != nil {
		t.Fatalf("set IP_TTL: %v %v", err, serr)
	}
	id := uint16(time.Now().UnixNano())
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'v', 'f'}
	var sum uint32
	for i := 0; i < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
	if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, _, err := conn.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:6]) == id {
			return true
		}
	}
}

func TestExternalFilter(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()

	// Bad filters first: each fails naming its cause, nothing changes.
	bad := readFile(t, "testdata/external/bad.json")
	badObj := badfilter.Object
	goodManifest := readFile(t, filepath.Join(exampleDir, "ttlguard.json"))
	goodObj := readFile(t, filepath.Join(exampleDir, "ttlguard_bpfel.o"))
	before, err := d.client.Filters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		manifest []byte
		object   []byte
		code     string
		msg      string
	}{
		{"malformed manifest", []byte(`{"name": "ttlguard", "version": "1", "abi": 1, "program": "vf_ttlguard", "colour": "red"}`), goodObj, api.CodeBadManifest, `unknown field "colour"`},
		{"wrong abi", []byte(strings.Replace(string(goodManifest), `"abi": 1`, `"abi": 2`, 1)), goodObj, api.CodeABIMismatch, "built for ABI 2, filterd speaks 1"},
		{"missing program", []byte(strings.Replace(string(goodManifest), `"vf_ttlguard"`, `"vf_nosuch"`, 1)), goodObj, api.CodeBadManifest, `no program "vf_nosuch"`},
		{"verifier rejection", bad, badObj, api.CodeVerifierRejected, "invalid access to packet"},
		{"not an object", goodManifest, []byte("not an ELF"), api.CodeBadManifest, "not a usable eBPF ELF"},
	} {
		_, err := d.client.LoadFilter(ctx, api.LoadFilterRequest{Manifest: tc.manifest, Object: tc.object})
		if !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want code %s naming %q", tc.name, err, tc.code, tc.msg)
		}
	}
	after, err := d.client.Filters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("filters changed after failed loads: %d -> %d", len(before), len(after))
	}

	// Load the example through vfctl, put it in a chain beside count.
	if out, err := d.vfctl("filter", "load", filepath.Join(exampleDir, "ttlguard.json")); err != nil || !strings.Contains(out, "loaded ttlguard 1.0.0") {
		t.Fatalf("vfctl filter load: %v\n%s", err, out)
	}
	if out, err := d.vfctl("filter", "list"); err != nil || !strings.Contains(out, "external") {
		t.Errorf("vfctl filter list: %v\n%s", err, out)
	}
	if out, err := d.vfctl("filter", "info", "ttlguard"); err != nil || !strings.Contains(out, "min_ttl") {
		t.Errorf("vfctl filter info: %v\n%s", err, out)
	}
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{
		{Name: "count"}, {Name: "ttlguard", Params: map[string]string{"min_ttl": "5"}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 3); err != nil {
		t.Fatalf("normal ping through count+ttlguard: %v", err)
	}
	if pingTTL(t, a, b.IPv4.IP, 1) {
		t.Errorf("ping with TTL 1 got a reply through ttlguard min_ttl=5")
	}
	if !pingTTL(t, a, b.IPv4.IP, 64) {
		t.Errorf("ping with TTL 64 got no reply")
	}
	v, err := d.client.VNIC(ctx, a.TapName)
	if err != nil {
		t.Fatal(err)
	}
	var drops float64
	for _, c := range v.Slots[1].Counters {
		if c.Name == "ttl_drops_packets_total" {
			drops = c.Value
		}
	}
	if drops < 1 {
		t.Errorf("ttlguard counters %+v, want ttl_drops_packets_total >= 1", v.Slots[1].Counters)
	}

	// Unload is refused while the chain uses it, and for built-ins.
	if err := d.client.UnloadFilter(ctx, "ttlguard"); !api.IsCode(err, api.CodeFilterInUse) || !strings.Contains(err.Error(), a.TapName) {
		t.Errorf("unload in use: %v", err)
	}
	if err := d.client.UnloadFilter(ctx, "count"); err == nil || !strings.Contains(err.Error(), "built in") {
		t.Errorf("unload built-in: %v", err)
	}

	// A restart keeps the filter (saved by the API) and adopts the chain.
	d.kill()
	d.start()
	if pingTTL(t, a, b.IPv4.IP, 1) {
		t.Errorf("ping with TTL 1 got a reply after filterd restart")
	}
	if _, err := d.client.VNIC(ctx, a.TapName); err != nil {
		t.Fatal(err)
	}
	if err := d.client.Detach(ctx, a.TapName); err != nil {
		t.Fatal(err)
	}
	if out, err := d.vfctl("filter", "unload", "ttlguard"); err != nil {
		t.Fatalf("vfctl filter unload: %v\n%s", err, out)
	}
	if _, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "ttlguard"}}); !api.IsCode(err, api.CodeUnknownFilter) {
		t.Errorf("attach after unload: %v", err)
	}
}

// TestFiltersDir loads filters from --filters-dir at start: a broken one is
// logged and skipped, the good one loads.
func TestFiltersDir(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	dir := t.TempDir()
	for _, f := range []string{"ttlguard.json", "ttlguard_bpfel.o"} {
		if err := os.WriteFile(filepath.Join(dir, f), readFile(t, filepath.Join(exampleDir, f)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), readFile(t, "testdata/external/bad.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.o"), badfilter.Object, 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, host, "--filters-dir", dir)
	fs, err := d.client.Filters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
		if f.Name == "bad" {
			t.Errorf("bad filter loaded")
		}
	}
	if !strings.Contains(strings.Join(names, " "), "ttlguard") {
		t.Errorf("filters %v lack ttlguard", names)
	}
	if !strings.Contains(d.logs.String(), "invalid access to packet") {
		t.Errorf("logs do not name the verifier's verdict on bad:\n%s", d.logs)
	}
}
