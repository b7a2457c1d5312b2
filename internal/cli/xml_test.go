package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// testdata is the XML corpus shared with libvirt/domainxml.
var testdata = filepath.Join("..", "..", "libvirt", "testdata")

var xmlWantRE = regexp.MustCompile(`want: (.*?) -->`)

// crossKind are corpus files that are invalid for the kind their directory
// names but valid as the other kind of element: validate tells the kind
// from the first entry.
var crossKind = map[string]string{
	"domain-metadata/invalid/portgroup-in-domain.xml":   kindNetworkElement,
	"network-metadata/invalid/interface-in-network.xml": kindDomainElement,
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func decodeReport(t *testing.T, s string) xmlReport {
	t.Helper()
	var r xmlReport
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, s)
	}
	return r
}

// TestXMLValidateCorpus: without filterd, validate accepts the valid
// documents of the corpus (exit 0) and rejects the others with the
// parser's message (exit 5), as JSON and as text.
func TestXMLValidateCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testdata, "*-metadata", "*", "*.xml"))
	if err != nil || len(files) < 20 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	socket := noDaemon(t)
	for _, f := range files {
		rel, _ := filepath.Rel(testdata, f)
		rel = filepath.ToSlash(rel)
		t.Run(rel, func(t *testing.T) {
			data, _ := os.ReadFile(f)
			valid := strings.Contains(rel, "/valid/") || crossKind[rel] != ""
			r := vfctl(t, context.Background(), socket, "xml", "validate", "-o", "json", f)
			rep := decodeReport(t, r.stdout)
			if valid {
				if r.code != ExitOK || !rep.Valid || len(rep.Errors) != 0 {
					t.Fatalf("exit %d, report %+v, stderr %q; want valid", r.code, rep, r.stderr)
				}
				if k := crossKind[rel]; k != "" && rep.Kind != k {
					t.Errorf("kind %q, want %q", rep.Kind, k)
				}
				return
			}
			want := string(xmlWantRE.FindSubmatch(data)[1])
			if r.code != ExitBadInput || rep.Valid || len(rep.Errors) == 0 || !contains(rep.Errors[0], want) {
				t.Fatalf("exit %d, report %+v; want exit 5 and an error containing %q", r.code, rep, want)
			}
			if !strings.HasPrefix(r.stderr, "vfctl: "+f+": invalid: ") || !contains(r.stderr, want) {
				t.Errorf("stderr %q", r.stderr)
			}
			// Text output: nothing on stdout, the message on stderr.
			r = vfctl(t, context.Background(), socket, "xml", "validate", f)
			if r.code != ExitBadInput || r.stdout != "" || !contains(r.stderr, want) {
				t.Errorf("text: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestXMLValidateDocuments: whole domain and network XMLs, shape only
// (with the note) when filterd is not running.
func TestXMLValidateDocuments(t *testing.T) {
	socket := noDaemon(t)
	tests := []struct {
		file       string
		kind       string
		interfaces int
	}{
		{"domains/plain.xml", kindDomain, 0},
		{"domains/web01-prepare.xml", kindDomain, 2},
		{"domains/web01-start.xml", kindDomain, 2},
		{"networks/lan.xml", kindNetwork, 2},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f := filepath.Join(testdata, tt.file)
			r := vfctl(t, context.Background(), socket, "-o", "json", "xml", "validate", f)
			if r.code != ExitOK {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			rep := decodeReport(t, r.stdout)
			if rep.Kind != tt.kind || !rep.Valid || len(rep.Interfaces) != tt.interfaces {
				t.Fatalf("report %+v", rep)
			}
			if tt.interfaces > 0 {
				if rep.FiltersChecked || !contains(r.stderr, noDaemonNote) {
					t.Errorf("filters_checked %v, stderr %q; want the note", rep.FiltersChecked, r.stderr)
				}
			}
			r = vfctl(t, context.Background(), socket, "xml", "validate", f)
			if r.code != ExitOK || !strings.HasPrefix(r.stdout, f+": valid "+tt.kind) {
				t.Errorf("text: exit %d, stdout %q", r.code, r.stdout)
			}
		})
	}
	// The chains of web01 in the JSON report.
	r := vfctl(t, context.Background(), socket, "-o", "json", "xml", "validate", filepath.Join(testdata, "domains", "web01-start.xml"))
	rep := decodeReport(t, r.stdout)
	c := rep.Interfaces[1]
	if c.MAC != "52:54:00:aa:00:03" || c.Alias != "ua-backend" || len(c.Filters) != 2 ||
		c.Filters[0].Name != "dnslog" || c.Filters[0].FailMode != "open" || c.Filters[0].Directions != "from-vm" {
		t.Errorf("interface 1: %+v", c)
	}
}

// TestXMLValidateAgainstFilterd: with filterd running, filter names and
// parameters are checked against GET /v1/filters; every bad entry is
// reported with its line.
func TestXMLValidateAgainstFilterd(t *testing.T) {
	if !paramTypeDecodes() {
		t.Skip("sdk.ParamType does not decode from JSON")
	}
	f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/filters": {body: cannedFilters()}})
	good := writeFile(t, "good.xml", `<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
  <vnicfilter:interface mac="52:54:00:12:34:56">
    <vnicfilter:filter name="count"/>
    <vnicfilter:filter name="dnslog" direction="from-vm"><vnicfilter:param name="rate" value="5"/></vnicfilter:filter>
  </vnicfilter:interface>
</vnicfilter:filters>
`)
	r := vfctl(t, context.Background(), f.socket, "xml", "validate", "-o", "json", good)
	rep := decodeReport(t, r.stdout)
	if r.code != ExitOK || !rep.Valid || !rep.FiltersChecked || r.stderr != "" {
		t.Fatalf("exit %d, report %+v, stderr %q", r.code, rep, r.stderr)
	}

	bad := writeFile(t, "bad.xml", `<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
  <vnicfilter:interface mac="52:54:00:12:34:56">
    <vnicfilter:filter name="dnslog"><vnicfilter:param name="rate" value="0"/></vnicfilter:filter>
  </vnicfilter:interface>
  <vnicfilter:interface alias="ua-x">
    <vnicfilter:filter name="count"/>
    <vnicfilter:filter name="nosuch"/>
  </vnicfilter:interface>
</vnicfilter:filters>
`)
	r = vfctl(t, context.Background(), f.socket, "xml", "validate", "-o", "json", bad)
	rep = decodeReport(t, r.stdout)
	if r.code != ExitBadInput || rep.Valid || len(rep.Errors) != 2 {
		t.Fatalf("exit %d, report %+v", r.code, rep)
	}
	if !contains(rep.Errors[0], "line 2: vnicfilter:interface mac 52:54:00:12:34:56: filter 0 (dnslog)") || !contains(rep.Errors[0], "rate") {
		t.Errorf("error 0 %q", rep.Errors[0])
	}
	if !contains(rep.Errors[1], "line 5: vnicfilter:interface alias ua-x: filter 1 (nosuch)") {
		t.Errorf("error 1 %q", rep.Errors[1])
	}
	if !contains(r.stderr, "line 2:") || !contains(r.stderr, "line 5:") {
		t.Errorf("stderr %q names not both lines", r.stderr)
	}

	// A network's portgroup default is checked too.
	r = vfctl(t, context.Background(), f.socket, "xml", "validate", filepath.Join(testdata, "networks", "lan.xml"))
	if r.code != ExitOK || !contains(r.stdout, "filters checked against filterd") {
		t.Errorf("lan.xml: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestXMLValidateStdin: "-" reads standard input.
func TestXMLValidateStdin(t *testing.T) {
	old := xmlStdin
	t.Cleanup(func() { xmlStdin = old })
	xmlStdin = strings.NewReader(`<filters xmlns="https://vnicfilter.dev/xmlns/domain/1"><interface alias="ua-a"><filter name="count"/></interface></filters>`)
	r := vfctl(t, context.Background(), noDaemon(t), "xml", "validate", "-")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "<stdin>: valid vnicfilter:filters element") || !contains(r.stdout, "ua-a") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	xmlStdin = strings.NewReader("<filters")
	r = vfctl(t, context.Background(), noDaemon(t), "xml", "validate", "-")
	if r.code != ExitBadInput || !contains(r.stderr, "<stdin>: invalid: line 1: malformed") {
		t.Fatalf("malformed: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestXMLUsage: command line mistakes exit 2 before anything is read or
// sent; an unreadable FILE or an unreachable libvirtd exits 1.
func TestXMLUsage(t *testing.T) {
	socket := noDaemon(t)
	good := filepath.Join(testdata, "domain-metadata", "valid", "example.xml")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"xml", "validate"}, ExitUsage, "validate: missing FILE"},
		{[]string{"xml", "validate", "a", "b"}, ExitUsage, `unexpected argument "b"`},
		{[]string{"xml", "bogus"}, ExitUsage, `unknown command "bogus" for "vfctl xml"`},
		{[]string{"xml", "get"}, ExitUsage, "get: missing DOMAIN"},
		{[]string{"xml", "get", "web01", "--config", "--live"}, ExitUsage, "--config and --live"},
		{[]string{"xml", "get", "web01", "--connect", "qemu+ssh://host/system"}, ExitUsage, "only local qemu URIs"},
		{[]string{"xml", "get", "web01", "--connect", "xen:///system"}, ExitUsage, "only local qemu URIs"},
		{[]string{"xml", "set", "web01"}, ExitUsage, "missing FILE (or --clear)"},
		{[]string{"xml", "set", "web01", good, "--clear"}, ExitUsage, "--clear takes no FILE"},
		{[]string{"xml", "set", "web01", good, "x"}, ExitUsage, `unexpected argument "x"`},
		{[]string{"xml", "validate", filepath.Join(t.TempDir(), "absent.xml")}, ExitFailure, "no such file"},
		{[]string{"xml", "get", "web01", "--libvirt-socket", filepath.Join(t.TempDir(), "absent")}, ExitFailure, "cannot connect to libvirtd"},
		{[]string{"xml", "set", "web01", good, "--libvirt-socket", filepath.Join(t.TempDir(), "absent")}, ExitFailure, "cannot connect to libvirtd"},
		// Invalid input is refused before libvirtd is contacted.
		{[]string{"xml", "set", "web01", filepath.Join(testdata, "domain-metadata", "invalid", "bad-mac.xml"), "--libvirt-socket", "/nonexistent"}, ExitBadInput, "not a MAC address"},
		{[]string{"xml", "set", "web01", filepath.Join(testdata, "networks", "lan.xml"), "--libvirt-socket", "/nonexistent"}, ExitBadInput, "portgroup defaults belong in a network"},
		{[]string{"xml", "set", "web01", filepath.Join(testdata, "domains", "plain.xml"), "--libvirt-socket", "/nonexistent"}, ExitBadInput, "no vnicfilter:filters element"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := vfctl(t, context.Background(), socket, tt.args...)
			if r.code != tt.code || !contains(r.stderr, "vfctl: ") || !contains(r.stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tt.code, tt.want)
			}
			if tt.code == ExitUsage && (!contains(r.stderr, "hint: ") || r.stdout != "") {
				t.Errorf("stdout %q, stderr %q: want no output and a hint", r.stdout, r.stderr)
			}
		})
	}
}

// TestLibvirtTarget: --connect and --libvirt-socket pick the socket.
func TestLibvirtTarget(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	tests := []struct {
		connect, socket string
		wantSocket      string
		wantURI         string
	}{
		{"qemu:///system", "", defaultLibvirtSocket, "qemu:///system"},
		{"qemu+unix:///system", "", defaultLibvirtSocket, "qemu:///system"},
		{"qemu:///system?socket=/tmp/l.sock", "", "/tmp/l.sock", "qemu:///system"},
		{"qemu:///system", "/tmp/o.sock", "/tmp/o.sock", "qemu:///system"},
		{"qemu:///session", "", "/run/user/1000/libvirt/libvirt-sock", "qemu:///session"},
	}
	for _, tt := range tests {
		lf := libvirtFlags{connect: tt.connect, socket: tt.socket}
		s, u, err := lf.target()
		if err != nil || s != tt.wantSocket || string(u) != tt.wantURI {
			t.Errorf("%s %s: %q %q %v; want %q %q", tt.connect, tt.socket, s, u, err, tt.wantSocket, tt.wantURI)
		}
	}
}
