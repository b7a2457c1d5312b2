package sdk

import "golang.org/x/sys/unix"

// KtimeNow is CLOCK_MONOTONIC in nanoseconds: the clock of
// bpf_ktime_get_ns(), for Go code that compares with timestamps a fast path
// wrote (leases, connection-table ages).
func KtimeNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
