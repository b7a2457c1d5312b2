package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/store"
	"github.com/vnicfilter/vnicfilter/manager/store/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"), store.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// Reopening the file keeps every acknowledged write and the revision,
// and a watch resumes across the reopen.
func TestBoltReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for _, k := range []string{"a", "b", "c"} {
		if last, err = s.Txn(ctx, nil, []store.Op{store.Put(k, []byte(k))}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if _, _, _, err := s.Get(ctx, "a"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("get after close: %v, want ErrClosed", err)
	}
	s, err = store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kvs, rev, err := s.List(ctx, "")
	if err != nil || len(kvs) != 3 || rev != last {
		t.Fatalf("after reopen: %d keys at %d (%v), want 3 at %d", len(kvs), rev, err, last)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r := <-s.Watch(wctx, "", last-1)
	if r.Err != nil || r.Rev != last || r.Events[0].Key != "c" {
		t.Fatalf("watch after reopen: %+v, want c at %d", r, last)
	}
}

// A watcher further behind than the kept history gets ErrCompacted.
func TestBoltCompaction(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"), store.BoltOptions{KeepRevisions: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var last int64
	for range 30 {
		if last, err = s.Txn(ctx, nil, []store.Op{store.Put("k", []byte("v"))}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if r := <-s.Watch(wctx, "", 1); !errors.Is(r.Err, store.ErrCompacted) {
		t.Fatalf("watch from 1 after 30 writes with 10 kept: %+v, want ErrCompacted", r)
	}
	if r := <-s.Watch(wctx, "", last-5); r.Err != nil || r.Rev != last-4 {
		t.Fatalf("watch from %d: %+v", last-5, r)
	}
}
