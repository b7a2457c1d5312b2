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

	"github.com/vnicfilter/vnicfilter/filters/mirror"
)

func (a *app) captureCommand() *cobra.Command {
	var (
		file, direction, cidr string
		match                 string
		proto, port, snaplen  int
		sample, rate          int
		duration              time.Duration
	)
	c := &cobra.Command{
		Use:   "capture VNIC -w FILE|- [--direction D] [--match TERMS] [--duration D]",
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

--match selects the packets, as the mirror filter's match parameter:
terms separated by commas or blanks, all of which must hold:

  src=PREFIX, dst=PREFIX   source, destination address in an IPv4 or IPv6
                           prefix (10.0.0.0/24, 2001:db8::/64) or equal to
                           an address
  host=PREFIX              source or destination
  proto=P                  tcp, udp, icmp, icmpv6, sctp, gre, esp, ah or a
                           number (IPv6: after the extension headers)
  sport=N[-M], dport=N[-M] TCP/UDP source, destination port or range
  port=N[-M]               source or destination port
  bidir                    also the reverse direction (addresses and ports
                           swapped): both halves of a conversation

Without --match every frame is captured (ARP too); with one, only IP
packets that match. --proto, --port and --cidr are the older shorthands
for proto=, port= and host= and cannot be combined with --match.

The capture ends with Ctrl-C, at --duration, or when filterd stops; the
mirror is then removed. If filterd dies during a capture, its restart
removes it.`,
		Example: `  vfctl capture vnet3 -w /tmp/vnet3.pcapng --duration 30s
  vfctl capture vnet3 -w - --direction from-vm --match proto=tcp,port=443 | tshark -r -
  vfctl capture vnet3 -w web.pcapng --match 'src=2001:db8::7 dst=2001:db8:1::/64 proto=tcp dport=80-90 bidir'
  vfctl capture vnet3 -w - | wireshark -k -i -`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			if file == "" {
				return usagef("capture: -w FILE (or -w - for stdout) is required")
			}
			q := map[string]string{"direction": direction, "rate": strconv.Itoa(rate)}
			if match != "" {
				if proto != 0 || port != 0 || cidr != "" {
					return usagef("capture: --match cannot be combined with --proto, --port or --cidr (write them as terms: proto=6,port=53,host=10.0.0.0/8)")
				}
				m, err := mirror.ParseMatch(match)
				if err != nil {
					return usagef("capture: --match %q: %v", match, err)
				}
				if s := m.String(); s != "" {
					q["match"] = s
				}
			}
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
	f.StringVar(&match, "match", "", "only packets matching `TERMS` (src=, dst=, host=, proto=, sport=, dport=, port=, bidir; see above)")
	f.IntVar(&proto, "proto", 0, "only IP protocol `N` (6 tcp, 17 udp, 1 icmp); shorthand for --match proto=N")
	f.IntVar(&port, "port", 0, "only TCP/UDP source or destination `port`; shorthand for --match port=N")
	f.StringVar(&cidr, "cidr", "", "only IPv4 or IPv6 source or destination `prefix`; shorthand for --match host=P")
	f.IntVar(&snaplen, "snaplen", 0, "bytes of each frame to keep (default: whole frames up to 9216)")
	f.IntVar(&sample, "sample", 0, "capture 1 frame in `N`")
	f.IntVar(&rate, "rate", 10000, "at most `N` frames per second (0: no limit)")
	f.DurationVar(&duration, "duration", 0, "stop after this `duration` (default: until Ctrl-C)")
	return c
}
