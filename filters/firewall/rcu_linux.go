package firewall

import (
	"time"

	"golang.org/x/sys/unix"
)

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL: the kernel runs
// synchronize_rcu() before returning.
const membarrierCmdGlobal = 1

// rcuFallback is how long synchronizeRCU sleeps where membarrier cannot
// wait for a grace period (nohz_full kernels, old kernels): many times
// the longest a tc program runs.
const rcuFallback = 50 * time.Millisecond

// synchronizeRCU returns after an RCU grace period: every eBPF program
// run that started before the call (and may have read a policy epoch
// that is no longer live) has finished.
func synchronizeRCU() {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		time.Sleep(rcuFallback)
	}
}
