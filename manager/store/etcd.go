package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdOptions configure OpenEtcd.
type EtcdOptions struct {
	// Endpoints are etcd client URLs (http://host:2379).
	Endpoints []string
	// Prefix namespaces every key, so several deployments (or tests) can
	// share one etcd (default "/vnicfilter/").
	Prefix string
	// DialTimeout bounds the first connection (default 5 s).
	DialTimeout time.Duration
}

// Etcd is the Store of a multi-instance deployment: every manager
// instance uses the same etcd cluster; etcd's revision is the global
// revision, its compare-and-swap the transactions, its watch the watch.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
}

var _ Store = (*Etcd)(nil)

// OpenEtcd connects to etcd and checks that it answers.
func OpenEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	if opts.Prefix == "" {
		opts.Prefix = "/vnicfilter/"
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: opts.Endpoints, DialTimeout: opts.DialTimeout, Logger: nopLogger()})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", opts.Endpoints, err)
	}
	cctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, opts.Prefix+"\x00probe"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %v does not answer: %w", opts.Endpoints, err)
	}
	return &Etcd{cli: cli, prefix: opts.Prefix}, nil
}

// Client is the underlying etcd client (tests compact through it).
func (s *Etcd) Client() *clientv3.Client { return s.cli }

func (s *Etcd) closedErr(err error) error {
	if errors.Is(err, context.Canceled) && s.cli.Ctx().Err() != nil {
		return ErrClosed
	}
	return err
}

// Get implements Store.
func (s *Etcd) Get(ctx context.Context, key string) (KV, bool, int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+key)
	if err != nil {
		return KV{}, false, 0, s.closedErr(err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, false, resp.Header.Revision, nil
	}
	kv := resp.Kvs[0]
	return KV{Key: key, Value: kv.Value, ModRev: kv.ModRevision}, true, resp.Header.Revision, nil
}

// List implements Store.
func (s *Etcd) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, s.closedErr(err)
	}
	out := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, KV{Key: strings.TrimPrefix(string(kv.Key), s.prefix), Value: kv.Value, ModRev: kv.ModRevision})
	}
	return out, resp.Header.Revision, nil
}

// Txn implements Store. A key that does not exist has mod revision 0 in
// etcd's comparisons, which is Cond's "absent".
func (s *Etcd) Txn(ctx context.Context, conds []Cond, ops []Op) (int64, error) {
	var cmps []clientv3.Cmp
	for _, c := range conds {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.prefix+c.Key), "=", c.ModRev))
	}
	var eops []clientv3.Op
	for _, op := range ops {
		if op.Key == "" {
			return 0, fmt.Errorf("store: empty key")
		}
		if op.Delete {
			eops = append(eops, clientv3.OpDelete(s.prefix+op.Key))
		} else {
			eops = append(eops, clientv3.OpPut(s.prefix+op.Key, string(op.Value)))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(eops...).Commit()
	if err != nil {
		return 0, s.closedErr(err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w (etcd revision %d)", ErrConflict, resp.Header.Revision)
	}
	return resp.Header.Revision, nil
}

// Watch implements Store. etcd may batch several revisions in one
// response; they are split so each WatchResponse is one revision.
func (s *Etcd) Watch(ctx context.Context, prefix string, afterRev int64) <-chan WatchResponse {
	ch := make(chan WatchResponse, 16)
	go func() {
		defer close(ch)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		send := func(r WatchResponse) bool {
			select {
			case ch <- r:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for resp := range s.cli.Watch(wctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(afterRev+1)) {
			if resp.CompactRevision != 0 {
				send(WatchResponse{Err: fmt.Errorf("%w: watch from revision %d, etcd compacted up to %d", ErrCompacted, afterRev, resp.CompactRevision)})
				return
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					err = fmt.Errorf("%w: %v", ErrCompacted, err)
				}
				send(WatchResponse{Err: err})
				return
			}
			var cur *WatchResponse
			for _, ev := range resp.Events {
				rev := ev.Kv.ModRevision
				if cur != nil && cur.Rev != rev {
					if !send(*cur) {
						return
					}
					cur = nil
				}
				if cur == nil {
					cur = &WatchResponse{Rev: rev}
				}
				e := Event{Key: strings.TrimPrefix(string(ev.Kv.Key), s.prefix)}
				if ev.Type == clientv3.EventTypeDelete {
					e.Delete = true
				} else {
					e.Value = ev.Kv.Value
				}
				cur.Events = append(cur.Events, e)
			}
			if cur != nil && !send(*cur) {
				return
			}
		}
		if ctx.Err() == nil {
			err := error(ErrClosed)
			if s.cli.Ctx().Err() == nil {
				err = errors.New("store: etcd watch ended")
			}
			send(WatchResponse{Err: err})
		}
	}()
	return ch
}

// Close implements Store.
func (s *Etcd) Close() error { return s.cli.Close() }
