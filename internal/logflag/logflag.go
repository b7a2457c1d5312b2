// Package logflag gives the daemons (filterd, vfagent, vfmanager) the same
// --log-level and --log-format flags and the logger they describe.
package logflag

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Flags are the registered flags' values.
type Flags struct {
	level, format *string
}

// Register adds --log-level and --log-format to fs.
func Register(fs *flag.FlagSet) *Flags {
	return &Flags{
		level:  fs.String("log-level", "info", "log `level`: debug, info, warn, error"),
		format: fs.String("log-format", "text", "log `format`: text or json"),
	}
}

// Logger returns the logger the flags ask for, writing to w, or an error
// naming the flag that is wrong.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*f.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch *f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", *f.format)
}
