package filterd

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encap"
)

// encapFDBFile, in the state directory, keeps the encap forwarding table
// pushed through the API across restarts.
const encapFDBFile = "encap-fdb.json"

// openEncapFDB restores the pushed encap forwarding table and makes it the
// process's (encap.UseHostFDB), before chains are re-adopted so that they
// keep forwarding with it.
func (d *Daemon) openEncapFDB() error {
	h, err := encap.OpenHostFDB(filepath.Join(d.cfg.StateDir, encapFDBFile))
	if err != nil {
		return err
	}
	encap.UseHostFDB(h)
	return nil
}

// encapRoutes registers /v1/encap/fdb (docs/encap.md, "The table through
// the API").
func (d *Daemon) encapRoutes(mux *http.ServeMux, v string) {
	p := v + "/encap/fdb"
	mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
		vni, ok := encapVNI(w, r.URL.Query().Get("vni"), true)
		if !ok {
			return
		}
		withFDB(w, func(h *encap.HostFDB) (any, error) {
			t, err := h.Table(vni)
			return t, err
		})
	})
	mux.HandleFunc("PUT "+p, func(w http.ResponseWriter, r *http.Request) {
		gen, ok := ifGeneration(w, r)
		if !ok {
			return
		}
		body, err := readDocument(r, "forwarding table", 64<<20)
		if err != nil {
			replyErr(w, err)
			return
		}
		f, err := encap.ParseFIB(body)
		if err != nil {
			var fe *encap.FIBError
			if errors.As(err, &fe) {
				fe.File = "request body"
			}
			encapErr(w, err)
			return
		}
		withFDB(w, func(h *encap.HostFDB) (any, error) { return h.Replace(f, gen) })
	})
	mux.HandleFunc("DELETE "+p, func(w http.ResponseWriter, r *http.Request) {
		gen, ok := ifGeneration(w, r)
		if !ok {
			return
		}
		withFDB(w, func(h *encap.HostFDB) (any, error) { return h.Drop(gen) })
	})
	mux.HandleFunc("POST "+p+"/entries", func(w http.ResponseWriter, r *http.Request) {
		gen, ok := ifGeneration(w, r)
		if !ok {
			return
		}
		var t encap.Table
		if !decode(w, r, &t) {
			return
		}
		if t.Generation != 0 {
			replyErr(w, fmt.Errorf("%w: generation: not set in an addition (a precondition goes in ?if_generation=)", ErrBadRequest))
			return
		}
		withFDB(w, func(h *encap.HostFDB) (any, error) { return h.Merge(t, gen) })
	})
	mux.HandleFunc("DELETE "+p+"/entries/{vni}/{mac}", func(w http.ResponseWriter, r *http.Request) {
		vni, ok := encapVNI(w, r.PathValue("vni"), false)
		if !ok {
			return
		}
		gen, ok := ifGeneration(w, r)
		if !ok {
			return
		}
		m, err := net.ParseMAC(r.PathValue("mac"))
		if err != nil || len(m) != 6 {
			encapErr(w, fmt.Errorf("%w: invalid Ethernet address %q", encap.ErrInvalidFIB, r.PathValue("mac")))
			return
		}
		withFDB(w, func(h *encap.HostFDB) (any, error) { return h.DeleteEntry(vni, [6]byte(m), gen) })
	})
	mux.HandleFunc("DELETE "+p+"/segments/{vni}", func(w http.ResponseWriter, r *http.Request) {
		vni, ok := encapVNI(w, r.PathValue("vni"), false)
		if !ok {
			return
		}
		gen, ok := ifGeneration(w, r)
		if !ok {
			return
		}
		withFDB(w, func(h *encap.HostFDB) (any, error) { return h.DeleteSegment(vni, gen) })
	})
}

func withFDB(w http.ResponseWriter, fn func(*encap.HostFDB) (any, error)) {
	h := encap.CurrentHostFDB()
	if h == nil {
		encapErr(w, fmt.Errorf("%w: this daemon keeps no encap table", encap.ErrNoTable))
		return
	}
	out, err := fn(h)
	if err != nil {
		encapErr(w, err)
		return
	}
	reply(w, http.StatusOK, out)
}

// encapVNI parses a VNI (empty: 0 when optional).
func encapVNI(w http.ResponseWriter, s string, optional bool) (uint32, bool) {
	if s == "" && optional {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || n > encap.MaxVNI {
		encapErr(w, fmt.Errorf("%w: VNI %q out of range 1-%d", encap.ErrInvalidFIB, s, encap.MaxVNI))
		return 0, false
	}
	return uint32(n), true
}

// ifGeneration is the request's ?if_generation= (0: none); false when it
// is malformed, answered.
func ifGeneration(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	g, err := queryGeneration(r)
	if err != nil {
		replyErr(w, err)
		return 0, false
	}
	if g == nil {
		return 0, true
	}
	return *g, true
}

// encapErr answers an error of the table with its own codes.
func encapErr(w http.ResponseWriter, err error) {
	var status int
	var code string
	switch {
	case errors.Is(err, encap.ErrInvalidFIB):
		status, code = http.StatusBadRequest, api.CodeInvalidParam
	case errors.Is(err, encap.ErrStaleGeneration):
		status, code = http.StatusConflict, api.CodeStaleGeneration
	case errors.Is(err, encap.ErrNoTable):
		status, code = http.StatusNotFound, api.CodeNoTable
	case errors.Is(err, encap.ErrNoEntry):
		status, code = http.StatusNotFound, api.CodeNoEntry
	default:
		replyErr(w, err)
		return
	}
	reply(w, status, api.Error{Code: code, Message: err.Error()})
}
