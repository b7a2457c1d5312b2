package filterd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// The encrypt filter's host-wide documents filterd's API manages — the
// peers document (peers=api) and the policy document (policy=api) — share
// one life cycle: GET answers the document as accepted and its
// generation; PUT checks it (the filter's parser and what a reload would
// refuse), optionally as a compare-and-swap on the generation, writes it
// atomically, reloads every instance that reads it and, if one refuses,
// puts the previous file back and reloads again.

// errGenerationMismatch: ?if_generation= is not the current generation.
var errGenerationMismatch = errors.New("generation mismatch")

// encryptMu serializes changes of the managed documents: a peers PUT
// checks the policy document and the other way round.
var encryptMu sync.Mutex

// encryptDoc is one managed document.
type encryptDoc struct {
	// param is the instance parameter that selects the document with
	// "api" ("peers", "policy"); it names the document in messages and
	// in the API's path.
	param string
	// file is where the document lives; its generation is beside it
	// (metaFile).
	file string
	// check refuses a document before anything is written: errors
	// wrapping sdk.ErrInvalidParam name line, column and field.
	check func(doc []byte) error
}

// docMeta is the sidecar of a managed document: the document keeps the
// file's schema, which has no room for it.
type docMeta struct {
	Generation uint64    `json:"generation"`
	Updated    time.Time `json:"updated"`
}

// metaFile is peers.meta.json beside peers.json.
func (e encryptDoc) metaFile() string { return strings.TrimSuffix(e.file, ".json") + ".meta.json" }

func (e encryptDoc) readMeta() (docMeta, error) {
	var m docMeta
	b, err := os.ReadFile(e.metaFile())
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return m, fmt.Errorf("encrypt %s generation %s: %w", e.param, e.metaFile(), err)
	}
	return m, nil
}

// bump records one more accepted document.
func (e encryptDoc) bump(m docMeta) (docMeta, error) {
	m.Generation++
	m.Updated = time.Now().UTC()
	b, _ := json.Marshal(m)
	if err := writeFileAtomic(e.metaFile(), b); err != nil {
		return m, fmt.Errorf("write %s: %w", e.metaFile(), err)
	}
	return m, nil
}

func (d *Daemon) handleSetEncryptDocument(w http.ResponseWriter, r *http.Request, e encryptDoc) {
	for k, vs := range r.URL.Query() {
		if k != "if_generation" || len(vs) != 1 {
			replyErr(w, fmt.Errorf("%w: query parameter %q: the only one is if_generation, once", ErrBadRequest, k))
			return
		}
	}
	ifGen, err := queryGeneration(r)
	if err != nil {
		replyErr(w, err)
		return
	}
	doc, err := readDocument(r, e.param+" document", maxBody)
	if err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.setEncryptDocument(r.Context(), e, doc, ifGen)
	if errors.Is(err, errGenerationMismatch) {
		reply(w, http.StatusConflict, api.Error{Code: api.CodeGenerationMismatch, Message: err.Error()})
		return
	}
	respond(w, out, err)
}

// encryptDocument answers GET /v1/encrypt/{peers,policy}.
func (d *Daemon) encryptDocument(e encryptDoc) (*api.EncryptDocument, error) {
	encryptMu.Lock()
	defer encryptMu.Unlock()
	m, err := e.readMeta()
	if err != nil {
		return nil, err
	}
	out := &api.EncryptDocument{Generation: m.Generation, Updated: m.Updated, File: e.file, Document: json.RawMessage("null")}
	b, err := os.ReadFile(out.File)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", out.File, err)
	case !json.Valid(b):
		return nil, fmt.Errorf("%s is not JSON (edited by hand?): PUT a %s document to replace it", out.File, e.param)
	default:
		out.Document = b
	}
	return out, nil
}

// setEncryptDocument answers PUT /v1/encrypt/{peers,policy}: doc is
// checked (e.check: a refusal changes nothing), written as e.file and
// every encrypt instance with <param>=api reloaded. One an instance
// refuses at reload (e.g. the policy names a peer a peers document
// removes) is rolled back: the previous file is put back and the
// instances reloaded with it. ifGeneration, when not nil, must be the
// current generation.
func (d *Daemon) setEncryptDocument(ctx context.Context, e encryptDoc, doc []byte, ifGeneration *uint64) (*api.EncryptDocumentResult, error) {
	encryptMu.Lock()
	defer encryptMu.Unlock()
	m, err := e.readMeta()
	if err != nil {
		return nil, err
	}
	if ifGeneration != nil && *ifGeneration != m.Generation {
		return nil, fmt.Errorf("%w: the %s document is at generation %d, not %d (read it again and retry)", errGenerationMismatch, e.param, m.Generation, *ifGeneration)
	}
	if err := e.check(doc); err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	out := &api.EncryptDocumentResult{File: e.file, Reloaded: []api.Reloaded{}}
	var users []encryptSlot
	for _, s := range d.encryptSlotsLocked() {
		switch v := s.in.inst.Params.String(e.param); {
		case s.uses(e.param):
			users = append(users, s)
		case v == "":
			out.Unmanaged = append(out.Unmanaged, api.Reloaded{VNIC: s.vnic, Slot: s.slot, Filter: encrypt.Name, Error: "has no " + e.param + " parameter"})
		default:
			out.Unmanaged = append(out.Unmanaged, api.Reloaded{VNIC: s.vnic, Slot: s.slot, Filter: encrypt.Name, Error: "reads " + e.param + "=" + v})
		}
	}
	err = swapDocument(e.file, e.param+" document", doc, func() (string, func() error, error) {
		for i, s := range users {
			r, err := reloadEncrypt(s)
			if err == nil {
				out.Reloaded = append(out.Reloaded, r)
				continue
			}
			d.log.Error("encrypt "+e.param+" document refused at reload; rolling back", "vnic", s.vnic, "slot", s.slot, "err", err)
			// Every instance reloaded with the previous document: those
			// already switched, and the one that refused in case it took
			// part of the change.
			revert := func() error {
				var errs []error
				for _, s2 := range users[:i+1] {
					if _, err := reloadEncrypt(s2); err != nil {
						errs = append(errs, fmt.Errorf("%s slot %d: %w", s2.vnic, s2.slot, err))
					}
				}
				return errors.Join(errs...)
			}
			return fmt.Sprintf("encrypt on %s slot %d", s.vnic, s.slot), revert, err
		}
		return "", nil, nil
	})
	if err != nil {
		return nil, err
	}
	if m, err = e.bump(m); err != nil {
		return nil, err
	}
	out.Generation = m.Generation
	d.log.Info("encrypt "+e.param+" document replaced", "generation", m.Generation, "reloaded", len(out.Reloaded), "unmanaged", len(out.Unmanaged))
	return out, nil
}

// reloadEncrypt reloads one encrypt instance with its own parameters:
// it re-reads the files (the whole host's tunnel) and rewrites its routes.
func reloadEncrypt(s encryptSlot) (api.Reloaded, error) {
	r := api.Reloaded{VNIC: s.vnic, Slot: s.slot, Filter: encrypt.Name}
	start := time.Now()
	rl, ok := s.in.fast.(sdk.Reloader)
	if !ok {
		return r, fmt.Errorf("%w: encrypt instance cannot reload", sdk.ErrNotSupported)
	}
	err := rl.Reload(s.in.inst.Params)
	r.Seconds = time.Since(start).Seconds()
	if err != nil {
		r.Error = err.Error()
	}
	return r, err
}

// swapDocument replaces file with doc (0600, directory 0700, atomically)
// and runs apply. When apply fails (who: what refused it), the previous
// file is put back — or removed, if there was none — and apply's revert
// runs with it in place. The error then wraps apply's and says whether
// the previous document is back in force.
func swapDocument(file, what string, doc []byte, apply func() (who string, revert func() error, err error)) error {
	old, err := os.ReadFile(file)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if err := writeFileAtomic(file, doc); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	who, revert, err := apply()
	if err == nil {
		return nil
	}
	var back []error
	if existed {
		back = append(back, writeFileAtomic(file, old))
	} else if rerr := os.Remove(file); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		back = append(back, rerr)
	}
	if revert != nil {
		back = append(back, revert())
	}
	if berr := errors.Join(back...); berr != nil {
		return fmt.Errorf("%s refused the %s: %w; rolling back to the previous one failed: %v", who, what, err, berr)
	}
	return fmt.Errorf("%s refused the %s (the previous one is back in force): %w", who, what, err)
}
