package manager

import (
	"bufio"
	"bytes"
	"slices"
	"strings"
	"testing"
)

// openAPIOps lists "METHOD /path" for every operation of openapi.yaml
// (paths are the two-space keys under "paths:", methods the four-space
// keys under them).
func openAPIOps(t *testing.T) []string {
	var ops []string
	sc := bufio.NewScanner(bytes.NewReader(OpenAPI))
	inPaths, path := false, ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "paths:":
			inPaths = true
		case inPaths && len(line) > 0 && line[0] != ' ':
			inPaths = false
		case inPaths && strings.HasPrefix(line, "  /"):
			path = strings.TrimSuffix(strings.TrimSpace(line), ":")
		case inPaths && strings.HasPrefix(line, "    ") && !strings.HasPrefix(line, "     "):
			key := strings.TrimSuffix(strings.TrimSpace(line), ":")
			switch key {
			case "get", "put", "post", "delete", "patch":
				ops = append(ops, strings.ToUpper(key)+" "+path)
			}
		}
	}
	if len(ops) == 0 {
		t.Fatal("no operations found in openapi.yaml")
	}
	slices.Sort(ops)
	return ops
}

// The OpenAPI document describes exactly the routes the server has.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var routes []string
	for _, r := range (&Server{}).routes() {
		routes = append(routes, r.method+" "+r.path)
	}
	slices.Sort(routes)
	doc := openAPIOps(t)
	for _, r := range routes {
		if _, found := slices.BinarySearch(doc, r); !found {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, d := range doc {
		if _, found := slices.BinarySearch(routes, d); !found {
			t.Errorf("openapi.yaml documents %s, which the server does not route", d)
		}
	}
}
