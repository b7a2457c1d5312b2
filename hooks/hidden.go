package hooks

import (
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// checkHidden refuses a domain with an interface on filterd's hidden
// bridge unless its tap is named as the control VM's must be: nothing but
// the control VM may sit on the bridge where filterd serves its API.
// (filterd also removes any other port it finds there and raises an
// alarm; refusing here keeps the domain from starting at all.)
func (r *run) checkHidden(xmlDoc []byte) int {
	if r.HiddenBridge == "" {
		return 0
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(string(xmlDoc)); err != nil {
		return r.fail("parse the domain XML: %v", err)
	}
	if d.Devices == nil {
		return 0
	}
	allow := r.HiddenAllow
	if len(allow) == 0 {
		allow = []string{"vfcvm*"}
	}
	for i, ifc := range d.Devices.Interfaces {
		if ifc.Source == nil || ifc.Source.Bridge == nil || ifc.Source.Bridge.Bridge != r.HiddenBridge {
			continue
		}
		dev := ""
		if ifc.Target != nil {
			dev = ifc.Target.Dev
		}
		ok := false
		for _, p := range allow {
			if m, _ := filepath.Match(p, dev); m && dev != "" {
				ok = true
			}
		}
		if !ok {
			what := "names no tap (<target dev>)"
			if dev != "" {
				what = "names its tap " + dev
			}
			return r.fail("interface %d is on the hidden bridge %s, which only the host's control VM may use, and %s: refused (the control VM's tap must match %s)",
				i, r.HiddenBridge, what, strings.Join(allow, " or "))
		}
	}
	return 0
}
