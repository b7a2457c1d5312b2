package store

import "go.uber.org/zap"

// nopLogger keeps the etcd client's own logging (zap, to stderr) out of
// the manager's log: failures reach the manager as errors.
func nopLogger() *zap.Logger { return zap.NewNop() }
