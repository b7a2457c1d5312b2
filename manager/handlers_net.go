package manager

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/model"
	"github.com/vnicfilter/vnicfilter/manager/store"
)

// --- segments and encryptions ---
//
// They are stored and validated as groups and assignments are: the
// handlers only move them between the wire and the configuration; the
// desired state they imply (encap and encrypt in the chains, the host
// documents) is computed by model.Desired.

func (s *Server) listSegments(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, valuesOf(s.view.snapshot().cfg.Segments))
}

func (s *Server) getSegment(w http.ResponseWriter, r *http.Request) error {
	sg, ok := s.view.snapshot().cfg.Segments[r.PathValue("name")]
	if !ok {
		return notFound("no segment %q", r.PathValue("name"))
	}
	return writeJSON(w, http.StatusOK, sg)
}

func (s *Server) putSegment(w http.ResponseWriter, r *http.Request) error {
	var sg api.Segment
	if err := decode(r, &sg); err != nil {
		return err
	}
	name, err := pathName(r, "segment", sg.Name)
	if err != nil {
		return err
	}
	sg.Name, sg.Revision = name, 0
	rev, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		c.Segments[name] = sg
		return []store.Op{store.Put(prefixSegments+name, mustJSON(sg))}, nil
	})
	if err != nil {
		return err
	}
	sg.Revision = rev
	return writeJSON(w, http.StatusOK, sg)
}

func (s *Server) deleteSegment(w http.ResponseWriter, r *http.Request) error {
	return s.deleteObject(w, r, "segment", prefixSegments,
		func(c *model.Config) map[string]bool { return keysOf(c.Segments) },
		func(c *model.Config, n string) { delete(c.Segments, n) })
}

func (s *Server) listEncryptions(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, valuesOf(s.view.snapshot().cfg.Encryptions))
}

func (s *Server) getEncryption(w http.ResponseWriter, r *http.Request) error {
	e, ok := s.view.snapshot().cfg.Encryptions[r.PathValue("name")]
	if !ok {
		return notFound("no encryption %q", r.PathValue("name"))
	}
	return writeJSON(w, http.StatusOK, e)
}

func (s *Server) putEncryption(w http.ResponseWriter, r *http.Request) error {
	var e api.Encryption
	if err := decode(r, &e); err != nil {
		return err
	}
	name, err := pathName(r, "encryption", e.Name)
	if err != nil {
		return err
	}
	e.Name, e.Revision = name, 0
	rev, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		c.Encryptions[name] = e
		return []store.Op{store.Put(prefixEncryptions+name, mustJSON(e))}, nil
	})
	if err != nil {
		return err
	}
	e.Revision = rev
	return writeJSON(w, http.StatusOK, e)
}

func (s *Server) deleteEncryption(w http.ResponseWriter, r *http.Request) error {
	return s.deleteObject(w, r, "encryption", prefixEncryptions,
		func(c *model.Config) map[string]bool { return keysOf(c.Encryptions) },
		func(c *model.Config, n string) { delete(c.Encryptions, n) })
}

// --- the host's network facts in its inventory ---

// checkUnicast refuses what cannot be the address of a host on the
// underlay: the unspecified, multicast and broadcast addresses, a zone
// (other hosts cannot use it) and IPv4-mapped IPv6 (a VXLAN tunnel's
// family is the address's).
func checkUnicast(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("has a zone (%%%s): give an address other hosts can reach", a.Zone())
	case a.Is4In6():
		return fmt.Errorf("is IPv4-mapped: write it as IPv4 (%s)", a.Unmap())
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("is not a unicast address")
	}
	return nil
}

// checkInventoryNet validates the host's underlay address and tunnel.
func checkInventoryNet(inv api.Inventory) error {
	if inv.Underlay != "" {
		a, err := netip.ParseAddr(inv.Underlay)
		if err == nil {
			err = checkUnicast(a)
		} else {
			err = fmt.Errorf("is not an IP address")
		}
		if err != nil {
			return fmt.Errorf("%w: underlay: %q %v", model.ErrInvalid, inv.Underlay, err)
		}
	}
	if t := inv.Tunnel; t != nil {
		key, err := base64.StdEncoding.DecodeString(t.PublicKey)
		switch {
		case err != nil:
			return fmt.Errorf("%w: tunnel.public_key: %q is not base64: %v", model.ErrInvalid, t.PublicKey, err)
		case len(key) != 32:
			return fmt.Errorf("%w: tunnel.public_key: %d bytes, want 32 (a Curve25519 public key)", model.ErrInvalid, len(key))
		case string(key) == string(make([]byte, 32)):
			return fmt.Errorf("%w: tunnel.public_key: all zero: not a public key", model.ErrInvalid)
		}
		ap, err := netip.ParseAddrPort(t.Endpoint)
		if err != nil {
			return fmt.Errorf("%w: tunnel.endpoint: %q: want ip:port ([ip]:port for IPv6): %v", model.ErrInvalid, t.Endpoint, err)
		}
		if ap.Port() == 0 {
			return fmt.Errorf("%w: tunnel.endpoint: %q: port 0", model.ErrInvalid, t.Endpoint)
		}
		if err := checkUnicast(ap.Addr()); err != nil {
			return fmt.Errorf("%w: tunnel.endpoint: %q: address %v", model.ErrInvalid, t.Endpoint, err)
		}
	}
	return nil
}

// --- host documents in the status ---

// docStatus compares the host-wide documents the manager wants with the
// ones the agent reported as put into filterd, by name. A desired
// document is in sync when its hash is realized without error; one the
// manager could not build (its Error) is never in sync and shows that
// error. Documents realized but not desired are listed: the manager does
// not manage them on this host (filterd keeps them), so they are in sync
// unless the agent reports an error for them. inSync is true when every
// listed document is.
func docStatus(desired api.HostDocs, realized []api.RealizedDoc) (docs []api.DocStatus, inSync bool) {
	got := map[string]api.RealizedDoc{}
	for _, rd := range realized {
		got[rd.Name] = rd
	}
	inSync = true
	want := desired.Docs()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		d := want[name]
		rd, ok := got[name]
		delete(got, name)
		ds := api.DocStatus{Name: name, DesiredHash: d.Hash, RealizedHash: rd.Hash, Error: rd.Error}
		switch {
		case d.Error != "":
			ds.Error = d.Error
		case !ok:
			ds.Error = "not reported by the host"
		default:
			ds.InSync = rd.Hash == d.Hash && rd.Error == ""
		}
		inSync = inSync && ds.InSync
		docs = append(docs, ds)
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		rd := got[name]
		ds := api.DocStatus{Name: name, RealizedHash: rd.Hash, Error: rd.Error, InSync: rd.Error == ""}
		inSync = inSync && ds.InSync
		docs = append(docs, ds)
	}
	return docs, inSync
}
