package api

import (
	"bufio"
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
	"strconv"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/pki"
)

// ClientOptions configure NewClient.
type ClientOptions struct {
	// Server is the manager's base URL, e.g. https://mgr.example:8443.
	Server string
	// Token is a bearer token (users); empty for agents.
	Token string
	// CA is the PEM manager CA to trust (required: the manager's
	// certificate is signed by its own CA).
	CA []byte
	// Certificate is the agent's client certificate (agent endpoints).
	Certificate *tls.Certificate
	// Timeout bounds each non-streaming request (default 30 s).
	Timeout time.Duration
	// Dial, when set, opens the TCP connections (e.g. from inside
	// another network namespace); default net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client calls the manager's API v1.
type Client struct {
	base    string
	token   string
	hc      *http.Client
	timeout time.Duration
}

// NewClient returns a client for opts.Server.
func NewClient(opts ClientOptions) (*Client, error) {
	u, err := url.Parse(opts.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("manager address %q: want https://HOST:PORT", opts.Server)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(opts.CA) {
		return nil, errors.New("manager CA: no PEM certificate found")
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if opts.Certificate != nil {
		tc.Certificates = []tls.Certificate{*opts.Certificate}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, IdleConnTimeout: time.Minute}
	if opts.Dial != nil {
		tr.DialContext = opts.Dial
	}
	return &Client{base: strings.TrimRight(opts.Server, "/"), token: opts.Token, hc: &http.Client{Transport: tr}, timeout: opts.Timeout}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

func (c *Client) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Code, e.Message = CodeInternal, fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return nil, e
	}
	return resp, nil
}

// Do sends in (nil: no body) and decodes the answer into out (nil:
// discarded).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func get[T any](ctx context.Context, c *Client, path string) (T, error) {
	var v T
	err := c.Do(ctx, http.MethodGet, path, nil, &v)
	return v, err
}

func p(parts ...string) string {
	for i, s := range parts {
		if i%2 == 1 {
			parts[i] = url.PathEscape(s)
		}
	}
	return strings.Join(parts, "")
}

// Hosts lists enrolled hosts.
func (c *Client) Hosts(ctx context.Context) ([]Host, error) { return get[[]Host](ctx, c, "/v1/hosts") }

// Host returns one host.
func (c *Client) Host(ctx context.Context, name string) (Host, error) {
	return get[Host](ctx, c, p("/v1/hosts/", name))
}

// DeleteHost forgets a host; its certificate stops working.
func (c *Client) DeleteHost(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/hosts/", name), nil, nil)
}

// Desired returns a host's desired state.
func (c *Client) Desired(ctx context.Context, host string) (HostDesired, error) {
	return get[HostDesired](ctx, c, p("/v1/hosts/", host, "/desired"))
}

// Status compares a host's desired and realized state.
func (c *Client) Status(ctx context.Context, host string) (HostStatus, error) {
	return get[HostStatus](ctx, c, p("/v1/hosts/", host, "/status"))
}

// VMs lists reported VMs with their tags and groups.
func (c *Client) VMs(ctx context.Context) ([]VM, error) { return get[[]VM](ctx, c, "/v1/vms") }

// SetTags replaces a VM's tags.
func (c *Client) SetTags(ctx context.Context, vm string, tags Tags) (Tags, error) {
	var out Tags
	err := c.Do(ctx, http.MethodPut, p("/v1/vms/", vm, "/tags"), tags, &out)
	return out, err
}

// Tags returns a VM's tags.
func (c *Client) Tags(ctx context.Context, vm string) (Tags, error) {
	return get[Tags](ctx, c, p("/v1/vms/", vm, "/tags"))
}

// Groups lists groups.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	return get[[]Group](ctx, c, "/v1/groups")
}

// PutGroup creates or replaces a group.
func (c *Client) PutGroup(ctx context.Context, g Group) (Group, error) {
	var out Group
	err := c.Do(ctx, http.MethodPut, p("/v1/groups/", g.Name), g, &out)
	return out, err
}

// DeleteGroup removes a group nothing refers to.
func (c *Client) DeleteGroup(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/groups/", name), nil, nil)
}

// Members resolves a group now.
func (c *Client) Members(ctx context.Context, group string) (GroupMembers, error) {
	return get[GroupMembers](ctx, c, p("/v1/groups/", group, "/members"))
}

// Policies lists policies.
func (c *Client) Policies(ctx context.Context) ([]Policy, error) {
	return get[[]Policy](ctx, c, "/v1/policies")
}

// Policy returns one policy.
func (c *Client) Policy(ctx context.Context, name string) (Policy, error) {
	return get[Policy](ctx, c, p("/v1/policies/", name))
}

// PutPolicy creates or replaces a policy.
func (c *Client) PutPolicy(ctx context.Context, pol Policy) (Policy, error) {
	var out Policy
	err := c.Do(ctx, http.MethodPut, p("/v1/policies/", pol.Name), pol, &out)
	return out, err
}

// DeletePolicy removes a policy no assignment uses.
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/policies/", name), nil, nil)
}

// Assignments lists assignments.
func (c *Client) Assignments(ctx context.Context) ([]Assignment, error) {
	return get[[]Assignment](ctx, c, "/v1/assignments")
}

// PutAssignment creates or replaces an assignment.
func (c *Client) PutAssignment(ctx context.Context, a Assignment) (Assignment, error) {
	var out Assignment
	err := c.Do(ctx, http.MethodPut, p("/v1/assignments/", a.Name), a, &out)
	return out, err
}

// DeleteAssignment removes an assignment.
func (c *Client) DeleteAssignment(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/assignments/", name), nil, nil)
}

// Segments lists overlay segments.
func (c *Client) Segments(ctx context.Context) ([]Segment, error) {
	return get[[]Segment](ctx, c, "/v1/segments")
}

// Segment returns one segment.
func (c *Client) Segment(ctx context.Context, name string) (Segment, error) {
	return get[Segment](ctx, c, p("/v1/segments/", name))
}

// PutSegment creates or replaces a segment.
func (c *Client) PutSegment(ctx context.Context, s Segment) (Segment, error) {
	var out Segment
	err := c.Do(ctx, http.MethodPut, p("/v1/segments/", s.Name), s, &out)
	return out, err
}

// DeleteSegment removes a segment.
func (c *Client) DeleteSegment(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/segments/", name), nil, nil)
}

// Encryptions lists encryptions.
func (c *Client) Encryptions(ctx context.Context) ([]Encryption, error) {
	return get[[]Encryption](ctx, c, "/v1/encryptions")
}

// Encryption returns one encryption.
func (c *Client) Encryption(ctx context.Context, name string) (Encryption, error) {
	return get[Encryption](ctx, c, p("/v1/encryptions/", name))
}

// PutEncryption creates or replaces an encryption.
func (c *Client) PutEncryption(ctx context.Context, e Encryption) (Encryption, error) {
	var out Encryption
	err := c.Do(ctx, http.MethodPut, p("/v1/encryptions/", e.Name), e, &out)
	return out, err
}

// DeleteEncryption removes an encryption.
func (c *Client) DeleteEncryption(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/encryptions/", name), nil, nil)
}

// CreateToken mints a token; the answer carries its secret, once.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (Token, error) {
	var out Token
	err := c.Do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// Tokens lists tokens (without secrets).
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	return get[[]Token](ctx, c, "/v1/tokens")
}

// DeleteToken revokes a token by id.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, p("/v1/tokens/", id), nil, nil)
}

// Revision returns the store revision the answering instance has applied.
func (c *Client) Revision(ctx context.Context) (int64, error) {
	r, err := get[Revision](ctx, c, "/v1/revision")
	return r.Revision, err
}

// PutInventory reports the agent's host inventory (agent certificate).
func (c *Client) PutInventory(ctx context.Context, inv Inventory) (int64, error) {
	var r Revision
	err := c.Do(ctx, http.MethodPut, "/v1/agent/inventory", inv, &r)
	return r.Revision, err
}

// PutRealized reports what the agent's host enforces (agent certificate).
func (c *Client) PutRealized(ctx context.Context, rz Realized) error {
	return c.Do(ctx, http.MethodPut, "/v1/agent/realized", rz, nil)
}

// PutCounters reports the host's datapath counters (agent certificate).
func (c *Client) PutCounters(ctx context.Context, cs Counters) error {
	return c.Do(ctx, http.MethodPut, "/v1/agent/counters", cs, nil)
}

// Counters returns a host's counters as its agent last reported them.
func (c *Client) Counters(ctx context.Context, host string) (Counters, error) {
	return get[Counters](ctx, c, p("/v1/hosts/", host, "/counters"))
}

// Stream is an open desired-state watch.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Watch opens a desired-state stream: host's with a user token, or the
// agent's own host when host is "". since is the last version the caller
// has (-1: none).
func (c *Client) Watch(ctx context.Context, host string, since int64) (*Stream, error) {
	path := "/v1/agent/desired?watch=true"
	if host != "" {
		path = p("/v1/hosts/", host, "/desired") + "?watch=true"
	}
	if since >= 0 {
		path += "&since=" + strconv.FormatInt(since, 10)
	}
	resp, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	return &Stream{body: resp.Body, sc: sc}, nil
}

// Next returns the next event (pings included); io.EOF when the manager
// ended the stream.
func (s *Stream) Next() (WatchEvent, error) {
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return WatchEvent{}, err
		}
		return WatchEvent{}, io.EOF
	}
	var ev WatchEvent
	err := json.Unmarshal(s.sc.Bytes(), &ev)
	return ev, err
}

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }

// Enrolled is what an agent keeps after enrolling.
type Enrolled struct {
	Certificate tls.Certificate
	CertPEM     []byte
	KeyPEM      []byte
	CAPEM       []byte
}

// Enroll exchanges a join token for a client certificate for host: it
// makes a key (which never leaves this process), sends a CSR, and returns
// the signed certificate with the key.
func Enroll(ctx context.Context, server string, caPEM []byte, token, host string) (*Enrolled, error) {
	c, err := NewClient(ClientOptions{Server: server, CA: caPEM})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	csr, key, err := pki.NewCSR(host)
	if err != nil {
		return nil, err
	}
	var resp EnrollResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/enroll", EnrollRequest{Token: token, Host: host, CSR: string(csr)}, &resp); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), key)
	if err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	return &Enrolled{Certificate: cert, CertPEM: []byte(resp.Certificate), KeyPEM: key, CAPEM: []byte(resp.CA)}, nil
}
