// Package store is the manager's key-value store: an ordered map of keys to
// values where every committed write advances one global revision, writes
// are conditional transactions, and a watcher can subscribe from any
// revision it has seen and receive every later change in order.
//
// The interface is etcd's model on purpose (revisions, compare-and-swap on
// a key's modification revision, prefix watches that resume from a
// revision, compaction), so the embedded implementation (Bolt, one file,
// nothing to install) and an etcd implementation for a multi-instance
// deployment are interchangeable under the manager.
package store

import (
	"context"
	"errors"
)

// Errors callers branch on.
var (
	// ErrConflict: a transaction's condition did not hold; nothing was
	// written.
	ErrConflict = errors.New("store: condition failed")
	// ErrCompacted: a watch asked for revisions the store no longer keeps;
	// the watcher must List again and watch from the List's revision.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
)

// KV is one stored key.
type KV struct {
	Key   string
	Value []byte
	// ModRev is the revision of the write that last changed the key.
	ModRev int64
}

// Op is one write of a transaction.
type Op struct {
	Key string
	// Value is stored unless Delete is set.
	Value []byte
	// Delete removes Key (a no-op, with no event, when it is absent).
	Delete bool
}

// Put is an Op storing value under key.
func Put(key string, value []byte) Op { return Op{Key: key, Value: value} }

// Delete is an Op removing key.
func Delete(key string) Op { return Op{Key: key, Delete: true} }

// Cond is a transaction precondition on one key.
type Cond struct {
	Key string
	// ModRev the key must have; 0 means the key must be absent.
	ModRev int64
}

// Event is one change seen by a watcher.
type Event struct {
	Key string
	// Value is the new value (nil for a delete).
	Value  []byte
	Delete bool
}

// WatchResponse is one committed revision's changes under the watched
// prefix, or the error that ended the watch (then the channel closes).
type WatchResponse struct {
	Rev    int64
	Events []Event
	Err    error
}

// Store is the manager's storage. Implementations are safe for concurrent
// use.
type Store interface {
	// Get returns key, or ok=false when it is absent, and the store's
	// revision at the time of the read.
	Get(ctx context.Context, key string) (kv KV, ok bool, rev int64, err error)
	// List returns every key under prefix in key order, consistent as of
	// the returned revision.
	List(ctx context.Context, prefix string) (kvs []KV, rev int64, err error)
	// Txn applies ops atomically if every cond holds, returning the new
	// revision; otherwise it writes nothing and returns ErrConflict. A
	// transaction that changes nothing returns the current revision.
	Txn(ctx context.Context, conds []Cond, ops []Op) (rev int64, err error)
	// Watch sends every revision after afterRev that changed a key under
	// prefix, in order, until ctx ends (the channel closes) or the watch
	// fails (a last response carries Err, e.g. ErrCompacted).
	Watch(ctx context.Context, prefix string, afterRev int64) <-chan WatchResponse
	// Close releases the store; open watches end.
	Close() error
}
