package testlab

import (
	"strings"
	"testing"
)

func TestKernelCmdline(t *testing.T) {
	tests := []struct {
		name    string
		keys    map[string]string
		want    string
		wantErr string
	}{
		{name: "none", want: baseCmdline},
		{name: "sorted", keys: map[string]string{"vf.ip": "10.0.0.2/24", "vf.gw": "10.0.0.1"}, want: baseCmdline + " vf.gw=10.0.0.1 vf.ip=10.0.0.2/24"},
		{name: "spaces quoted", keys: map[string]string{"vf.cmd": "ping -c 3 10.0.0.1"}, want: baseCmdline + ` vf.cmd="ping -c 3 10.0.0.1"`},
		{name: "shell kept literal", keys: map[string]string{"vf.cmd": "echo;$HOME"}, want: baseCmdline + " vf.cmd=echo;$HOME"},
		{name: "flag", keys: map[string]string{"debug": ""}, want: baseCmdline + " debug"},
		{name: "quote refused", keys: map[string]string{"vf.cmd": `echo "x"`}, wantErr: "double quote"},
		{name: "newline refused", keys: map[string]string{"vf.cmd": "a\nb"}, wantErr: "newline"},
		{name: "bad key", keys: map[string]string{"vf cmd": "x"}, wantErr: "key"},
		{name: "too long", keys: map[string]string{"vf.cmd": strings.Repeat("x", 2100)}, wantErr: "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kernelCmdline(tt.keys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("kernelCmdline = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
