package domainxml

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

const (
	// Namespace is the XML namespace of vnicfilter's metadata element, and
	// the uri argument of virDomainSetMetadata / `virsh metadata`.
	Namespace = "https://vnicfilter.dev/xmlns/domain/1"
	// Prefix is the namespace prefix vnicfilter writes, and the key
	// argument of virDomainSetMetadata / `virsh metadata --key`.
	Prefix = "vnicfilter"
	// MaxFilters is the most filters one interface or portgroup may list:
	// a chain has sdk.MaxSlots slots.
	MaxFilters = sdk.MaxSlots
)

// ErrInvalidConfig is wrapped by every error about the content of the
// vnicfilter configuration (as opposed to a failure to look up filters).
var ErrInvalidConfig = errors.New("invalid vnicfilter configuration")

// Error is a problem in the configuration, with the line it was found on
// when known. It matches ErrInvalidConfig with errors.Is.
type Error struct {
	// Line in the parsed document, 1-based; 0 when unknown.
	Line int
	// Msg names the element and the problem.
	Msg string
	// Err is the underlying error, if any (an encoding/xml syntax error,
	// sdk.ErrInvalidParam …).
	Err error
}

func (e *Error) Error() string {
	msg := e.Msg
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Line > 0 {
		return "line " + strconv.Itoa(e.Line) + ": " + msg
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is makes every *Error match ErrInvalidConfig.
func (e *Error) Is(target error) bool { return target == ErrInvalidConfig }

// Config is the vnicfilter configuration of one domain.
type Config struct {
	// Interfaces in document order. An interface listed with no filters
	// is explicitly unprotected: it opts out of its portgroup's default.
	Interfaces []InterfaceConfig
}

// InterfaceConfig is the chain of one interface, matched by MAC or alias
// (exactly one is set).
type InterfaceConfig struct {
	// MAC matches the interface's <mac address=…>.
	MAC net.HardwareAddr
	// Alias matches the interface's <alias name=…>; only user aliases
	// ("ua-" prefix) are accepted, as only they are kept in the
	// persistent config and present at every hook phase.
	Alias string
	// Filters in chain order, slot 0 first.
	Filters []api.FilterSpec

	line int // where the entry was parsed, for error messages
}

// String names the entry as an operator wrote it: "mac 52:54:00:12:34:56"
// or "alias ua-net0".
func (ic InterfaceConfig) String() string {
	if ic.MAC != nil {
		return "mac " + ic.MAC.String()
	}
	return "alias " + ic.Alias
}

var (
	macRE        = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
	aliasRE      = regexp.MustCompile(`^ua-[A-Za-z0-9_-]+$`)
	filterNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	paramNameRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)
)

// ParseConfig parses the vnicfilter element of a domain on its own, in
// the namespace (as written in a domain XML or under libvirt/testdata).
func ParseConfig(element []byte) (*Config, error) {
	cfg, _, err := parseElement(element, "", kindDomain)
	return cfg, err
}

// ParseMetadata parses the value virDomainGetMetadata (`virsh metadata
// DOMAIN URI`) returns: the same element with its namespace stripped, e.g.
// <filters><interface mac=…>…</interface></filters>.
func ParseMetadata(value []byte) (*Config, error) {
	cfg, _, err := parseElement(value, Namespace, kindDomain)
	return cfg, err
}

type kind int

const (
	kindDomain  kind = iota // root holds <interface> entries
	kindNetwork             // root holds <portgroup> entries
)

// portgroupConfig is one <portgroup> entry of a network's metadata.
type portgroupConfig struct {
	name    string
	filters []api.FilterSpec
	line    int
}

// parseElement parses a standalone vnicfilter element. defaultSpace is
// the namespace of unprefixed names ("" for none).
func parseElement(doc []byte, defaultSpace string, k kind) (*Config, []portgroupConfig, error) {
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.DefaultSpace = defaultSpace
	p := &parser{d: d}
	var (
		cfg  *Config
		pgs  []portgroupConfig
		seen bool
	)
	for {
		tok, err := p.next(true)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			return nil, nil, p.errorf("unexpected end tag </%s>", tok.(xml.EndElement).Name.Local)
		}
		if seen {
			return nil, nil, p.errorf("more than one root element")
		}
		seen = true
		if cfg, pgs, err = p.root(se, k); err != nil {
			return nil, nil, err
		}
	}
	if !seen {
		return nil, nil, &Error{Msg: "no vnicfilter:filters element"}
	}
	return cfg, pgs, nil
}

// parser walks our element with an encoding/xml decoder, checking exactly
// what the RELAX NG schema checks, plus uniqueness.
type parser struct {
	d *xml.Decoder
}

func (p *parser) line() int {
	l, _ := p.d.InputPos()
	return l
}

func (p *parser) errorf(format string, args ...any) error {
	return &Error{Line: p.line(), Msg: fmt.Sprintf(format, args...)}
}

// next returns the next start or end element, skipping comments,
// processing instructions and white space. Other text is an error, as in
// the schema. atTop allows io.EOF (outside any element).
func (p *parser) next(atTop bool) (xml.Token, error) {
	for {
		tok, err := p.d.Token()
		if err == io.EOF {
			if atTop {
				return nil, io.EOF
			}
			return nil, p.errorf("malformed XML: unexpected end of document")
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return nil, &Error{Line: se.Line, Msg: "malformed XML: " + se.Msg}
			}
			return nil, &Error{Line: p.line(), Msg: "malformed XML", Err: err}
		}
		switch t := tok.(type) {
		case xml.StartElement, xml.EndElement:
			return t, nil
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, p.errorf("unexpected text %q: vnicfilter elements hold only other elements", truncate(string(bytes.TrimSpace(t))))
			}
		case xml.Directive:
			if !atTop {
				return nil, p.errorf("unexpected directive <!%s>", truncate(string(t)))
			}
		}
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// checkName verifies that se is the element want in our namespace.
func (p *parser) checkName(se xml.StartElement, want, where string) error {
	n := se.Name
	if n.Space != Namespace {
		switch {
		case n.Space == "":
			return p.errorf("element <%s> %s is in no namespace: vnicfilter elements belong to %s", n.Local, where, Namespace)
		case !strings.Contains(n.Space, ":"):
			// encoding/xml leaves an unbound prefix in Space.
			return p.errorf("element <%s:%s> %s: namespace prefix %q is not declared (add xmlns:%s=%q)", n.Space, n.Local, where, n.Space, n.Space, Namespace)
		default:
			return p.errorf("element <%s> in namespace %s %s: only vnicfilter elements are allowed", n.Local, n.Space, where)
		}
	}
	if n.Local != want {
		return p.errorf("unknown element vnicfilter:%s %s (want vnicfilter:%s)", n.Local, where, want)
	}
	return nil
}

// attrs returns se's attributes, rejecting any not in allowed and any
// given twice; namespace declarations are skipped.
func (p *parser) attrs(se xml.StartElement, what string, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range se.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		name := a.Name.Local
		if a.Name.Space != "" {
			name = a.Name.Space + ":" + name
		}
		if a.Name.Space != "" || !contains(allowed, a.Name.Local) {
			return nil, p.errorf("%s: unknown attribute %q (allowed: %s)", what, name, strings.Join(allowed, ", "))
		}
		if _, dup := out[name]; dup {
			return nil, p.errorf("%s: attribute %q given twice", what, name)
		}
		out[name] = a.Value
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (p *parser) root(se xml.StartElement, k kind) (*Config, []portgroupConfig, error) {
	if err := p.checkName(se, "filters", "at the top"); err != nil {
		return nil, nil, err
	}
	if _, err := p.attrs(se, "vnicfilter:filters"); err != nil {
		return nil, nil, err
	}
	cfg := &Config{}
	var pgs []portgroupConfig
	macs, aliases, groups := map[string]int{}, map[string]int{}, map[string]int{}
	for {
		tok, err := p.next(false)
		if err != nil {
			return nil, nil, err
		}
		child, ok := tok.(xml.StartElement)
		if !ok {
			break // our end tag: the decoder checks that it matches
		}
		if k == kindNetwork {
			pg, err := p.portgroup(child)
			if err != nil {
				return nil, nil, err
			}
			if prev, dup := groups[pg.name]; dup {
				return nil, nil, &Error{Line: pg.line, Msg: fmt.Sprintf("vnicfilter:portgroup name=%q: listed twice (first on line %d)", pg.name, prev)}
			}
			groups[pg.name] = pg.line
			pgs = append(pgs, pg)
			continue
		}
		ic, err := p.iface(child)
		if err != nil {
			return nil, nil, err
		}
		seen, key := aliases, ic.Alias
		if ic.MAC != nil {
			seen, key = macs, ic.MAC.String() // lower case: case-insensitive
		}
		if prev, dup := seen[key]; dup {
			return nil, nil, &Error{Line: ic.line, Msg: fmt.Sprintf("vnicfilter:interface %s: listed twice (first on line %d)", ic, prev)}
		}
		seen[key] = ic.line
		cfg.Interfaces = append(cfg.Interfaces, ic)
	}
	return cfg, pgs, nil
}

func (p *parser) iface(se xml.StartElement) (InterfaceConfig, error) {
	ic := InterfaceConfig{line: p.line()}
	if err := p.checkName(se, "interface", "in vnicfilter:filters"); err != nil {
		return ic, err
	}
	at, err := p.attrs(se, "vnicfilter:interface", "mac", "alias")
	if err != nil {
		return ic, err
	}
	mac, hasMAC := at["mac"]
	alias, hasAlias := at["alias"]
	switch {
	case hasMAC && hasAlias:
		return ic, p.errorf("vnicfilter:interface mac=%q alias=%q: give mac or alias, not both", mac, alias)
	case hasMAC:
		if !macRE.MatchString(mac) {
			return ic, p.errorf("vnicfilter:interface mac=%q: not a MAC address (want six hex pairs separated by colons)", mac)
		}
		ic.MAC, _ = net.ParseMAC(mac)
	case hasAlias:
		if !aliasRE.MatchString(alias) {
			return ic, p.errorf("vnicfilter:interface alias=%q: want a libvirt user alias: \"ua-\" then letters, digits, '_' or '-'", alias)
		}
		ic.Alias = alias
	default:
		return ic, p.errorf("vnicfilter:interface: needs a mac or an alias attribute")
	}
	ic.Filters, err = p.filterList(ic.String())
	return ic, err
}

func (p *parser) portgroup(se xml.StartElement) (portgroupConfig, error) {
	pg := portgroupConfig{line: p.line()}
	if err := p.checkName(se, "portgroup", "in a network's vnicfilter:filters"); err != nil {
		return pg, err
	}
	at, err := p.attrs(se, "vnicfilter:portgroup", "name")
	if err != nil {
		return pg, err
	}
	pg.name = at["name"]
	if pg.name == "" {
		return pg, p.errorf("vnicfilter:portgroup: needs a non-empty name attribute")
	}
	if pg.filters, err = p.filterList("portgroup " + pg.name); err != nil {
		return pg, err
	}
	if len(pg.filters) == 0 {
		return pg, &Error{Line: pg.line, Msg: fmt.Sprintf("vnicfilter:portgroup name=%q: lists no filter", pg.name)}
	}
	return pg, nil
}

// filterList reads <filter> children up to the parent's end tag.
func (p *parser) filterList(owner string) ([]api.FilterSpec, error) {
	var out []api.FilterSpec
	for {
		tok, err := p.next(false)
		if err != nil {
			return nil, err
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			return out, nil
		}
		if len(out) == MaxFilters {
			return nil, p.errorf("%s: more than %d filters (a chain has %d slots)", owner, MaxFilters, MaxFilters)
		}
		f, err := p.filter(se, owner, len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
}

func (p *parser) filter(se xml.StartElement, owner string, slot int) (api.FilterSpec, error) {
	var f api.FilterSpec
	if err := p.checkName(se, "filter", "in "+owner); err != nil {
		return f, err
	}
	what := fmt.Sprintf("%s: filter %d", owner, slot)
	at, err := p.attrs(se, what, "name", "failmode", "direction")
	if err != nil {
		return f, err
	}
	name, ok := at["name"]
	if !ok || name == "" {
		return f, p.errorf("%s: has no name", what)
	}
	if !filterNameRE.MatchString(name) {
		return f, p.errorf("%s: name %q: want lower case letters, digits and dashes, at most 31, starting with a letter", what, name)
	}
	f.Name = name
	what = fmt.Sprintf("%s: filter %d (%s)", owner, slot, name)
	if fm, ok := at["failmode"]; ok {
		if fm != "closed" && fm != "open" {
			return f, p.errorf("%s: failmode %q: want closed or open", what, fm)
		}
		f.FailMode = fm
	}
	if dir, ok := at["direction"]; ok {
		if dir != "from-vm" && dir != "to-vm" && dir != "both" {
			return f, p.errorf("%s: direction %q: want from-vm, to-vm or both", what, dir)
		}
		f.Directions = dir
	}
	for {
		tok, err := p.next(false)
		if err != nil {
			return f, err
		}
		ps, ok := tok.(xml.StartElement)
		if !ok {
			return f, nil
		}
		if err := p.checkName(ps, "param", "in "+what); err != nil {
			return f, err
		}
		pa, err := p.attrs(ps, what+": vnicfilter:param", "name", "value")
		if err != nil {
			return f, err
		}
		pn, hasName := pa["name"]
		pv, hasValue := pa["value"]
		switch {
		case !hasName || !paramNameRE.MatchString(pn):
			return f, p.errorf("%s: vnicfilter:param name=%q: want a letter then letters, digits, '_', '.' or '-'", what, pn)
		case !hasValue:
			return f, p.errorf("%s: parameter %q has no value attribute", what, pn)
		}
		if _, dup := f.Params[pn]; dup {
			return f, p.errorf("%s: parameter %q given twice", what, pn)
		}
		if f.Params == nil {
			f.Params = map[string]string{}
		}
		f.Params[pn] = pv
		// <param> is empty: the next token must be its end tag.
		tok, err = p.next(false)
		if err != nil {
			return f, err
		}
		if inner, ok := tok.(xml.StartElement); ok {
			return f, p.errorf("%s: parameter %q: unexpected element <%s> (param is empty)", what, pn, inner.Name.Local)
		}
	}
}
