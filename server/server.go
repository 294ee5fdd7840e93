// Package server is fastinfer's HTTP front end on fasthttp: image upload
// classification, health, model metadata and Prometheus metrics. It holds no
// native code; models arrive as plain values (see Model).
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"fastinfer/internal/tlsconf"
)

// Options configure a Server. Zero values give working defaults.
type Options struct {
	MaxBodyBytes int           // request body limit; 0 = 32 MiB
	MaxImages    int           // images per request; 0 = 64
	ReadTimeout  time.Duration // a whole request, headers and body (slow clients)
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	// MaxConnsPerIP caps concurrent connections from one client address
	// (0 = no cap).
	MaxConnsPerIP int
	// UnusedConnGrace is how long Shutdown lets a connection that has not
	// sent a byte live before closing it (0 = 5 s, net/http's figure: a
	// request may be on its way on a connection just opened).
	UnusedConnGrace time.Duration
	Logger          *slog.Logger
	// Registerer receives the server's metrics; nil = a fresh registry,
	// served at /metrics.
	Registry *prometheus.Registry
	// Version and Runtime are reported by GET /v2.
	Version string
	Runtime string
	// Repository, when set, is exposed at /v2/repository/ (model control).
	Repository Repository
	// AdminToken, when set, is required as a bearer token by the
	// repository endpoints; APIToken, when set, by the inference ones.
	AdminToken string
	APIToken   string
	// PredictionLog, when set, receives every answered image; images
	// themselves are logged when they are at most LogImageBytes (0: never).
	PredictionLog PredictionLog
	LogImageBytes int
	// ReportsDir, when set, is served at /reports/: an index of the
	// report-YYYYMMDD-HHMMSS.html files there and those files.
	ReportsDir string
	// AllowClientShm serves Triton's system shared memory extension
	// (shm.go): clients on this host may register shared memory objects
	// for the server to map, and pass tensors through them.
	AllowClientShm bool
	// CUDAShm, with AllowClientShm, serves Triton's CUDA shared memory
	// extension too: it opens the cudaIpcMemHandles clients register.
	CUDAShm CUDAMemory
	// TLS, when set, makes both the HTTP and the gRPC listener speak TLS
	// with it. ClientCertRequired then makes every endpoint but the
	// health checks (which Kubernetes' probes reach without a
	// certificate) answer only clients whose certificate verified against
	// TLS.ClientCAs: 401 client_certificate_required, gRPC
	// Unauthenticated.
	TLS                *tls.Config
	ClientCertRequired bool
}

// Server answers fastinfer's HTTP API.
type Server struct {
	opts    Options
	log     *slog.Logger
	models  registry
	ready   atomic.Bool
	metrics *metrics
	http    *fasthttp.Server
	handler fasthttp.RequestHandler
	// The gRPC API (grpc.go), and its grpc.health.v1 service, which
	// follows SetReady.
	grpc       *grpc.Server
	grpcHealth *health.Server
	// stopping is closed when Shutdown begins: it ends health watches.
	stopping     chan struct{}
	stoppingOnce sync.Once

	adminToken, apiToken token
	started              time.Time

	shm shmRegistry // registered shared memory regions

	connsMu sync.Mutex
	conns   []*connListener // one per Serve
}

// New builds a Server with no models; add them with AddModel and call
// SetReady once every model has loaded and warmed up.
func New(o Options) *Server {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 32 << 20
	}
	if o.MaxImages <= 0 {
		o.MaxImages = 64
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.UnusedConnGrace <= 0 {
		o.UnusedConnGrace = 5 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := &Server{opts: o, log: o.Logger, adminToken: newToken(o.AdminToken), apiToken: newToken(o.APIToken), started: time.Now()}
	s.shm.enabled = o.AllowClientShm
	s.shm.cuda = o.CUDAShm
	s.metrics = newMetrics(o.Registry)
	if o.AllowClientShm {
		o.Registry.MustRegister(s.shm.collectors()...)
	}
	s.handler = s.recoverer(s.route)
	s.http = &fasthttp.Server{
		Handler:            s.handler,
		ErrorHandler:       s.protocolError,
		Name:               "fastinfer",
		MaxRequestBodySize: o.MaxBodyBytes,
		ReadTimeout:        o.ReadTimeout,
		WriteTimeout:       o.WriteTimeout,
		IdleTimeout:        o.IdleTimeout,
		// Large request headers are not needed by any endpoint.
		ReadBufferSize:                readBufferSize,
		NoDefaultServerHeader:         false,
		NoDefaultDate:                 false,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		// Multipart bodies are parsed by the classify handler, so malformed
		// ones get our JSON error.
		DisablePreParseMultipartForm: true,
		Logger:                       fasthttpLogger{o.Logger},
	}
	s.stopping = make(chan struct{})
	s.grpcHealth = health.NewServer()
	s.grpcHealth.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.grpc = s.grpcServer()
	return s
}

// AddModel starts serving m. If it replaces a served model of the same
// name and version, that one is returned: new requests already go to m;
// Drain it before closing it.
func (s *Server) AddModel(m *Model) (replaced *Model) {
	m.versionLabel = strconv.Itoa(m.Version)
	m.preprocessObs = s.metrics.preprocess.WithLabelValues(m.Name, m.versionLabel)
	m.imagesCtr = s.metrics.images.WithLabelValues(m.Name, m.versionLabel)
	m.confidenceObs = s.metrics.confidence.WithLabelValues(m.Name, m.versionLabel)
	m.classCtrs = make([]prometheus.Counter, m.Classes)
	for i := range m.classCtrs {
		class := strconv.Itoa(i)
		if i < len(m.Labels) && m.Labels[i] != "" {
			class = m.Labels[i]
		}
		m.classCtrs[i] = s.metrics.predicted.WithLabelValues(m.Name, m.versionLabel, class)
	}
	old := s.models.add(m)
	if old != nil && old.Provider != m.Provider {
		s.metrics.modelInfo.DeleteLabelValues(old.Name, old.versionLabel, old.Provider)
	}
	s.metrics.modelInfo.WithLabelValues(m.Name, m.versionLabel, m.Provider).Set(1)
	return old
}

// RemoveModel stops serving a version and returns it (nil if it was not
// served); Drain it before closing it.
func (s *Server) RemoveModel(name string, version int) *Model {
	m := s.models.remove(name, version)
	if m != nil {
		s.metrics.modelInfo.DeleteLabelValues(m.Name, m.versionLabel, m.Provider)
	}
	return m
}

// Served lists the served versions of every model, by name.
func (s *Server) Served() map[string][]int {
	out := map[string][]int{}
	for _, m := range s.models.list() {
		out[m.Name] = append(out[m.Name], m.Version)
	}
	return out
}

// SetRepository exposes model control at /v2/repository/. Call it before
// Serve.
func (s *Server) SetRepository(r Repository) { s.opts.Repository = r }

// SetReady marks the server ready (GET /v2/health/ready answers 200, and
// gRPC's ServerReady and health check say so).
func (s *Server) SetReady(ready bool) {
	s.ready.Store(ready)
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.grpcHealth.SetServingStatus("", st)
}

// Handler is the full request handler, for tests and embedding.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	cl := newConnListener(ln, s.opts.MaxConnsPerIP)
	cl.tls = s.opts.TLS != nil
	s.connsMu.Lock()
	s.conns = append(s.conns, cl)
	s.connsMu.Unlock()
	if !cl.tls {
		return s.http.Serve(cl)
	}
	// The handshake happens on fasthttp's first read, under ReadTimeout.
	cfg := s.opts.TLS.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return s.http.Serve(tls.NewListener(cl, cfg))
}

// Shutdown stops accepting connections and waits for in-flight requests to
// finish, or for ctx to end. Connections that have sent nothing are closed
// once UnusedConnGrace old; idle keep-alive ones at once (fasthttp).
func (s *Server) Shutdown(ctx context.Context) error {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			s.connsMu.Lock()
			for _, cl := range s.conns {
				cl.closeUnused(time.Now().Add(-s.opts.UnusedConnGrace))
			}
			s.connsMu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	s.grpcHealth.Shutdown()
	s.stoppingOnce.Do(func() { close(s.stopping) })
	grpcErr := make(chan error, 1)
	go func() { grpcErr <- s.stopGRPC(ctx) }()
	err := s.http.ShutdownWithContext(ctx)
	close(stop)
	<-stopped
	if gerr := <-grpcErr; err == nil {
		err = gerr
	}
	if s.shm.enabled {
		// Unmapped once the requests still copying finish.
		for _, cuda := range []bool{false, true} {
			if aerr := s.shm.unregister("", cuda); aerr != nil && err == nil {
				err = aerr
			}
		}
	}
	return err
}

var (
	pathV1Models = []byte("/v1/models")
	pathV2       = []byte("/v2")
	pathLive     = []byte("/v2/health/live")
	pathReady    = []byte("/v2/health/ready")
	pathMetrics  = []byte("/metrics")
	pathRoot     = []byte("/")
	pathUI       = []byte("/ui/")
)

func (s *Server) route(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if s.opts.ClientCertRequired && !bytes.Equal(path, pathLive) && !bytes.Equal(path, pathReady) &&
		!tlsconf.Verified(ctx.TLSConnectionState()) {
		writeError(ctx, errClientCert)
		return
	}
	switch {
	case bytes.HasPrefix(path, pathV1Models):
		s.v1Models(ctx, path[len(pathV1Models):])
	case bytes.HasPrefix(path, pathRepository):
		s.repository(ctx, path[len(pathRepository):])
	case bytes.HasPrefix(path, pathV2Models):
		s.v2Models(ctx, path[len(pathV2Models):])
	case bytes.HasPrefix(path, pathSystemShm):
		s.sharedMemory(ctx, path[len(pathSystemShm):], false)
	case bytes.HasPrefix(path, pathCUDAShm):
		s.sharedMemory(ctx, path[len(pathCUDAShm):], true)
	case bytes.Equal(path, pathLive):
		if !allow(ctx, "GET") {
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case bytes.Equal(path, pathReady):
		if !allow(ctx, "GET") {
			return
		}
		if s.ready.Load() {
			ctx.SetStatusCode(fasthttp.StatusOK)
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		}
	case bytes.Equal(path, pathV2):
		if allow(ctx, "GET") {
			s.serverMetadata(ctx)
		}
	case bytes.Equal(path, pathRoot) || bytes.HasPrefix(path, pathUI):
		if allow(ctx, "GET") {
			s.web(ctx, path)
		}
	case bytes.Equal(path, pathMetrics):
		if allow(ctx, "GET") {
			s.metrics.serve(ctx)
		}
	case bytes.Equal(path, pathReportsDir) || bytes.HasPrefix(path, pathReports):
		s.reports(ctx, path)
	default:
		writeError(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(path)))
	}
}

// v1Models routes /v1/models[/{m}[/versions/{v}]/classify].
func (s *Server) v1Models(ctx *fasthttp.RequestCtx, rest []byte) {
	if len(rest) == 0 || string(rest) == "/" {
		if allow(ctx, "GET") {
			s.listModels(ctx)
		}
		return
	}
	if rest[0] != '/' {
		writeError(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(ctx.Path())))
		return
	}
	parts := bytes.Split(rest[1:], []byte{'/'})
	name := string(parts[0])
	switch {
	case len(parts) == 1:
		if allow(ctx, "GET") {
			s.modelInfo(ctx, name, "")
		}
	case len(parts) == 2 && string(parts[1]) == "classify":
		if allow(ctx, "POST") {
			s.classify(ctx, name, "")
		}
	case len(parts) == 2 && string(parts[1]) == "drift":
		if allow(ctx, "GET") {
			s.driftReport(ctx, name, "")
		}
	case len(parts) == 4 && string(parts[1]) == "versions" && string(parts[3]) == "drift":
		if allow(ctx, "GET") {
			s.driftReport(ctx, name, string(parts[2]))
		}
	case len(parts) == 3 && string(parts[1]) == "versions":
		if allow(ctx, "GET") {
			s.modelInfo(ctx, name, string(parts[2]))
		}
	case len(parts) == 4 && string(parts[1]) == "versions" && string(parts[3]) == "classify":
		if allow(ctx, "POST") {
			s.classify(ctx, name, string(parts[2]))
		}
	default:
		writeError(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(ctx.Path())))
	}
}

func allow(ctx *fasthttp.RequestCtx, method string) bool {
	m := ctx.Method()
	if string(m) == method || (method == "GET" && string(m) == "HEAD") {
		return true
	}
	writeError(ctx, errorf(405, codeMethod, "use "+method+" here, not "+string(m)))
	ctx.Response.Header.Set("Allow", method) // after writeError, which resets the response
	return false
}

// recoverer turns a handler panic into a logged 500 so one bad request
// cannot take the process down.
func (s *Server) recoverer(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("handler panic", "path", string(ctx.Path()), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				s.metrics.panics.Inc()
				writeError(ctx, errorf(500, codeInternal, "internal server error"))
			}
		}()
		next(ctx)
	}
}

// protocolError answers requests fasthttp could not parse, above all bodies
// over the limit, with our JSON errors instead of fasthttp's plain text.
// readBufferSize bounds the request line and each header (fasthttp reads
// them into this buffer).
const readBufferSize = 16 << 10

func (s *Server) protocolError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, errorf(413, codeTooLarge, fmt.Sprintf("request body exceeds the %d-byte limit", s.opts.MaxBodyBytes)))
	case errors.As(err, &small) || errors.Is(err, fasthttp.ErrSmallReadBuffer):
		// RFC 6585: the request line or a header did not fit the read buffer.
		writeError(ctx, errorf(431, codeHeadersTooLarge, fmt.Sprintf("request line or headers over the %d-byte limit", readBufferSize)))
	default:
		var to interface{ Timeout() bool }
		if errors.As(err, &to) && to.Timeout() {
			writeError(ctx, errorf(408, "timeout", "request not received in time"))
			return
		}
		writeError(ctx, errorf(400, codeBadRequest, "malformed HTTP request: "+err.Error()))
	}
	s.metrics.requests.WithLabelValues(unknownModel, "", fmt.Sprint(ctx.Response.StatusCode())).Inc()
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
