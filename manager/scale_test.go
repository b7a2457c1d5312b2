package manager_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// BenchmarkRetagFanout: the real vfmanager, 50 enrolled hosts with 100
// VMs (one vNIC each) and their agents' streams over mutual TLS; tiers
// web/app/db by name, app-in allows web, db-in allows app. Each
// iteration moves one VM in or out of web (a tag) which changes the
// policy of every app vNIC on every host; it measures, per host, the time
// from the tag write to the host's event. Reported: p50/p99 over all
// host receipts, and the bytes each change sends.
func BenchmarkRetagFanout(b *testing.B) {
	const hosts, perHost = 50, 100
	m := startManagerB(b, filepath.Join(b.TempDir(), "mgr"))
	ctx := ctxT(m.t)
	tiers := []string{"web", "app", "db"}
	for i, tier := range tiers {
		g := api.Group{Name: tier, NameGlob: tier + "-*"}
		if tier == "web" {
			g.Selector = map[string]string{"tier": "web"}
		}
		if _, err := m.admin.PutGroup(ctx, g); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			continue
		}
		p := api.Policy{Name: tier + "-in", Defaults: map[string]string{"to-vm": "deny"}, Rules: []json.RawMessage{
			json.RawMessage(fmt.Sprintf(`{"direction":"to-vm","src_groups":[%q],"proto":"tcp","dst_ports":[%d],"action":"allow"}`, tiers[i-1], 8000+i))}}
		if _, err := m.admin.PutPolicy(ctx, p); err != nil {
			b.Fatal(err)
		}
		if _, err := m.admin.PutAssignment(ctx, api.Assignment{Name: p.Name, Policy: p.Name, Group: tier}); err != nil {
			b.Fatal(err)
		}
	}
	type hostStream struct {
		got chan time.Time
	}
	streams := make([]hostStream, hosts)
	var bytesMu sync.Mutex
	var eventBytes int
	for h := range hosts {
		name := fmt.Sprintf("h%03d", h)
		a := m.enroll(m.t, name)
		var inv api.Inventory
		for v := range perHost {
			vm := fmt.Sprintf("%s-%s-%03d", tiers[(h*perHost+v)%3], name, v)
			inv.VMs = append(inv.VMs, api.VM{Name: vm, VNICs: []api.VNIC{{Name: fmt.Sprintf("vnet%d", v), IPs: []string{fmt.Sprintf("10.%d.%d.%d", h/250, h%250, v+1)}}}})
		}
		if _, err := a.c.PutInventory(ctx, inv); err != nil {
			b.Fatal(err)
		}
		s, err := a.c.Watch(ctx, "", -1)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if ev, err := s.Next(); err != nil || ev.Type != api.EventState {
			b.Fatalf("%s: first event %v %v", name, ev.Type, err)
		}
		streams[h].got = make(chan time.Time, 16)
		go func() {
			for {
				ev, err := s.Next()
				if err != nil {
					return
				}
				if ev.Type == api.EventChanges {
					data, _ := json.Marshal(ev)
					bytesMu.Lock()
					eventBytes += len(data)
					bytesMu.Unlock()
					streams[h].got <- time.Now()
				}
			}
		}()
	}
	// Reports of later hosts changed earlier hosts' state (group
	// addresses): let those events pass, then start clean.
	for quiet := false; !quiet; {
		quiet = true
		time.Sleep(500 * time.Millisecond)
		for h := range streams {
			for len(streams[h].got) > 0 {
				<-streams[h].got
				quiet = false
			}
		}
	}
	bytesMu.Lock()
	eventBytes = 0
	bytesMu.Unlock()
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		tags := api.Tags{"tier": "web"}
		if i%2 == 1 {
			tags = api.Tags{}
		}
		start := time.Now()
		if _, err := m.admin.SetTags(ctx, "db-h000-002", tags); err != nil {
			b.Fatal(err)
		}
		for h := range streams {
			select {
			case at := <-streams[h].got:
				lat = append(lat, at.Sub(start))
			case <-time.After(30 * time.Second):
				b.Fatalf("host %d: no event 30 s after the retag", h)
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(eventBytes)/float64(b.N), "event-bytes/op")
}
