package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// filterCommand manages the filters filterd knows, including external
// fast-path filters loaded at run time (docs/sdk.md).
func (a *app) filterCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "filter",
		Short: "List, inspect, load and unload filters (external filters: docs/sdk.md)",
		Long: `Filter manages the filters filterd can attach. Built-in filters are part of
filterd; external fast-path filters are an eBPF object built against
sdk/bpf/vnicfilter.h plus a JSON manifest, loaded into the running filterd
without restarting it (docs/sdk.md).`,
		Example: `  vfctl filter list
  vfctl filter info ttlguard
  vfctl filter load ttlguard.json --object ttlguard_bpfel.o
  vfctl filter unload ttlguard`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the registered filters",
		Long: `List shows every filter filterd can attach: built-in ones and external
fast-path filters loaded from a manifest. It changes nothing.`,
		Example: "  vfctl filter list\n  vfctl filter list -o json",
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			fs, err := a.sortedFilters(ctx)
			if err != nil {
				return err
			}
			return a.emit(fs, func(w io.Writer) error { return printFilterList(w, fs) })
		}),
	}
	info := &cobra.Command{
		Use:   "info NAME",
		Short: "Show one filter with its parameters",
		Long: `Info shows one filter: version, directions, failure mode, whether it is
built in or external, and its parameters. It changes nothing.`,
		Example: "  vfctl filter info ttlguard",
		Args:    args("NAME"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			fs, err := a.sortedFilters(ctx)
			if err != nil {
				return err
			}
			var names []string
			for _, f := range fs {
				if f.Name == args[0] {
					one := []api.FilterInfo{f}
					return a.emit(f, func(w io.Writer) error {
						if err := printFilters(w, one); err != nil {
							return err
						}
						fmt.Fprintf(w, "\nsource: %s\n", map[bool]string{true: "external (manifest)", false: "built in"}[f.External])
						if p := f.Process; p != nil {
							pid := "-"
							if p.PID != 0 {
								pid = strconv.Itoa(p.PID)
							}
							fmt.Fprintf(w, "process: %s, pid %s, %d restarts, %d instances\n", p.State, pid, p.Restarts, p.Instances)
							if p.LastError != "" {
								fmt.Fprintf(w, "last error: %s\n", p.LastError)
							}
						}
						return nil
					})
				}
				names = append(names, f.Name)
			}
			return &exitError{code: ExitNotFound, msg: fmt.Sprintf("unknown filter %q", args[0]),
				hint: "registered filters: " + dash(strings.Join(names, ", "))}
		}),
	}
	var object string
	load := &cobra.Command{
		Use:   "load MANIFEST.json",
		Short: "Load an external filter into the running filterd",
		Long: `Load sends the manifest and its eBPF object to filterd, which checks the ABI
version, the manifest against the object and has the kernel's verifier
judge the program before registering the filter. On any error nothing
changes. The object is the manifest's "object" field (or NAME.o) beside the
manifest unless --object names it. filterd saves what it loaded and loads
it again when it restarts.

A filter with a slow path ("slowpath": {"command": [...]}) runs as its own
process: a relative program is taken beside the manifest (vfctl sends its
absolute path), filterd starts it, checks its hello and keeps it running
(restarted with backoff if it dies). A slow-path-only filter has no object.`,
		Example: "  vfctl filter load examples/ttlguard/ttlguard.json\n  vfctl filter load ttlguard.json --object build/ttlguard.o\n  vfctl filter load /opt/dnsblock/dnsblock.json      # runs /opt/dnsblock/dnsblock",
		Args:    args("MANIFEST.json"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			mb, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			m, err := sdk.ParseManifest(mb)
			if err != nil {
				return err
			}
			if m.SlowPath != nil && !filepath.IsAbs(m.SlowPath.Command[0]) {
				if mb, err = absoluteCommand(mb, filepath.Dir(args[0]), m.SlowPath.Command[0]); err != nil {
					return err
				}
			}
			var ob []byte
			if !m.SlowOnly() || object != "" {
				path := object
				if path == "" {
					path = filepath.Join(filepath.Dir(args[0]), m.ObjectFile())
				}
				if ob, err = os.ReadFile(path); err != nil {
					return fmt.Errorf("object of filter %s: %w", m.Name, err)
				}
			}
			fi, err := call(ctx, a, func(ctx context.Context) (*api.FilterInfo, error) {
				return a.client.LoadFilter(ctx, api.LoadFilterRequest{Manifest: mb, Object: ob})
			})
			if err != nil {
				return err
			}
			return a.emit(fi, func(w io.Writer) error {
				fmt.Fprintf(w, "loaded %s %s\n", fi.Name, fi.Version)
				return nil
			})
		}),
	}
	load.Flags().StringVar(&object, "object", "", "eBPF object `file` (default: beside the manifest)")
	unload := &cobra.Command{
		Use:   "unload NAME",
		Short: "Unload an external filter no chain uses",
		Long: `Unload removes an external filter from filterd. It is refused while any
chain uses the filter (detach it first) and for built-in filters. A filter
loaded from --filters-dir comes back at the next start unless its files are
removed from there.`,
		Example: "  vfctl filter unload ttlguard",
		Args:    args("NAME"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			_, err := call(ctx, a, func(ctx context.Context) (struct{}, error) {
				return struct{}{}, a.client.UnloadFilter(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.output == "text" {
				fmt.Fprintf(a.stdout, "unloaded %s\n", args[0])
			}
			return nil
		}),
	}
	c.AddCommand(list, info, load, unload)
	return c
}

func (a *app) sortedFilters(ctx context.Context) ([]api.FilterInfo, error) {
	fs, err := call(ctx, a, a.client.Filters)
	if fs == nil {
		fs = []api.FilterInfo{}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs, err
}

func printFilterList(w io.Writer, fs []api.FilterInfo) error {
	tw := table(w)
	row(tw, "NAME", "VERSION", "SOURCE", "DIRECTIONS", "FAST", "SLOW", "FAILMODE")
	for _, f := range fs {
		src := "built-in"
		if f.External {
			src = "external"
		}
		row(tw, f.Name, dash(f.Version), src, dash(f.Directions), yesNo(f.FastPath), yesNo(f.SlowPath), dash(f.FailMode))
	}
	return tw.Flush()
}

// absoluteCommand rewrites the manifest's slowpath.command[0] to an
// absolute path beside the manifest: filterd runs filters loaded through
// the API only by absolute path.
func absoluteCommand(manifest []byte, dir, prog string) ([]byte, error) {
	abs, err := filepath.Abs(filepath.Join(dir, prog))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("slow-path program of the filter: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(manifest, &fields); err != nil {
		return nil, err
	}
	var sp map[string]any
	if err := json.Unmarshal(fields["slowpath"], &sp); err != nil {
		return nil, err
	}
	cmd, _ := sp["command"].([]any)
	if len(cmd) == 0 {
		return nil, fmt.Errorf("slowpath.command is empty")
	}
	cmd[0] = abs
	b, err := json.Marshal(sp)
	if err != nil {
		return nil, err
	}
	fields["slowpath"] = b
	return json.MarshalIndent(fields, "", "  ")
}
