package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Reserved keys of the chain syntax: they configure the instance, not the
// filter, so they never reach the filter's parameters.
const (
	keyFailMode  = "failmode"
	keyDirection = "dir"
)

// parseParams turns repeated --param KEY=VALUE flags into a map. The value
// is everything after the first '=', commas and all.
func parseParams(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	params := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, usagef("--param %q: want KEY=VALUE", kv)
		case strings.TrimSpace(k) == "":
			return nil, usagef("--param %q: empty key", kv)
		}
		if _, dup := params[k]; dup {
			return nil, usagef("--param %s given twice", k)
		}
		params[k] = v
	}
	return params, nil
}

// parseFailMode checks a failure mode and returns it spelled as the API
// wants it; "" stays "" (the filter's default).
func parseFailMode(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	m, err := sdk.ParseFailMode(s)
	if err != nil {
		return "", err
	}
	return m.String(), nil
}

// parseDirection checks a direction set and returns it spelled as the API
// wants it; "" stays "" (the directions the filter declares).
func parseDirection(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	d, err := sdk.ParseDirections(s)
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// parseFilterSpec parses one slot of "vfctl chain set":
//
//	FILTER[:KEY=VALUE[,KEY=VALUE]...]
//
// with the reserved keys failmode and dir, and '\' escaping the next
// character.
func parseFilterSpec(s string) (api.FilterSpec, error) {
	name, rest, hasParams := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if name == "" {
		return api.FilterSpec{}, usagef("filter %q: missing filter name before ':'", s)
	}
	if strings.ContainsAny(name, " \t=,\\") {
		return api.FilterSpec{}, usagef("filter %q: %q is not a filter name", s, name)
	}
	spec := api.FilterSpec{Name: name}
	if !hasParams {
		return spec, nil
	}
	if rest == "" {
		return api.FilterSpec{}, usagef("filter %q: nothing after ':' (want %s:KEY=VALUE,...)", s, name)
	}
	pairs, err := splitPairs(rest)
	if err != nil {
		return api.FilterSpec{}, usagef("filter %q: %v", s, err)
	}
	seen := map[string]bool{}
	for _, p := range pairs {
		if seen[p.key] {
			return api.FilterSpec{}, usagef("filter %q: key %s given twice", s, p.key)
		}
		seen[p.key] = true
		switch p.key {
		case keyFailMode:
			if spec.FailMode, err = parseFailMode(p.value); err != nil || spec.FailMode == "" {
				return api.FilterSpec{}, usagef("filter %q: failmode %q: want closed or open", s, p.value)
			}
		case keyDirection:
			if spec.Directions, err = parseDirection(p.value); err != nil || spec.Directions == "" {
				return api.FilterSpec{}, usagef("filter %q: dir %q: want from-vm, to-vm or both", s, p.value)
			}
		default:
			if spec.Params == nil {
				spec.Params = map[string]string{}
			}
			spec.Params[p.key] = p.value
		}
	}
	return spec, nil
}

type pair struct{ key, value string }

// splitPairs splits "k=v,k=v" honouring '\' escapes.
func splitPairs(s string) ([]pair, error) {
	var (
		out    []pair
		cur    strings.Builder
		key    string
		inVal  bool
		escape bool
	)
	flush := func() error {
		if !inVal {
			if cur.Len() == 0 {
				return fmt.Errorf("empty KEY=VALUE pair")
			}
			return fmt.Errorf("%q: want KEY=VALUE", cur.String())
		}
		if strings.TrimSpace(key) == "" {
			return fmt.Errorf("%q: empty key", "="+cur.String())
		}
		out = append(out, pair{key: key, value: cur.String()})
		cur.Reset()
		key, inVal = "", false
		return nil
	}
	for _, r := range s {
		switch {
		case escape:
			cur.WriteRune(r)
			escape = false
		case r == '\\':
			escape = true
		case r == ',':
			if err := flush(); err != nil {
				return nil, err
			}
		case r == '=' && !inVal:
			key, inVal = cur.String(), true
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if escape {
		return nil, fmt.Errorf("trailing '\\' escapes nothing")
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// formatParams prints params sorted, in the chain syntax (commas and
// backslashes escaped), "-" when there are none.
func formatParams(params map[string]string) string {
	if len(params) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	esc := strings.NewReplacer(`\`, `\\`, `,`, `\,`)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = esc.Replace(k) + "=" + esc.Replace(params[k])
	}
	return strings.Join(parts, ",")
}
