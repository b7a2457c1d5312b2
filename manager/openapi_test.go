package manager

import (
	"bufio"
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/manager/api"
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

// openAPIProperties maps each schema under components/schemas to its
// property names.
func openAPIProperties() map[string][]string {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(OpenAPI))
	inSchemas, inProps, schema := false, false, ""
	for sc.Scan() {
		line := sc.Text()
		indent := len(line) - len(strings.TrimLeft(line, " "))
		key := strings.TrimSpace(line)
		key, _, _ = strings.Cut(key, ":")
		switch {
		case line == "  schemas:":
			inSchemas = true
		case inSchemas && indent <= 2 && strings.TrimSpace(line) != "":
			inSchemas = false
		case inSchemas && indent == 4:
			schema, inProps = key, false
			out[schema] = nil
		case inSchemas && indent == 6:
			inProps = key == "properties"
		case inSchemas && inProps && indent == 8:
			out[schema] = append(out[schema], key)
		}
	}
	return out
}

// Every schema documents exactly the JSON fields of its Go type.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	types := map[string]any{
		"Error": api.Error{}, "Revision": api.Revision{}, "Host": api.Host{}, "VNIC": api.VNIC{}, "VM": api.VM{},
		"Inventory": api.Inventory{}, "Group": api.Group{}, "GroupMembers": api.GroupMembers{}, "Policy": api.Policy{},
		"Assignment": api.Assignment{}, "Filter": api.Filter{}, "DesiredVNIC": api.DesiredVNIC{}, "HostDesired": api.HostDesired{},
		"WatchEvent": api.WatchEvent{}, "RealizedVNIC": api.RealizedVNIC{}, "Realized": api.Realized{}, "VNICStatus": api.VNICStatus{},
		"HostStatus": api.HostStatus{}, "TokenRequest": api.TokenRequest{}, "Token": api.Token{}, "EnrollRequest": api.EnrollRequest{},
		"EnrollResponse": api.EnrollResponse{}, "Counters": api.Counters{}, "VNICCounters": api.VNICCounters{},
		"Segment": api.Segment{}, "Encryption": api.Encryption{}, "Tunnel": api.Tunnel{}, "HostDocs": api.HostDocs{},
		"HostDoc": api.HostDoc{}, "RealizedDoc": api.RealizedDoc{}, "DocStatus": api.DocStatus{},
	}
	doc := openAPIProperties()
	for name, v := range types {
		props, ok := doc[name]
		if !ok {
			t.Errorf("openapi.yaml has no schema %s", name)
			continue
		}
		var fields []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if tag != "" && tag != "-" {
				fields = append(fields, tag)
			}
		}
		slices.Sort(fields)
		slices.Sort(props)
		if !slices.Equal(fields, props) {
			t.Errorf("schema %s has properties %v; api.%s has JSON fields %v", name, props, name, fields)
		}
	}
	for name := range doc {
		if _, ok := types[name]; !ok && name != "Tags" {
			t.Errorf("schema %s matches no api type", name)
		}
	}
}
