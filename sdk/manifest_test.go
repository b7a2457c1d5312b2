package sdk_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

const goodManifest = `{"name": "ttlguard", "version": "1.0.0", "abi": 1, "program": "vf_ttlguard",
 "directions": "from-vm", "failmode": "open", "object": "ttlguard_bpfel.o",
 "params": [{"name": "min_ttl", "type": "int", "default": "2", "min": 0, "max": 255}],
 "counters": ["ttl_drops"]}`

func TestParseManifest(t *testing.T) {
	m, err := sdk.ParseManifest([]byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.ObjectFile() != "ttlguard_bpfel.o" || m.Params[0].Type != sdk.Int {
		t.Errorf("parsed %+v", m)
	}
	// A slow-path-only filter: no object, any parameter type.
	slow, err := sdk.ParseManifest([]byte(`{"name":"x","version":"1","abi":1,"slowpath":{"command":["x","-v"]},"params":[{"name":"n","type":"string"}]}`))
	if err != nil || !slow.SlowOnly() {
		t.Fatalf("slow-path-only manifest: %v %+v", err, slow)
	}
	d, err := slow.Descriptor(nil)
	if err != nil || d.FastPath != nil || d.SlowPath == nil {
		t.Fatalf("descriptor of a slow-path-only filter: %v %+v", err, d)
	}
	if _, err := d.SlowPath(nil); !errors.Is(err, sdk.ErrExternalSlowPath) {
		t.Errorf("in-process slow path of an external filter: %v", err)
	}
	for _, tc := range []struct {
		name, json, want string
		is               error
	}{
		{"unknown field", `{"name":"x","version":"1","abi":1,"program":"p","colour":"red"}`, `unknown field "colour"`, sdk.ErrBadManifest},
		{"not json", `{name`, "invalid character", sdk.ErrBadManifest},
		{"wrong abi", `{"name":"x","version":"1","abi":2,"program":"p"}`, "built for ABI 2, filterd speaks 1", sdk.ErrABIMismatch},
		{"no program", `{"name":"x","version":"1","abi":1}`, "program", sdk.ErrBadManifest},
		{"bad name", `{"name":"X!","version":"1","abi":1,"program":"p"}`, "name", sdk.ErrBadManifest},
		{"bad direction", `{"name":"x","version":"1","abi":1,"program":"p","directions":"up"}`, `direction "up"`, sdk.ErrBadManifest},
		{"bad failmode", `{"name":"x","version":"1","abi":1,"program":"p","failmode":"maybe"}`, `"maybe"`, sdk.ErrBadManifest},
		{"bad param type", `{"name":"x","version":"1","abi":1,"program":"p","params":[{"name":"n","type":"float"}]}`, `unknown parameter type "float"`, sdk.ErrBadManifest},
		{"string param", `{"name":"x","version":"1","abi":1,"program":"p","params":[{"name":"n","type":"string"}]}`, "int and bool only", sdk.ErrBadManifest},
		{"bad default", `{"name":"x","version":"1","abi":1,"program":"p","params":[{"name":"n","type":"int","default":"x"}]}`, "not an integer", sdk.ErrBadManifest},
		{"object path", `{"name":"x","version":"1","abi":1,"program":"p","object":"../x.o"}`, "beside the manifest", sdk.ErrBadManifest},
		{"empty slow-path command", `{"name":"x","version":"1","abi":1,"slowpath":{"command":[]}}`, "slowpath.command is empty", sdk.ErrBadManifest},
		{"slow-only with counters", `{"name":"x","version":"1","abi":1,"slowpath":{"command":["x"]},"counters":["c"]}`, "has none", sdk.ErrBadManifest},
		{"string param with an object", `{"name":"x","version":"1","abi":1,"program":"p","slowpath":{"command":["x"]},"params":[{"name":"n","type":"string"}]}`, "int and bool only", sdk.ErrBadManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sdk.ParseManifest([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Errorf("error %v, want one containing %q and wrapping %v", err, tc.want, tc.is)
			}
		})
	}
}

func exampleSpec(t *testing.T) *ebpf.CollectionSpec {
	spec, err := ebpf.LoadCollectionSpec("../examples/ttlguard/ttlguard_bpfel.o")
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestCheckObject(t *testing.T) {
	spec := exampleSpec(t)
	m, _ := sdk.ParseManifest([]byte(goodManifest))
	if err := m.CheckObject(spec); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, edit, want string }{
		{"missing program", `"program": "vf_nosuch"`, `no program "vf_nosuch"`},
		{"missing map", `"counters": ["nosuch"]`, `no counter map "nosuch"`},
		{"missing param variable", `"params": [{"name": "max_ttl", "type": "int"}]`, "no `volatile const` param_max_ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := strings.SplitN(tc.edit, ":", 2)[0]
			js := goodManifest
			start := strings.Index(js, key)
			end := start + strings.Index(js[start:], "\n")
			if strings.HasPrefix(key, `"program"`) {
				end = start + strings.Index(js[start:], ",")
			}
			if strings.HasPrefix(key, `"counters"`) {
				end = start + strings.Index(js[start:], "}")
			}
			js = js[:start] + tc.edit + js[end:]
			if strings.HasPrefix(key, `"params"`) {
				js = strings.Replace(js, tc.edit, tc.edit+",", 1)
			}
			m, err := sdk.ParseManifest([]byte(js))
			if err != nil {
				t.Fatalf("%v in %s", err, js)
			}
			err = m.CheckObject(spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, sdk.ErrBadManifest) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRegisterExternalAndUnregister(t *testing.T) {
	fp := func(*sdk.FastPathContext) (sdk.FastPath, error) { return nil, nil }
	sdk.Register(&sdk.Descriptor{Name: "builtin-for-unregister", FastPath: fp})
	if err := sdk.Unregister("builtin-for-unregister"); err == nil || !strings.Contains(err.Error(), "built in") {
		t.Errorf("Unregister of a built-in: %v", err)
	}
	if err := sdk.RegisterExternal(&sdk.Descriptor{Name: "builtin-for-unregister", FastPath: fp}); !errors.Is(err, sdk.ErrBadManifest) {
		t.Errorf("RegisterExternal over a built-in: %v", err)
	}
	if err := sdk.RegisterExternal(&sdk.Descriptor{Name: "ext-test", FastPath: fp}); err != nil {
		t.Fatal(err)
	}
	if !sdk.IsExternal("ext-test") {
		t.Error("IsExternal false")
	}
	if _, err := sdk.Lookup("ext-test"); err != nil {
		t.Fatal(err)
	}
	if err := sdk.Unregister("ext-test"); err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.Lookup("ext-test"); !errors.Is(err, sdk.ErrUnknownFilter) {
		t.Errorf("Lookup after Unregister: %v", err)
	}
	if err := sdk.Unregister("ext-test"); !errors.Is(err, sdk.ErrUnknownFilter) {
		t.Errorf("second Unregister: %v", err)
	}
}
