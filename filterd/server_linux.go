package filterd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Version of filterd, set at build time with -ldflags -X.
var Version = "dev"

// maxBody bounds API request bodies.
const maxBody = 1 << 20

// readDocument reads a request body that is a whole document (a policy,
// a peers file, a forwarding table) of at most limit bytes; what names it
// in the error.
func readDocument(r *http.Request, what string, limit int) ([]byte, error) {
	doc, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: request body: %v", ErrBadRequest, err)
	}
	if len(doc) > limit {
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrBadRequest, what, limit)
	}
	return doc, nil
}

// queryGeneration reads ?if_generation= (nil when absent), the
// precondition of a change to a host-wide document.
func queryGeneration(r *http.Request) (*uint64, error) {
	s := r.URL.Query().Get("if_generation")
	if s == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: if_generation %q is not a generation number", ErrBadRequest, s)
	}
	return &n, nil
}

// Handler returns the API's HTTP handler.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	v := "/" + api.Version
	mux.HandleFunc("GET "+v+"/version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, api.VersionInfo{Version: Version, API: api.Version, ABI: sdk.ABIVersion, BPFFSRoot: d.dp.Root(), AttachMode: d.dp.Mode().String()})
	})
	mux.HandleFunc("GET "+v+"/check", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, Check(d.dp.Mode()))
	})
	mux.HandleFunc("GET "+v+"/filters", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, d.FilterInfos())
	})
	mux.HandleFunc("POST "+v+"/filters", d.handleLoadFilter)
	mux.HandleFunc("DELETE "+v+"/filters/{name}", d.handleUnloadFilter)
	mux.HandleFunc("GET "+v+"/vnics", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, d.VNICs())
	})
	mux.HandleFunc("GET "+v+"/vnics/{vnic}", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.VNIC(r.PathValue("vnic"))
		respond(w, out, err)
	})
	mux.HandleFunc("PUT "+v+"/vnics/{vnic}", func(w http.ResponseWriter, r *http.Request) {
		var req api.ChainRequest
		if !decode(w, r, &req) {
			return
		}
		out, err := d.SetChain(r.Context(), r.PathValue("vnic"), req)
		respond(w, out, err)
	})
	mux.HandleFunc("DELETE "+v+"/vnics/{vnic}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, nil, d.Detach(r.Context(), r.PathValue("vnic")))
	})
	mux.HandleFunc("POST "+v+"/vnics/{vnic}/filters", func(w http.ResponseWriter, r *http.Request) {
		var req api.AttachRequest
		if !decode(w, r, &req) {
			return
		}
		out, err := d.Attach(r.Context(), r.PathValue("vnic"), req)
		respond(w, out, err)
	})
	mux.HandleFunc("DELETE "+v+"/vnics/{vnic}/filters/{slot}", func(w http.ResponseWriter, r *http.Request) {
		slot, _, err := slotRequest(r)
		if err != nil {
			replyErr(w, err)
			return
		}
		respond(w, nil, d.DetachSlot(r.Context(), r.PathValue("vnic"), slot))
	})
	mux.HandleFunc("POST "+v+"/vnics/{vnic}/filters/{slot}/reload", d.handleReload)
	mux.HandleFunc("GET "+v+"/vnics/{vnic}/filters/{slot}/inspect", d.handleInspect)
	mux.HandleFunc("POST "+v+"/vnics/{vnic}/filters/{slot}/actions/{action}", d.handleAction)
	mux.HandleFunc("PUT "+v+"/vnics/{vnic}/labels", d.handleSetLabels)
	mux.HandleFunc("GET "+v+"/hidden", func(w http.ResponseWriter, r *http.Request) {
		if d.hidden == nil {
			replyErr(w, fmt.Errorf("%w: filterd runs without a hidden bridge (--hidden-bridge)", sdk.ErrNotSupported))
			return
		}
		reply(w, http.StatusOK, d.hidden.status())
	})
	mux.HandleFunc("GET "+v+"/groups", func(w http.ResponseWriter, r *http.Request) { reply(w, http.StatusOK, d.Groups()) })
	mux.HandleFunc("GET "+v+"/groups/{name}", d.handleGroup)
	mux.HandleFunc("PUT "+v+"/groups/{name}", d.handleSetGroup)
	mux.HandleFunc("DELETE "+v+"/groups/{name}", d.handleDeleteGroup)
	d.registerPolicies(mux, v) // policy documents, labels (policies_linux.go)
	mux.HandleFunc("GET "+v+"/vnics/{vnic}/capture", d.handleCapture)
	mux.HandleFunc("GET "+v+"/vnics/{vnic}/state", d.handleExportState)
	mux.HandleFunc("PUT "+v+"/vnics/{vnic}/state", d.handleImportState)
	d.encryptRoutes(mux, v) // encrypt_api_linux.go
	mux.HandleFunc("POST "+v+"/vnics/{vnic}/state/pull", d.handlePullState)
	mux.HandleFunc("POST "+v+"/migrate/handoff", d.handleHandoff)
	mux.Handle("GET /metrics", d.MetricsHandler())
	d.encapRoutes(mux, v)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("no such endpoint: %s %s (API %s)", r.Method, r.URL.Path, api.Version)})
	})
	return mux
}

// MetricsHandler serves the Prometheus metrics.
func (d *Daemon) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &collector{d: d})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// FilterInfos describes the registered filters, with the state of
// external slow-path processes.
func (d *Daemon) FilterInfos() []api.FilterInfo {
	d.mu.Lock()
	sups := map[string]*slowpath.Supervisor{}
	for name, ef := range d.external {
		if ef.sup != nil {
			sups[name] = ef.sup
		}
	}
	d.mu.Unlock()
	out := []api.FilterInfo{}
	for _, f := range sdk.Filters() {
		fi := filterInfo(f)
		if sup := sups[f.Name]; sup != nil {
			st := sup.Status()
			fi.Process = &api.ProcessStatus{State: st.State, PID: st.PID, Restarts: st.Restarts, LastError: st.LastError, Instances: st.Instances}
		}
		out = append(out, fi)
	}
	return out
}

// Serve serves the API on the unix socket (and metrics on MetricsAddr)
// until ctx is done.
func (d *Daemon) Serve(ctx context.Context) error {
	sock := d.cfg.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another filterd already serves %s", sock)
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return err
	}
	if d.hidden != nil {
		stopHidden, err := d.serveHidden(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = stopHidden() }()
	}
	if d.cfg.Migrate.Listen != "" {
		stopMigrate, err := d.serveMigrate(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = stopMigrate() }()
	}
	// Long-lived requests (captures) end when the server shuts down.
	base, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return base }}
	srv.RegisterOnShutdown(endRequests)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if d.cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", d.cfg.MetricsAddr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("listen for metrics on %s: %w", d.cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", d.MetricsHandler())
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
	}
	d.log.Info("serving", "socket", sock, "metrics", d.cfg.MetricsAddr, "mode", d.dp.Mode(), "bpffs", d.dp.Root())
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if msrv != nil {
		_ = msrv.Shutdown(sctx)
	}
	_ = os.Remove(sock)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		replyErr(w, fmt.Errorf("%w: request body: %v", ErrBadRequest, err))
		return false
	}
	return true
}

func respond(w http.ResponseWriter, v any, err error) {
	if err != nil {
		replyErr(w, err)
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	reply(w, http.StatusOK, v)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errorCode maps an error to its HTTP status and API code.
func errorCode(err error) (int, string) {
	if status, code, ok := externalErrorCode(err); ok {
		return status, code
	}
	switch {
	case errors.Is(err, sdk.ErrUnknownFilter):
		return http.StatusNotFound, api.CodeUnknownFilter
	case errors.Is(err, sdk.ErrInvalidParam):
		return http.StatusBadRequest, api.CodeInvalidParam
	case errors.Is(err, datapath.ErrNoSuchDevice):
		return http.StatusNotFound, api.CodeNoSuchDevice
	case errors.Is(err, datapath.ErrNotAttached), errors.Is(err, ErrNoSuchSlot), errors.Is(err, ErrNoSuchGroup), errors.Is(err, ErrNoSuchPolicy):
		return http.StatusNotFound, api.CodeNotAttached
	case errors.Is(err, datapath.ErrAlreadyAttached):
		return http.StatusConflict, api.CodeAlreadyExists
	case errors.Is(err, ErrSlotTaken):
		return http.StatusConflict, api.CodeSlotTaken
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, api.CodeBadRequest
	case errors.Is(err, ErrBadBundle):
		return http.StatusBadRequest, api.CodeBadState
	case errors.Is(err, sdk.ErrNotSupported):
		return http.StatusNotImplemented, api.CodeNotSupported
	}
	return http.StatusInternalServerError, api.CodeInternal
}

func replyErr(w http.ResponseWriter, err error) {
	status, code := errorCode(err)
	reply(w, status, api.Error{Code: code, Message: err.Error()})
}
