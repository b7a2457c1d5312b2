package firewall

import (
	"fmt"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Stat indexes the firewall's own counters (fw_stats in firewall.c).
type Stat uint32

const (
	StatEstablished   Stat = iota // packets of a tracked flow
	StatNewFlows                  // flows entered into the table
	StatDefaultFromVM             // new from-vm packets decided by the default
	StatDefaultToVM               // new to-vm packets decided by the default
	StatInvalid                   // malformed packets and invalid TCP flags, dropped
	StatFragmentDrop              // non-first fragments no fragment rule matched, dropped
	StatNonIP                     // ARP and other non-IP frames
	StatLogged                    // hits of log-flagged rules
	StatRevalidated               // flows re-checked after a policy swap
	StatCut                       // flows a new policy denies, cut
	StatCTFull                    // flows the table could not take
	StatND                        // IPv6 neighbour discovery, always allowed
	StatRelated                   // ICMP errors about a tracked flow, allowed
	StatRejected                  // rejected packets answered (TCP RST, ICMP unreachable)
	StatRejectLimited             // rejected packets not answered: over reject_rate
	StatRejectSkipped             // rejected packets that get no answer (docs/firewall.md)
	StatLogEvents                 // flow-log events written to the ring buffer
	StatLogLimited                // flow-log events not written: over flow_log_rate
	StatLogLost                   // flow-log events not written: ring buffer full
	NumStats
)

var statNames = [...]string{"established_packets_total", "new_flows_total", "default_from_vm_total", "default_to_vm_total", "invalid_total", "fragment_drops_total", "non_ip_total", "logged_total", "revalidated_flows_total", "cut_flows_total", "conntrack_full_total", "nd_total", "related_total", "rejected_total", "reject_limited_total", "reject_skipped_total", "flow_log_events_total", "flow_log_limited_total", "flow_log_lost_total"}

func (s Stat) String() string {
	if int(s) < len(statNames) {
		return statNames[s]
	}
	return fmt.Sprintf("stat(%d)", uint32(s))
}

// Verdict is the model's decision on one frame.
type Verdict struct {
	// Drop is true when the frame is dropped.
	Drop bool
	// Fail is true when the firewall cannot decide (the connection table
	// is full): the slot's failure mode decides (VF_FAIL). Drop is then
	// false.
	Fail bool
	// Rule is the index of the rule that decided, or -1.
	Rule int
	// Why names the path taken, for test failures and `explain`.
	Why string
	// Answer is, for a rejected frame that is answered, the TCP RST or
	// ICMP unreachable the frame becomes (sent back the way it came;
	// Drop is true). nil otherwise.
	Answer []byte
}

func (v Verdict) String() string {
	act := "pass"
	if v.Drop {
		act = "drop"
	}
	if v.Fail {
		act = "fail"
	}
	if v.Answer != nil {
		act = "answered"
	}
	return fmt.Sprintf("%s (%s, rule %d)", act, v.Why, v.Rule)
}

// Model is the firewall in plain Go: the reference the eBPF program is
// tested against, and usable as a slow-path firewall. Not safe for
// concurrent use.
type Model struct {
	policy *Policy
	gen    uint32
	flows  map[ctKey]ctVal
	// Capacity bounds the connection table as conntrack_size does (0:
	// unbounded). Expired flows hold their place until reclaimed (reused
	// by the same key, or swept by GC).
	Capacity int
	// Now returns monotonic nanoseconds (default: time since the model
	// was made); tests stop the clock to keep timeouts out of comparisons.
	Now func() uint64
	// NoAnswers makes reject drop like deny, as reject_rate=0 does
	// (counted as reject_limited_total). The model has no rate limit
	// otherwise: compare it with a kernel whose limit is never reached.
	NoAnswers bool
	// Stats and RuleHits count as fw_stats and fw_rule_hits do.
	Stats    [NumStats]uint64
	RuleHits []uint64
}

// NewModel returns a model enforcing p.
func NewModel(p *Policy) *Model {
	start := time.Now()
	m := &Model{flows: map[ctKey]ctVal{}, Now: func() uint64 { return uint64(time.Since(start)) + 1 }}
	m.SetPolicy(p)
	return m
}

// SetPolicy swaps the policy: flows are re-checked against it on their
// next packet, as the kernel does after a generation swap.
func (m *Model) SetPolicy(p *Policy) {
	m.policy = p
	m.gen++
	m.RuleHits = make([]uint64, len(p.Rules))
}

// decide classifies a new packet: the rule's or the default's action.
func (m *Model) decide(p *Packet, count bool) (Action, int) {
	r := m.policy.Match(p)
	if r < 0 {
		if count && !p.Fragment {
			m.Stats[StatDefaultFromVM+Stat(p.Dir)]++
		}
		return m.policy.Defaults[p.Dir], -1
	}
	if count {
		m.RuleHits[r]++
		if m.policy.Rules[r].Log {
			m.Stats[StatLogged]++
		}
	}
	return m.policy.Rules[r].Action, r
}

// Process decides the fate of one frame crossing the vNIC in dir.
func (m *Model) Process(frame []byte, dir sdk.Direction) Verdict {
	p := ParseFrame(frame, dir)
	switch p.Kind {
	case KindInvalid:
		m.Stats[StatInvalid]++
		return Verdict{Drop: true, Rule: -1, Why: "invalid"}
	case KindARP:
		m.Stats[StatNonIP]++
		return Verdict{Rule: -1, Why: "arp"}
	case KindNonIP:
		m.Stats[StatNonIP]++
		return Verdict{Drop: m.policy.NonIP.Drops(), Rule: -1, Why: "non-ip"}
	}
	if p.isND() {
		m.Stats[StatND]++
		return Verdict{Rule: -1, Why: "nd"}
	}
	if p.Proto == ProtoTCP && !p.Fragment && !validTCPFlags(p.TCPFlags) {
		m.Stats[StatInvalid]++
		return Verdict{Drop: true, Rule: -1, Why: "tcp flags"}
	}
	now := m.Now()
	if p.Inner != nil {
		// An ICMP error about a live flow passes (related); about no
		// flow, it is an ordinary ICMP packet for the rules.
		if v, ok := m.flows[flowKey(p.Inner)]; ok && v.Expires > now {
			m.Stats[StatRelated]++
			return Verdict{Rule: -1, Why: "related"}
		}
	}
	var key ctKey
	tracked := p.tracked()
	if tracked {
		key = flowKey(&p)
		if v, ok := m.flows[key]; ok && v.Expires > now && !reopens(&v, &p) {
			if v.Gen != m.gen {
				m.Stats[StatRevalidated]++
				op := origPacket(key, &v)
				if a, _ := m.decide(&op, false); a.Drops() {
					m.Stats[StatCut]++
					delete(m.flows, key)
					return Verdict{Drop: true, Rule: -1, Why: "cut by new policy"}
				}
				v.Gen = m.gen
			}
			advance(&v, &p)
			v.Expires = now + uint64(ctTimeouts[v.State])
			m.flows[key] = v
			m.Stats[StatEstablished]++
			return Verdict{Rule: -1, Why: "established"}
		}
	}
	a, r := m.decide(&p, true)
	if p.Fragment && r < 0 {
		m.Stats[StatFragmentDrop]++
		return Verdict{Drop: true, Rule: -1, Why: "fragment"}
	}
	why := "rule"
	if r < 0 {
		why = "default"
	}
	if a == Reject {
		return m.reject(frame, &p, r, why)
	}
	if a.Drops() {
		return Verdict{Drop: true, Rule: r, Why: why}
	}
	if tracked {
		if st, ok := newFlowState(&p); ok {
			if _, exists := m.flows[key]; !exists && m.Capacity > 0 && len(m.flows) >= m.Capacity {
				m.Stats[StatCTFull]++
				return Verdict{Fail: true, Rule: r, Why: "conntrack full"}
			}
			m.flows[key] = ctVal{Expires: now + uint64(ctTimeouts[st]), Gen: m.gen, P1: p.P1, P2: p.P2, State: st, OrigDir: uint8(dir)}
			m.Stats[StatNewFlows]++
		}
	}
	return Verdict{Rule: r, Why: why}
}

// reject answers a rejected frame when firewall.c would (fw_reject).
func (m *Model) reject(frame []byte, p *Packet, r int, why string) Verdict {
	l3, l4, _ := frameOffsets(frame, p)
	if !canAnswer(frame, p, l3, l4) {
		m.Stats[StatRejectSkipped]++
		return Verdict{Drop: true, Rule: r, Why: why + ", reject: no answer"}
	}
	if m.NoAnswers {
		m.Stats[StatRejectLimited]++
		return Verdict{Drop: true, Rule: r, Why: why + ", reject: limited"}
	}
	a := answer(frame, p)
	if a == nil {
		m.Stats[StatRejectSkipped]++
		return Verdict{Drop: true, Rule: r, Why: why + ", reject: no answer"}
	}
	m.Stats[StatRejected]++
	return Verdict{Drop: true, Rule: r, Why: why + ", reject", Answer: a}
}

// Flows is the number of tracked flows (expired ones included until
// overwritten, as in the kernel's table).
func (m *Model) Flows() int { return len(m.flows) }

// GC forgets the flows expired at now, as the fast path's sweep does, and
// returns how many.
func (m *Model) GC(now uint64) int {
	n := 0
	for k, v := range m.flows {
		if v.Expires <= now {
			delete(m.flows, k)
			n++
		}
	}
	return n
}

// Flush forgets every tracked flow.
func (m *Model) Flush() { clear(m.flows) }
