package cli

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

func TestParseParams(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    map[string]string
		wantErr string
	}{
		{name: "none", in: nil, want: nil},
		{name: "one", in: []string{"rate=5"}, want: map[string]string{"rate": "5"}},
		{name: "value keeps = and commas", in: []string{"allow=a=b,c"}, want: map[string]string{"allow": "a=b,c"}},
		{name: "empty value", in: []string{"log="}, want: map[string]string{"log": ""}},
		{name: "several", in: []string{"rate=5", "log=false"}, want: map[string]string{"rate": "5", "log": "false"}},
		{name: "no equals", in: []string{"rate"}, wantErr: `--param "rate": want KEY=VALUE`},
		{name: "empty key", in: []string{"=5"}, wantErr: `--param "=5": empty key`},
		{name: "duplicate", in: []string{"rate=5", "rate=6"}, wantErr: "--param rate given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseParams(tt.in)
			checkParse(t, err, tt.wantErr)
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseParams(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseFilterSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    api.FilterSpec
		wantErr string
	}{
		{in: "count", want: api.FilterSpec{Name: "count"}},
		{in: "dnslog:rate=5", want: api.FilterSpec{Name: "dnslog", Params: map[string]string{"rate": "5"}}},
		{in: "dnslog:rate=5,log=false", want: api.FilterSpec{Name: "dnslog", Params: map[string]string{"rate": "5", "log": "false"}}},
		{in: "dnslog:failmode=open", want: api.FilterSpec{Name: "dnslog", FailMode: "open"}},
		{in: "dnslog:failmode=fail-closed", want: api.FilterSpec{Name: "dnslog", FailMode: "closed"}},
		{in: "count:dir=to-vm", want: api.FilterSpec{Name: "count", Directions: "to-vm"}},
		{in: "count:dir=both", want: api.FilterSpec{Name: "count", Directions: "both"}},
		{in: "punt:verdict=drop,failmode=open,dir=from-vm",
			want: api.FilterSpec{Name: "punt", Params: map[string]string{"verdict": "drop"}, FailMode: "open", Directions: "from-vm"}},
		{in: `f:allow=10.0.0.0/8\,192.168.0.0/16`, want: api.FilterSpec{Name: "f", Params: map[string]string{"allow": "10.0.0.0/8,192.168.0.0/16"}}},
		{in: `f:path=C:\\dir`, want: api.FilterSpec{Name: "f", Params: map[string]string{"path": `C:\dir`}}},
		{in: "f:expr=a=b", want: api.FilterSpec{Name: "f", Params: map[string]string{"expr": "a=b"}}},
		{in: "f:k=", want: api.FilterSpec{Name: "f", Params: map[string]string{"k": ""}}},

		{in: "", wantErr: "missing filter name"},
		{in: ":rate=5", wantErr: "missing filter name"},
		{in: "count:", wantErr: "nothing after ':'"},
		{in: "dnslog:rate", wantErr: `"rate": want KEY=VALUE`},
		{in: "dnslog:rate=5,log", wantErr: `"log": want KEY=VALUE`},
		{in: "dnslog:rate=5,,log=true", wantErr: "empty KEY=VALUE pair"},
		{in: "dnslog:rate=5,", wantErr: "empty KEY=VALUE pair"},
		{in: "dnslog:=5", wantErr: "empty key"},
		{in: "dnslog:rate=5,rate=6", wantErr: "key rate given twice"},
		{in: "dnslog:failmode=maybe", wantErr: `failmode "maybe": want closed or open`},
		{in: "dnslog:failmode=", wantErr: `failmode "": want closed or open`},
		{in: "dnslog:dir=sideways", wantErr: `dir "sideways": want from-vm, to-vm or both`},
		{in: `f:k=v\`, wantErr: "trailing '\\' escapes nothing"},
		{in: "a b:k=v", wantErr: "is not a filter name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseFilterSpec(tt.in)
			checkParse(t, err, tt.wantErr)
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseFilterSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatParamsRoundTrip(t *testing.T) {
	params := map[string]string{"allow": "a,b", "path": `C:\x`, "rate": "5"}
	s := formatParams(params)
	if want := `allow=a\,b,path=C:\\x,rate=5`; s != want {
		t.Fatalf("formatParams = %q, want %q", s, want)
	}
	spec, err := parseFilterSpec("f:" + s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(spec.Params, params) {
		t.Errorf("round trip = %v, want %v", spec.Params, params)
	}
}

func TestHumanUnits(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{humanCount(0), "0"},
		{humanCount(999), "999"},
		{humanCount(1234), "1.23k"},
		{humanCount(45_600_000), "45.6M"},
		{humanCount(2.5), "2.50"},
		{humanBytes(512), "512 B"},
		{humanBytes(1536), "1.50 KiB"},
		{humanBytes(3 << 30), "3.00 GiB"},
		{humanBytes(100 << 20), "100 MiB"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func checkParse(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ue *usageError
	switch {
	case err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case !errors.As(err, &ue):
		t.Errorf("error %v is a %T, want a usage error", err, err)
	case !contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
}
