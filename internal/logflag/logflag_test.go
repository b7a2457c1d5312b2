package logflag

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"strings"
	"testing"
)

func TestLogger(t *testing.T) {
	for _, c := range []struct {
		args []string
		err  string
		json bool
		lvl  slog.Level
	}{
		{nil, "", false, slog.LevelInfo},
		{[]string{"--log-level", "debug", "--log-format", "json"}, "", true, slog.LevelDebug},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`, false, 0},
		{[]string{"--log-format", "xml"}, `--log-format "xml"`, false, 0},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		f := Register(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		log, err := f.Logger(&buf)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if !log.Enabled(context.Background(), c.lvl) || log.Enabled(context.Background(), c.lvl-1) {
			t.Errorf("%v: not at level %v", c.args, c.lvl)
		}
		log.Info("hello")
		if got := strings.HasPrefix(buf.String(), "{"); got != c.json {
			t.Errorf("%v: output %q, json %v", c.args, buf.String(), c.json)
		}
	}
}
