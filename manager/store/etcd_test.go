package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/store"
	"github.com/vnicfilter/vnicfilter/manager/store/storetest"
)

// The etcd store passes the same suite as the Bolt one, against a real
// etcd; each subtest gets its own key prefix.
func TestEtcdConformance(t *testing.T) {
	e := storetest.StartEtcd(t)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++
		s, err := store.OpenEtcd(context.Background(), store.EtcdOptions{Endpoints: []string{e.Endpoint}, Prefix: fmt.Sprintf("/t%d/", n)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	t.Run("Compacted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{e.Endpoint}, Prefix: "/compact/"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var last int64
		for range 5 {
			if last, err = s.Txn(ctx, nil, []store.Op{store.Put("k", []byte("v"))}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Client().Compact(ctx, last); err != nil {
			t.Fatal(err)
		}
		if r := <-s.Watch(ctx, "", 1); !errors.Is(r.Err, store.ErrCompacted) {
			t.Fatalf("watch from 1 after compaction at %d: %+v, want ErrCompacted", last, r)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond})
		if err == nil {
			t.Fatal("OpenEtcd of a closed port succeeded")
		}
	})
}
