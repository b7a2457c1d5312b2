package dlb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/internal/jsonpos"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// ErrInvalidConfig is wrapped by every error about a services file's content.
var ErrInvalidConfig = errors.New("invalid dlb services")

// Protocol numbers.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Config is a parsed services file.
type Config struct {
	Services []Service
}

// Service is one VIP:port/protocol and its pool.
type Service struct {
	// PoolGroup is the host group some of Backends came from ("" none).
	PoolGroup string
	Name      string
	VIP       netip.Addr
	Port      uint16
	Proto     uint8
	TableSize int
	Backends  []Backend
	// Affinity is AffinityNone (a flow's 5-tuple picks its backend) or
	// AffinityClient (the client address does: (saddr, daddr, dport,
	// proto) are hashed, so one client always gets the same backend while
	// the pool is unchanged).
	Affinity string
	// ID numbers the service for the fast path's per-service counters;
	// the instance assigns it (stable across reloads for the same VIP,
	// port and protocol). ParseConfig leaves it 0.
	ID uint16
	// Health, when set, is the check filterd runs against every backend;
	// a backend that fails it takes no new flows (as with weight 0).
	Health *HealthCheck
}

// Session affinity of a service.
const (
	AffinityNone   = "none"
	AffinityClient = "client"
)

// HealthCheck is a service's health check (docs/dlb.md). It is
// comparable: backends checked alike share one checker.
type HealthCheck struct {
	// Type is "tcp" (a connect) or "http" (a GET answered 2xx or 3xx).
	Type string
	// Port is the port checked; 0 checks the backend's own port.
	Port uint16
	// Path is the HTTP request path ("http" only).
	Path string
	// Interval between checks and Timeout of one check.
	Interval, Timeout time.Duration
	// Rise consecutive successes make a backend up, Fall consecutive
	// failures down.
	Rise, Fall int
	// Netns is the network namespace (a path such as /run/netns/x) the
	// checks are made from; empty: filterd's own.
	Netns string
}

// Health check defaults.
const (
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthRise     = 2
	DefaultHealthFall     = 3
	// MinHealthInterval bounds how often a backend is checked.
	MinHealthInterval = 100 * time.Millisecond
)

// Backend is one real server of a pool.
type Backend struct {
	Addr   netip.Addr
	Port   uint16
	Weight uint32
	// MAC, when set, replaces the destination MAC of DNATed frames (a
	// backend on the client's L2 segment); unset, the frame keeps the
	// MAC the client used for the VIP (its gateway for a routed VIP).
	MAC net.HardwareAddr
}

// Key names the backend in Maglev permutations.
func (b Backend) Key() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// ConfigError is an error at a place in a services file.
type ConfigError struct {
	File      string
	Line, Col int
	Field     string
	Err       error
}

func (e *ConfigError) Error() string {
	return jsonpos.Format(e.File, e.Line, e.Col, e.Field, e.Err)
}

func (e *ConfigError) Unwrap() []error { return []error{ErrInvalidConfig, e.Err} }

// File is a services file as written: the JSON's own fields, for tools
// that edit the file (vfctl lb) and write it back with Format. ParseConfig
// checks one.
type File struct {
	Services []FileService `json:"services"`
}

// FileService is one service of a File.
type FileService struct {
	Name      string        `json:"name,omitempty"`
	VIP       string        `json:"vip"`
	Port      int           `json:"port"`
	Protocol  string        `json:"protocol"`
	TableSize *int          `json:"table_size,omitempty"`
	Affinity  string        `json:"affinity,omitempty"`
	Health    *FileHealth   `json:"health,omitempty"`
	Backends  []FileBackend `json:"backends"`
	// PoolGroup names a host address group (filterd's table, e.g.
	// "tag:web"): each of its addresses is a backend too, on PoolPort
	// (default: the service port) with PoolWeight (default 1). The pool
	// follows the group as VMs are tagged and untagged.
	PoolGroup  string `json:"pool_group,omitempty"`
	PoolPort   int    `json:"pool_port,omitempty"`
	PoolWeight *int   `json:"pool_weight,omitempty"`
}

// FileBackend is one backend of a FileService.
type FileBackend struct {
	Addr   string `json:"addr"`
	Port   int    `json:"port,omitempty"`
	Weight *int   `json:"weight,omitempty"`
	MAC    string `json:"mac,omitempty"`
}

// FileHealth is a FileService's health check.
type FileHealth struct {
	Type     string  `json:"type"`
	Port     int     `json:"port,omitempty"`
	Path     *string `json:"path,omitempty"`
	Interval string  `json:"interval,omitempty"`
	Timeout  string  `json:"timeout,omitempty"`
	Rise     *int    `json:"rise,omitempty"`
	Fall     *int    `json:"fall,omitempty"`
	Netns    string  `json:"netns,omitempty"`
}

// LoadConfig reads and parses the services file at path; a pool_group
// is refused (see LoadConfigGroups).
func LoadConfig(path string) (*Config, error) {
	cfg, _, err := LoadConfigGroups(path, nil)
	return cfg, err
}

// LoadConfigGroups is LoadConfig resolving pool_group through groups,
// and it returns the groups it resolved.
func LoadConfigGroups(path string, groups sdk.Groups) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	cfg, used, err := ParseConfigGroups(data, groups)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = path
		}
	}
	return cfg, used, err
}

// schema is the services file's shape for walk: the fields each object
// may have, and which member or list element is which kind of object.
var schema = jsonpos.Schema{
	Fields: map[string][]string{
		"top":     {"services"},
		"service": {"name", "vip", "port", "protocol", "table_size", "backends", "affinity", "health", "pool_group", "pool_port", "pool_weight"},
		"health":  {"type", "port", "path", "interval", "timeout", "rise", "fall", "netns"},
		"backend": {"addr", "port", "weight", "mac"},
	},
	Members: map[string]string{
		"top.services":     "services",
		"service.backends": "backends",
		"service.health":   "health",
	},
	Elems: map[string]string{
		"services": "service",
		"backends": "backend",
	},
	RawEOFAtClose: true,
}

// ParseConfig parses a services file (docs/dlb.md). Errors are
// *ConfigError with line and column.
func ParseConfig(data []byte) (*Config, error) {
	cfg, _, err := ParseConfigGroups(data, nil)
	return cfg, err
}

// ParseConfigGroups is ParseConfig resolving each service's pool_group
// through groups (nil: pool_group is an error); used lists the groups it
// resolved.
func ParseConfigGroups(data []byte, groups sdk.Groups) (*Config, []string, error) {
	var used []string
	at := map[string]int64{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := walk(dec, data, "", "top", at); err != nil {
		return nil, nil, err
	}
	if tok, err := dec.Token(); err != io.EOF {
		line, col := lineCol(data, dec.InputOffset())
		return nil, nil, &ConfigError{Line: line, Col: col, Err: fmt.Errorf("trailing data after the top-level object (%v)", tok)}
	}
	var raw File
	if err := json.Unmarshal(data, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			line, col := lineCol(data, te.Offset)
			return nil, nil, &ConfigError{Line: line, Col: col, Field: te.Field, Err: fmt.Errorf("want %s, got %s", te.Type, te.Value)}
		}
		return nil, nil, &ConfigError{Err: err}
	}
	fail := func(field, format string, args ...any) error {
		off, ok := at[field]
		for !ok && field != "" { // fall back to the enclosing object
			i := strings.LastIndexAny(field, ".[")
			if i < 0 {
				field = ""
			} else {
				field = field[:i]
			}
			off, ok = at[field]
		}
		line, col := lineCol(data, off)
		return &ConfigError{Line: line, Col: col, Field: field, Err: fmt.Errorf(format, args...)}
	}
	if _, ok := at["services"]; !ok {
		return nil, nil, fail("", "no \"services\" list")
	}
	type svcKey struct {
		vip   netip.Addr
		port  uint16
		proto uint8
	}
	seen := map[svcKey]string{}
	names := map[string]int{}
	cfg := &Config{}
	nBackends := 0
	for i, rs := range raw.Services {
		p := fmt.Sprintf("services[%d]", i)
		s := Service{Name: rs.Name, TableSize: DefaultTableSize, Affinity: AffinityNone}
		switch rs.Affinity {
		case "", AffinityNone:
		case AffinityClient:
			s.Affinity = AffinityClient
		default:
			return nil, nil, fail(p+".affinity", "%q: want client or none", rs.Affinity)
		}
		if s.Name == "" {
			s.Name = strconv.Itoa(i)
		}
		vip, err := netip.ParseAddr(rs.VIP)
		switch {
		case rs.VIP == "":
			return nil, nil, fail(p+".vip", "missing")
		case err != nil || vip.Zone() != "":
			return nil, nil, fail(p+".vip", "invalid address %q", rs.VIP)
		case vip.Unmap().IsUnspecified() || vip.Unmap().IsMulticast() || vip.Unmap() == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return nil, nil, fail(p+".vip", "%s cannot be a VIP", rs.VIP)
		}
		s.VIP = vip.Unmap()
		if rs.Port < 1 || rs.Port > 65535 {
			return nil, nil, fail(p+".port", "port %d out of range 1-65535", rs.Port)
		}
		s.Port = uint16(rs.Port)
		switch rs.Protocol {
		case "tcp":
			s.Proto = ProtoTCP
		case "udp":
			s.Proto = ProtoUDP
		case "":
			return nil, nil, fail(p+".protocol", "missing (tcp or udp)")
		default:
			return nil, nil, fail(p+".protocol", "%q: want tcp or udp", rs.Protocol)
		}
		if rs.TableSize != nil {
			s.TableSize = *rs.TableSize
			if s.TableSize < 7 || s.TableSize > MaxTableSize || !IsPrime(s.TableSize) {
				return nil, nil, fail(p+".table_size", "%d: the Maglev table size must be a prime between 7 and %d (e.g. 251, 4099, 65537)", s.TableSize, MaxTableSize)
			}
		}
		if prev, ok := names[s.Name]; ok {
			return nil, nil, fail(p+".name", "duplicate service name %q (also services[%d]): names label counters and select services in vfctl lb", s.Name, prev)
		}
		names[s.Name] = i
		k := svcKey{s.VIP, s.Port, s.Proto}
		if prev, ok := seen[k]; ok {
			return nil, nil, fail(p+".vip", "duplicate service %s:%d/%s (also service %q)", s.VIP, s.Port, rs.Protocol, prev)
		}
		seen[k] = s.Name
		var total uint64
		keys := map[string]bool{}
		for j, rb := range rs.Backends {
			bp := fmt.Sprintf("%s.backends[%d]", p, j)
			a, err := netip.ParseAddr(rb.Addr)
			switch {
			case rb.Addr == "":
				return nil, nil, fail(bp+".addr", "missing")
			case err != nil || a.Zone() != "":
				return nil, nil, fail(bp+".addr", "invalid address %q", rb.Addr)
			case a.Unmap().Is4() != s.VIP.Is4():
				return nil, nil, fail(bp+".addr", "%s: a backend must be of the VIP's address family (%s)", rb.Addr, s.VIP)
			case a.Unmap().IsUnspecified() || a.Unmap().IsMulticast():
				return nil, nil, fail(bp+".addr", "%s cannot be a backend", rb.Addr)
			}
			b := Backend{Addr: a.Unmap(), Weight: 1}
			switch {
			case rb.Port == 0:
				b.Port = s.Port
			case rb.Port < 1 || rb.Port > 65535:
				return nil, nil, fail(bp+".port", "port %d out of range 1-65535", rb.Port)
			default:
				b.Port = uint16(rb.Port)
			}
			if rb.Weight != nil {
				if *rb.Weight < 0 || *rb.Weight > 65535 {
					return nil, nil, fail(bp+".weight", "weight %d out of range 0-65535", *rb.Weight)
				}
				b.Weight = uint32(*rb.Weight)
			}
			if rb.MAC != "" {
				mac, err := net.ParseMAC(rb.MAC)
				if err != nil || len(mac) != 6 {
					return nil, nil, fail(bp+".mac", "invalid Ethernet address %q", rb.MAC)
				}
				b.MAC = mac
			}
			if keys[b.Key()] {
				return nil, nil, fail(bp, "duplicate backend %s", b.Key())
			}
			keys[b.Key()] = true
			total += uint64(b.Weight)
			s.Backends = append(s.Backends, b)
		}
		if rs.PoolGroup != "" {
			if groups == nil {
				return nil, nil, fail(p+".pool_group", "%q: no host group table here (pool groups are resolved by filterd)", rs.PoolGroup)
			}
			members, err := groups.Members(rs.PoolGroup)
			if err != nil {
				return nil, nil, fail(p+".pool_group", "%v", err)
			}
			if !slices.Contains(used, rs.PoolGroup) {
				used = append(used, rs.PoolGroup)
			}
			b := Backend{Port: s.Port, Weight: 1}
			if rs.PoolPort != 0 {
				if rs.PoolPort < 1 || rs.PoolPort > 65535 {
					return nil, nil, fail(p+".pool_port", "port %d out of range 1-65535", rs.PoolPort)
				}
				b.Port = uint16(rs.PoolPort)
			}
			if rs.PoolWeight != nil {
				if *rs.PoolWeight < 1 || *rs.PoolWeight > 65535 {
					return nil, nil, fail(p+".pool_weight", "weight %d out of range 1-65535", *rs.PoolWeight)
				}
				b.Weight = uint32(*rs.PoolWeight)
			}
			for _, m := range members {
				a := m.Addr().Unmap()
				if m.Bits() != a.BitLen() || a.Is4() != s.VIP.Is4() {
					continue // a range, or the other family: not a backend
				}
				nb := b
				nb.Addr = a
				if keys[nb.Key()] {
					continue // also listed in backends: that entry wins
				}
				keys[nb.Key()] = true
				total += uint64(nb.Weight)
				s.Backends = append(s.Backends, nb)
			}
			s.PoolGroup = rs.PoolGroup
		}
		if total == 0 && rs.PoolGroup == "" {
			return nil, nil, fail(p+".backends", "empty pool: service %q has no backend with a weight above 0", s.Name)
		}
		if len(s.Backends) >= s.TableSize {
			return nil, nil, fail(p+".table_size", "%d slots for %d backends: the table must be larger than the pool (100× is advised)", s.TableSize, len(s.Backends))
		}
		if rs.Health != nil {
			h, err := parseHealth(rs.Health, p+".health", fail)
			if err != nil {
				return nil, nil, err
			}
			s.Health = h
		}
		nBackends += len(s.Backends)
		cfg.Services = append(cfg.Services, s)
	}
	if len(cfg.Services) > MaxServices {
		return nil, nil, fail("services", "%d services: at most %d", len(cfg.Services), MaxServices)
	}
	if nBackends > MaxBackends {
		return nil, nil, fail("services", "%d backends over all services: at most %d", nBackends, MaxBackends)
	}
	return cfg, used, nil
}

// parseHealth checks a service's "health" object; p is its path.
func parseHealth(rh *FileHealth, p string, fail func(field, format string, args ...any) error) (*HealthCheck, error) {
	h := &HealthCheck{Type: rh.Type, Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout, Rise: DefaultHealthRise, Fall: DefaultHealthFall, Netns: rh.Netns}
	switch rh.Type {
	case "tcp":
		if rh.Path != nil {
			return nil, fail(p+".path", "a tcp check has no path (use \"type\": \"http\")")
		}
	case "http":
		h.Path = "/"
		if rh.Path != nil {
			h.Path = *rh.Path
			if !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\r\n") {
				return nil, fail(p+".path", "%q: want an absolute request path such as /healthz", h.Path)
			}
		}
	case "":
		return nil, fail(p+".type", "no check type: want \"type\": \"tcp\" or \"http\"")
	default:
		return nil, fail(p+".type", "%q: want tcp or http", rh.Type)
	}
	if rh.Port != 0 {
		if rh.Port < 1 || rh.Port > 65535 {
			return nil, fail(p+".port", "port %d out of range 1-65535", rh.Port)
		}
		h.Port = uint16(rh.Port)
	}
	dur := func(field, in string, def time.Duration) (time.Duration, error) {
		if in == "" {
			return def, nil
		}
		d, err := time.ParseDuration(in)
		if err != nil {
			return 0, fail(p+"."+field, "%q: want a duration such as 2s or 500ms", in)
		}
		return d, nil
	}
	var err error
	if h.Interval, err = dur("interval", rh.Interval, DefaultHealthInterval); err != nil {
		return nil, err
	}
	if h.Interval < MinHealthInterval || h.Interval > time.Hour {
		return nil, fail(p+".interval", "%s out of range %s-1h", h.Interval, MinHealthInterval)
	}
	if h.Timeout, err = dur("timeout", rh.Timeout, min(DefaultHealthTimeout, h.Interval)); err != nil {
		return nil, err
	}
	if h.Timeout <= 0 || h.Timeout > h.Interval {
		return nil, fail(p+".timeout", "%s: want more than 0 and at most the interval (%s)", h.Timeout, h.Interval)
	}
	for _, c := range []struct {
		field string
		in    *int
		out   *int
	}{{"rise", rh.Rise, &h.Rise}, {"fall", rh.Fall, &h.Fall}} {
		if c.in == nil {
			continue
		}
		if *c.in < 1 || *c.in > 100 {
			return nil, fail(p+"."+c.field, "%d out of range 1-100", *c.in)
		}
		*c.out = *c.in
	}
	if rh.Netns != "" && (!filepath.IsAbs(rh.Netns) || filepath.Clean(rh.Netns) != rh.Netns) {
		return nil, fail(p+".netns", "%q: want the absolute path of a network namespace, such as /run/netns/blue", rh.Netns)
	}
	return h, nil
}

// walk records the offset of every value under its path and refuses
// unknown and duplicate fields (jsonpos.Walk with the services file's
// schema; errors are *ConfigError).
func walk(dec *json.Decoder, data []byte, path, kind string, at map[string]int64) error {
	err := jsonpos.Walk(dec, data, &schema, path, kind, at)
	var pe *jsonpos.Error
	if errors.As(err, &pe) {
		return &ConfigError{Line: pe.Line, Col: pe.Col, Field: pe.Field, Err: pe.Err}
	}
	return err
}

func lineCol(data []byte, off int64) (int, int) { return jsonpos.LineCol(data, off) }

// OfflineGroups resolves every group to no member: for checking a
// services file away from filterd (vfctl lb), where pool groups cannot be
// resolved but the rest of the file can be checked.
type OfflineGroups struct{}

// Members implements sdk.Groups.
func (OfflineGroups) Members(string) ([]netip.Prefix, error) { return nil, nil }
