package filterd

import (
	"errors"
	"strings"
	"testing"
)

// TestParseMAC: a guest MAC label is a 6-byte unicast Ethernet address,
// kept lower case with colons; anything else is a bad request naming the
// field.
func TestParseMAC(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"52:54:00:AB:cd:01", "52:54:00:ab:cd:01"},
		{"52-54-00-ab-cd-01", "52:54:00:ab:cd:01"},
		{"5254.00ab.cd01", "52:54:00:ab:cd:01"},
		{"02:76:66:00:00:07", "02:76:66:00:00:07"},
	} {
		got, err := parseMAC(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseMAC(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		in, why string
	}{
		{"", "not a 6-byte"},
		{"52:54:00:ab:cd", "not a 6-byte"},
		{"52:54:00:ab:cd:01:02:03", "not a 6-byte"}, // EUI-64
		{"52:54:00:ab:cd:zz", "not a 6-byte"},
		{"01:00:5e:00:00:01", "multicast"},
		{"ff:ff:ff:ff:ff:ff", "multicast"},
		{"00:00:00:00:00:00", "all-zero"},
	} {
		_, err := parseMAC(tt.in)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "mac: ") || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("parseMAC(%q) = %v; want a bad request on mac: %s", tt.in, err, tt.why)
		}
	}
}
