package cli

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// humanCount prints a count with three significant digits and an SI
// suffix: 999, 1.23k, 45.6M. Exact values are in -o json.
func humanCount(n float64) string {
	return scaled(n, 1000, []string{"", "k", "M", "G", "T", "P", "E"}, "")
}

// humanBytes prints a byte count in IEC units: 512 B, 1.50 KiB, 3.21 GiB.
func humanBytes(n float64) string {
	return scaled(n, 1024, []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}, " ")
}

func scaled(n, base float64, units []string, sep string) string {
	i := 0
	for math.Abs(n) >= base && i < len(units)-1 {
		n /= base
		i++
	}
	var num string
	switch a := math.Abs(n); {
	case i == 0 && n == math.Trunc(n):
		num = strconv.FormatFloat(n, 'f', 0, 64)
	case a < 10:
		num = strconv.FormatFloat(n, 'f', 2, 64)
	case a < 100:
		num = strconv.FormatFloat(n, 'f', 1, 64)
	default:
		num = strconv.FormatFloat(n, 'f', 0, 64)
	}
	return num + sep + units[i]
}

// directionOrder sorts direction names from-vm, to-vm, then any others.
func directionOrder(keys []string) []string {
	rank := func(s string) int {
		switch s {
		case "from-vm":
			return 0
		case "to-vm":
			return 1
		}
		return 2
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	return keys
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// slotLabel is a slot in the compact form of "vfctl list": "1:dnslog",
// annotated with what differs from the safe defaults: "(open)" when it
// fails open, the direction when it filters only one.
func slotLabel(s api.Slot) string {
	var notes []string
	if s.FailMode == "open" {
		notes = append(notes, "open")
	}
	if s.Directions != "" && s.Directions != "both" {
		notes = append(notes, s.Directions)
	}
	if s.SlowPath && s.SlowPathState != "" && s.SlowPathState != "running" {
		notes = append(notes, "slow path "+s.SlowPathState)
	}
	l := fmt.Sprintf("%d:%s", s.Slot, s.Filter)
	if len(notes) > 0 {
		l += "(" + strings.Join(notes, ",") + ")"
	}
	return l
}

// chainLabel is the CHAIN column of "vfctl list".
func chainLabel(v api.VNIC) string {
	if len(v.Slots) == 0 {
		return "(empty: frames pass)"
	}
	labels := make([]string, len(v.Slots))
	for i, s := range v.Slots {
		labels[i] = slotLabel(s)
	}
	return strings.Join(labels, " ")
}

// vnicHeader is the first line about a vNIC in show, attach and chain set.
func vnicHeader(v *api.VNIC) string {
	h := fmt.Sprintf("%s  ifindex %d  mode %s", v.Name, v.Ifindex, dash(v.Mode))
	if v.Owner != "" {
		h += "  owner " + v.Owner
	}
	return h
}

// slowPathLabel says whether the slot has a slow path and how it is.
func slowPathLabel(s api.Slot) string {
	if !s.SlowPath {
		return "-"
	}
	return dash(s.SlowPathState)
}

// printChain prints a vNIC's chain without counters: the answer of attach,
// chain set and detach --slot.
func printChain(w io.Writer, v *api.VNIC) error {
	fmt.Fprintln(w, vnicHeader(v))
	if len(v.Slots) == 0 {
		fmt.Fprintln(w, "chain is empty: frames pass unfiltered")
		return nil
	}
	tw := table(w)
	row(tw, "SLOT", "FILTER", "VERSION", "DIRECTIONS", "FAILMODE", "SLOW PATH", "PARAMS")
	for _, s := range v.Slots {
		row(tw, s.Slot, s.Filter, dash(s.Version), dash(s.Directions), dash(s.FailMode), slowPathLabel(s), formatParams(s.Params))
	}
	return tw.Flush()
}

// formatValue prints a filter counter: integers exactly, others with
// enough digits.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	keys := mapKeys(l)
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}
