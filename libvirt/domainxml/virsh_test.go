package domainxml

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// TestVirshMetadataRoundTrip sets the configuration the way operators and
// `vfctl xml set` do (virDomainSetMetadata with key Prefix) on libvirt's
// in-process test driver, which needs no libvirtd, and parses it back
// from the domain XML libvirt then writes.
func TestVirshMetadataRoundTrip(t *testing.T) {
	virsh, err := exec.LookPath("virsh")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("virsh not found (CI=true: install libvirt-clients)")
		}
		t.Skip("virsh not found: install libvirt-clients")
	}
	cfg := &Config{Interfaces: []InterfaceConfig{{
		MAC: mac("52:54:00:12:34:56"),
		Filters: []api.FilterSpec{
			{Name: "count", FailMode: "closed", Directions: "both", Params: map[string]string{"rate": "10", "q": `it's "x"`}},
			{Name: "dnslog", Directions: "from-vm"},
		},
	}}}
	value, err := MarshalMetadata(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// One virsh process: the test driver's state lives only in it.
	script := "metadata test " + Namespace + " --key " + Prefix + " --set '" + string(value) + "'; dumpxml test; metadata test " + Namespace
	out, err := exec.Command(virsh, "-q", "-c", "test:///default", script).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh: %v\n%s", err, out)
	}
	start, end := bytes.Index(out, []byte("<domain")), bytes.Index(out, []byte("</domain>"))
	if start < 0 || end < 0 {
		t.Fatalf("no domain XML in virsh output:\n%s", out)
	}
	d, err := Parse(out[start : end+len("</domain>")])
	if err != nil {
		t.Fatalf("parse libvirt's domain XML: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(stripLines(d.Config), cfg) {
		t.Errorf("config after libvirt:\n got %+v\nwant %+v", d.Config, cfg)
	}
	// `virsh metadata DOMAIN URI` prints the value back without namespace.
	got, err := ParseMetadata(bytes.TrimSpace(out[end+len("</domain>"):]))
	if err != nil || !reflect.DeepEqual(stripLines(got), cfg) {
		t.Errorf("ParseMetadata(virsh metadata) = %+v, %v\n%s", got, err, out[end:])
	}
}
