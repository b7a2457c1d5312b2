package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testlab.StopShared()
	if builtFilterdDir != "" {
		os.RemoveAll(builtFilterdDir)
	}
	os.Exit(code)
}

// TestXMLSetGetLibvirt: set, get and clear against a private libvirtd, on
// the persistent definition of a defined (not started) guest. Needs root,
// libvirtd and QEMU; skipped otherwise.
func TestXMLSetGetLibvirt(t *testing.T) {
	l := testlab.Shared(t)
	img, err := testlab.BuildGuestImage(t, "")
	if err != nil {
		t.Fatal(err)
	}
	// The bridge need not exist: the guest is never started.
	g := l.DefineGuest(t, img, testlab.GuestSpec{NICs: []testlab.NIC{
		{Bridge: "vfctl-nobr", MAC: "52:54:00:12:34:56"},
		{Bridge: "vfctl-nobr", MAC: "52:54:00:12:34:57", Alias: "ua-backend"},
	}})
	socket := noDaemon(t) // filterd is not running: shape-only checks
	xmlctl := func(args ...string) result {
		t.Helper()
		return vfctl(t, context.Background(), socket, append(args, "--libvirt-socket", l.Socket())...)
	}

	if r := xmlctl("xml", "get", g.Name); r.code != ExitNotFound || !contains(r.stderr, "has no vnicfilter configuration") {
		t.Fatalf("get before set: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := xmlctl("xml", "get", "vfctl-no-such-domain"); r.code != ExitNotFound || !contains(r.stderr, "no domain") {
		t.Fatalf("get unknown domain: exit %d, stderr %q", r.code, r.stderr)
	}

	const element = `<!-- two interfaces -->
<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
  <vnicfilter:interface mac="52:54:00:12:34:56">
    <vnicfilter:filter name="count" failmode="open"/>
    <vnicfilter:filter name="dnslog" direction="from-vm">
      <vnicfilter:param name="rate" value="5"/>
      <vnicfilter:param name="log" value="a &lt;b&gt; &amp; &quot;c&quot;"/>
    </vnicfilter:filter>
  </vnicfilter:interface>
  <vnicfilter:interface alias="ua-backend">
    <vnicfilter:filter name="count"/>
  </vnicfilter:interface>
</vnicfilter:filters>
`
	file := writeFile(t, "filters.xml", element)
	r := xmlctl("xml", "set", g.Name, file)
	if r.code != ExitOK || !contains(r.stdout, "set (persistent definition)") {
		t.Fatalf("set: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	cfg, err := domainxml.ParseConfig([]byte(element))
	if err != nil {
		t.Fatal(err)
	}
	want, err := domainxml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func() string {
		t.Helper()
		r := xmlctl("xml", "get", g.Name, "--config")
		if r.code != ExitOK {
			t.Fatalf("get: exit %d, stderr %q", r.code, r.stderr)
		}
		return r.stdout
	}
	if got := get(); got != string(want) {
		t.Fatalf("get after set:\n%s\nwant:\n%s", got, want)
	}
	// libvirt stored it in our namespace under our prefix, where the hook
	// and 'virsh edit' find it.
	dump, err := l.Virsh("dumpxml", "--inactive", g.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump, `<vnicfilter:filters xmlns:vnicfilter="`+domainxml.Namespace+`">`) {
		t.Errorf("dumpxml has no prefixed element:\n%s", dump)
	}
	d, err := domainxml.Parse([]byte(dump))
	if err != nil {
		t.Fatal(err)
	}
	if chains, err := d.Chains(nil); err != nil || len(chains) != 2 {
		t.Errorf("chains of the stored domain: %v, %v", chains, err)
	}
	// The connection URI with ?socket= works as well as --libvirt-socket.
	if r := vfctl(t, context.Background(), socket, "xml", "get", g.Name, "--connect", l.URI()); r.code != ExitOK || r.stdout != string(want) {
		t.Errorf("get --connect %s: exit %d, stderr %q", l.URI(), r.code, r.stderr)
	}

	// Invalid files are refused with exit 5 and change nothing.
	for _, bad := range []struct{ name, content, want string }{
		{"bad-mac.xml", strings.Replace(element, "52:54:00:12:34:56", "52-54-00-12-34-56", 1), "line 3: vnicfilter:interface"},
		{"malformed.xml", strings.Replace(element, "</vnicfilter:interface>", "", 1), "malformed"},
		{"other-domain.xml", strings.Replace(element, "52:54:00:12:34:56", "52:54:00:99:99:99", 1), "the domain has no interface with this mac"},
	} {
		r := xmlctl("xml", "set", g.Name, writeFile(t, bad.name, bad.content))
		if r.code != ExitBadInput || !contains(r.stderr, bad.want) {
			t.Errorf("set %s: exit %d, stderr %q; want exit 5 and %q", bad.name, r.code, r.stderr, bad.want)
		}
		if got := get(); got != string(want) {
			t.Errorf("set %s changed the metadata:\n%s", bad.name, got)
		}
	}

	if r := xmlctl("xml", "set", g.Name, "--clear"); r.code != ExitOK || !contains(r.stdout, "removed (persistent definition)") {
		t.Fatalf("clear: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := xmlctl("xml", "get", g.Name); r.code != ExitNotFound {
		t.Fatalf("get after clear: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// -o json of get lists the interfaces.
	if r := xmlctl("xml", "set", g.Name, filepath.Join(testdata, "domain-metadata", "valid", "example.xml")); r.code != ExitOK {
		t.Fatalf("set example: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := xmlctl("-o", "json", "xml", "get", g.Name); r.code != ExitOK || !contains(r.stdout, `"mac": "52:54:00:12:34:56"`) {
		t.Errorf("get -o json: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestXMLSetRunningDomain: without --config/--live, set changes both the
// persistent definition and the running domain of a running guest.
func TestXMLSetRunningDomain(t *testing.T) {
	l := testlab.Shared(t)
	img, err := testlab.BuildGuestImage(t, "")
	if err != nil {
		t.Fatal(err)
	}
	g := l.DefineGuest(t, img, testlab.GuestSpec{NICs: []testlab.NIC{{Bridge: testlab.NewBridge(t), MAC: "52:54:00:12:34:56"}}})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	socket := noDaemon(t)
	xmlctl := func(args ...string) result {
		t.Helper()
		return vfctl(t, context.Background(), socket, append(args, "--libvirt-socket", l.Socket())...)
	}
	file := filepath.Join(testdata, "domain-metadata", "valid", "example.xml")
	r := xmlctl("xml", "set", g.Name, file)
	if r.code != ExitOK || !contains(r.stdout, "(persistent definition and running domain)") {
		t.Fatalf("set: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	data, _ := os.ReadFile(file)
	cfg, err := domainxml.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := domainxml.Marshal(cfg)
	for _, scope := range []string{"--live", "--config"} {
		if r := xmlctl("xml", "get", g.Name, scope); r.code != ExitOK || r.stdout != string(want) {
			t.Errorf("get %s: exit %d, stdout %q, stderr %q", scope, r.code, r.stdout, r.stderr)
		}
	}
	if r := xmlctl("xml", "set", g.Name, "--clear", "--live"); r.code != ExitOK || !contains(r.stdout, "removed (running domain)") {
		t.Fatalf("clear --live: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := xmlctl("xml", "get", g.Name, "--live"); r.code != ExitNotFound {
		t.Errorf("get --live after clear: exit %d", r.code)
	}
	if r := xmlctl("xml", "get", g.Name, "--config"); r.code != ExitOK {
		t.Errorf("get --config after clear --live: exit %d, stderr %q", r.code, r.stderr)
	}
}
