package sdk

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var recordABI = flag.Bool("record-abi", false, "write testdata/abi-v<ABIVersion>.txt if it does not exist yet")

// abiSurface extracts the slot ABI from vnicfilter.h, normalised: every
// VF_ #define, the shared structs and the SDK map definitions, comments
// and spacing removed. Helper functions are not part of it: a new or
// changed helper does not change what a compiled object expects.
func abiSurface(header string) string {
	header = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(header, "")
	header = regexp.MustCompile(`//[^\n]*`).ReplaceAllString(header, "")
	var out []string
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for _, m := range regexp.MustCompile(`(?m)^#define (VF_[A-Z0-9_]+)(\([^)]*\))?[ \t]+((?:[^\n]*\\\n)*[^\n]*)`).FindAllStringSubmatch(header, -1) {
		if m[1] == "VF_ABI_VERSION" {
			continue // the version itself is the file name
		}
		out = append(out, "#define "+m[1]+m[2]+" "+norm(strings.ReplaceAll(m[3], "\\\n", " ")))
	}
	for _, m := range regexp.MustCompile(`(?s)struct (vf_[a-z_]+) \{(.*?)\};`).FindAllStringSubmatch(header, -1) {
		out = append(out, "struct "+m[1]+" { "+norm(m[2])+" }")
	}
	for _, m := range regexp.MustCompile(`(?s)struct \{([^{}]*)\} (vf_[a-z_]+) SEC\("\.maps"\);`).FindAllStringSubmatch(header, -1) {
		out = append(out, "map "+m[2]+" { "+norm(m[1])+" }")
	}
	for _, m := range regexp.MustCompile(`(?m)^(?:static )?volatile const [^;]*\b(vf_[a-z_]+)[^;]*;`).FindAllStringSubmatch(header, -1) {
		out = append(out, norm(m[0]))
	}
	// The skb->cb layout is spread over the inline helpers: keep every
	// statement that reads or writes it.
	for _, m := range regexp.MustCompile(`[^;{}\n]*\bcb\[[^;]*;`).FindAllString(header, -1) {
		out = append(out, "cb: "+norm(m))
	}
	return strings.Join(out, "\n") + "\n"
}

// TestABIGuard fails when the slot ABI in vnicfilter.h changes while
// ABIVersion stays: every released object built against version N must
// keep working with a filterd speaking N. To change the ABI, bump
// VF_ABI_VERSION and ABIVersion together and record the new surface with
// `go test ./sdk -run ABIGuard -record-abi`. A recorded version is never
// rewritten by the flag: changing it means deleting its file by hand,
// which a reviewer sees.
func TestABIGuard(t *testing.T) {
	b, err := os.ReadFile("bpf/vnicfilter.h")
	if err != nil {
		t.Fatal(err)
	}
	got := abiSurface(string(b))
	if strings.Count(got, "\n") < 30 || !strings.Contains(got, "map vf_chain") || !strings.Contains(got, "struct vf_slot") {
		t.Fatalf("ABI surface extraction found too little; fix abiSurface:\n%s", got)
	}
	path := filepath.Join("testdata", fmt.Sprintf("abi-v%d.txt", ABIVersion))
	want, err := os.ReadFile(path)
	if os.IsNotExist(err) && *recordABI {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("recorded %s", path)
		return
	}
	if err != nil {
		t.Fatalf("%v: record the surface of ABI %d with -record-abi", err, ABIVersion)
	}
	if string(want) == got {
		return
	}
	wl, gl := strings.Split(string(want), "\n"), strings.Split(got, "\n")
	inWant := map[string]bool{}
	for _, l := range wl {
		inWant[l] = true
	}
	inGot := map[string]bool{}
	for _, l := range gl {
		inGot[l] = true
	}
	var diff []string
	for _, l := range wl {
		if !inGot[l] {
			diff = append(diff, "- "+l)
		}
	}
	for _, l := range gl {
		if !inWant[l] {
			diff = append(diff, "+ "+l)
		}
	}
	t.Fatalf("the slot ABI in sdk/bpf/vnicfilter.h changed but ABIVersion is still %d:\n%s\n"+
		"Objects built for ABI %d would misbehave. Bump VF_ABI_VERSION and sdk.ABIVersion, then record %s with -record-abi.",
		ABIVersion, strings.Join(diff, "\n"), ABIVersion, filepath.Join("testdata", fmt.Sprintf("abi-v%d.txt", ABIVersion+1)))
}

// The guard must notice the changes it exists for.
func TestABIGuardNotices(t *testing.T) {
	b, err := os.ReadFile("bpf/vnicfilter.h")
	if err != nil {
		t.Fatal(err)
	}
	h := string(b)
	base := abiSurface(h)
	for _, tc := range []struct{ name, from, to string }{
		{"a verdict value", "#define VF_PUNT 2", "#define VF_PUNT 9"},
		{"slot count", "#define VF_MAX_SLOTS 16", "#define VF_MAX_SLOTS 32"},
		{"a map's type", "BPF_MAP_TYPE_PERCPU_ARRAY", "BPF_MAP_TYPE_ARRAY"},
		{"a struct member", "struct vf_slot {", "struct vf_slot {\n\t__u32 extra;"},
		{"the cb layout", "skb->cb[0] = (dir << 8) | slot;", "skb->cb[1] = (dir << 8) | slot;"},
	} {
		changed := strings.Replace(h, tc.from, tc.to, 1)
		if changed == h {
			t.Fatalf("%s: %q not in the header", tc.name, tc.from)
		}
		if abiSurface(changed) == base {
			t.Errorf("changing %s leaves the ABI surface unchanged", tc.name)
		}
	}
	// Comments and helpers are not the ABI.
	if abiSurface(strings.Replace(h, "#define VF_PUNT 2", "/* note */ \n#define VF_PUNT   2 // punt", 1)) != base {
		t.Error("a comment or spacing change counts as an ABI change")
	}
}
