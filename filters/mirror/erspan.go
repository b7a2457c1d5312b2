package mirror

import (
	"encoding/binary"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// GRE protocol types of the ERSPAN versions.
const (
	greProtoERSPAN2 = 0x88BE
	greProtoERSPAN3 = 0x22EB
)

// appendERSPAN appends the GRE header (with sequence number) and the ERSPAN
// type II or III header for r, then r's frame. The IPv4 header is the
// kernel's (raw IPPROTO_GRE socket). unixNS is the frame's wall-clock time.
//
// Type II: Ver=1, VLAN=0, COS=0, En=0, T=truncated, Session, Index = the
// vNIC's ifindex (20 bits). Type III: Ver=2, BSO=0, T, Session, Timestamp in
// 100 µs units (Gra=0), SGT=0, P=1 and FT=0 (an Ethernet frame, as Linux's erspan sets them), HW ID=0,
// D=0 for from-vm (ingress at the vNIC port), 1 for to-vm (egress), O=0.
func appendERSPAN(b []byte, v3 bool, session uint16, r *Record, unixNS int64) []byte {
	proto := uint16(greProtoERSPAN2)
	if v3 {
		proto = greProtoERSPAN3
	}
	b = binary.BigEndian.AppendUint16(b, 0x1000) // S: sequence number present
	b = binary.BigEndian.AppendUint16(b, proto)
	b = binary.BigEndian.AppendUint32(b, r.Seq)
	var t uint16
	if uint32(len(r.Data)) < r.OrigLen {
		t = 1 << 10
	}
	ver := uint16(1)
	if v3 {
		ver = 2
	}
	b = binary.BigEndian.AppendUint16(b, ver<<12)         // Ver, VLAN 0
	b = binary.BigEndian.AppendUint16(b, t|session&0x3ff) // COS 0, En/BSO 0, T, session
	if !v3 {
		b = binary.BigEndian.AppendUint32(b, r.Ifindex&0xfffff) // reserved, index
	} else {
		b = binary.BigEndian.AppendUint32(b, uint32(unixNS/100_000)) // 100 µs units
		b = binary.BigEndian.AppendUint16(b, 0)                      // SGT
		w := uint16(1 << 15)                                         // P=1 (Ethernet PDU), FT 0, HW ID 0, Gra 0, O 0
		if r.Dir == sdk.ToVM {
			w |= 1 << 3 // D: egress
		}
		b = binary.BigEndian.AppendUint16(b, w)
	}
	return append(b, r.Data...)
}
