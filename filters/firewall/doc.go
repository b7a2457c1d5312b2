// Package firewall is the stateful vNIC firewall: an ordered, prioritised
// rule set (policy.go, a JSON file described in docs/firewall.md) compiled
// into classification tables whose per-packet cost does not depend on the
// number of rules (compile.go), enforced in eBPF with per-vNIC connection
// tracking (firewall.c, fastpath_linux.go), and mirrored by a plain-Go
// reference model (packet.go, conntrack.go, model.go) that the differential
// test holds the eBPF program to.
//
// The pieces, in the order a packet meets them:
//
//   - packet.go parses Ethernet / VLAN / IPv4 / IPv6 (+ extension headers)
//     / TCP / UDP / ICMP into a Packet, exactly as firewall.c does;
//   - conntrack.go keys a flow by its direction-normalised 5-tuple (the
//     VM's side first) and runs the TCP state machine;
//   - a packet of no known flow is classified: Policy.Match (linear, the
//     reference semantics) or Compiled.Classify (the tables the kernel
//     uses, constant cost);
//   - the matching rule's action (or the direction's default) decides, and
//     an allowed new flow is remembered; a rejected packet is rewritten
//     into its answer (reject.go) and sent back where it came from;
//   - denials and logged flows go to the flow log (flowlog.go) through a
//     ring buffer; Inspect (inspect_linux.go) reads the table for vfctl.
package firewall
