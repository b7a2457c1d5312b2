package store

import (
	"context"
	"errors"
	"fmt"
)

// EtcdOptions configure OpenEtcd.
type EtcdOptions struct {
	// Endpoints are etcd client URLs.
	Endpoints []string
	// Prefix namespaces every key (default "/vnicfilter/").
	Prefix string
}

// OpenEtcd is not built yet.
func OpenEtcd(_ context.Context, opts EtcdOptions) (Store, error) {
	return nil, fmt.Errorf("etcd store (%v): %w", opts.Endpoints, errors.ErrUnsupported)
}
