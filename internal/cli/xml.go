package cli

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// xmlStdin is what FILE "-" reads; tests replace it.
var xmlStdin io.Reader = os.Stdin

// LibvirtURIEnv names the environment variable that overrides the default
// --connect, as for virsh.
const LibvirtURIEnv = "LIBVIRT_DEFAULT_URI"

// defaultLibvirtSocket is libvirtd's read-write socket for qemu:///system.
const defaultLibvirtSocket = "/var/run/libvirt/libvirt-sock"

// noDaemonNote is printed on stderr when filter names and parameters
// cannot be checked.
const noDaemonNote = "filterd not running: filter names and parameters not checked"

// xmlChain is one configured interface (or portgroup) and its filters.
type xmlChain struct {
	// MAC and Alias identify the interface (one may be empty).
	MAC   string `json:"mac,omitempty"`
	Alias string `json:"alias,omitempty"`
	// Portgroup names the portgroup of a network's defaults.
	Portgroup string           `json:"portgroup,omitempty"`
	Filters   []api.FilterSpec `json:"filters"`
}

// xmlReport is what "vfctl xml validate -o json" prints.
type xmlReport struct {
	// Kind is what FILE holds: domain, network, domain-element (the
	// vnicfilter:filters element with interface entries) or
	// network-element (with portgroup entries).
	Kind  string `json:"kind"`
	Valid bool   `json:"valid"`
	// FiltersChecked is false when filterd was not reachable: only the
	// shape of the XML was checked.
	FiltersChecked bool       `json:"filters_checked"`
	Errors         []string   `json:"errors"`
	Interfaces     []xmlChain `json:"interfaces"`

	name string            // domain or network name, for text output
	cfg  *domainxml.Config // the domain configuration, for "xml set"
}

const (
	kindDomain         = "domain"
	kindNetwork        = "network"
	kindDomainElement  = "domain-element"
	kindNetworkElement = "network-element"
)

func (a *app) xmlCommand() *cobra.Command {
	x := &cobra.Command{
		Use:   "xml",
		Short: "Check and edit the filter configuration in libvirt XML",
		Long: `Commands on vnicfilter's configuration in libvirt XML: the
<vnicfilter:filters> element in a domain's <metadata> (per-interface
chains) or in a network's <metadata> (per-portgroup defaults). The schema
is in docs/domain-xml.md.

  validate FILE   check a domain XML, a network XML or the element alone
  get DOMAIN      print a domain's element
  set DOMAIN FILE store it in a domain (or remove it with --clear)

get and set talk to libvirtd (like 'virsh metadata'), not to filterd.`,
		Example: `  vfctl xml validate web01.xml
  vfctl xml set web01 filters.xml
  vfctl xml get web01`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	x.AddCommand(a.xmlValidateCommand(), a.xmlGetCommand(), a.xmlSetCommand())
	return x
}

func (a *app) xmlValidateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE|-",
		Short: "Check a domain XML, a network XML or a vnicfilter:filters element",
		Long: `Validate reads FILE ("-" for standard input) and checks vnicfilter's
configuration in it. FILE may hold:

  a domain XML       ('virsh dumpxml DOMAIN'): the vnicfilter:filters
                     element in its <metadata>, and that every entry
                     matches one of the domain's interfaces, which must
                     have a host-side tap (network, bridge, ethernet)
  a network XML      ('virsh net-dumpxml NET'): the portgroup defaults in
                     its <metadata>; each must name a <portgroup>
  the element alone  <vnicfilter:filters> with interface entries (what
                     'vfctl xml get' prints and 'vfctl xml set' takes) or
                     with portgroup entries

The kind is told from the root element and, for the element alone, from
its first entry.

When filterd runs, every filter name, parameter and direction is also
checked against the registered filters (GET /v1/filters), as the libvirt
hook does before a start. Otherwise only the shape is checked and a note
says so on standard error: "filterd not running: filter names and
parameters not checked". Portgroup defaults of the networks a domain's
interfaces join are not read.

It prints the chains the file configures, one line per interface in the
chain syntax of 'vfctl chain set'. With -o json it prints
{"kind", "valid", "filters_checked", "errors": [...], "interfaces": [...]}.
It exits 0 when valid, 5 when not (the message names the line and the
element), 2 on a usage error, 1 if FILE cannot be read. It changes nothing.`,
		Example: `  vfctl xml validate web01.xml
  virsh dumpxml web01 | vfctl xml validate -
  virsh net-dumpxml lan | vfctl xml validate -
  vfctl xml validate -o json filters.xml | jq .errors`,
		Args: args("FILE"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			name, data, err := readXMLFile(args[0])
			if err != nil {
				return err
			}
			r := a.checkXML(ctx, data)
			err = a.emit(r, func(w io.Writer) error {
				if !r.Valid {
					return nil
				}
				return printXMLReport(w, name, r)
			})
			if err != nil {
				return err
			}
			return invalidXML(name, r)
		}),
	}
}

// readXMLFile reads FILE, or standard input for "-", and names it for
// messages.
func readXMLFile(path string) (name string, data []byte, err error) {
	if path == "-" {
		data, err = io.ReadAll(xmlStdin)
		name = "<stdin>"
	} else {
		data, err = os.ReadFile(path)
		name = path
	}
	if err != nil {
		return "", nil, &exitError{code: ExitFailure, msg: fmt.Sprintf("read %s: %v", name, errors.Unwrap(err)),
			hint: "FILE is a path, or - for standard input"}
	}
	return name, data, nil
}

// invalidXML is the exit-5 error of an invalid report, nil for a valid one.
func invalidXML(name string, r *xmlReport) error {
	if r.Valid {
		return nil
	}
	return &exitError{code: ExitBadInput,
		msg:  fmt.Sprintf("%s: invalid: %s", name, strings.Join(r.Errors, "\n  ")),
		hint: "docs/domain-xml.md describes the schema; 'vfctl filters' lists the filters and their parameters"}
}

func printXMLReport(w io.Writer, name string, r *xmlReport) error {
	what := map[string]string{
		kindDomain:         "domain " + r.name,
		kindNetwork:        "network " + r.name,
		kindDomainElement:  "vnicfilter:filters element (interfaces)",
		kindNetworkElement: "vnicfilter:filters element (portgroup defaults)",
	}[r.Kind]
	checked := "filters checked against filterd"
	if !r.FiltersChecked {
		checked = "shape only"
	}
	fmt.Fprintf(w, "%s: valid %s (%s)\n", name, what, checked)
	if len(r.Interfaces) == 0 {
		fmt.Fprintln(w, "no interface is configured")
		return nil
	}
	tw := table(w)
	head := "INTERFACE"
	if r.Kind == kindNetwork || r.Kind == kindNetworkElement {
		head = "PORTGROUP"
	}
	row(tw, head, "FILTERS")
	for _, c := range r.Interfaces {
		id := c.Portgroup
		switch {
		case c.MAC != "":
			id = c.MAC
		case c.Alias != "":
			id = c.Alias
		}
		fs := make([]string, len(c.Filters))
		for i, f := range c.Filters {
			fs[i] = formatFilterSpec(f)
		}
		chain := strings.Join(fs, " ")
		if chain == "" {
			chain = "- (unprotected)"
		}
		row(tw, id, chain)
	}
	return tw.Flush()
}

// formatFilterSpec writes f in the chain syntax of "vfctl chain set".
func formatFilterSpec(f api.FilterSpec) string {
	var parts []string
	if f.FailMode != "" {
		parts = append(parts, keyFailMode+"="+f.FailMode)
	}
	if f.Directions != "" {
		parts = append(parts, keyDirection+"="+f.Directions)
	}
	if len(f.Params) > 0 {
		parts = append(parts, formatParams(f.Params))
	}
	if len(parts) == 0 {
		return f.Name
	}
	return f.Name + ":" + strings.Join(parts, ",")
}

// checkXML parses data, tells which kind of document it is and validates
// it, against filterd's filters when filterd runs.
func (a *app) checkXML(ctx context.Context, data []byte) *xmlReport {
	r := &xmlReport{Errors: []string{}, Interfaces: []xmlChain{}}
	fail := func(err error) *xmlReport {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	root, first, err := rootElement(data)
	if err != nil {
		// The element parser names the line of a syntax error.
		r.Kind = kindDomainElement
		if _, perr := domainxml.ParseConfig(data); perr != nil {
			return fail(perr)
		}
		return fail(err)
	}
	// checks validate one entry each against filterd's filters.
	var checks []func(domainxml.Lookup) error
	switch {
	case root.Space == "" && root.Local == "domain":
		r.Kind = kindDomain
		d, err := domainxml.Parse(data)
		if err != nil {
			return fail(err)
		}
		r.name, r.cfg = d.Name, d.Config
		cs, err := d.Chains(nil)
		if err != nil {
			return fail(err)
		}
		for _, c := range cs {
			r.Interfaces = append(r.Interfaces, xmlChain{MAC: macString(c.MAC), Alias: c.Alias, Filters: c.Filters})
		}
		if d.Config != nil {
			checks = append(checks, interfaceChecks(d.Config)...)
		}
	case root.Space == "" && root.Local == "network":
		r.Kind = kindNetwork
		var n struct {
			Name string `xml:"name"`
		}
		_ = xml.Unmarshal(data, &n)
		r.name = n.Name
		defaults, err := domainxml.ParseNetworkDefaults(data)
		if err != nil {
			return fail(err)
		}
		checks = r.addPortgroups(defaults)
	case first == "portgroup":
		r.Kind = kindNetworkElement
		wrapped, err := wrapNetworkElement(data)
		if err != nil {
			return fail(err)
		}
		defaults, err := domainxml.ParseNetworkDefaults(wrapped)
		if err != nil {
			return fail(err)
		}
		checks = r.addPortgroups(defaults)
	default:
		r.Kind = kindDomainElement
		cfg, err := domainxml.ParseConfig(data)
		if err != nil {
			return fail(err)
		}
		r.cfg = cfg
		for _, ic := range cfg.Interfaces {
			r.Interfaces = append(r.Interfaces, xmlChain{MAC: macString(ic.MAC), Alias: ic.Alias, Filters: nonNil(ic.Filters)})
		}
		checks = interfaceChecks(cfg)
	}
	r.Valid = true
	if len(checks) == 0 {
		r.FiltersChecked = true
		return r
	}
	lookup, ok := a.filterLookup(ctx)
	if !ok {
		return r
	}
	r.FiltersChecked = true
	for _, check := range checks {
		if err := check(lookup); err != nil {
			r.Errors = append(r.Errors, err.Error())
		}
	}
	r.Valid = len(r.Errors) == 0
	return r
}

// addPortgroups lists a network's defaults, sorted by portgroup.
func (r *xmlReport) addPortgroups(defaults domainxml.PortgroupDefaults) (checks []func(domainxml.Lookup) error) {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		if _, pg, _ := strings.Cut(k, "/"); pg != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, pg, _ := strings.Cut(k, "/")
		filters := defaults[k]
		r.Interfaces = append(r.Interfaces, xmlChain{Portgroup: pg, Filters: filters})
		checks = append(checks, func(lookup domainxml.Lookup) error {
			if err := domainxml.ValidateFilters(filters, lookup); err != nil {
				return &domainxml.Error{Msg: "vnicfilter:portgroup " + pg, Err: err}
			}
			return nil
		})
	}
	return checks
}

// interfaceChecks validates each entry of cfg on its own, so that every
// invalid entry is reported, each with its line.
func interfaceChecks(cfg *domainxml.Config) (checks []func(domainxml.Lookup) error) {
	for _, ic := range cfg.Interfaces {
		one := &domainxml.Config{Interfaces: []domainxml.InterfaceConfig{ic}}
		checks = append(checks, func(lookup domainxml.Lookup) error { return domainxml.Validate(one, lookup) })
	}
	return checks
}

func macString(m net.HardwareAddr) string {
	if len(m) == 0 {
		return ""
	}
	return m.String()
}

func nonNil(fs []api.FilterSpec) []api.FilterSpec {
	if fs == nil {
		return []api.FilterSpec{}
	}
	return fs
}

// filterLookup returns a lookup backed by filterd's GET /v1/filters, or
// ok false (with the note printed) when filterd cannot be asked.
func (a *app) filterLookup(ctx context.Context) (lookup domainxml.Lookup, ok bool) {
	infos, err := call(ctx, a, a.client.Filters)
	if err != nil {
		if errors.Is(err, api.ErrDaemonNotRunning) {
			fmt.Fprintf(a.stderr, "note: %s\n", noDaemonNote)
		} else {
			fmt.Fprintf(a.stderr, "note: filterd unreachable (%v): filter names and parameters not checked\n", err)
		}
		return nil, false
	}
	byName := map[string]*sdk.Descriptor{}
	names := make([]string, 0, len(infos))
	for _, fi := range infos {
		dirs, err := sdk.ParseDirections(fi.Directions)
		if err != nil {
			dirs = sdk.DirBoth // filterd refuses what it cannot do
		}
		byName[fi.Name] = &sdk.Descriptor{Name: fi.Name, Version: fi.Version, Directions: dirs, Params: fi.Params}
		names = append(names, fi.Name)
	}
	sort.Strings(names)
	return func(name string) (*sdk.Descriptor, error) {
		if d, ok := byName[name]; ok {
			return d, nil
		}
		return nil, fmt.Errorf("%w %q (registered: %s)", sdk.ErrUnknownFilter, name, dash(strings.Join(names, ", ")))
	}, true
}

// rootElement returns the name of the document's root element and the
// local name of its first child element ("" if none).
func rootElement(data []byte) (root xml.Name, first string, err error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			if depth == 0 && root.Local == "" {
				return root, "", errors.New("no XML element")
			}
			return root, first, nil
		}
		if err != nil {
			return root, "", err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch depth {
			case 1:
				root = t.Name
			case 2:
				if first == "" {
					first = t.Name.Local
				}
			}
			if depth >= 2 {
				if err := d.Skip(); err != nil {
					return root, "", err
				}
				depth--
			}
		case xml.EndElement:
			depth--
		}
	}
}

// wrapNetworkElement puts a vnicfilter:filters element with portgroup
// entries into a minimal network XML that declares every portgroup it
// names, so domainxml.ParseNetworkDefaults can read it. The wrapper adds
// no line break: line numbers in messages stay those of the file.
func wrapNetworkElement(data []byte) ([]byte, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	start, end, depth := int64(-1), int64(-1), 0
	var pgs bytes.Buffer
	seen := map[string]bool{}
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 && start < 0 {
				start = off
			}
			depth++
			if depth == 2 && t.Name.Local == "portgroup" {
				for _, at := range t.Attr {
					if at.Name.Space == "" && at.Name.Local == "name" && !seen[at.Value] {
						seen[at.Value] = true
						pgs.WriteString(`<portgroup name="`)
						xml.EscapeText(&pgs, []byte(at.Value))
						pgs.WriteString(`"/>`)
					}
				}
			}
		case xml.EndElement:
			depth--
			if depth == 0 && end < 0 {
				end = d.InputOffset()
			}
		}
	}
	if start < 0 || end < 0 {
		return nil, errors.New("no XML element")
	}
	var b bytes.Buffer
	b.Write(data[:start])
	b.WriteString("<network><name>-</name>")
	b.Write(pgs.Bytes())
	b.WriteString("<metadata>")
	b.Write(data[start:end])
	b.WriteString("</metadata></network>")
	b.Write(data[end:])
	return b.Bytes(), nil
}

// libvirtFlags select libvirtd for "xml get" and "xml set".
type libvirtFlags struct {
	connect string
	socket  string
}

func (lf *libvirtFlags) add(cmd *cobra.Command) {
	uri := string(libvirt.QEMUSystem)
	if s := os.Getenv(LibvirtURIEnv); s != "" {
		uri = s
	}
	f := cmd.Flags()
	f.StringVarP(&lf.connect, "connect", "c", uri, "libvirt connection `URI`, local only: qemu:///system, qemu:///session (env "+LibvirtURIEnv+")")
	f.StringVar(&lf.socket, "libvirt-socket", "", "libvirtd's unix socket `path`; default: the one of --connect")
}

// target returns the socket to dial and the URI to open on it. Only
// local URIs are supported: qemu:///system (libvirtd's
// /var/run/libvirt/libvirt-sock), qemu:///session
// ($XDG_RUNTIME_DIR/libvirt/libvirt-sock), qemu+unix:// and a ?socket=
// parameter as virsh takes them.
func (lf *libvirtFlags) target() (socket string, uri libvirt.ConnectURI, err error) {
	u, err := url.Parse(lf.connect)
	if err != nil {
		return "", "", usagef("--connect %q: %v", lf.connect, err)
	}
	if (u.Scheme != "qemu" && u.Scheme != "qemu+unix") || u.Host != "" {
		return "", "", usagef("--connect %q: only local qemu URIs are supported (qemu:///system, qemu:///session)", lf.connect)
	}
	switch u.Path {
	case "/system":
		socket = defaultLibvirtSocket
	case "/session":
		if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
			socket = filepath.Join(rt, "libvirt", "libvirt-sock")
		}
	default:
		return "", "", usagef("--connect %q: want qemu:///system or qemu:///session", lf.connect)
	}
	if s := u.Query().Get("socket"); s != "" {
		socket = s
	}
	if lf.socket != "" {
		socket = lf.socket
	}
	if socket == "" {
		return "", "", usagef("--connect %q: XDG_RUNTIME_DIR is not set: give --libvirt-socket", lf.connect)
	}
	return socket, libvirt.ConnectURI("qemu://" + u.Path), nil
}

// dialLibvirt connects to libvirtd; the caller must Disconnect.
func (a *app) dialLibvirt(lf *libvirtFlags) (*libvirt.Libvirt, error) {
	socket, uri, err := lf.target()
	if err != nil {
		return nil, err
	}
	l := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(socket), dialers.WithLocalTimeout(a.timeout)))
	if err := l.ConnectToURI(uri); err != nil {
		return nil, &exitError{code: ExitFailure, msg: fmt.Sprintf("cannot connect to libvirtd on %s (%s): %v", socket, uri, err),
			hint: "is libvirtd running? Its socket is root only on most hosts; point --connect or --libvirt-socket at the one running"}
	}
	return l, nil
}

// libvirtError maps libvirt's errors to vfctl's exit codes.
func libvirtError(domain string, err error) error {
	var le libvirt.Error
	if errors.As(err, &le) {
		switch libvirt.ErrorNumber(le.Code) {
		case libvirt.ErrNoDomain:
			return &exitError{code: ExitNotFound, msg: fmt.Sprintf("no domain %q: %s", domain, le.Message),
				hint: "'virsh list --all' lists the domains"}
		case libvirt.ErrNoDomainMetadata:
			return &exitError{code: ExitNotFound, msg: fmt.Sprintf("domain %s has no vnicfilter configuration", domain),
				hint: "set one with 'vfctl xml set " + domain + " FILE'"}
		}
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("domain %s: libvirt: %s", domain, le.Message)}
	}
	return &exitError{code: ExitFailure, msg: fmt.Sprintf("domain %s: libvirt: %v", domain, err)}
}

func (a *app) xmlGetCommand() *cobra.Command {
	var (
		lf           libvirtFlags
		config, live bool
	)
	cmd := &cobra.Command{
		Use:   "get DOMAIN",
		Short: "Print the vnicfilter configuration of a domain",
		Long: `Get prints the vnicfilter:filters element stored in DOMAIN's <metadata>
(virDomainGetMetadata, as 'virsh metadata DOMAIN ` + domainxml.Namespace + `'),
indented and with its namespace declared: the form 'vfctl xml set' and
'vfctl xml validate' take and 'virsh edit' shows.

--config reads the persistent definition (the next boot), --live the
running domain; by default the running domain if it runs, else the
persistent definition. With -o json it prints the configured interfaces
as 'vfctl xml validate -o json' does.

It talks to libvirtd on --connect (default qemu:///system, or
` + LibvirtURIEnv + `; local URIs only) or on --libvirt-socket. It exits 4 if the
domain does not exist or has no vnicfilter configuration, 5 if the stored
configuration does not parse (it is printed as stored). It changes
nothing.`,
		Example: `  vfctl xml get web01
  vfctl xml get web01 --config > filters.xml
  vfctl xml get web01 -o json | jq '.interfaces[].filters[].name'`,
		Args: args("DOMAIN"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			if config && live {
				return usagef("--config and --live: give one (get reads one definition)")
			}
			flags := libvirt.DomainAffectCurrent
			switch {
			case config:
				flags = libvirt.DomainAffectConfig
			case live:
				flags = libvirt.DomainAffectLive
			}
			l, err := a.dialLibvirt(&lf)
			if err != nil {
				return err
			}
			defer l.Disconnect()
			dom, err := l.DomainLookupByName(args[0])
			if err != nil {
				return libvirtError(args[0], err)
			}
			value, err := l.DomainGetMetadata(dom, int32(libvirt.DomainMetadataElement), libvirt.OptString{domainxml.Namespace}, flags)
			if err != nil {
				return libvirtError(args[0], err)
			}
			cfg, err := domainxml.ParseMetadata([]byte(value))
			if err != nil {
				fmt.Fprintln(a.stdout, value)
				return &exitError{code: ExitBadInput, msg: fmt.Sprintf("domain %s: stored configuration is invalid: %v", args[0], err),
					hint: "replace it with 'vfctl xml set' or remove it with 'vfctl xml set " + args[0] + " --clear'"}
			}
			out, err := domainxml.Marshal(cfg)
			if err != nil {
				return err
			}
			r := &xmlReport{Kind: kindDomainElement, Valid: true, Errors: []string{}, Interfaces: []xmlChain{}}
			for _, ic := range cfg.Interfaces {
				r.Interfaces = append(r.Interfaces, xmlChain{MAC: macString(ic.MAC), Alias: ic.Alias, Filters: nonNil(ic.Filters)})
			}
			return a.emit(struct {
				Interfaces []xmlChain `json:"interfaces"`
			}{r.Interfaces}, func(w io.Writer) error {
				_, err := w.Write(out)
				return err
			})
		}),
	}
	lf.add(cmd)
	cmd.Flags().BoolVar(&config, "config", false, "read the persistent definition (next boot)")
	cmd.Flags().BoolVar(&live, "live", false, "read the running domain")
	return cmd
}

func (a *app) xmlSetCommand() *cobra.Command {
	var (
		lf                  libvirtFlags
		config, live, clear bool
	)
	cmd := &cobra.Command{
		Use:   "set DOMAIN FILE|-|--clear",
		Short: "Store (or --clear) the vnicfilter configuration of a domain",
		Long: `Set stores the vnicfilter configuration read from FILE ("-" for
standard input) in DOMAIN's <metadata>, replacing the one there
(virDomainSetMetadata, as 'virsh metadata DOMAIN ` + domainxml.Namespace + `
--key vnicfilter --set'). FILE holds the vnicfilter:filters element with
interface entries (what 'vfctl xml get' prints) or a whole domain XML, of
which the element in <metadata> is taken.

FILE is first checked as 'vfctl xml validate' does (against filterd's
filters when it runs, else shape only, with a note), and its entries must
match interfaces of DOMAIN as defined in each scope written. Nothing is
changed if it is invalid (exit 5).

--config changes the persistent definition (the next boot), --live the
running domain (filterd's libvirt watcher applies the change at once);
give both for both. With neither, set changes the persistent definition of
a persistent domain and, if the domain runs, the running one too.

--clear removes the configuration instead (no FILE): the domain's
interfaces are no longer filtered from the next start (--config) or at
once (--live).

It talks to libvirtd on --connect (default qemu:///system, or
` + LibvirtURIEnv + `; local URIs only) or on --libvirt-socket; --timeout
bounds the connection. It prints the scopes it changed and exits 4 if the
domain does not exist.`,
		Example: `  vfctl xml set web01 filters.xml
  vfctl xml get web01 --config | sed 's/rate" value="5/rate" value="10/' | vfctl xml set web01 - --config
  vfctl xml set web01 filters.xml --live       # the running domain only
  vfctl xml set web01 --clear`,
		Args: args("DOMAIN", "[FILE]"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			switch {
			case clear && len(args) > 1:
				return usagef("set: --clear takes no FILE")
			case !clear && len(args) < 2:
				return usagef("set: missing FILE (or --clear)")
			}
			domain := args[0]
			var (
				value []byte
				r     *xmlReport
				name  string
			)
			if !clear {
				var data []byte
				var err error
				name, data, err = readXMLFile(args[1])
				if err != nil {
					return err
				}
				r = a.checkXML(ctx, data)
				if err := invalidXML(name, r); err != nil {
					return err
				}
				switch r.Kind {
				case kindNetwork, kindNetworkElement:
					return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: portgroup defaults belong in a network's XML, not in domain %s", name, domain),
						hint: "edit the network with 'virsh net-edit NETWORK'; see docs/domain-xml.md"}
				case kindDomain:
					if r.cfg == nil {
						return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: no vnicfilter:filters element in the domain's <metadata>", name),
							hint: "to remove the configuration use 'vfctl xml set " + domain + " --clear'"}
					}
				}
				if value, err = domainxml.MarshalMetadata(r.cfg); err != nil {
					return err
				}
			}
			l, err := a.dialLibvirt(&lf)
			if err != nil {
				return err
			}
			defer l.Disconnect()
			dom, err := l.DomainLookupByName(domain)
			if err != nil {
				return libvirtError(domain, err)
			}
			flags := libvirt.DomainModificationImpact(0)
			if config {
				flags |= libvirt.DomainAffectConfig
			}
			if live {
				flags |= libvirt.DomainAffectLive
			}
			if flags == 0 {
				persistent, err := l.DomainIsPersistent(dom)
				if err != nil {
					return libvirtError(domain, err)
				}
				active, err := l.DomainIsActive(dom)
				if err != nil {
					return libvirtError(domain, err)
				}
				if persistent == 1 {
					flags |= libvirt.DomainAffectConfig
				}
				if active == 1 {
					flags |= libvirt.DomainAffectLive
				}
			}
			if !clear {
				// The entries must match the domain's interfaces in every
				// scope written, as the hook will check at the next start.
				for _, s := range []struct {
					flag  libvirt.DomainModificationImpact
					xml   libvirt.DomainXMLFlags
					label string
				}{{libvirt.DomainAffectConfig, libvirt.DomainXMLInactive, "persistent definition"}, {libvirt.DomainAffectLive, 0, "running domain"}} {
					if flags&s.flag == 0 {
						continue
					}
					desc, err := l.DomainGetXMLDesc(dom, s.xml)
					if err != nil {
						return libvirtError(domain, err)
					}
					d, err := domainxml.Parse([]byte(desc))
					if err != nil {
						return fmt.Errorf("domain %s: read its XML: %w", domain, err)
					}
					d.Config = r.cfg
					if _, err := d.Chains(nil); err != nil {
						return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: invalid for the %s of %s: %v", name, s.label, domain, err),
							hint: "'virsh domiflist " + domain + "' lists its interfaces; entries match by mac or alias (ua-…)"}
					}
				}
			}
			var meta, key libvirt.OptString
			if !clear {
				meta, key = libvirt.OptString{string(value)}, libvirt.OptString{domainxml.Prefix}
			}
			if err := l.DomainSetMetadata(dom, int32(libvirt.DomainMetadataElement), meta, key, libvirt.OptString{domainxml.Namespace}, flags); err != nil {
				return libvirtError(domain, err)
			}
			if a.output == "json" {
				return a.emit(struct {
					Domain string `json:"domain"`
					Config bool   `json:"config"`
					Live   bool   `json:"live"`
					Clear  bool   `json:"clear"`
				}{domain, flags&libvirt.DomainAffectConfig != 0, flags&libvirt.DomainAffectLive != 0, clear}, nil)
			}
			var scopes []string
			if flags&libvirt.DomainAffectConfig != 0 {
				scopes = append(scopes, "persistent definition")
			}
			if flags&libvirt.DomainAffectLive != 0 {
				scopes = append(scopes, "running domain")
			}
			verb := "set"
			if clear {
				verb = "removed"
			}
			fmt.Fprintf(a.stdout, "domain %s: vnicfilter configuration %s (%s)\n", domain, verb, strings.Join(scopes, " and "))
			return nil
		}),
	}
	lf.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&config, "config", false, "change the persistent definition (next boot)")
	f.BoolVar(&live, "live", false, "change the running domain (applied at once by filterd's watcher)")
	f.BoolVar(&clear, "clear", false, "remove the configuration instead of setting it")
	return cmd
}
