package testkit

import (
	"os/exec"
	"strings"
	"testing"
)

// TsharkFields has tshark read a capture file and returns, per packet, the
// values of the given display fields (tshark -T fields), so tests check
// what a real decoder makes of what a filter wrote. Call Need(t, Tshark)
// first.
func TsharkFields(t testing.TB, file string, fields ...string) [][]string {
	t.Helper()
	args := []string{"-r", file, "-T", "fields", "-E", "separator=/t"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("tshark %v: %v %s", args, err, msg)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if l != "" {
			rows = append(rows, strings.Split(l, "\t"))
		}
	}
	return rows
}
