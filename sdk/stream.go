package sdk

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
)

// StreamPrefix marks a parameter value naming an in-process stream rather
// than a file: "stream:<id>".
const StreamPrefix = "stream:"

var streams = struct {
	sync.Mutex
	m map[string]io.WriteCloser
}{m: map[string]io.WriteCloser{}}

// RegisterStream makes w available to filters as "stream:<id>" (e.g. the
// mirror's sink), for an API response that streams what a filter writes
// (`vfctl capture`). The returned function withdraws it.
func RegisterStream(w io.WriteCloser) (name string, unregister func()) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	streams.Lock()
	streams.m[id] = w
	streams.Unlock()
	return StreamPrefix + id, func() {
		streams.Lock()
		delete(streams.m, id)
		streams.Unlock()
	}
}

// OpenStream returns the stream a "stream:<id>" value names.
func OpenStream(name string) (io.WriteCloser, error) {
	id, ok := strings.CutPrefix(name, StreamPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a stream name", ErrInvalidParam, name)
	}
	streams.Lock()
	defer streams.Unlock()
	w, ok := streams.m[id]
	if !ok {
		return nil, fmt.Errorf("%w: no stream %q (streams exist only for the API request that opened them)", ErrInvalidParam, name)
	}
	return w, nil
}
