package manager

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/model"
	"github.com/vnicfilter/vnicfilter/manager/store"
)

// Token prefixes: an API bearer token and a join (enrollment) token.
// A token is "<prefix><id>_<secret>"; the store keeps the SHA-256 of the
// secret under the id, never the secret.
const (
	apiTokenPrefix  = "vfm_"
	joinTokenPrefix = "vfj_"
	maxJoinTTL      = 7 * 24 * time.Hour
)

// tokenRecord is a stored token.
type tokenRecord struct {
	api.Token
	Hash string `json:"hash"`
}

func newSecret() (id, secret string) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	var s [32]byte
	if _, err := rand.Read(s[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:]), base64.RawURLEncoding.EncodeToString(s[:])
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// splitToken parses "<prefix><id>_<secret>".
func splitToken(tok, prefix string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && len(id) == 16 && secret != ""
}

// mintToken stores a new token and returns it with its secret.
func (s *Server) mintToken(ctx context.Context, req api.TokenRequest) (api.Token, error) {
	now := time.Now().UTC().Truncate(time.Second)
	id, secret := newSecret()
	t := api.Token{ID: id, Name: req.Name, Role: req.Role, CreatedAt: now}
	prefix, keyPrefix := apiTokenPrefix, prefixTokens
	switch req.Role {
	case api.RoleAdmin, api.RoleReadOnly:
		if req.Host != "" || req.TTL != "" {
			return api.Token{}, badRequest("host and ttl apply to join tokens only")
		}
	case api.RoleJoin:
		prefix, keyPrefix = joinTokenPrefix, prefixJoin
		ttl := time.Hour
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 || d > maxJoinTTL {
				return api.Token{}, badRequest("ttl %q: want a duration between 1s and %s", req.TTL, maxJoinTTL)
			}
			ttl = d
		}
		if req.Host != "" {
			if err := model.CheckName("host", req.Host); err != nil {
				return api.Token{}, err
			}
		}
		t.Host, t.ExpiresAt = req.Host, now.Add(ttl)
	default:
		return api.Token{}, badRequest("role %q: want admin, read-only or join", req.Role)
	}
	if len(req.Name) > 128 {
		return api.Token{}, badRequest("name: at most 128 characters")
	}
	data, err := json.Marshal(tokenRecord{Token: t, Hash: hashSecret(secret)})
	if err != nil {
		return api.Token{}, err
	}
	rev, err := s.st.Txn(ctx, []store.Cond{{Key: keyPrefix + id}}, []store.Op{store.Put(keyPrefix+id, data)})
	if err != nil {
		return api.Token{}, err
	}
	if err := s.view.waitRev(ctx, rev); err != nil {
		return api.Token{}, err
	}
	t.Secret = prefix + id + "_" + secret
	return t, nil
}

// principal is who made a request.
type principal struct {
	// role is api.RoleAdmin or api.RoleReadOnly for a bearer token.
	role string
	// name labels the token (for logs).
	name string
}

// authenticate checks the bearer token of r.
func (s *Server) authenticate(r *http.Request) (principal, *api.Error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return principal{}, &api.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthorized, Message: "no bearer token: send Authorization: Bearer <token> (vfctl mgr --token)"}
	}
	id, secret, ok := splitToken(strings.TrimSpace(tok), apiTokenPrefix)
	if ok {
		if kv, found := s.view.get(prefixTokens + id); found {
			var rec tokenRecord
			if json.Unmarshal(kv.Value, &rec) == nil && subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hashSecret(secret))) == 1 {
				return principal{role: rec.Role, name: rec.Name}, nil
			}
		}
	}
	return principal{}, &api.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthorized, Message: "unknown or revoked token"}
}

// agentHost checks the client certificate of r: signed by the manager CA
// (the TLS layer verified that), issued to an enrolled host, and the
// certificate that host's latest enrollment received.
func (s *Server) agentHost(r *http.Request) (string, *api.Error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", &api.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthorized, Message: "agent endpoints need the client certificate issued at enrollment (mutual TLS)"}
	}
	cert := r.TLS.VerifiedChains[0][0]
	host := cert.Subject.CommonName
	h, ok := s.view.snapshot().cfg.Hosts[host]
	if !ok || h.CertSerial != cert.SerialNumber.Text(16) {
		return "", &api.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthorized, Message: fmt.Sprintf("certificate for host %q is not current (host removed or enrolled again)", host)}
	}
	return host, nil
}

// enroll exchanges a join token for a client certificate. The token is
// deleted in the same transaction that records the host, conditional on
// the token being unchanged: of two concurrent uses, one wins.
func (s *Server) enroll(ctx context.Context, req api.EnrollRequest) (api.EnrollResponse, error) {
	denied := &api.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthorized, Message: "join token invalid, expired or already used: ask an admin for a new one (vfctl mgr token create --role join)"}
	if err := model.CheckName("host", req.Host); err != nil {
		return api.EnrollResponse{}, err
	}
	id, secret, ok := splitToken(req.Token, joinTokenPrefix)
	if !ok {
		return api.EnrollResponse{}, denied
	}
	kv, found, _, err := s.st.Get(ctx, prefixJoin+id)
	if err != nil {
		return api.EnrollResponse{}, err
	}
	var rec tokenRecord
	if !found || json.Unmarshal(kv.Value, &rec) != nil || subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hashSecret(secret))) != 1 {
		return api.EnrollResponse{}, denied
	}
	if time.Now().After(rec.ExpiresAt) {
		// Expired: remove it so it cannot be tried again.
		_, _ = s.st.Txn(ctx, []store.Cond{{Key: kv.Key, ModRev: kv.ModRev}}, []store.Op{store.Delete(kv.Key)})
		return api.EnrollResponse{}, denied
	}
	if rec.Host != "" && rec.Host != req.Host {
		return api.EnrollResponse{}, &api.Error{Status: http.StatusForbidden, Code: api.CodeForbidden, Message: fmt.Sprintf("this join token is for host %q, not %q", rec.Host, req.Host)}
	}
	certPEM, serial, err := s.ca.SignClient([]byte(req.CSR), req.Host)
	if err != nil {
		return api.EnrollResponse{}, badRequest("%v", err)
	}
	host := api.Host{Name: req.Host, EnrolledAt: time.Now().UTC().Truncate(time.Second), CertSerial: serial}
	data, _ := json.Marshal(host)
	rev, err := s.st.Txn(ctx, []store.Cond{{Key: kv.Key, ModRev: kv.ModRev}}, []store.Op{store.Delete(kv.Key), store.Put(prefixHosts+req.Host, data)})
	if errors.Is(err, store.ErrConflict) {
		return api.EnrollResponse{}, denied
	}
	if err != nil {
		return api.EnrollResponse{}, err
	}
	if err := s.view.waitRev(ctx, rev); err != nil {
		return api.EnrollResponse{}, err
	}
	s.log.Info("host enrolled", "host", req.Host, "serial", serial, "token", rec.Name)
	return api.EnrollResponse{Host: req.Host, Certificate: string(certPEM), CA: string(s.ca.PEM)}, nil
}
