package dlb

import (
	"net/netip"
	"time"
)

// State is an instance's live services, as its Inspect returns them
// (GET …/inspect, `vfctl lb show`).
type State struct {
	Services []ServiceState `json:"services"`
	// HealthError is the last failure to apply a health change to the
	// fast path (the previous tables stay live); empty when none.
	HealthError string `json:"health_error,omitempty"`
}

// ServiceState is one service with its traffic and backends.
type ServiceState struct {
	Name      string     `json:"name"`
	VIP       netip.Addr `json:"vip"`
	Port      uint16     `json:"port"`
	Protocol  string     `json:"protocol"`
	Affinity  string     `json:"affinity"`
	TableSize int        `json:"table_size"`
	// Health is the service's check, nil without one.
	Health *HealthState `json:"health,omitempty"`
	// FromVM counts the client's packets to the service (DNATed),
	// ToVM the replies (reverse-NATed).
	FromVM Traffic `json:"from_vm"`
	ToVM   Traffic `json:"to_vm"`
	// Backends in the services file's order.
	Backends []BackendState `json:"backends"`
}

// HealthState is a service's health check as configured.
type HealthState struct {
	Type     string `json:"type"`
	Port     uint16 `json:"port,omitempty"`
	Path     string `json:"path,omitempty"`
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	Rise     int    `json:"rise"`
	Fall     int    `json:"fall"`
	Netns    string `json:"netns,omitempty"`
}

// Traffic is a packet and byte count.
type Traffic struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// BackendState is one backend of a service.
type BackendState struct {
	Addr netip.Addr `json:"addr"`
	Port uint16     `json:"port"`
	// Weight is the configured weight; a backend whose health is "down"
	// takes no new flows whatever its weight.
	Weight uint32 `json:"weight"`
	MAC    string `json:"mac,omitempty"`
	// Health is "up", "down" or "unchecked" (no check, or not enough
	// results yet: the backend takes flows).
	Health string `json:"health"`
	// Since is when the health last changed (zero when unchecked).
	Since time.Time `json:"since,omitzero"`
	// LastError is the last failed check's error.
	LastError string `json:"last_error,omitempty"`
	// NewFlows counts the flows given to the backend since the instance
	// was loaded (kept across reloads and health changes).
	NewFlows uint64 `json:"new_flows"`
	// PinnedFlows is the number of flows pinned to it now (a scan of the
	// connection table).
	PinnedFlows uint64 `json:"pinned_flows"`
}

func healthState(h *HealthCheck) *HealthState {
	if h == nil {
		return nil
	}
	return &HealthState{Type: h.Type, Port: h.Port, Path: h.Path, Interval: h.Interval.String(), Timeout: h.Timeout.String(), Rise: h.Rise, Fall: h.Fall, Netns: h.Netns}
}

func protocolName(p uint8) string {
	if p == ProtoUDP {
		return "udp"
	}
	return "tcp"
}

// svcIdent identifies a service across reloads.
type svcIdent struct {
	vip   netip.Addr
	port  uint16
	proto uint8
}

func identOf(s Service) svcIdent { return svcIdent{s.VIP, s.Port, s.Proto} }

// backendIdent identifies a backend of a service across reloads.
type backendIdent struct {
	svc     svcIdent
	backend string // Backend.Key()
}
