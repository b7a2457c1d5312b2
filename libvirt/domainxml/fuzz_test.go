package domainxml

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse: any input gives a domain or an error, never a panic; a
// parsed configuration survives Marshal and ParseConfig unchanged.
// Seeds: testdata/fuzz/FuzzParse plus every XML file under
// libvirt/testdata.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "*.xml"))
	more, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "*", "*.xml"))
	for _, name := range append(files, more...) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(domainWith(nic1, string(data))) // metadata files inside a domain
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if err != nil {
			return
		}
		if _, err := d.Chains(nil); err != nil {
			return
		}
		if d.Config == nil {
			return
		}
		out, err := Marshal(d.Config)
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v", err)
		}
		back, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("ParseConfig(Marshal(cfg)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(stripLines(back), stripLines(d.Config)) {
			t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", back, d.Config)
		}
		_, _, _ = parseElement(data, Namespace, kindNetwork)
	})
}
