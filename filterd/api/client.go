package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrDaemonNotRunning: nothing listens on the socket.
var ErrDaemonNotRunning = errors.New("filterd is not running")

// Client talks to filterd over its unix socket.
type Client struct {
	socket string
	base   string // "http://filterd" on the unix socket, or https://host:port
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket
// (DefaultSocket if empty).
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, base: "http://filterd", http: &http.Client{Transport: tr}}
}

// NewTLSClient returns a client for filterd's API on the hidden bridge
// (server like https://169.254.77.1:9443), authenticating with the client
// certificate in certFile/keyFile and trusting the host CA in caFile.
func NewTLSClient(server, certFile, keyFile, caFile string) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q: want https://HOST:PORT (filterd's hidden bridge address)", server)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("host CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("host CA %s: no certificate in it", caFile)
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS13},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: server, base: strings.TrimSuffix(server, "/"), http: &http.Client{Transport: tr}}, nil
}

// Socket is the socket path the client uses.
func (c *Client) Socket() string { return c.socket }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if b, ok := out.(*[]byte); ok && resp.ContentLength > 0 && resp.ContentLength <= 1<<30 {
		// A state bundle: its length is known, read it in one allocation.
		*b = make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, *b); err != nil {
			return fmt.Errorf("%s %s: read response: %w", method, path, err)
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if out == nil {
		return nil
	}
	if s, ok := out.(*string); ok {
		*s = string(data)
		return nil
	}
	if b, ok := out.(*[]byte); ok {
		*b = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// send makes one request (in: nil, raw []byte, or a value sent as JSON)
// and returns a response with a 2xx status, its body for the caller to
// read and close; a daemon that is not there and an API error are errors.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	ctype := ""
	if b, ok := in.([]byte); ok {
		body, ctype = bytes.NewReader(b), "application/octet-stream"
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
			return nil, fmt.Errorf("%w (no daemon on %s: start it with `filterd` or point --socket at it): %w", ErrDaemonNotRunning, c.socket, ne.Err)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e = Error{Code: CodeInternal, Message: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
		}
		return nil, &e
	}
	return resp, nil
}

// withQuery appends query as URL query parameters.
func withQuery(path string, query map[string]string) string {
	if len(query) == 0 {
		return path
	}
	v := url.Values{}
	for k, s := range query {
		v.Set(k, s)
	}
	return path + "?" + v.Encode()
}

func vnicPath(name string) string { return "/" + Version + "/vnics/" + url.PathEscape(name) }

// Version asks the daemon for its version.
func (c *Client) Version(ctx context.Context) (*VersionInfo, error) {
	var v VersionInfo
	err := c.do(ctx, http.MethodGet, "/"+Version+"/version", nil, &v)
	return &v, err
}

// Check runs the daemon's kernel feature probe.
func (c *Client) Check(ctx context.Context) (*CheckReport, error) {
	var r CheckReport
	err := c.do(ctx, http.MethodGet, "/"+Version+"/check", nil, &r)
	return &r, err
}

// Filters lists the registered filters.
func (c *Client) Filters(ctx context.Context) ([]FilterInfo, error) {
	var fs []FilterInfo
	err := c.do(ctx, http.MethodGet, "/"+Version+"/filters", nil, &fs)
	return fs, err
}

// LoadFilter loads an external fast-path filter (manifest JSON and eBPF
// object) into the running daemon.
func (c *Client) LoadFilter(ctx context.Context, req LoadFilterRequest) (*FilterInfo, error) {
	var fi FilterInfo
	err := c.do(ctx, http.MethodPost, "/"+Version+"/filters", req, &fi)
	return &fi, err
}

// UnloadFilter unloads an external filter no chain uses.
func (c *Client) UnloadFilter(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/"+Version+"/filters/"+url.PathEscape(name), nil, nil)
}

// VNICs lists the protected vNICs and their chains (no counters).
func (c *Client) VNICs(ctx context.Context) ([]VNIC, error) {
	var vs []VNIC
	err := c.do(ctx, http.MethodGet, "/"+Version+"/vnics", nil, &vs)
	return vs, err
}

// VNIC shows one vNIC with its counters.
func (c *Client) VNIC(ctx context.Context, name string) (*VNIC, error) {
	var v VNIC
	err := c.do(ctx, http.MethodGet, vnicPath(name), nil, &v)
	return &v, err
}

// SetChain creates the chain of vnic with all its filters at once.
func (c *Client) SetChain(ctx context.Context, vnic string, req ChainRequest) (*VNIC, error) {
	var v VNIC
	err := c.do(ctx, http.MethodPut, vnicPath(vnic), req, &v)
	return &v, err
}

// Attach adds one filter to vnic's chain, creating the chain if needed.
func (c *Client) Attach(ctx context.Context, vnic string, req AttachRequest) (*VNIC, error) {
	var v VNIC
	err := c.do(ctx, http.MethodPost, vnicPath(vnic)+"/filters", req, &v)
	return &v, err
}

// Detach removes vnic's whole chain.
func (c *Client) Detach(ctx context.Context, vnic string) error {
	return c.do(ctx, http.MethodDelete, vnicPath(vnic), nil, nil)
}

// DetachSlot removes the filter in slot of vnic's chain.
func (c *Client) DetachSlot(ctx context.Context, vnic string, slot int) error {
	return c.do(ctx, http.MethodDelete, vnicPath(vnic)+"/filters/"+strconv.Itoa(slot), nil, nil)
}

// Reload asks the filter in slot of vnic's chain to re-read its
// configuration and swap it in (e.g. the firewall's policy file).
func (c *Client) Reload(ctx context.Context, vnic string, slot int) (*ReloadResult, error) {
	var r ReloadResult
	err := c.do(ctx, http.MethodPost, vnicPath(vnic)+"/filters/"+strconv.Itoa(slot)+"/reload", nil, &r)
	return &r, err
}

// Inspect returns the live state of the filter in slot of vnic's chain
// (e.g. the firewall's connections); query is passed as URL query
// parameters. State is left as raw JSON for the filter's own type.
func (c *Client) Inspect(ctx context.Context, vnic string, slot int, query map[string]string) (*InspectResult, json.RawMessage, error) {
	p := withQuery(vnicPath(vnic)+"/filters/"+strconv.Itoa(slot)+"/inspect", query)
	var raw struct {
		InspectResult
		State json.RawMessage `json:"state"`
	}
	if err := c.do(ctx, http.MethodGet, p, nil, &raw); err != nil {
		return nil, nil, err
	}
	r := raw.InspectResult
	r.State = raw.State
	return &r, raw.State, nil
}

// ExportState returns the state bundle of vnic's chain: the state that
// follows the VM to another host (e.g. the firewall's connections).
func (c *Client) ExportState(ctx context.Context, vnic string) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, vnicPath(vnic)+"/state", nil, &b)
	return b, err
}

// ImportState adds a state bundle exported elsewhere to vnic's chain.
func (c *Client) ImportState(ctx context.Context, vnic string, bundle []byte) (*ImportResult, error) {
	var r ImportResult
	err := c.do(ctx, http.MethodPut, vnicPath(vnic)+"/state", bundle, &r)
	return &r, err
}

// SetLabels sets the tags and addresses of vnic's VM (host tag groups)
// and, when l.MAC is set, its guest MAC.
func (c *Client) SetLabels(ctx context.Context, vnic string, l Labels) (*GroupChange, error) {
	var r GroupChange
	err := c.do(ctx, http.MethodPut, vnicPath(vnic)+"/labels", l, &r)
	return &r, err
}

// Groups lists the host's address groups.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var r []Group
	err := c.do(ctx, http.MethodGet, "/"+Version+"/groups", nil, &r)
	return r, err
}

// Group describes one host address group.
func (c *Client) Group(ctx context.Context, name string) (*Group, error) {
	var r Group
	err := c.do(ctx, http.MethodGet, "/"+Version+"/groups/"+url.PathEscape(name), nil, &r)
	return &r, err
}

// SetGroup sets a host group's pushed members.
func (c *Client) SetGroup(ctx context.Context, name string, members []string) (*GroupChange, error) {
	var r GroupChange
	err := c.do(ctx, http.MethodPut, "/"+Version+"/groups/"+url.PathEscape(name), GroupRequest{Members: members}, &r)
	return &r, err
}

// DeleteGroup forgets a pushed host group.
func (c *Client) DeleteGroup(ctx context.Context, name string) (*GroupChange, error) {
	var r GroupChange
	err := c.do(ctx, http.MethodDelete, "/"+Version+"/groups/"+url.PathEscape(name), nil, &r)
	return &r, err
}

// Capture streams pcapng of vnic's traffic (query: direction, duration,
// proto, port, cidr, snaplen, sample, rate) until ctx ends or filterd
// stops; the caller reads and closes the body.
func (c *Client) Capture(ctx context.Context, vnic string, query map[string]string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, withQuery(vnicPath(vnic)+"/capture", query), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Hidden describes the hidden bridge (GET /v1/hidden).
func (c *Client) Hidden(ctx context.Context) (*HiddenStatus, error) {
	var r HiddenStatus
	err := c.do(ctx, http.MethodGet, "/"+Version+"/hidden", nil, &r)
	return &r, err
}

// Metrics returns the Prometheus exposition text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	var s string
	err := c.do(ctx, http.MethodGet, "/metrics", nil, &s)
	return s, err
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
