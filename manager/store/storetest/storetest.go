// Package storetest is the conformance suite every store.Store
// implementation passes: the Bolt store in its own tests, the etcd store
// against a real etcd.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/store"
)

// Open returns a fresh, empty store for one subtest; the suite closes it.
type Open func(t *testing.T) store.Store

// Run runs the suite.
func Run(t *testing.T, open Open) {
	t.Run("Revisions", func(t *testing.T) { testRevisions(t, open(t)) })
	t.Run("Conditions", func(t *testing.T) { testConditions(t, open(t)) })
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, open(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustTxn(t *testing.T, s store.Store, conds []store.Cond, ops ...store.Op) int64 {
	t.Helper()
	rev, err := s.Txn(ctx(t), conds, ops)
	if err != nil {
		t.Fatalf("txn %v: %v", ops, err)
	}
	return rev
}

func testRevisions(t *testing.T, s store.Store) {
	defer s.Close()
	_, _, base, err := s.Get(ctx(t), "a")
	if err != nil {
		t.Fatal(err)
	}
	r1 := mustTxn(t, s, nil, store.Put("t/a", []byte("1")))
	r2 := mustTxn(t, s, nil, store.Put("t/b", []byte("2")), store.Put("t/c", []byte("3")))
	if r1 <= base || r2 != r1+1 {
		t.Fatalf("revisions base %d, then %d, %d: want each write to advance by one", base, r1, r2)
	}
	kv, ok, rev, err := s.Get(ctx(t), "t/c")
	if err != nil || !ok || string(kv.Value) != "3" || kv.ModRev != r2 || rev != r2 {
		t.Fatalf("get t/c = %+v %v rev %d %v; want value 3 at revision %d", kv, ok, rev, err, r2)
	}
	// A delete of an absent key changes nothing: no new revision.
	if r := mustTxn(t, s, nil, store.Delete("t/none")); r != r2 {
		t.Fatalf("no-op txn moved the revision %d -> %d", r2, r)
	}
	r3 := mustTxn(t, s, nil, store.Delete("t/a"))
	if r3 != r2+1 {
		t.Fatalf("delete: revision %d, want %d", r3, r2+1)
	}
	if _, ok, _, _ := s.Get(ctx(t), "t/a"); ok {
		t.Fatal("t/a still there after delete")
	}
}

func testConditions(t *testing.T, s store.Store) {
	defer s.Close()
	r1 := mustTxn(t, s, []store.Cond{{Key: "c/x", ModRev: 0}}, store.Put("c/x", []byte("v1")))
	// Create-if-absent again: conflict, nothing written (not even the
	// other key of the same transaction).
	_, err := s.Txn(ctx(t), []store.Cond{{Key: "c/x"}}, []store.Op{store.Put("c/x", []byte("v2")), store.Put("c/y", []byte("y"))})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	if _, ok, rev, _ := s.Get(ctx(t), "c/y"); ok || rev != r1 {
		t.Fatalf("failed txn wrote c/y or moved the revision (%d, want %d)", rev, r1)
	}
	// Compare-and-swap on the mod revision.
	r2 := mustTxn(t, s, []store.Cond{{Key: "c/x", ModRev: r1}}, store.Put("c/x", []byte("v2")))
	if _, err := s.Txn(ctx(t), []store.Cond{{Key: "c/x", ModRev: r1}}, []store.Op{store.Put("c/x", []byte("v3"))}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale CAS: %v, want ErrConflict", err)
	}
	kv, _, _, _ := s.Get(ctx(t), "c/x")
	if string(kv.Value) != "v2" || kv.ModRev != r2 {
		t.Fatalf("c/x = %q@%d, want v2@%d", kv.Value, kv.ModRev, r2)
	}
}

func testList(t *testing.T, s store.Store) {
	defer s.Close()
	mustTxn(t, s, nil, store.Put("l/b", []byte("b")), store.Put("l/a", []byte("a")), store.Put("lz", []byte("z")), store.Put("m/a", nil))
	kvs, rev, err := s.List(ctx(t), "l/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 2 || kvs[0].Key != "l/a" || kvs[1].Key != "l/b" || rev == 0 {
		t.Fatalf("list l/ = %+v at %d, want l/a, l/b", kvs, rev)
	}
}

func next(t *testing.T, ch <-chan store.WatchResponse) store.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		if r.Err != nil {
			t.Fatalf("watch: %v", r.Err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10 s")
	}
	return store.WatchResponse{}
}

func testWatch(t *testing.T, s store.Store) {
	defer s.Close()
	r1 := mustTxn(t, s, nil, store.Put("w/1", []byte("1")))
	r2 := mustTxn(t, s, nil, store.Put("other/1", []byte("x")))
	r3 := mustTxn(t, s, nil, store.Put("w/2", []byte("2")), store.Put("other/2", nil))
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	// Resume after r1: the history first (other/ filtered out, so r2 is
	// skipped), then live changes.
	ch := s.Watch(c, "w/", r1)
	r := next(t, ch)
	if r.Rev != r3 || len(r.Events) != 1 || r.Events[0].Key != "w/2" || string(r.Events[0].Value) != "2" {
		t.Fatalf("first response %+v, want w/2 at %d (after skipping %d)", r, r3, r2)
	}
	r4 := mustTxn(t, s, nil, store.Delete("w/1"))
	r = next(t, ch)
	if r.Rev != r4 || len(r.Events) != 1 || !r.Events[0].Delete || r.Events[0].Key != "w/1" {
		t.Fatalf("live response %+v, want delete of w/1 at %d", r, r4)
	}
	// Many writes arrive complete and in order.
	var want []int64
	for i := range 50 {
		want = append(want, mustTxn(t, s, nil, store.Put(fmt.Sprintf("w/n%d", i), []byte("x"))))
	}
	for _, w := range want {
		if r := next(t, ch); r.Rev != w {
			t.Fatalf("got revision %d, want %d", r.Rev, w)
		}
	}
	cancel()
	for range ch {
	}
}
