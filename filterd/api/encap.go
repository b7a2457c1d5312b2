package api

import (
	"context"
	"net/url"
	"strconv"
)

// Error codes of the encap forwarding table (/v1/encap/fdb).
const (
	// CodeNoTable: no table was pushed yet (the encap instances use
	// their fib files); PUT one first.
	CodeNoTable = "no_table"
	// CodeStaleGeneration: the change was made against another
	// generation, or a pushed table's is not above the live one.
	CodeStaleGeneration = "stale_generation"
	// CodeNoEntry: no such entry or segment in the table.
	CodeNoEntry = "no_entry"
)

// EncapFDB is the encap forwarding table (docs/encap.md): the body of PUT
// and the answer of GET /v1/encap/fdb, the body of POST
// /v1/encap/fdb/entries (without generation). The same JSON as the fib
// file; filters/encap.Table is its Go form on the daemon's side.
type EncapFDB struct {
	// Generation is the table's version: a PUT with 0 takes the next
	// one, else it must be above the live one.
	Generation uint64            `json:"generation,omitempty"`
	Segments   []EncapFDBSegment `json:"segments"`
	Entries    []EncapFDBEntry   `json:"entries"`
}

// EncapFDBSegment is a segment (VNI) and its member hosts: broadcast and
// unknown unicast are replicated to these only.
type EncapFDBSegment struct {
	VNI   int64    `json:"vni"`
	Hosts []string `json:"hosts"`
}

// EncapFDBEntry places a VM's MAC in a segment on a host, with the
// addresses the filter answers ARP/ND for.
type EncapFDBEntry struct {
	VNI  int64    `json:"vni"`
	MAC  string   `json:"mac"`
	Host string   `json:"host"`
	IPs  []string `json:"ips,omitempty"`
}

// EncapFDBChange answers an accepted change: the new generation and the
// encap instances whose maps were written ("vnet3 (segment 100)").
type EncapFDBChange struct {
	Generation uint64   `json:"generation"`
	Updated    []string `json:"updated"`
	Seconds    float64  `json:"seconds"`
}

const encapFDBPath = "/" + Version + "/encap/fdb"

func ifGeneration(path string, gen uint64) string {
	if gen == 0 {
		return path
	}
	return withQuery(path, map[string]string{"if_generation": strconv.FormatUint(gen, 10)})
}

// EncapFDB returns the pushed table; only segment vni when vni is not 0.
func (c *Client) EncapFDB(ctx context.Context, vni uint32) (*EncapFDB, error) {
	path := encapFDBPath
	if vni != 0 {
		path = withQuery(path, map[string]string{"vni": strconv.FormatUint(uint64(vni), 10)})
	}
	var out EncapFDB
	return &out, c.do(ctx, "GET", path, nil, &out)
}

// SetEncapFDB replaces the whole table (raw JSON, as the file: errors then
// carry the line and column in it). ifGen, when not 0, must be the live
// generation.
func (c *Client) SetEncapFDB(ctx context.Context, table []byte, ifGen uint64) (*EncapFDBChange, error) {
	var out EncapFDBChange
	return &out, c.do(ctx, "PUT", ifGeneration(encapFDBPath, ifGen), table, &out)
}

// AddEncapFDB adds or replaces segments and entries (a moved VM: its entry
// with the new host). ifGen, when not 0, must be the live generation.
func (c *Client) AddEncapFDB(ctx context.Context, add EncapFDB, ifGen uint64) (*EncapFDBChange, error) {
	var out EncapFDBChange
	return &out, c.do(ctx, "POST", ifGeneration(encapFDBPath+"/entries", ifGen), add, &out)
}

// DeleteEncapFDBEntry removes the entry of mac in segment vni.
func (c *Client) DeleteEncapFDBEntry(ctx context.Context, vni uint32, mac string, ifGen uint64) (*EncapFDBChange, error) {
	var out EncapFDBChange
	path := encapFDBPath + "/entries/" + strconv.FormatUint(uint64(vni), 10) + "/" + url.PathEscape(mac)
	return &out, c.do(ctx, "DELETE", ifGeneration(path, ifGen), nil, &out)
}

// DeleteEncapFDBSegment removes segment vni (it must have no entries).
func (c *Client) DeleteEncapFDBSegment(ctx context.Context, vni uint32, ifGen uint64) (*EncapFDBChange, error) {
	var out EncapFDBChange
	path := encapFDBPath + "/segments/" + strconv.FormatUint(uint64(vni), 10)
	return &out, c.do(ctx, "DELETE", ifGeneration(path, ifGen), nil, &out)
}

// DropEncapFDB forgets the pushed table: the encap instances go back to
// their fib files (refused if one has none, or it does not compile).
func (c *Client) DropEncapFDB(ctx context.Context, ifGen uint64) (*EncapFDBChange, error) {
	var out EncapFDBChange
	return &out, c.do(ctx, "DELETE", ifGeneration(encapFDBPath, ifGen), nil, &out)
}
