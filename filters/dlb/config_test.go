package dlb

import (
	"errors"
	"strings"
	"testing"
	"time"
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

func TestParseHealth(t *testing.T) {
	c, err := ParseConfig([]byte(`{"services": [
	  {"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp"}},
	  {"vip": "10.0.0.1", "port": 81, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}],
	   "health": {"type": "http", "port": 8081, "path": "/healthz", "interval": "500ms", "rise": 1, "fall": 5, "netns": "/run/netns/blue"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []HealthCheck{
		{Type: "tcp", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3},
		{Type: "http", Port: 8081, Path: "/healthz", Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 5, Netns: "/run/netns/blue"},
	}
	for i, w := range want {
		if got := c.Services[i].Health; got == nil || *got != w {
			t.Errorf("service %d: health %+v, want %+v", i, got, w)
		}
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
		{`{"services": [{"name": "a", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}]}, {"name": "a", "vip": "10.0.0.1", "port": 81, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}]}]}`, `1:125: services[1].name: duplicate service name "a" (also services[0])`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "affinity": "source", "backends": [{"addr": "10.1.0.1"}]}]}`, `1:78: services[0].affinity: "source": want client or none`},
		{"{\"services\": [{\"vip\": \"10.0.0.1\", \"port\": 80, \"protocol\": \"tcp\", \"backends\": [{\"addr\": \"10.1.0.1\"}],\n  \"health\": {\"type\": \"icmp\"}}]}", `2:22: services[0].health.type: "icmp": want tcp or http`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {}}]}`, `1:112: services[0].health: no check type`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "path": "/x"}}]}`, `services[0].health.path: a tcp check has no path`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "http", "path": "x"}}]}`, `services[0].health.path: "x": want an absolute request path`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "interval": "2"}}]}`, `1:140: services[0].health.interval: "2": want a duration`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "interval": "10ms"}}]}`, `services[0].health.interval: 10ms out of range 100ms-1h`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "timeout": "3s"}}]}`, `services[0].health.timeout: 3s: want more than 0 and at most the interval (2s)`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "rise": 0}}]}`, `services[0].health.rise: 0 out of range 1-100`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "fall": 101}}]}`, `services[0].health.fall: 101 out of range 1-100`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "port": 70000}}]}`, `services[0].health.port: port 70000 out of range`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "netns": "blue"}}]}`, `services[0].health.netns: "blue": want the absolute path`},
		{`{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "backends": [{"addr": "10.1.0.1"}], "health": {"type": "tcp", "every": "1s"}}]}`, `services[0].health.every: unknown field "every"`},
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
