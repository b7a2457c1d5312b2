package bench

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Client and server are pinned to two different CPUs. Left to the
// scheduler, the pair lands on one CPU in some measurements and on two in
// others (a longer softirq path changes wake-affine decisions), and that
// alone moved rr_latency p50 between 20 and 60 us and TCP by 30 % — more
// than any chain costs. Pinned, every case sees the same placement.
type cpuPair struct {
	client, server int
	ok             bool // false with fewer than two usable CPUs: no pinning
}

// pickCPUs returns the first two CPUs this process may run on.
func pickCPUs() cpuPair {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return cpuPair{}
	}
	var cpus []int
	for i := 0; i < len(set)*64 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return cpuPair{}
	}
	return cpuPair{client: cpus[0], server: cpus[1], ok: true}
}

// pinThread pins the calling (locked) OS thread to cpu and returns a
// function restoring its previous affinity, to be called before the thread
// is unlocked and goes back to the Go scheduler.
func pinThread(cpu int, ok bool) (restore func(), err error) {
	if !ok {
		return func() {}, nil
	}
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("get CPU affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() { _ = unix.SchedSetaffinity(0, &old) }, nil
}

// doPinned runs fn like n.Do, on the namespace's locked thread pinned to
// cpu (pinThread) for fn's duration. A pinning error is returned without
// running fn.
func (n *namedNS) doPinned(cpu int, ok bool, fn func() error) error {
	return n.Do(func() error {
		restore, err := pinThread(cpu, ok)
		if err != nil {
			return err
		}
		defer restore()
		return fn()
	})
}

// iperfAffinity is iperf3's --affinity argument for one side.
func iperfAffinity(cpu int, ok bool) []string {
	if !ok {
		return nil
	}
	return []string{"--affinity", strconv.Itoa(cpu)}
}
