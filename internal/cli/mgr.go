package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	mapi "github.com/vnicfilter/vnicfilter/manager/api"
)

// Environment variables that set the defaults of vfctl mgr's flags.
const (
	MgrServerEnv = "VFMANAGER_SERVER"
	MgrTokenEnv  = "VFMANAGER_TOKEN"
	MgrCAEnv     = "VFMANAGER_CA"
)

// mgrApp is `vfctl mgr`: the client side of the management service.
type mgrApp struct {
	a      *app
	server string
	token  string
	ca     string
	client *mapi.Client
}

// connect builds the manager client from the flags.
func (m *mgrApp) connect() (*mapi.Client, error) {
	if m.client != nil {
		return m.client, nil
	}
	if m.server == "" {
		return nil, usagef("no manager: give --server https://HOST:PORT or set %s", MgrServerEnv)
	}
	if m.ca == "" {
		return nil, usagef("no manager CA: give --ca FILE (the manager's DATA-DIR/ca.crt) or set %s", MgrCAEnv)
	}
	ca, err := os.ReadFile(m.ca)
	if err != nil {
		return nil, &exitError{code: ExitNotFound, msg: fmt.Sprintf("read manager CA: %v", err)}
	}
	c, err := mapi.NewClient(mapi.ClientOptions{Server: m.server, Token: m.token, CA: ca, Timeout: m.a.timeout})
	if err != nil {
		return nil, usagef("%v", err)
	}
	m.client = c
	return c, nil
}

// run wraps a manager command: it connects, runs fn and turns manager
// errors into vfctl's exit codes with a hint.
func (m *mgrApp) run(fn func(ctx context.Context, c *mapi.Client, args []string) error) func(*cobra.Command, []string) error {
	return m.a.runE(func(ctx context.Context, args []string) error {
		c, err := m.connect()
		if err != nil {
			return err
		}
		return m.mgrErr(fn(ctx, c, args))
	})
}

// mgrErr maps a manager error to an exit code: 3 unreachable, 4 not
// found, 5 refused input, 1 otherwise (401/403 included, with a hint).
func (m *mgrApp) mgrErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *mapi.Error
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &ae):
		switch ae.Status {
		case 401:
			return &exitError{code: ExitFailure, msg: ae.Message, hint: fmt.Sprintf("give a manager token with --token or %s (the first admin token is in the manager's DATA-DIR/admin.token)", MgrTokenEnv)}
		case 403:
			return &exitError{code: ExitFailure, msg: ae.Message, hint: "ask an admin for an admin token: vfctl mgr token create --role admin"}
		case 404:
			return &exitError{code: ExitNotFound, msg: ae.Message}
		case 400, 409, 422:
			return &exitError{code: ExitBadInput, msg: ae.Message}
		}
		return &exitError{code: ExitFailure, msg: ae.Message}
	case errors.As(err, &oe) && oe.Op == "dial", errors.As(err, &ne) && ne.Timeout():
		return &exitError{code: ExitNoDaemon, msg: fmt.Sprintf("manager %s unreachable: %v", m.server, err), hint: "is vfmanager running there? (vfmanager serve --listen …)"}
	case strings.Contains(err.Error(), "certificate"):
		return &exitError{code: ExitFailure, msg: err.Error(), hint: "--ca must be the manager's own CA certificate (DATA-DIR/ca.crt)"}
	}
	return err
}

func (a *app) mgrCommand() *cobra.Command {
	m := &mgrApp{a: a, server: os.Getenv(MgrServerEnv), token: os.Getenv(MgrTokenEnv), ca: os.Getenv(MgrCAEnv)}
	cmd := &cobra.Command{
		Use:   "mgr",
		Short: "Talk to the management service (vfmanager)",
		Long: `vfctl mgr talks to vfmanager, the management service above all hosts
(docs/manager.md): hosts and the VMs their agents report, tags on VMs,
groups of VMs (static, by tag selector, by name pattern, or including other
groups), firewall policies that name groups, assignments of policies to
groups, overlay segments (a group's VMs in a VXLAN segment across hosts)
and encryptions (traffic between two groups encrypted across hosts). The
manager computes what every host enforces and streams it to the host's
agent.

Connection: --server (or ` + MgrServerEnv + `), the manager CA certificate
--ca (or ` + MgrCAEnv + `; the manager's DATA-DIR/ca.crt) and a bearer
token --token (or ` + MgrTokenEnv + `; the first admin token is in
DATA-DIR/admin.token). Read-only tokens may run every listing; changes
need an admin token.

Exit codes as for vfctl, and: 3 the manager is unreachable, 4 no such
object, 5 the manager refused the change (unknown group, include cycle,
invalid rule, VNI taken, object in use); nothing was stored then.`,
		Example: `  export VFMANAGER_SERVER=https://mgr:8443 VFMANAGER_CA=/var/lib/vfmanager/ca.crt
  export VFMANAGER_TOKEN=$(cat /var/lib/vfmanager/admin.token)
  vfctl mgr token create --role join --host host1     # for the agent of host1
  vfctl mgr hosts
  vfctl mgr tags web01 tier=web env=prod
  vfctl mgr groups set web --selector tier=web
  vfctl mgr groups set db --vms db01,db02
  vfctl mgr policies set db-in db-in.json
  vfctl mgr assign db-in db
  vfctl mgr segment set blue --vni 100 --group web     # web's VMs in VXLAN 100
  vfctl mgr encryption set web-db --from web --to db   # encrypted across hosts
  vfctl mgr status host1                               # desired vs realized`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&m.server, "server", m.server, "manager `url` (https://HOST:PORT; env "+MgrServerEnv+")")
	pf.StringVar(&m.token, "token", m.token, "bearer `token` (env "+MgrTokenEnv+")")
	pf.StringVar(&m.ca, "ca", m.ca, "manager CA certificate `file` (env "+MgrCAEnv+")")
	cmd.AddCommand(m.hostsCommand(), m.statusCommand(), m.desiredCommand(), m.vmsCommand(), m.tagsCommand(),
		m.groupsCommand(), m.policiesCommand(), m.assignCommand(), m.unassignCommand(), m.assignmentsCommand(),
		m.segmentsCommand(), m.segmentCommand(), m.encryptionsCommand(), m.encryptionCommand(), m.tokenCommand())
	return cmd
}

func (m *mgrApp) hostsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "hosts [HOST]",
		Short: "List enrolled hosts, or show one",
		Example: `  vfctl mgr hosts
  vfctl mgr hosts host1 -o json`,
		Long: `List the enrolled hosts with their VM and vNIC counts, the version of
their desired state, the version they report as realized, and whether
their agent holds a stream open on this manager instance.`,
		Args: args("[HOST]"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			var hosts []mapi.Host
			if len(args) == 1 {
				h, err := c.Host(ctx, args[0])
				if err != nil {
					return err
				}
				hosts = []mapi.Host{h}
			} else {
				var err error
				if hosts, err = c.Hosts(ctx); err != nil {
					return err
				}
			}
			var v any = hosts
			if len(args) == 1 {
				v = hosts[0]
			}
			return m.a.emit(v, func(w io.Writer) error {
				tw := table(w)
				row(tw, "HOST", "VMS", "VNICS", "DESIRED", "REALIZED", "CONNECTED", "ENROLLED")
				for _, h := range hosts {
					row(tw, h.Name, h.VMs, h.VNICs, h.DesiredVersion, h.RealizedVersion, h.Connected, h.EnrolledAt.Format("2006-01-02 15:04"))
				}
				return tw.Flush()
			})
		}),
	}
}

func (m *mgrApp) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status HOST",
		Short: "Desired versus realized state of a host",
		Example: `  vfctl mgr status host1
  vfctl mgr status host1 -o json | jq .in_sync`,
		Long: `Compare what the manager wants HOST to enforce with what its agent
reported as enforced, per vNIC, and per host-wide document (the overlay
forwarding table "encap", the WireGuard peers "encrypt_peers" and the
encryption policy "encrypt_policy", when the manager manages them on
HOST). Exit code 0 whether or not it is in sync; read IN-SYNC (or in_sync
with -o json).`,
		Args: args("HOST"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			st, err := c.Status(ctx, args[0])
			if err != nil {
				return err
			}
			return m.a.emit(st, func(w io.Writer) error {
				fmt.Fprintf(w, "host %s: desired version %d, realized %d, in sync: %v, agent connected: %v\n", st.Host, st.DesiredVersion, st.RealizedVersion, st.InSync, st.Connected)
				tw := table(w)
				row(tw, "VNIC", "VM", "POLICIES", "DESIRED", "REALIZED", "IN-SYNC", "ERROR")
				for _, v := range st.VNICs {
					row(tw, v.VNIC, dash(v.VM), dash(strings.Join(v.Policies, ",")), dash(v.DesiredHash), dash(v.RealizedHash), v.InSync, dash(v.Error))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				return emitDocStatus(w, st.Docs)
			})
		}),
	}
}

func (m *mgrApp) desiredCommand() *cobra.Command {
	var watch bool
	var since int64
	cmd := &cobra.Command{
		Use:   "desired HOST",
		Short: "Show (or follow) the desired state of a host",
		Example: `  vfctl mgr desired host1
  vfctl mgr desired host1 -o json
  vfctl mgr desired host1 --watch --since 42`,
		Long: `Print the desired state the manager computed for HOST: per vNIC, its VM,
the policies merged into its firewall and the chain. With --watch, follow
the same stream the host's agent receives (one JSON event per line) until
Ctrl-C; --since VERSION starts from a version you have.`,
		Args: args("HOST"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			if !watch {
				d, err := c.Desired(ctx, args[0])
				if err != nil {
					return err
				}
				return m.a.emit(d, func(w io.Writer) error {
					fmt.Fprintf(w, "host %s, version %d\n", d.Host, d.Version)
					tw := table(w)
					row(tw, "VNIC", "VM", "POLICIES", "CHAIN", "HASH")
					for _, v := range d.VNICs {
						var chain []string
						for _, f := range v.Chain {
							chain = append(chain, f.Filter)
						}
						row(tw, v.VNIC, v.VM, dash(strings.Join(v.Policies, ",")), dash(strings.Join(chain, ",")), v.Hash)
					}
					return tw.Flush()
				})
			}
			s, err := c.Watch(ctx, args[0], since)
			if err != nil {
				return err
			}
			defer s.Close()
			enc := json.NewEncoder(m.a.stdout)
			for {
				ev, err := s.Next()
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := enc.Encode(ev); err != nil {
					return err
				}
			}
		}),
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the stream of changes")
	cmd.Flags().Int64Var(&since, "since", -1, "with --watch: the last `version` you have")
	return cmd
}

func (m *mgrApp) vmsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "vms",
		Short: "List the VMs the agents reported, with tags and groups",
		Long: `List every VM the host agents reported, with its host, its vNICs and
their addresses, the tags set on it and the groups it is in now.`,
		Example: `  vfctl mgr vms
  vfctl mgr vms -o json`,
		Args: args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error {
			vms, err := c.VMs(ctx)
			if err != nil {
				return err
			}
			return m.a.emit(vms, func(w io.Writer) error {
				tw := table(w)
				row(tw, "VM", "HOST", "VNICS", "TAGS", "GROUPS")
				for _, vm := range vms {
					var nics []string
					for _, n := range vm.VNICs {
						nics = append(nics, n.Name+"("+strings.Join(n.IPs, ",")+")")
					}
					row(tw, vm.Name, vm.Host, dash(strings.Join(nics, " ")), dash(formatTags(vm.Tags)), dash(strings.Join(vm.Groups, ",")))
				}
				return tw.Flush()
			})
		}),
	}
}

func formatTags(t mapi.Tags) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(t)) {
		kv = append(kv, k+"="+t[k])
	}
	return strings.Join(kv, ",")
}

// parsePairs reads KEY=VALUE arguments.
func parsePairs(what string, args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want KEY=VALUE", what, a)
		}
		out[k] = v
	}
	return out, nil
}

func (m *mgrApp) tagsCommand() *cobra.Command {
	var clear bool
	cmd := &cobra.Command{
		Use:   "tags VM [KEY=VALUE]...",
		Short: "Show a VM's tags, or replace them",
		Long: `Without KEY=VALUE, print VM's tags. With them, replace VM's tags by
exactly those (tags not given are removed); --clear removes all. The VM
need not be running yet: tags set ahead apply when its host reports it.
Groups with a selector follow at once, and so does every host whose
desired state depends on them.`,
		Example: `  vfctl mgr tags web01
  vfctl mgr tags web01 tier=web env=prod
  vfctl mgr tags web01 --clear`,
		Args: args("VM", "[KEY=VALUE]..."),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			vm := args[0]
			var tags mapi.Tags
			var err error
			switch {
			case clear && len(args) > 1:
				return usagef("tags: --clear takes no KEY=VALUE")
			case clear:
				tags, err = c.SetTags(ctx, vm, mapi.Tags{})
			case len(args) > 1:
				var pairs map[string]string
				if pairs, err = parsePairs("tag", args[1:]); err != nil {
					return err
				}
				tags, err = c.SetTags(ctx, vm, pairs)
			default:
				tags, err = c.Tags(ctx, vm)
			}
			if err != nil {
				return err
			}
			return m.a.emit(tags, func(w io.Writer) error {
				for _, k := range slices.Sorted(maps.Keys(tags)) {
					fmt.Fprintf(w, "%s=%s\n", k, tags[k])
				}
				return nil
			})
		}),
	}
	cmd.Flags().BoolVar(&clear, "clear", false, "remove every tag of VM")
	return cmd
}

func (m *mgrApp) groupsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "List, show, set and delete groups of VMs",
		Long: `A group is the union of a static list of VM names (--vms), the VMs whose
tags match a selector (--selector KEY=VALUE, all must match, VALUE "*" for
any), the VMs whose name matches a shell pattern (--glob), and the members
of other groups (--include; no cycles). Firewall rules name groups in
src_groups/dst_groups; they match the addresses of the members' vNICs.`,
		Args: args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listGroups(ctx, c) }),
	}
	var g mapi.Group
	var selector []string
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Create or replace a group",
		Long: `Create group NAME, or replace it whole, from the flags (at least one of
--vms, --selector, --glob, --include). The manager refuses an unknown
group in --include and include cycles; nothing is stored then.`,
		Example: `  vfctl mgr groups set web --selector tier=web
  vfctl mgr groups set db --vms db01,db02 --description "postgres"
  vfctl mgr groups set build --glob 'ci-*'
  vfctl mgr groups set backend --include web,db`,
		Args: args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			sel, err := parsePairs("selector", selector)
			if err != nil {
				return err
			}
			g.Name = args[0]
			if len(sel) > 0 {
				g.Selector = sel
			}
			out, err := c.PutGroup(ctx, g)
			if err != nil {
				return err
			}
			return m.a.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "group %s stored (revision %d)\n", out.Name, out.Revision)
				return err
			})
		}),
	}
	set.Flags().StringSliceVar(&g.VMs, "vms", nil, "static members: VM `names`, comma-separated")
	set.Flags().StringSliceVar(&selector, "selector", nil, "tag selector `KEY=VALUE` (repeatable; all must match)")
	set.Flags().StringVar(&g.NameGlob, "glob", "", "VM name `pattern` (* ? [a-z])")
	set.Flags().StringSliceVar(&g.Include, "include", nil, "other `groups` whose members are included")
	set.Flags().StringVar(&g.Description, "description", "", "free `text`")
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a group's definition and its members now",
		Long: `Print a group's definition and its members resolved now: the VM names
and the addresses of their vNICs, which firewall rules naming the group
match.`,
		Example: `  vfctl mgr groups get web`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			mem, err := c.Members(ctx, args[0])
			if err != nil {
				return err
			}
			var g mapi.Group
			if err := c.Do(ctx, "GET", "/v1/groups/"+args[0], nil, &g); err != nil {
				return err
			}
			return m.a.emit(struct {
				Group   mapi.Group        `json:"group"`
				Members mapi.GroupMembers `json:"members"`
			}{g, mem}, func(w io.Writer) error {
				fmt.Fprintf(w, "group %s: %s\n", g.Name, describeGroup(g))
				fmt.Fprintf(w, "members: %s\naddresses: %s\n", dash(strings.Join(mem.VMs, " ")), dash(strings.Join(mem.Addresses, " ")))
				return nil
			})
		}),
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a group nothing refers to",
		Long: `Delete a group. A group that another group includes, a policy names or
an assignment uses is refused (exit 5) with the list of referrers.`,
		Example: `  vfctl mgr groups delete build`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			return c.DeleteGroup(ctx, args[0])
		}),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List groups",
		Long:    `List groups with what makes up their members.`,
		Example: `  vfctl mgr groups list`,
		Args:    args(),
		RunE:    m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listGroups(ctx, c) }),
	}
	cmd.AddCommand(list, get, set, del)
	return cmd
}

func describeGroup(g mapi.Group) string {
	var parts []string
	if len(g.VMs) > 0 {
		parts = append(parts, "vms "+strings.Join(g.VMs, ","))
	}
	if len(g.Selector) > 0 {
		parts = append(parts, "selector "+formatTags(g.Selector))
	}
	if g.NameGlob != "" {
		parts = append(parts, "name "+g.NameGlob)
	}
	if len(g.Include) > 0 {
		parts = append(parts, "include "+strings.Join(g.Include, ","))
	}
	return strings.Join(parts, " + ")
}

func (m *mgrApp) listGroups(ctx context.Context, c *mapi.Client) error {
	groups, err := c.Groups(ctx)
	if err != nil {
		return err
	}
	return m.a.emit(groups, func(w io.Writer) error {
		tw := table(w)
		row(tw, "GROUP", "MEMBERS BY", "DESCRIPTION")
		for _, g := range groups {
			row(tw, g.Name, describeGroup(g), dash(g.Description))
		}
		return tw.Flush()
	})
}

func (m *mgrApp) policiesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policies",
		Short: "List, show, set and delete firewall policies",
		Long: `A policy is a firewall policy (docs/firewall.md) without "version" and
"groups": its rules name manager groups in src_groups/dst_groups. The
manager checks it with the firewall's own parser and refuses a policy that
names an unknown group or has an invalid rule.`,
		Args: args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listPolicies(ctx, c) }),
	}
	set := &cobra.Command{
		Use:   "set NAME FILE",
		Short: "Create or replace a policy from a JSON file (- for stdin)",
		Long: `FILE holds {"description", "defaults", "non_ip", "rules"} as in a firewall
policy file; unknown keys are refused.`,
		Example: `  cat > db-in.json <<'EOF'
  {"defaults": {"to-vm": "deny"},
   "rules": [{"name": "pg", "direction": "to-vm", "src_groups": ["web"],
              "proto": "tcp", "dst_ports": [5432], "action": "allow"}]}
  EOF
  vfctl mgr policies set db-in db-in.json`,
		Args: args("NAME", "FILE"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			var data []byte
			var err error
			if args[1] == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(args[1])
			}
			if err != nil {
				return loadErr(err)
			}
			var p mapi.Policy
			dec := json.NewDecoder(strings.NewReader(string(data)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&p); err != nil {
				return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: %v", args[1], err)}
			}
			if p.Name != "" && p.Name != args[0] {
				return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s names policy %q, not %q", args[1], p.Name, args[0])}
			}
			p.Name = args[0]
			out, err := c.PutPolicy(ctx, p)
			if err != nil {
				return err
			}
			return m.a.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "policy %s stored (%d rules, revision %d)\n", out.Name, len(out.Rules), out.Revision)
				return err
			})
		}),
	}
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a policy as JSON",
		Long: `Print a policy as the manager stores it (JSON, the shape policies set
reads).`,
		Example: `  vfctl mgr policies get db-in > db-in.json`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			p, err := c.Policy(ctx, args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(m.a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(p)
		}),
	}
	del := &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete a policy no assignment uses",
		Long:    `Delete a policy. A policy an assignment uses is refused (exit 5).`,
		Example: `  vfctl mgr policies delete db-in`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			return c.DeletePolicy(ctx, args[0])
		}),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List policies",
		Long:    `List policies with their rule counts and revisions.`,
		Example: `  vfctl mgr policies list`,
		Args:    args(),
		RunE:    m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listPolicies(ctx, c) }),
	}
	cmd.AddCommand(list, get, set, del)
	return cmd
}

func (m *mgrApp) listPolicies(ctx context.Context, c *mapi.Client) error {
	ps, err := c.Policies(ctx)
	if err != nil {
		return err
	}
	return m.a.emit(ps, func(w io.Writer) error {
		tw := table(w)
		row(tw, "POLICY", "RULES", "REVISION", "DESCRIPTION")
		for _, p := range ps {
			row(tw, p.Name, len(p.Rules), p.Revision, dash(p.Description))
		}
		return tw.Flush()
	})
}

func (m *mgrApp) assignCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "assign POLICY GROUP",
		Short: "Apply a policy to the VMs of a group",
		Long: `Apply POLICY to every VM in GROUP: each of their vNICs gets a firewall
enforcing the merge of all policies assigned to the VM's groups (rules of
all of them, the strictest default). The assignment is named
POLICY-GROUP unless --name says otherwise.`,
		Example: `  vfctl mgr assign db-in db`,
		Args:    args("POLICY", "GROUP"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			n := name
			if n == "" {
				n = args[0] + "-" + args[1]
			}
			out, err := c.PutAssignment(ctx, mapi.Assignment{Name: n, Policy: args[0], Group: args[1]})
			if err != nil {
				return err
			}
			return m.a.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "assignment %s: policy %s -> group %s (revision %d)\n", out.Name, out.Policy, out.Group, out.Revision)
				return err
			})
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "assignment `name` (default POLICY-GROUP)")
	return cmd
}

func (m *mgrApp) unassignCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unassign NAME",
		Short: "Remove an assignment",
		Long: `Remove an assignment: the VMs of its group lose the policy, and their
hosts get the new desired state at once.`,
		Example: `  vfctl mgr unassign db-in-db`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			return c.DeleteAssignment(ctx, args[0])
		}),
	}
}

func (m *mgrApp) assignmentsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "assignments",
		Short:   "List assignments",
		Long:    `List which policy applies to which group.`,
		Example: `  vfctl mgr assignments`,
		Args:    args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error {
			as, err := c.Assignments(ctx)
			if err != nil {
				return err
			}
			return m.a.emit(as, func(w io.Writer) error {
				tw := table(w)
				row(tw, "ASSIGNMENT", "POLICY", "GROUP", "REVISION")
				for _, x := range as {
					row(tw, x.Name, x.Policy, x.Group, x.Revision)
				}
				return tw.Flush()
			})
		}),
	}
}

func (m *mgrApp) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke tokens (admin)",
		Long: `Tokens: admin and read-only API tokens for people and scripts, and
single-use join tokens for host agents. Admin only.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var req mapi.TokenRequest
	create := &cobra.Command{
		Use:   "create --role admin|read-only|join",
		Short: "Mint a token; its secret is printed once",
		Long: `Mint an API token (admin or read-only) or a join token: a single-use
enrollment token a host's agent exchanges for its client certificate
(--host binds it to one host name; --ttl, default 1h, at most 168h).
The manager keeps only a hash: the secret is printed once, on stdout.`,
		Example: `  vfctl mgr token create --role read-only --name auditor
  vfctl mgr token create --role join --host host1 --ttl 30m`,
		Args: args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error {
			t, err := c.CreateToken(ctx, req)
			if err != nil {
				return err
			}
			return m.a.emit(t, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, t.Secret)
				return err
			})
		}),
	}
	create.Flags().StringVar(&req.Role, "role", "", "`role`: admin, read-only or join (required)")
	create.Flags().StringVar(&req.Name, "name", "", "label: who holds the token")
	create.Flags().StringVar(&req.Host, "host", "", "join tokens: the only `host` name it may enroll")
	create.Flags().StringVar(&req.TTL, "ttl", "", "join tokens: validity (`duration`, default 1h)")
	_ = create.MarkFlagRequired("role")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (no secrets)",
		Long: `List tokens: id, role, label, bound host and expiry of join tokens.
Secrets are never shown again.`,
		Example: `  vfctl mgr token list`,
		Args:    args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error {
			ts, err := c.Tokens(ctx)
			if err != nil {
				return err
			}
			return m.a.emit(ts, func(w io.Writer) error {
				tw := table(w)
				row(tw, "ID", "ROLE", "NAME", "HOST", "CREATED", "EXPIRES")
				for _, t := range ts {
					exp := "-"
					if !t.ExpiresAt.IsZero() {
						exp = t.ExpiresAt.Format("2006-01-02 15:04")
					}
					row(tw, t.ID, t.Role, dash(t.Name), dash(t.Host), t.CreatedAt.Format("2006-01-02 15:04"), exp)
				}
				return tw.Flush()
			})
		}),
	}
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a token",
		Long:    `Revoke a token by id (vfctl mgr token list): it stops working at once.`,
		Example: `  vfctl mgr token revoke 3f2a9c0d1e2b4a5c`,
		Args:    args("ID"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			return c.DeleteToken(ctx, args[0])
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
