package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) captureCommand() *cobra.Command {
	var (
		file, direction, cidr string
		proto, port, snaplen  int
		sample, rate          int
		duration              time.Duration
	)
	c := &cobra.Command{
		Use:   "capture VNIC -w FILE|- [--direction D] [--proto N] [--port N] [--cidr P] [--duration D]",
		Short: "Capture a vNIC's traffic to pcapng (a file, or - for tshark/Wireshark)",
		Long: `Capture puts a temporary mirror filter in the last slot of VNIC's chain (a
chain of its own if the vNIC has none) and streams what it copies as
pcapng: to FILE, or with -w - to stdout, to pipe into tshark -r - or
Wireshark -k -i -. Each packet records the vNIC as its interface and the
direction it crossed it (inbound: sent by the VM, from-vm; outbound:
delivered to it, to-vm).

Sitting after the chain's filters, the capture shows what the chain lets
through: what actually leaves the VM and what it actually receives. It is
rate limited (default 10000 packets/s; --rate 0 for none) so it can never
starve the VM, and fail-open: it never drops, changes or delays a frame.

The capture ends with Ctrl-C, at --duration, or when filterd stops; the
mirror is then removed. If filterd dies during a capture, its restart
removes it.`,
		Example: `  vfctl capture vnet3 -w /tmp/vnet3.pcapng --duration 30s
  vfctl capture vnet3 -w - --direction from-vm --proto 6 --port 443 | tshark -r -
  vfctl capture vnet3 -w - | wireshark -k -i -`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			if file == "" {
				return usagef("capture: -w FILE (or -w - for stdout) is required")
			}
			q := map[string]string{"direction": direction, "rate": strconv.Itoa(rate)}
			if duration > 0 {
				q["duration"] = duration.String()
			}
			for k, v := range map[string]int{"proto": proto, "port": port, "snaplen": snaplen, "sample": sample} {
				if v > 0 {
					q[k] = strconv.Itoa(v)
				}
			}
			if cidr != "" {
				q["cidr"] = cidr
			}
			// The request lives as long as the capture: no --timeout.
			body, err := a.client.Capture(ctx, args[0], q)
			if err != nil {
				return err
			}
			defer body.Close()
			out := io.Writer(os.Stdout)
			if file != "-" {
				f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				out = f
			}
			n, err := io.Copy(out, body)
			if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
				return fmt.Errorf("capture of %s: %w", args[0], err)
			}
			if file != "-" {
				fmt.Fprintf(os.Stderr, "captured %d bytes of pcapng to %s\n", n, file)
			}
			return nil
		}),
	}
	f := c.Flags()
	f.StringVarP(&file, "write", "w", "", "write pcapng to `FILE` (- for stdout)")
	f.StringVar(&direction, "direction", "both", "`dir`ection to capture: from-vm, to-vm or both")
	f.IntVar(&proto, "proto", 0, "only IP protocol `N` (6 tcp, 17 udp, 1 icmp)")
	f.IntVar(&port, "port", 0, "only TCP/UDP source or destination `port`")
	f.StringVar(&cidr, "cidr", "", "only IPv4 source or destination `prefix`")
	f.IntVar(&snaplen, "snaplen", 0, "bytes of each frame to keep (default: whole frames up to 9216)")
	f.IntVar(&sample, "sample", 0, "capture 1 frame in `N`")
	f.IntVar(&rate, "rate", 10000, "at most `N` frames per second (0: no limit)")
	f.DurationVar(&duration, "duration", 0, "stop after this `duration` (default: until Ctrl-C)")
	return c
}
