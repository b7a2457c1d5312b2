package dlb

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestFormatRoundTrip: a file read for editing and written with Format
// parses to the same configuration, every field kept, one backend per
// line; WriteFileAtomic keeps the file's mode.
func TestFormatRoundTrip(t *testing.T) {
	in := `{"services": [
	  {"name": "web", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251, "affinity": "client",
	   "health": {"type": "http", "port": 8081, "path": "/health\":z,", "interval": "500ms", "rise": 1, "fall": 5, "netns": "/run/netns/blue"},
	   "backends": [{"addr": "10.1.0.1", "port": 8080, "weight": 2}, {"addr": "10.1.0.2", "weight": 0, "mac": "02:00:00:00:00:02"}]},
	  {"vip": "fd00::1", "port": 53, "protocol": "udp", "backends": [{"addr": "fd01::3"}]}]}`
	path := filepath.Join(t.TempDir(), "lb.json")
	if err := os.WriteFile(path, []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := f.Format()
	want, _ := ParseConfig([]byte(in))
	got, err := ParseConfig(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed the configuration:\n%s", out)
	}
	if !strings.Contains(string(out), "\n        {\"addr\": \"10.1.0.2\", \"weight\": 0, \"mac\": \"02:00:00:00:00:02\"}\n") {
		t.Errorf("backends not one per line:\n%s", out)
	}
	if err := WriteFileAtomic(path, out); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode after the write: %v %v", st.Mode(), err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	t.Logf("formatted:\n%s", out)
	if _, err := ReadFile(filepath.Join(t.TempDir(), "absent.json")); !os.IsNotExist(err) {
		t.Errorf("absent file: %v", err)
	}
}
