package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// swaps per repetition of the swap case, swapGap apart.
	swaps   = 5
	swapGap = 300 * time.Millisecond
	// The stream during the swaps: swapBurst datagrams every millisecond,
	// ~10,000 packets/s — far below what the path carries, so a lost
	// packet is the swap's doing, not congestion.
	swapBurst = 10
)

// measureSwap reloads the firewall's policy file (alternating between two
// different policies of bc.fwRules rules, both allowing the flow) swaps
// times while VM A streams sequence-numbered UDP datagrams to VM B, and
// reports the reload API call's time (what `vfctl fw load` waits for),
// filterd's own account of it, and the datagrams lost.
func (e *runEnv) measureSwap(ctx context.Context, rep int, bc benchCase, c *collected) (sample, error) {
	o, t := e.o, e.topo
	path := filepath.Join(e.dir, bc.name+".json")
	seeds := [2]int{bc.fwRules, bc.fwRules + 1}
	// Render both policies before the stream starts: the swap timing is
	// filterd's, not the generator's — nor its garbage collector's, which
	// rendering 1.5 MB of JSON right before each reload set running on
	// the same two CPUs as filterd's reload.
	var docs [2][]byte
	for i, seed := range seeds {
		b, err := fwPolicyJSON(e.policy(bc.fwRules, seed), fmt.Sprintf("vfbench: %d generated rules, seed %d", bc.fwRules, seed))
		if err != nil {
			return nil, err
		}
		docs[i] = b
	}
	runtime.GC()

	var stop, rxStop atomic.Bool
	var sent, recvd, maxSeq atomic.Uint64
	f, err := startUDPFlow(t, vmBIPv4.IP, swapPort,
		func(fd int) error { return recvLoop(fd, &recvd, &maxSeq, &rxStop) },
		func(fd int) error { return seqSendLoop(fd, &sent, &stop) })
	if err != nil {
		return nil, fmt.Errorf("swap stream receiver: %w", err)
	}

	var apiMS, daemonMS []float64
	var swapErr error
	t0 := time.Now()
	func() {
		if swapErr = sleepCtx(ctx, udpWarmup); swapErr != nil {
			return
		}
		for i := range swaps {
			if swapErr = writeAtomic(path, docs[(i+1)%2]); swapErr != nil {
				return
			}
			start := time.Now()
			res, err := e.d.client.Reload(ctx, t.a.tap, 0)
			took := time.Since(start)
			if err != nil {
				swapErr = e.d.wrap("reload the policy", err)
				return
			}
			apiMS = append(apiMS, float64(took)/float64(time.Millisecond))
			daemonMS = append(daemonMS, res.Seconds*1000)
			if swapErr = sleepCtx(ctx, swapGap); swapErr != nil {
				return
			}
		}
	}()
	stop.Store(true)
	// Let the last datagrams arrive before the receiver stops counting.
	time.Sleep(200 * time.Millisecond)
	rxStop.Store(true)
	txErr, rxErr := f.wait()
	elapsed := time.Since(t0).Seconds()
	if swapErr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.failed[[2]string{bc.name, MetricSwapP50}] = swapErr.Error()
		logf(o.Log, "rep %d/%d %-11s swap FAILED: %v", rep+1, o.Reps, bc.name, swapErr)
		return sample{}, nil
	}
	if txErr != nil || rxErr != nil {
		return nil, fmt.Errorf("swap stream: sender: %v, receiver: %v", txErr, rxErr)
	}
	s, r := sent.Load(), recvd.Load()
	if r == 0 {
		return nil, fmt.Errorf("swap stream: nothing received (%d sent)", s)
	}
	lost := float64(s) - float64(r)
	sm := sample{
		MetricSwapP50:  median(apiMS),
		MetricSwapMax:  percentile(apiMS, 100),
		MetricSwapD:    median(daemonMS),
		MetricSwapLost: lost,
	}
	logf(o.Log, "rep %d/%d %-11s %d reloads of %d rules: API p50 %.1f ms, max %.1f ms (filterd: %.1f ms); stream %d sent, %d received (%.0f/s, highest sequence number %d), %.0f lost; each reload (API ms): %s",
		rep+1, o.Reps, bc.name, swaps, bc.fwRules, sm[MetricSwapP50], sm[MetricSwapMax], sm[MetricSwapD], s, r, float64(s)/elapsed, maxSeq.Load(), lost, fmtMS(apiMS))
	return sm, nil
}

// seqSendLoop sends swapBurst datagrams, each carrying its sequence
// number, every millisecond until stop.
func seqSendLoop(fd int, sent *atomic.Uint64, stop *atomic.Bool) error {
	msgs, buf := batch(swapBurst, udpPayload)
	var seq uint64
	next := time.Now()
	for !stop.Load() {
		for i := range swapBurst {
			binary.BigEndian.PutUint64(buf[i*udpPayload:], seq+uint64(i))
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		switch errno {
		case 0:
			seq += uint64(n)
			sent.Add(uint64(n))
		case unix.EINTR:
		default:
			// Unlike the blast, a paced stream never fills the queue: any
			// error is one.
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		next = next.Add(time.Millisecond)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	return nil
}

// fmtMS lists durations in ms, for percentiles across repetitions.
func fmtMS(ms []float64) string {
	var b strings.Builder
	for i, v := range ms {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f", v)
	}
	return b.String()
}
