package testlab

import (
	"fmt"
	"sort"
	"strings"
)

// baseCmdline is what every guest kernel gets before the caller's keys:
// the serial console the harness reads, quiet printk (each console line
// costs real time under TCG), and a crash that ends the domain (panic=-1
// reboots, and the domain is defined with on_reboot=destroy) instead of
// a guest that hangs until the test times out.
const baseCmdline = "console=ttyS0 quiet panic=-1"

// maxCmdline is COMMAND_LINE_SIZE on x86 minus the terminating NUL.
const maxCmdline = 2047

// kernelCmdline renders keys after baseCmdline, sorted so the XML (and
// therefore the test) is reproducible. A value holding a space is wrapped in
// double quotes, which the kernel and the guest's /init both strip. The
// kernel command line has no escape for a double quote or a newline, so
// values holding one are refused rather than silently mangled.
func kernelCmdline(keys map[string]string) (string, error) {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(baseCmdline)
	for _, k := range names {
		v := keys[k]
		if !validKey(k) {
			return "", fmt.Errorf("kernel command line key %q: want letters, digits, '.', '_' or '-'", k)
		}
		if strings.ContainsAny(v, "\"\n\r\x00") {
			return "", fmt.Errorf("kernel command line value of %s: a double quote, newline or NUL cannot be passed to the kernel", k)
		}
		b.WriteByte(' ')
		b.WriteString(k)
		if v == "" {
			continue // a bare flag
		}
		b.WriteByte('=')
		if strings.ContainsAny(v, " \t") {
			b.WriteString(`"` + v + `"`)
		} else {
			b.WriteString(v)
		}
	}
	if b.Len() > maxCmdline {
		return "", fmt.Errorf("kernel command line is %d bytes, the x86 kernel keeps only %d", b.Len(), maxCmdline)
	}
	return b.String(), nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}
