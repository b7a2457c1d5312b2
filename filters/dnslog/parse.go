package dnslog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ErrNoDNS: the frame carries no DNS message (a TCP handshake or bare ACK
// on port 53, or a frame that is not UDP/TCP at all). Not a parse error.
var ErrNoDNS = errors.New("no DNS message")

// Message is what dnslog logs of one DNS message.
type Message struct {
	// ID is the DNS transaction id.
	ID uint16
	// Response is true for answers (QR bit set).
	Response bool
	// Name and Type are those of the first question ("" if none).
	Name string
	Type layers.DNSType
	// RCode is the response code (answers only).
	RCode layers.DNSResponseCode
	// Answers is the number of answer records.
	Answers int
	// TCP is true for DNS over TCP.
	TCP bool
}

// Parser decodes DNS frames, reusing its layers between calls. It is not
// safe for concurrent use: dnslog keeps one per direction.
type Parser struct {
	eth     layers.Ethernet
	dot1q   layers.Dot1Q
	ip4     layers.IPv4
	ip6     layers.IPv6
	udp     layers.UDP
	tcp     layers.TCP
	dns     layers.DNS
	dlp     *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

// NewParser returns a parser for Ethernet frames.
func NewParser() *Parser {
	p := &Parser{decoded: make([]gopacket.LayerType, 0, 8)}
	// DNS is decoded by hand: over TCP it has a length prefix, which
	// gopacket's port-53 mapping does not strip.
	p.dlp = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &p.eth, &p.dot1q, &p.ip4, &p.ip6, &p.udp, &p.tcp)
	p.dlp.IgnoreUnsupported = true
	return p
}

// Parse decodes the DNS message in an Ethernet frame. It returns ErrNoDNS
// for frames without one, another error for malformed ones.
func (p *Parser) Parse(frame []byte) (Message, error) {
	if err := p.dlp.DecodeLayers(frame, &p.decoded); err != nil {
		return Message{}, fmt.Errorf("decode frame: %w", err)
	}
	var payload []byte
	tcp := false
	for _, lt := range p.decoded {
		switch lt {
		case layers.LayerTypeUDP:
			payload = p.udp.Payload
		case layers.LayerTypeTCP:
			payload, tcp = p.tcp.Payload, true
		}
	}
	if payload == nil && !tcp {
		return Message{}, ErrNoDNS
	}
	if tcp {
		// One segment may start a message (2-byte length, then the
		// message); continuation segments are not reassembled.
		if len(payload) == 0 {
			return Message{}, ErrNoDNS
		}
		if len(payload) < 2 {
			return Message{}, errors.New("dns over tcp: short length prefix")
		}
		n := int(binary.BigEndian.Uint16(payload))
		payload = payload[2:]
		if n < len(payload) {
			payload = payload[:n]
		}
	}
	if err := p.dns.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
		return Message{}, fmt.Errorf("decode dns: %w", err)
	}
	m := Message{
		ID:       p.dns.ID,
		Response: p.dns.QR,
		RCode:    p.dns.ResponseCode,
		Answers:  len(p.dns.Answers),
		TCP:      tcp,
	}
	if len(p.dns.Questions) > 0 {
		q := p.dns.Questions[0]
		m.Name, m.Type = string(q.Name), q.Type
	}
	return m, nil
}
