package manager_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/store/storetest"
)

// waitRev polls m until it has applied rev.
func (m *mgr) waitRev(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := m.admin.Revision(ctxT(t))
		if err == nil && got >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach revision %d (at %d, %v)", m.addr, rev, got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two manager instances on one etcd: both serve the same state, their
// validated writes serialize (no interleaving breaks an invariant),
// and killing one loses no write while the other keeps serving, agent
// streams included.
func TestEtcdTwoManagers(t *testing.T) {
	e := storetest.StartEtcd(t)
	storeArgs := []string{"--store", "etcd", "--etcd-endpoints", e.Endpoint}
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a := startManager(t, dirA, storeArgs...)
	// Instance B shares A's CA (copied, as an operator would).
	if err := os.MkdirAll(dirB, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		data, err := os.ReadFile(filepath.Join(dirA, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := startManager(t, dirB, storeArgs...)
	ctx := ctxT(t)

	seed(t, a)
	rev, _ := a.admin.Revision(ctx)
	b.waitRev(t, rev)
	if got, want := dump(t, b), dump(t, a); got != want {
		t.Fatalf("instances disagree:\nA %s\nB %s", want, got)
	}
	// A join token minted on A enrolls through B; the agent streams from B.
	tok, err := a.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleJoin, Host: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	en, err := api.Enroll(ctx, b.addr, b.ca, tok.Secret, "h1")
	if err != nil {
		t.Fatal(err)
	}
	ag := b.agentClient(t, "h1", en)
	report(t, ag, "db1", "10.0.0.2")
	s, err := ag.c.Watch(ctx, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := events(s)
	if ev := nextEvent(t, "h1 on B", evs); ev.Type != api.EventState {
		t.Fatalf("first event %+v", ev)
	}

	// Concurrent writes on both instances all land.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		m := a
		if i%2 == 1 {
			m = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.admin.SetTags(ctx, fmt.Sprintf("vm%02d", i), api.Tags{"n": fmt.Sprint(i)}); err != nil {
				errs <- err
			}
		}()
	}
	// And validated writes race without breaking referential integrity:
	// "x includes y" on A against "delete y" on B, five times.
	for round := range 5 {
		y := fmt.Sprintf("y%d", round)
		if _, err := a.admin.PutGroup(ctx, api.Group{Name: y, VMs: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
		rev, _ := a.admin.Revision(ctx)
		b.waitRev(t, rev)
		var put, del error
		var rw sync.WaitGroup
		rw.Add(2)
		go func() {
			defer rw.Done()
			_, put = a.admin.PutGroup(ctx, api.Group{Name: "x" + y, Include: []string{y}})
		}()
		go func() { defer rw.Done(); del = b.admin.DeleteGroup(ctx, y) }()
		rw.Wait()
		var ae *api.Error
		switch {
		case put == nil && del == nil:
			t.Fatalf("round %d: both the include of %s and its deletion succeeded", round, y)
		case put != nil && (!errors.As(put, &ae) || ae.Status != 422):
			t.Fatalf("round %d: include failed with %v, want 422", round, put)
		case del != nil && (!errors.As(del, &ae) || ae.Status != 409):
			t.Fatalf("round %d: delete failed with %v, want 409", round, del)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent tag write: %v", err)
	}

	// Kill A: every write it acknowledged is on B, and B keeps serving.
	rev, _ = a.admin.Revision(ctx)
	// "connected" is per instance (B holds h1's stream): not compared.
	perInstance := strings.NewReplacer(`"connected":true`, `"connected":false`)
	before := perInstance.Replace(dump(t, a))
	a.stop(9)
	b.waitRev(t, rev)
	if after := perInstance.Replace(dump(t, b)); after != before {
		t.Fatalf("B after A died differs from A's last state:\nA %s\nB %s", before, after)
	}
	for i := range 20 {
		tags, err := b.admin.Tags(ctx, fmt.Sprintf("vm%02d", i))
		if err != nil || tags["n"] != fmt.Sprint(i) {
			t.Errorf("vm%02d: tags %v %v", i, tags, err)
		}
	}
	// web1 appears (reported by h2 through B): h1's stream on B follows.
	h2tok, err := b.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleJoin})
	if err != nil {
		t.Fatal(err)
	}
	en2, err := api.Enroll(ctx, b.addr, b.ca, h2tok.Secret, "h2")
	if err != nil {
		t.Fatal(err)
	}
	report(t, b.agentClient(t, "h2", en2), "web1", "10.0.0.1")
	ev := nextEvent(t, "h1 after web1 appeared", evs)
	if ev.Type != api.EventChanges || !strings.Contains(string(ev.Documents[ev.Upsert[0].Chain[0].PolicyRef]), `"web":["10.0.0.1/32"]`) {
		t.Fatalf("h1 event %+v, want web = web1", ev)
	}
}
