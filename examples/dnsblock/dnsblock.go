// Package dnsblock is an example external slow-path filter: it drops the
// DNS queries a VM sends for blocked domains (and their subdomains) and
// passes every other frame. It runs as its own process (cmd/dnsblock),
// started by filterd from dnsblock.json, and imports only the vnicfilter
// SDK.
package dnsblock

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Params is the parameter schema, the same as the manifest's.
var Params = []sdk.ParamSpec{
	{Name: "names", Type: sdk.String, Doc: "comma-separated domains to block, each with its subdomains"},
}

// Blocker is one instance: a blocked-name set and counters.
type Blocker struct {
	blocked map[string]bool
	log     *slog.Logger

	queries, drops atomic.Uint64
}

// New makes the slow path of one instance.
func New(ctx *sdk.SlowPathContext) (sdk.SlowPath, error) {
	b := &Blocker{blocked: map[string]bool{}, log: ctx.Logger}
	for _, n := range strings.Split(ctx.Instance.Params.String("names"), ",") {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if n == "" {
			continue
		}
		if len(n) > 253 || strings.Contains(n, "..") {
			return nil, fmt.Errorf("names: %q is not a domain name: %w", n, sdk.ErrInvalidParam)
		}
		b.blocked[n] = true
	}
	return b, nil
}

// Process drops DNS queries for blocked names; everything else passes.
func (b *Blocker) Process(f *sdk.Frame) sdk.SlowVerdict {
	name, ok := QueryName(f.Data)
	if !ok {
		return sdk.Pass
	}
	b.queries.Add(1)
	if b.Blocked(name) {
		b.drops.Add(1)
		return sdk.Drop
	}
	return sdk.Pass
}

// Blocked reports whether name or one of its parent domains is blocked.
func (b *Blocker) Blocked(name string) bool {
	name = strings.ToLower(name)
	for {
		if b.blocked[name] {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return false
		}
		name = name[i+1:]
	}
}

// Counters implements sdk.SlowCounters.
func (b *Blocker) Counters() []sdk.Counter {
	return []sdk.Counter{
		{Name: "dns_queries_total", Help: "DNS queries the VM sent.", Value: float64(b.queries.Load())},
		{Name: "dns_blocked_total", Help: "DNS queries dropped for a blocked name.", Value: float64(b.drops.Load())},
	}
}

// Close implements io.Closer.
func (b *Blocker) Close() error { return nil }

// QueryName returns the first question's name of a DNS query carried in
// an Ethernet frame (IPv4 or IPv6, UDP to port 53, VLAN tags skipped).
func QueryName(frame []byte) (string, bool) {
	if len(frame) < 14 {
		return "", false
	}
	et, off := binary.BigEndian.Uint16(frame[12:]), 14
	for (et == 0x8100 || et == 0x88a8) && len(frame) >= off+4 {
		et, off = binary.BigEndian.Uint16(frame[off+2:]), off+4
	}
	var udp []byte
	switch et {
	case 0x0800:
		ip := frame[off:]
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 17 {
			return "", false
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 { // a fragment
			return "", false
		}
		hl := int(ip[0]&0xf) * 4
		if hl < 20 || len(ip) < hl {
			return "", false
		}
		udp = ip[hl:]
	case 0x86dd:
		ip := frame[off:]
		if len(ip) < 40 || ip[6] != 17 { // no extension headers
			return "", false
		}
		udp = ip[40:]
	default:
		return "", false
	}
	if len(udp) < 8 || binary.BigEndian.Uint16(udp[2:]) != 53 {
		return "", false
	}
	return questionName(udp[8:])
}

// questionName parses the first question of a DNS query message.
func questionName(msg []byte) (string, bool) {
	if len(msg) < 12 || msg[2]&0x80 != 0 || binary.BigEndian.Uint16(msg[4:]) == 0 {
		return "", false // short, a response, or no question
	}
	var sb strings.Builder
	for p := 12; ; {
		if p >= len(msg) {
			return "", false
		}
		l := int(msg[p])
		switch {
		case l == 0:
			if sb.Len() == 0 {
				return ".", true
			}
			return sb.String(), true
		case l&0xc0 != 0: // compression is not used in a query's question
			return "", false
		case p+1+l > len(msg) || sb.Len()+l+1 > 254:
			return "", false
		}
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.Write(msg[p+1 : p+1+l])
		p += 1 + l
	}
}
