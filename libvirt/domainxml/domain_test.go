package domainxml

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestParseDomain(t *testing.T) {
	d, err := Parse(readTestdata(t, "domains/web01-start.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "web01" || d.UUID != "4dea22b3-1d52-d8f3-2516-782e98ab3fa0" {
		t.Errorf("name/uuid = %q %q", d.Name, d.UUID)
	}
	want := []Interface{
		{Type: "network", MAC: mac("52:54:00:aa:00:01"), Alias: "net0", Tap: "vnet7", Network: "lan", Portgroup: "web", Bridge: "virbr1"},
		{Type: "bridge", MAC: mac("52:54:00:aa:00:02"), Alias: "net1", Tap: "vnet8", Bridge: "br0"},
		{Type: "network", MAC: mac("52:54:00:aa:00:03"), Alias: "ua-backend", Tap: "vnet9", Network: "lan"},
		{Type: "network", MAC: mac("52:54:00:aa:00:04"), Alias: "net3", Tap: "vnet10", Network: "lan", Portgroup: "web", Bridge: "virbr1"},
		{Type: "user", MAC: mac("52:54:00:aa:00:05")},
	}
	if !reflect.DeepEqual(d.Interfaces, want) {
		t.Errorf("interfaces:\n got %+v\nwant %+v", d.Interfaces, want)
	}
	if d.Config == nil || len(d.Config.Interfaces) != 3 {
		t.Fatalf("config = %+v", d.Config)
	}
	first := d.Config.Interfaces[0]
	wantSpec := api.FilterSpec{Name: "count", FailMode: "closed", Directions: "both", Params: map[string]string{"rate": "10"}}
	if first.MAC.String() != "52:54:00:aa:00:02" || !reflect.DeepEqual(first.Filters, []api.FilterSpec{wantSpec}) {
		t.Errorf("first entry = %+v", first)
	}
}

func TestParseNoConfig(t *testing.T) {
	d, err := Parse(readTestdata(t, "domains/plain.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Config != nil {
		t.Errorf("config = %+v, want nil", d.Config)
	}
	chains, err := d.Chains(nil)
	if err != nil || len(chains) != 0 {
		t.Errorf("chains = %v, %v; want none", chains, err)
	}
}

func TestChains(t *testing.T) {
	defaults, err := ParseNetworkDefaults(readTestdata(t, "networks/lan.xml"))
	if err != nil {
		t.Fatal(err)
	}
	count := api.FilterSpec{Name: "count", FailMode: "closed", Directions: "both", Params: map[string]string{"rate": "10"}}
	backend := []api.FilterSpec{{Name: "dnslog", FailMode: "open", Directions: "from-vm"}, {Name: "count"}}
	web := []api.FilterSpec{{Name: "count", FailMode: "open"}}
	for _, tc := range []struct {
		name     string
		file     string
		defaults PortgroupDefaults
		want     []Chain
	}{
		{"start, with portgroup defaults", "domains/web01-start.xml", defaults, []Chain{
			{Tap: "vnet7", MAC: mac("52:54:00:aa:00:01"), Alias: "net0", Filters: web},
			{Tap: "vnet8", MAC: mac("52:54:00:aa:00:02"), Alias: "net1", Filters: []api.FilterSpec{count}},
			{Tap: "vnet9", MAC: mac("52:54:00:aa:00:03"), Alias: "ua-backend", Filters: backend},
		}},
		{"start, no defaults: selective", "domains/web01-start.xml", nil, []Chain{
			{Tap: "vnet8", MAC: mac("52:54:00:aa:00:02"), Alias: "net1", Filters: []api.FilterSpec{count}},
			{Tap: "vnet9", MAC: mac("52:54:00:aa:00:03"), Alias: "ua-backend", Filters: backend},
		}},
		{"prepare: no taps yet", "domains/web01-prepare.xml", nil, []Chain{
			{MAC: mac("52:54:00:aa:00:02"), Alias: "net1", Filters: []api.FilterSpec{count}},
			{MAC: mac("52:54:00:aa:00:03"), Alias: "ua-backend", Filters: backend},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Chains(tc.defaults)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("chains:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// domainWith returns a small domain XML with the given devices and
// vnicfilter entries.
func domainWith(devices, entries string) []byte {
	return []byte(`<domain type='qemu'><name>vm1</name><metadata>
<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">` + entries + `</vnicfilter:filters>
</metadata><devices>` + devices + `</devices></domain>`)
}

const nic1 = `<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><target dev='vnet1'/><alias name='ua-a'/></interface>`

func TestDomainErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  []byte
		want string // in the Parse or Chains error
	}{
		{"malformed domain", []byte("<domain>\n<name>x</name>\n<devices>\n</domain>"), "line 4: malformed domain XML"},
		{"malformed metadata", domainWith(nic1, "\n<vnicfilter:interface mac='52:54:00:00:00:01'>\n</vnicfilter:filters>"), "line 4: malformed domain XML"},
		{"not a domain", []byte("<network><name>x</name></network>"), "malformed domain XML"},
		{"unknown mac", domainWith(nic1, `<vnicfilter:interface mac="52:54:00:00:00:09"><vnicfilter:filter name="count"/></vnicfilter:interface>`), "line 2: vnicfilter:interface mac 52:54:00:00:00:09: the domain has no interface with this mac"},
		{"unknown alias", domainWith(nic1, `<vnicfilter:interface alias="ua-b"/>`), "no interface with this alias"},
		{"same nic twice", domainWith(nic1, `<vnicfilter:interface mac="52:54:00:00:00:01"/><vnicfilter:interface alias="ua-a"/>`), "interface 52:54:00:00:00:01 (vnet1) is already configured by vnicfilter:interface mac 52:54:00:00:00:01"},
		{"direct has no tap", domainWith(`<interface type='direct'><mac address='52:54:00:00:00:02'/><source dev='eth0' mode='bridge'/></interface>`, `<vnicfilter:interface mac="52:54:00:00:00:02"><vnicfilter:filter name="count"/></vnicfilter:interface>`), `interface type "direct" has no host-side tap`},
		{"two vnicfilter elements", []byte(`<domain><name>vm1</name><metadata>
<a:filters xmlns:a="https://vnicfilter.dev/xmlns/domain/1"/>
<b:filters xmlns:b="https://vnicfilter.dev/xmlns/domain/1"/></metadata></domain>`), "line 3: a second vnicfilter:filters element"},
		{"undeclared prefix in metadata", []byte(`<domain><name>vm1</name><metadata><vnicfilter:filters/></metadata></domain>`), "is not declared"},
		{"bad filter in domain", domainWith(nic1, `<vnicfilter:interface mac="52:54:00:00:00:01"><vnicfilter:filter name="count" direction="sideways"/></vnicfilter:interface>`), `direction "sideways"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse(tc.doc)
			if err == nil {
				_, err = d.Chains(nil)
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want ErrInvalidConfig containing %q", err, tc.want)
			}
		})
	}
}

// A namespace declared on <domain> (not on our element) still counts.
func TestNamespaceOnRoot(t *testing.T) {
	doc := []byte(`<domain xmlns:vf="https://vnicfilter.dev/xmlns/domain/1"><name>vm1</name><metadata>
<vf:filters><vf:interface alias="ua-a"><vf:filter name="count"/></vf:interface></vf:filters></metadata><devices>` + nic1 + `</devices></domain>`)
	d, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := d.Chains(nil)
	if err != nil || len(chains) != 1 || chains[0].Tap != "vnet1" {
		t.Fatalf("chains = %+v, %v", chains, err)
	}
}

func TestNetworkDefaults(t *testing.T) {
	got, err := ParseNetworkDefaults(readTestdata(t, "networks/lan.xml"))
	if err != nil {
		t.Fatal(err)
	}
	web := []api.FilterSpec{{Name: "count", FailMode: "open"}}
	want := PortgroupDefaults{
		"lan/web": web,
		"lan/":    web, // web is the default portgroup
		"lan/db":  {{Name: "dnslog", Directions: "from-vm", Params: map[string]string{"rate": "5"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}

	none, err := ParseNetworkDefaults([]byte(`<network><name>n</name></network>`))
	if err != nil || len(none) != 0 {
		t.Errorf("network without metadata: %v, %v", none, err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown portgroup", `<network><name>n</name><metadata><vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1"><vnicfilter:portgroup name="web"><vnicfilter:filter name="count"/></vnicfilter:portgroup></vnicfilter:filters></metadata></network>`, `vnicfilter:portgroup name="web": network n has no such <portgroup>`},
		{"malformed", "<network>\n<name>n</name>", "line 2: malformed network XML"},
		{"interface entry", `<network><name>n</name><metadata><vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1"><vnicfilter:interface mac="52:54:00:00:00:01"/></vnicfilter:filters></metadata></network>`, "unknown element vnicfilter:interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNetworkDefaults([]byte(tc.doc))
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrInvalidConfig containing %q", err, tc.want)
			}
		})
	}
}

// schemas stands in for filterd's GET /v1/filters.
func schemas(name string) (*sdk.Descriptor, error) {
	switch name {
	case "count":
		return &sdk.Descriptor{Name: "count", Params: []sdk.ParamSpec{{Name: "rate", Type: sdk.Int, Min: sdk.Bound(1)}}}, nil
	case "dnslog":
		return &sdk.Descriptor{Name: "dnslog", Directions: sdk.DirFromVM}, nil
	}
	return nil, sdk.ErrUnknownFilter
}

func TestValidate(t *testing.T) {
	one := func(f api.FilterSpec) *Config {
		return &Config{Interfaces: []InterfaceConfig{{MAC: mac("52:54:00:00:00:01"), Filters: []api.FilterSpec{{Name: "count"}, f}}}}
	}
	for _, tc := range []struct {
		name    string
		cfg     *Config
		want    string
		wantErr error
	}{
		{"ok", one(api.FilterSpec{Name: "count", Params: map[string]string{"rate": "3"}, FailMode: "open", Directions: "to-vm"}), "", nil},
		{"nil config", nil, "", nil},
		{"unknown filter", one(api.FilterSpec{Name: "nope"}), "vnicfilter:interface mac 52:54:00:00:00:01: filter 1 (nope): unknown filter", sdk.ErrUnknownFilter},
		{"unknown param", one(api.FilterSpec{Name: "count", Params: map[string]string{"burst": "1"}}), `filter 1 (count): invalid parameter: unknown parameter "burst"`, sdk.ErrInvalidParam},
		{"bad param value", one(api.FilterSpec{Name: "count", Params: map[string]string{"rate": "0"}}), `parameter "rate": value 0 below minimum 1`, sdk.ErrInvalidParam},
		{"direction the filter lacks", one(api.FilterSpec{Name: "dnslog", Directions: "to-vm"}), "direction to-vm: the filter handles only from-vm", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.cfg, schemas)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v, want ErrInvalidConfig containing %q", err, tc.want)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v does not wrap %v", err, tc.wantErr)
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	cfg := &Config{Interfaces: []InterfaceConfig{
		{MAC: mac("52:54:00:12:34:56"), Filters: []api.FilterSpec{
			{Name: "count", FailMode: "fail-closed", Directions: "out", Params: map[string]string{"rate": "10", "note": `a "quoted" <value> & more`}},
			{Name: "dnslog"},
		}},
		{Alias: "ua-net1"},
	}}
	out, err := Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
  <vnicfilter:interface mac="52:54:00:12:34:56">
    <vnicfilter:filter name="count" failmode="closed" direction="from-vm">
      <vnicfilter:param name="note" value="a &#34;quoted&#34; &lt;value&gt; &amp; more"/>
      <vnicfilter:param name="rate" value="10"/>
    </vnicfilter:filter>
    <vnicfilter:filter name="dnslog"/>
  </vnicfilter:interface>
  <vnicfilter:interface alias="ua-net1"/>
</vnicfilter:filters>
`
	if string(out) != want {
		t.Errorf("Marshal:\n%s\nwant:\n%s", out, want)
	}
	back, err := ParseConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Interfaces[0].Filters[0]; got.FailMode != "closed" || got.Directions != "from-vm" || got.Params["note"] != cfg.Interfaces[0].Filters[0].Params["note"] {
		t.Errorf("round trip: %+v", got)
	}

	meta, err := MarshalMetadata(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(meta), "<filters>\n  <interface mac=") {
		t.Errorf("MarshalMetadata:\n%s", meta)
	}
	back2, err := ParseMetadata(meta)
	if err != nil || !reflect.DeepEqual(stripLines(back2), stripLines(back)) {
		t.Errorf("ParseMetadata(MarshalMetadata) = %+v, %v", back2, err)
	}

	for _, bad := range []*Config{
		{Interfaces: []InterfaceConfig{{MAC: mac("52:54:00:12:34:56"), Alias: "ua-x"}}},
		{Interfaces: []InterfaceConfig{{}}},
		{Interfaces: []InterfaceConfig{{Alias: "ua-x", Filters: []api.FilterSpec{{Name: "Bad"}}}}},
		{Interfaces: []InterfaceConfig{{Alias: "ua-x", Filters: make([]api.FilterSpec, 17)}}},
		{Interfaces: []InterfaceConfig{{Alias: "ua-x", Filters: []api.FilterSpec{{Name: "count", FailMode: "maybe"}}}}},
	} {
		if out, err := Marshal(bad); err == nil {
			t.Errorf("Marshal(%+v) = %s, want error", bad, out)
		}
	}
}

func stripLines(c *Config) *Config {
	if c == nil {
		return nil
	}
	out := &Config{}
	for _, ic := range c.Interfaces {
		ic.line = 0
		out.Interfaces = append(out.Interfaces, ic)
	}
	return out
}
