package manager_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// TestMetrics: /metrics needs a token like every read, and shows the
// view (hosts, a connected agent's stream, desired and realized
// versions, in sync) and the API's own requests.
func TestMetrics(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	seed(t, m)
	a := m.enroll(t, "h1")
	report(t, a, "db1", "10.0.0.2")
	ro, err := m.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleReadOnly, Name: "prometheus"})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.raw("GET", "/metrics", "", ""); got != 401 {
		t.Errorf("GET /metrics without a token: HTTP %d, want 401", got)
	}
	s, err := a.c.Watch(ctx, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	first := nextEvent(t, "h1", events(s))
	if err := a.c.PutRealized(ctx, api.Realized{Version: first.Version, VNICs: []api.RealizedVNIC{{VNIC: "vnet0", Hash: first.State.VNICs[0].Hash}}}); err != nil {
		t.Fatal(err)
	}
	status, body := m.rawBody("GET", "/metrics", ro.Secret, "")
	if status != 200 {
		t.Fatalf("GET /metrics: HTTP %d: %s", status, body)
	}
	for _, want := range []string{
		"vnicfilter_manager_hosts 1\n",
		"vnicfilter_manager_agent_streams 1\n",
		`vnicfilter_manager_host_connected{host="h1"} 1` + "\n",
		`vnicfilter_manager_host_in_sync{host="h1"} 1` + "\n",
		`vnicfilter_manager_objects{kind="vms"} 1` + "\n",
		`vnicfilter_manager_objects{kind="segments"} 0` + "\n",
		`vnicfilter_manager_objects{kind="encryptions"} 0` + "\n",
		`vnicfilter_manager_http_requests_total{code="401",method="GET",route="GET /metrics"} 1` + "\n",
		`vnicfilter_manager_http_requests_total{code="200",method="PUT",route="PUT /v1/agent/realized"} 1` + "\n",
		`vnicfilter_manager_http_request_duration_seconds_count{route="PUT /v1/agent/realized"} 1` + "\n",
		"vnicfilter_manager_store_revision ",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	// The stream itself is not a latency.
	if strings.Contains(body, `vnicfilter_manager_http_request_duration_seconds_count{route="GET /v1/agent/desired"}`) {
		t.Error("the desired-state stream was observed as a request latency")
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "vnicfilter_manager_host_desired_version") && !strings.HasSuffix(line, " "+itoa(first.Version)) {
			t.Errorf("%s, want version %d", line, first.Version)
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
