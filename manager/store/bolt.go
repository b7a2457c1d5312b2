package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket layout of the Bolt file.
var (
	// bucketKV: key -> 8-byte big-endian mod revision + value.
	bucketKV = []byte("kv")
	// bucketLog: 8-byte big-endian revision -> JSON []Event (the whole
	// revision, every prefix), the history watchers resume from.
	bucketLog = []byte("log")
	// bucketMeta: "rev" (current revision), "compacted" (the newest
	// revision no longer in the log).
	bucketMeta    = []byte("meta")
	metaRev       = []byte("rev")
	metaCompacted = []byte("compacted")
)

// BoltOptions tune OpenBolt. The zero value is the default.
type BoltOptions struct {
	// KeepRevisions is how many revisions of history the log keeps for
	// watchers that resume (default 10,000). A watcher further behind
	// gets ErrCompacted and re-lists.
	KeepRevisions int64
	// Timeout bounds the wait for the file lock another process holds
	// (default 5 s).
	Timeout time.Duration
}

// Bolt is the embedded Store: one bbolt file, every transaction fsynced
// before Txn returns, so an acknowledged write survives a crash.
type Bolt struct {
	db   *bolt.DB
	keep int64

	mu sync.Mutex
	// changed is closed (and replaced) after every commit: watchers
	// waiting on it read the log again.
	changed chan struct{}
	closed  chan struct{}
	once    sync.Once
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating it with mode 0600 if needed) the store file at
// path.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.KeepRevisions <= 0 {
		opts.KeepRevisions = 10000
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKV, bucketLog, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db, keep: opts.KeepRevisions, changed: make(chan struct{}), closed: make(chan struct{})}, nil
}

func u64(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func be(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return b[:]
}

func decodeKV(k, v []byte) KV {
	return KV{Key: string(k), ModRev: u64(v[:8]), Value: bytes.Clone(v[8:])}
}

func (s *Bolt) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Get implements Store.
func (s *Bolt) Get(_ context.Context, key string) (kv KV, ok bool, rev int64, err error) {
	if s.isClosed() {
		return KV{}, false, 0, ErrClosed
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		rev = u64(tx.Bucket(bucketMeta).Get(metaRev))
		if v := tx.Bucket(bucketKV).Get([]byte(key)); v != nil {
			kv, ok = decodeKV([]byte(key), v), true
		}
		return nil
	})
	return kv, ok, rev, err
}

// List implements Store.
func (s *Bolt) List(_ context.Context, prefix string) (kvs []KV, rev int64, err error) {
	if s.isClosed() {
		return nil, 0, ErrClosed
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		rev = u64(tx.Bucket(bucketMeta).Get(metaRev))
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kvs = append(kvs, decodeKV(k, v))
		}
		return nil
	})
	return kvs, rev, err
}

// Txn implements Store.
func (s *Bolt) Txn(_ context.Context, conds []Cond, ops []Op) (rev int64, err error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	for _, op := range ops {
		if op.Key == "" {
			return 0, fmt.Errorf("store: empty key")
		}
	}
	wrote := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		kv, meta := tx.Bucket(bucketKV), tx.Bucket(bucketMeta)
		cur := u64(meta.Get(metaRev))
		rev = cur
		for _, c := range conds {
			var have int64
			if v := kv.Get([]byte(c.Key)); v != nil {
				have = u64(v[:8])
			}
			if have != c.ModRev {
				return fmt.Errorf("%w: %s at revision %d, want %d", ErrConflict, c.Key, have, c.ModRev)
			}
		}
		next := cur + 1
		var events []Event
		for _, op := range ops {
			k := []byte(op.Key)
			if op.Delete {
				if kv.Get(k) == nil {
					continue
				}
				if err := kv.Delete(k); err != nil {
					return err
				}
				events = append(events, Event{Key: op.Key, Delete: true})
				continue
			}
			if err := kv.Put(k, append(be(next), op.Value...)); err != nil {
				return err
			}
			events = append(events, Event{Key: op.Key, Value: op.Value})
		}
		if len(events) == 0 {
			return nil
		}
		data, err := json.Marshal(events)
		if err != nil {
			return err
		}
		lg := tx.Bucket(bucketLog)
		if err := lg.Put(be(next), data); err != nil {
			return err
		}
		if err := meta.Put(metaRev, be(next)); err != nil {
			return err
		}
		// Compact in batches: once a tenth more than KeepRevisions is
		// held, drop everything older than KeepRevisions.
		compacted := u64(meta.Get(metaCompacted))
		if next-compacted > s.keep+s.keep/10 {
			upto := next - s.keep
			c := lg.Cursor()
			for k, _ := c.First(); k != nil && u64(k) <= upto; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			if err := meta.Put(metaCompacted, be(upto)); err != nil {
				return err
			}
		}
		rev, wrote = next, true
		return nil
	})
	if err != nil {
		return 0, err
	}
	if wrote {
		s.mu.Lock()
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	return rev, nil
}

// Watch implements Store.
func (s *Bolt) Watch(ctx context.Context, prefix string, afterRev int64) <-chan WatchResponse {
	ch := make(chan WatchResponse, 16)
	go func() {
		defer close(ch)
		send := func(r WatchResponse) bool {
			select {
			case ch <- r:
				return true
			case <-ctx.Done():
				return false
			case <-s.closed:
				return false
			}
		}
		last := afterRev
		for {
			s.mu.Lock()
			changed := s.changed
			s.mu.Unlock()
			var batch []WatchResponse
			err := s.db.View(func(tx *bolt.Tx) error {
				if compacted := u64(tx.Bucket(bucketMeta).Get(metaCompacted)); last < compacted {
					return fmt.Errorf("%w: watch from revision %d, history starts after %d", ErrCompacted, last, compacted)
				}
				c := tx.Bucket(bucketLog).Cursor()
				for k, v := c.Seek(be(last + 1)); k != nil; k, v = c.Next() {
					var evs []Event
					if err := json.Unmarshal(v, &evs); err != nil {
						return fmt.Errorf("store: log revision %d: %w", u64(k), err)
					}
					r := WatchResponse{Rev: u64(k)}
					for _, e := range evs {
						if len(e.Key) >= len(prefix) && e.Key[:len(prefix)] == prefix {
							r.Events = append(r.Events, e)
						}
					}
					if len(r.Events) > 0 {
						batch = append(batch, r)
					}
					last = r.Rev
					if len(batch) >= 256 {
						break
					}
				}
				return nil
			})
			if err != nil {
				if !s.isClosed() {
					send(WatchResponse{Err: err})
				}
				return
			}
			for _, r := range batch {
				if !send(r) {
					return
				}
			}
			if len(batch) >= 256 {
				continue
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			}
		}
	}()
	return ch
}

// Close implements Store.
func (s *Bolt) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.db.Close()
	})
	return err
}
