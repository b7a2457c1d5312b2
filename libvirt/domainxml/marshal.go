package domainxml

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"sort"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Marshal writes cfg as the vnicfilter element with its namespace
// declared, ready to paste into a domain's <metadata> (`virsh edit`) and
// valid against libvirt/schema/vnicfilter-domain.rng.
//
// Do not pass it to virDomainSetMetadata with key "vnicfilter": libvirt
// then tries to declare the prefix a second time and fails ("failed to
// create a new XML namespace", measured on libvirt 9.0). Use
// MarshalMetadata for that.
func Marshal(cfg *Config) ([]byte, error) {
	return marshal(cfg, Prefix+":")
}

// MarshalMetadata writes cfg without namespace, as virDomainSetMetadata
// (`virsh metadata DOMAIN URI --key vnicfilter --set …`) wants it: libvirt
// moves every element of the value into Namespace with prefix Prefix.
// ParseMetadata reads it back.
func MarshalMetadata(cfg *Config) ([]byte, error) {
	return marshal(cfg, "")
}

func marshal(cfg *Config, prefix string) ([]byte, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	var b bytes.Buffer
	b.WriteString("<" + prefix + "filters")
	if prefix != "" {
		fmt.Fprintf(&b, ` xmlns:%s="%s"`, Prefix, Namespace)
	}
	if len(cfg.Interfaces) == 0 {
		b.WriteString("/>\n")
	} else {
		b.WriteString(">\n")
		for _, ic := range cfg.Interfaces {
			if err := marshalInterface(&b, prefix, ic); err != nil {
				return nil, err
			}
		}
		b.WriteString("</" + prefix + "filters>\n")
	}
	// Read the result back: what we write must be what we accept.
	parse := ParseConfig
	if prefix == "" {
		parse = ParseMetadata
	}
	if _, err := parse(b.Bytes()); err != nil {
		return nil, fmt.Errorf("marshal vnicfilter config: %w", err)
	}
	return b.Bytes(), nil
}

func marshalInterface(b *bytes.Buffer, prefix string, ic InterfaceConfig) error {
	b.WriteString("  <" + prefix + "interface ")
	switch {
	case ic.MAC != nil && ic.Alias != "":
		return &Error{Msg: fmt.Sprintf("interface mac %s alias %s: give mac or alias, not both", ic.MAC, ic.Alias)}
	case ic.MAC != nil:
		attr(b, "mac", ic.MAC.String())
	default:
		attr(b, "alias", ic.Alias)
	}
	if len(ic.Filters) == 0 {
		b.WriteString("/>\n")
		return nil
	}
	b.WriteString(">\n")
	for _, f := range ic.Filters {
		if err := marshalFilter(b, prefix, f); err != nil {
			return &Error{Msg: "interface " + ic.String(), Err: err}
		}
	}
	b.WriteString("  </" + prefix + "interface>\n")
	return nil
}

func marshalFilter(b *bytes.Buffer, prefix string, f api.FilterSpec) error {
	b.WriteString("    <" + prefix + "filter ")
	attr(b, "name", f.Name)
	if f.FailMode != "" {
		fm, err := sdk.ParseFailMode(f.FailMode)
		if err != nil {
			return fmt.Errorf("filter %s: %w", f.Name, err)
		}
		b.WriteString(" ")
		attr(b, "failmode", fm.String())
	}
	if f.Directions != "" {
		ds, err := sdk.ParseDirections(f.Directions)
		if err != nil {
			return fmt.Errorf("filter %s: %w", f.Name, err)
		}
		b.WriteString(" ")
		attr(b, "direction", ds.String())
	}
	if len(f.Params) == 0 {
		b.WriteString("/>\n")
		return nil
	}
	b.WriteString(">\n")
	names := make([]string, 0, len(f.Params))
	for n := range f.Params {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteString("      <" + prefix + "param ")
		attr(b, "name", n)
		b.WriteString(" ")
		attr(b, "value", f.Params[n])
		b.WriteString("/>\n")
	}
	b.WriteString("    </" + prefix + "filter>\n")
	return nil
}

// attr writes name="value" with value escaped (quotes, <, &, and the
// white space an attribute would otherwise normalise).
func attr(b *bytes.Buffer, name, value string) {
	b.WriteString(name + `="`)
	xml.EscapeText(b, []byte(value))
	b.WriteString(`"`)
}
