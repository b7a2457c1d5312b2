package hooks

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestHiddenBridgeRefused(t *testing.T) {
	xml := func(bridge, dev string) string {
		target := ""
		if dev != "" {
			target = "<target dev='" + dev + "'/>"
		}
		return `<domain type='qemu'><name>d</name><devices>
<interface type='bridge'><source bridge='br0'/><target dev='vnet7'/></interface>
<interface type='bridge'><source bridge='` + bridge + `'/>` + target + `</interface>
</devices></domain>`
	}
	for _, tc := range []struct {
		name, bridge, dev string
		want              int
		msg               string
	}{
		{"control VM", "vfhidden0", "vfcvm0", 0, ""},
		{"any tap name", "vfhidden0", "vnet3", 1, "names its tap vnet3"},
		{"no tap name", "vfhidden0", "", 1, "names no tap"},
		{"other bridge", "br1", "vnet3", 0, ""},
	} {
		for _, op := range []string{"prepare", "start", "migrate", "restore"} {
			var stderr bytes.Buffer
			h := Hook{Client: &fakeClient{down: true}, Stderr: &stderr, Guard: &fakeGuard{}, HiddenBridge: "vfhidden0"}
			got := h.Run(context.Background(), []string{"d", op, "begin", "-"}, strings.NewReader(xml(tc.bridge, tc.dev)))
			if tc.want != 0 && (got != tc.want || !strings.Contains(stderr.String(), tc.msg) || !strings.Contains(stderr.String(), "hidden bridge vfhidden0")) {
				t.Errorf("%s %s: exit %d, %q; want %d naming %q", tc.name, op, got, stderr.String(), tc.want, tc.msg)
			}
			if tc.want == 0 && strings.Contains(stderr.String(), "hidden bridge") {
				t.Errorf("%s %s: refused: %q", tc.name, op, stderr.String())
			}
		}
	}
}
