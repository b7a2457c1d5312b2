package dlb

import (
	"errors"
	"strings"
	"testing"
)

const goodConfig = `{
  "services": [
    {"name": "web", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251,
     "backends": [{"addr": "10.1.0.1", "port": 8080, "weight": 2},
                  {"addr": "10.1.0.2", "mac": "02:00:00:00:00:02"}]},
    {"vip": "10.0.0.1", "port": 53, "protocol": "udp",
     "backends": [{"addr": "10.1.0.3"}]}
  ]
}`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 2 || c.Services[0].TableSize != 251 || c.Services[1].TableSize != DefaultTableSize {
		t.Fatalf("services %+v", c.Services)
	}
	b := c.Services[0].Backends
	if b[0].Weight != 2 || b[1].Weight != 1 || b[1].Port != 80 || b[1].MAC.String() != "02:00:00:00:00:02" {
		t.Fatalf("backends %+v", b)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": []}]}`, `1:78: services[0].backends: empty pool`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1", "weight": 0}]}]}`, `services[0].backends: empty pool`},
		{"{\"services\": [\n {\"vip\": \"10.0.0.1\", \"port\": 80, \"protocol\": \"tcp\", \"backends\": [{\"addr\": \"10.1.0.1\"}]},\n {\"vip\": \"10.0.0.1\", \"port\": 80, \"protocol\": \"tcp\", \"backends\": [{\"addr\": \"10.1.0.2\"}]}]}", `3:10: services[1].vip: duplicate service 10.0.0.1:80/tcp`},
		{`{"services": [{"vip": "10.0.0.300", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}]}]}`, `1:23: services[0].vip: invalid address "10.0.0.300"`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "x"}]}]}`, `services[0].backends[0].addr: invalid address "x"`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 65536, "backends": [{"addr": "10.1.0.1"}]}]}`, `services[0].table_size: 65536: the Maglev table size must be a prime`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "sctp", "backends": [{"addr": "10.1.0.1"}]}]}`, `services[0].protocol: "sctp": want tcp or udp`},
		{`{"services": [{"vip": "10.0.0.1", "port": 0, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}]}]}`, `services[0].port: port 0 out of range`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.1", "port": 80}]}]}`, `services[0].backends[1]: duplicate backend 10.1.0.1:80`},
		{`{"services": [{"vip": "fd00::1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}]}]}`, `1:87: services[0].backends[0].addr: 10.1.0.1: a backend must be of the VIP's address family`},
		{`{"services": [{"vip": "10.0.0.1", "prot": 80}]}`, `1:35: services[0].prot: unknown field "prot"`},
		{`{"services": [{"vip": "10.0.0.1", "port": "80"}]}`, `services.port: want int, got string`},
		{"{\"services\": [\n  {\"vip\": ", `2:11: unexpected end of file`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1", "mac": "zz"}]}]}`, `invalid Ethernet address`},
		{`{}`, `no "services" list`},
	} {
		_, err := ParseConfig([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s:\n got %v\nwant …%s…", c.in, err, c.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte(`{"services": []}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if _, err := Compile(c, 1, 1<<24); err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Fatal(err)
		}
	})
}
