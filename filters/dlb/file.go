package dlb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ReadFile reads a services file for editing; a file ParseConfig refuses
// is an error (a *ConfigError naming the place).
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := ParseConfig(data); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = path
		}
		return nil, err
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// Format writes f for people: one field of a service per line, its health
// check and each backend on one line each.
func (f *File) Format() []byte {
	var b bytes.Buffer
	compact := func(v any) string {
		out, _ := json.Marshal(v)
		return spaced(out)
	}
	b.WriteString("{\n  \"services\": [")
	for i, s := range f.Services {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n    {\n")
		var fields []string
		if s.Name != "" {
			fields = append(fields, `"name": `+compact(s.Name))
		}
		fields = append(fields, `"vip": `+compact(s.VIP), fmt.Sprintf(`"port": %d`, s.Port), `"protocol": `+compact(s.Protocol))
		if s.TableSize != nil {
			fields = append(fields, fmt.Sprintf(`"table_size": %d`, *s.TableSize))
		}
		if s.Affinity != "" {
			fields = append(fields, `"affinity": `+compact(s.Affinity))
		}
		if s.Health != nil {
			fields = append(fields, `"health": `+compact(s.Health))
		}
		for _, fl := range fields {
			b.WriteString("      " + fl + ",\n")
		}
		b.WriteString("      \"backends\": [")
		for j, be := range s.Backends {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n        " + compact(be))
		}
		if len(s.Backends) > 0 {
			b.WriteString("\n      ")
		}
		b.WriteString("]\n    }")
	}
	if len(f.Services) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("]\n}\n")
	return b.Bytes()
}

// spaced puts a space after the colons and commas of compact JSON,
// outside strings: {"addr": "10.0.0.1", "port": 80}.
func spaced(js []byte) string {
	var b bytes.Buffer
	in, esc := false, false
	for _, c := range js {
		b.WriteByte(c)
		switch {
		case esc:
			esc = false
		case in && c == '\\':
			esc = true
		case c == '"':
			in = !in
		case !in && (c == ':' || c == ','):
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// WriteFileAtomic replaces path with data: a temporary file in the same
// directory, synced, given path's mode, renamed over it. A reader (or a
// filterd reload) sees the old file or the new one, never a mix.
func WriteFileAtomic(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: ENOENT, ignored
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
