package cli

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// TestLabel: vfctl label sends the tags, addresses and --mac as given
// (filterd checks and canonicalises the MAC); vfctl labels shows each
// vNIC's MAC.
func TestLabel(t *testing.T) {
	f := newFakeDaemon(t, map[string]cannedReply{
		"PUT /v1/vnics/vnet3/labels": {body: api.GroupChange{Groups: []string{}, Reloaded: []api.Reloaded{}}},
		"GET /v1/labels": {body: []api.VNICLabels{
			{VNIC: "vnet3", Owner: "libvirt:web01", Chain: true, Tags: []string{"web"}, Addresses: []string{"10.0.1.5"}, MAC: "52:54:00:6b:3c:01"},
			{VNIC: "vnet4", Tags: []string{}, Addresses: []string{}},
		}},
	})
	const route = "PUT /v1/vnics/vnet3/labels"
	for _, tt := range []struct {
		name string
		args []string
		want api.Labels
	}{
		{"tags and mac", []string{"label", "vnet3", "--tag", "web", "--address", "10.0.1.5", "--mac", "52:54:00:6B:3C:01"},
			api.Labels{Tags: []string{"web"}, Addresses: []string{"10.0.1.5"}, MAC: "52:54:00:6B:3C:01"}},
		{"mac only", []string{"label", "vnet3", "--mac", "52:54:00:6b:3c:01"}, api.Labels{MAC: "52:54:00:6b:3c:01"}},
		{"no mac", []string{"label", "vnet3", "--tag", "web"}, api.Labels{Tags: []string{"web"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := vfctl(t, context.Background(), f.socket, tt.args...)
			if r.code != ExitOK {
				t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
			}
			var got api.Labels
			if err := json.Unmarshal(f.body(route), &got); err != nil {
				t.Fatalf("request body %q: %v", f.body(route), err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request = %+v, want %+v", got, tt.want)
			}
			if tt.want.MAC == "" && contains(string(f.body(route)), `"mac"`) {
				t.Errorf("without --mac the request names a MAC: %s", f.body(route))
			}
		})
	}
	t.Run("labels", func(t *testing.T) {
		r := vfctl(t, context.Background(), f.socket, "labels")
		if r.code != ExitOK {
			t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
		}
		for _, w := range []string{
			"VNIC   CHAIN  OWNER          TAGS  ADDRESSES  MAC",
			"vnet3  yes    libvirt:web01  web   10.0.1.5   52:54:00:6b:3c:01",
			"vnet4  no     -              -     -          -",
		} {
			if !contains(r.stdout, w) {
				t.Errorf("output lacks %q:\n%s", w, r.stdout)
			}
		}
	})
}
