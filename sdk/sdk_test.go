package sdk

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The Go constants mirror sdk/bpf/vnicfilter.h.
func TestABIMatchesHeader(t *testing.T) {
	b, err := os.ReadFile("bpf/vnicfilter.h")
	if err != nil {
		t.Fatal(err)
	}
	defs := map[string]int64{}
	re := regexp.MustCompile(`(?m)^#define (VF_[A-Z_]+) (0x[0-9a-f]+|\d+)`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseInt(m[2], 0, 64)
		if err != nil {
			t.Fatal(err)
		}
		defs[m[1]] = v
	}
	for name, want := range map[string]int64{
		"VF_ABI_VERSION": ABIVersion, "VF_MAX_SLOTS": MaxSlots, "VF_NUM_DIRS": NumDirections,
		"VF_DIR_FROM_VM": int64(FromVM), "VF_DIR_TO_VM": int64(ToVM),
		"VF_CONTINUE": int64(StatContinue), "VF_DROP": int64(StatDrop), "VF_PUNT": int64(StatPunt),
		"VF_REDIRECT": int64(StatRedirect), "VF_CONSUMED": int64(StatConsumed), "VF_FAIL": VerdictFail,
		"VF_STAT_FAIL_CLOSED": int64(StatFailClosed), "VF_STAT_FAIL_OPEN": int64(StatFailOpen),
		"VF_STAT_ENTER": int64(StatEnter), "VF_NUM_STATS": NumStats,
		"VF_MARK_RESUME": MarkResume, "VF_MARK_MAGIC_MASK": MarkMagicMask,
		"VF_SLOT_PRESENT": SlotPresent, "VF_SLOT_FAIL_OPEN": SlotFailOpen,
	} {
		got, ok := defs[name]
		if !ok {
			t.Errorf("%s not defined in vnicfilter.h", name)
		} else if got != want {
			t.Errorf("%s = %d in C, %d in Go", name, got, want)
		}
	}
	for _, m := range []string{MapChain, MapSlots, MapStats, VarIfindex, VarDirs} {
		if !strings.Contains(string(b), m) {
			t.Errorf("%s not in vnicfilter.h", m)
		}
	}
	if StatKey(ToVM, ChainSlot, StatEnter) != NumStatKeys-1 {
		t.Errorf("last stat key %d, map size %d", StatKey(ToVM, ChainSlot, StatEnter), NumStatKeys)
	}
}

func TestValidateParams(t *testing.T) {
	specs := []ParamSpec{
		{Name: "rate", Type: Int, Min: Bound(1), Max: Bound(100), Default: "10"},
		{Name: "mode", Type: String, Enum: []string{"a", "b"}},
		{Name: "on", Type: Bool},
		{Name: "every", Type: Duration},
		{Name: "net", Type: Prefix},
		{Name: "key", Type: String, Required: true},
	}
	for _, tc := range []struct {
		name string
		raw  map[string]string
		err  string // substring; "" = valid
	}{
		{"defaults", map[string]string{"key": "k"}, ""},
		{"all set", map[string]string{"key": "k", "rate": "100", "mode": "b", "on": "yes", "every": "5s", "net": "10.0.0.1/8"}, ""},
		{"missing required", map[string]string{}, `"key" is required`},
		{"unknown", map[string]string{"key": "k", "colour": "red"}, `unknown parameter "colour"`},
		{"not int", map[string]string{"key": "k", "rate": "ten"}, "not an integer"},
		{"below min", map[string]string{"key": "k", "rate": "0"}, "below minimum 1"},
		{"above max", map[string]string{"key": "k", "rate": "101"}, "above maximum 100"},
		{"enum", map[string]string{"key": "k", "mode": "c"}, "not one of a, b"},
		{"bool", map[string]string{"key": "k", "on": "maybe"}, "not a boolean"},
		{"duration", map[string]string{"key": "k", "every": "5 parsecs"}, "not a duration"},
		{"negative duration", map[string]string{"key": "k", "every": "-1s"}, "negative"},
		{"prefix", map[string]string{"key": "k", "net": "10.0.0.300/8"}, "not a CIDR"},
		{"address", map[string]string{"key": "k", "net": "fd00::zz"}, "not an IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ValidateParams(specs, tc.raw)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if p.Int("rate") == 0 {
					t.Errorf("default rate not applied")
				}
				return
			}
			if !errors.Is(err, ErrInvalidParam) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v, want ErrInvalidParam mentioning %q", err, tc.err)
			}
		})
	}
	p, _ := ValidateParams(specs, map[string]string{"key": "k", "on": "on", "every": "250ms", "net": "fd00::1"})
	if !p.Bool("on") || p.Duration("every").Milliseconds() != 250 || p.Prefix("net").Bits() != 128 || p.String("key") != "k" {
		t.Errorf("typed getters: %+v", p.Map())
	}
}

func TestDescriptorValidate(t *testing.T) {
	slow := func(*SlowPathContext) (SlowPath, error) { return nil, nil }
	for _, tc := range []struct {
		d   Descriptor
		err string
	}{
		{Descriptor{Name: "ok-1", SlowPath: slow}, ""},
		{Descriptor{Name: "Bad", SlowPath: slow}, "lower case"},
		{Descriptor{Name: "x"}, "neither a fast path nor a slow path"},
		{Descriptor{Name: "x", SlowPath: slow, ABI: 99}, "ABI 99"},
		{Descriptor{Name: "x", SlowPath: slow, Params: []ParamSpec{{Name: "a"}, {Name: "a"}}}, "repeated"},
		{Descriptor{Name: "x", SlowPath: slow, Params: []ParamSpec{{Name: "a", Type: Int, Default: "z"}}}, "default"},
	} {
		err := tc.d.Validate()
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: got %v, want %q", tc.d.Name, err, tc.err)
		}
	}
}

func TestTextRoundTrips(t *testing.T) {
	for _, s := range []string{"from-vm", "to-vm", "both"} {
		var d Directions
		if err := d.UnmarshalText([]byte(s)); err != nil || d.String() != s {
			t.Errorf("directions %q -> %v, %v", s, d, err)
		}
	}
	if _, err := ParseDirections("sideways"); err == nil {
		t.Error("ParseDirections accepted sideways")
	}
	for _, s := range []string{"open", "closed"} {
		var m FailMode
		if err := m.UnmarshalText([]byte(s)); err != nil || m.String() != s {
			t.Errorf("failmode %q -> %v, %v", s, m, err)
		}
	}
	if FailMode(0) != FailClosed {
		t.Error("zero FailMode must be closed")
	}
	b, _ := json.Marshal(ParamSpec{Name: "n", Type: Duration})
	var ps ParamSpec
	if err := json.Unmarshal(b, &ps); err != nil || ps.Type != Duration {
		t.Errorf("ParamSpec JSON round trip: %s -> %+v, %v", b, ps, err)
	}
}

func TestRegistry(t *testing.T) {
	d := &Descriptor{Name: "zz-test-filter", SlowPath: func(*SlowPathContext) (SlowPath, error) { return nil, nil }}
	Register(d)
	if got, err := Lookup("zz-test-filter"); err != nil || got != d {
		t.Fatalf("Lookup: %v %v", got, err)
	}
	if _, err := Lookup("nope"); !errors.Is(err, ErrUnknownFilter) || !strings.Contains(err.Error(), "zz-test-filter") {
		t.Errorf("Lookup(nope) = %v, want ErrUnknownFilter listing registered filters", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("duplicate Register did not panic")
		}
	}()
	Register(d)
}
