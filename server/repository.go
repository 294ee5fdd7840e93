package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"sort"

	"github.com/valyala/fasthttp"
)

// Repository is the model repository's control, as Triton's EXPLICIT
// model-control mode offers it: what the repository holds, and loading or
// unloading a model by name. The composition root implements it over the
// runtime; the server only exposes it.
type Repository interface {
	Index() []RepositoryModel
	// Load loads (or reloads) the model's versions chosen by its version
	// policy, warms them up, then serves them, retiring versions no longer
	// chosen once their requests finish. On error nothing served changes.
	Load(ctx context.Context, name string) error
	// Unload stops serving every version of the model, letting requests in
	// flight finish.
	Unload(ctx context.Context, name string) error
}

// RepositoryModel is one entry of POST /v2/repository/index.
type RepositoryModel struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"` // READY, UNAVAILABLE or LOADING
	Reason  string `json:"reason,omitempty"`
}

// ErrModelNotInRepository is wrapped by Repository.Load for a name the
// repository does not hold (answered 404).
var ErrModelNotInRepository = errors.New("no such model in the repository")

var pathRepository = []byte("/v2/repository/")

// repository routes /v2/repository/index and
// /v2/repository/models/{m}/load|unload.
func (s *Server) repository(ctx *fasthttp.RequestCtx, rest []byte) {
	if !s.authorized(ctx, s.adminToken, true) {
		return
	}
	if s.opts.Repository == nil {
		writeV2Error(ctx, errorf(403, "forbidden", "model control is disabled (--model-control=none)"))
		return
	}
	parts := bytes.Split(rest, []byte{'/'})
	switch {
	case len(parts) == 1 && string(parts[0]) == "index":
		if allowV2(ctx, "POST") {
			writeJSON(ctx, s.repositoryIndex())
		}
	case len(parts) == 3 && string(parts[0]) == "models" && (string(parts[2]) == "load" || string(parts[2]) == "unload"):
		if !allowV2(ctx, "POST") {
			return
		}
		if aerr := s.loadOrUnload(string(parts[1]), string(parts[2]) == "load"); aerr != nil {
			writeV2Error(ctx, aerr)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	default:
		writeV2Error(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(ctx.Path())))
	}
}

// repositoryIndex is the repository's index, by name then version.
func (s *Server) repositoryIndex() []RepositoryModel {
	idx := s.opts.Repository.Index()
	sort.Slice(idx, func(i, j int) bool {
		if idx[i].Name != idx[j].Name {
			return idx[i].Name < idx[j].Name
		}
		return idx[i].Version < idx[j].Version
	})
	if idx == nil {
		idx = []RepositoryModel{}
	}
	return idx
}

// loadOrUnload loads (or reloads) or unloads a model of the repository.
func (s *Server) loadOrUnload(name string, load bool) *apiError {
	var err error
	if load {
		err = s.opts.Repository.Load(context.Background(), name)
	} else {
		err = s.opts.Repository.Unload(context.Background(), name)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrModelNotInRepository):
		return errorf(404, codeModelNotFound, err.Error())
	}
	// Triton answers a failed load with 400: the repository's content, not
	// the server, is at fault.
	return errorf(400, codeBadRequest, err.Error())
}

// token is a bearer token's digest: comparing fixed-length digests in
// constant time leaks neither the token's bytes nor its length.
type token struct {
	set    bool
	digest [sha256.Size]byte
}

func newToken(s string) token {
	if s == "" {
		return token{}
	}
	return token{set: true, digest: sha256.Sum256([]byte(s))}
}

// allows reports whether an Authorization header's value carries the
// token as a bearer token.
func (t token) allows(h []byte) bool {
	const prefix = "Bearer "
	if len(h) > len(prefix) && bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		got := sha256.Sum256(bytes.TrimSpace(h[len(prefix):]))
		return subtle.ConstantTimeCompare(got[:], t.digest[:]) == 1
	}
	return false
}

var errUnauthorized = errorf(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer TOKEN)")

// authorized checks the bearer token when t is set, answering 401 (in the
// protocol's error form when v2) otherwise.
func (s *Server) authorized(ctx *fasthttp.RequestCtx, t token, v2 bool) bool {
	if !t.set {
		return true
	}
	if t.allows(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)) {
		return true
	}
	e := errUnauthorized
	if v2 {
		writeV2Error(ctx, e)
	} else {
		writeError(ctx, e)
	}
	ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="fastinfer"`)
	return false
}
