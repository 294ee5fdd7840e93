package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // tritonclient's compression_algorithm="gzip"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"fastinfer/batching"
	"fastinfer/server/inferpb"
)

// The Open Inference Protocol over gRPC (Triton's port 8001): the same
// models, checks, batcher and bookkeeping as the HTTP API, with Triton's
// configuration, statistics and repository extensions, the standard
// grpc.health.v1 service (for Kubernetes' gRPC probes) and reflection (for
// grpcurl). Errors are gRPC status codes carrying the HTTP API's message.

// grpcServer builds the gRPC server. It is built once, by New, so that
// Shutdown needs no lock.
func (s *Server) grpcServer() *grpc.Server {
	opts := []grpc.ServerOption{
		// A request holds at most what an HTTP body may; grpc-go applies
		// the limit after gzip too.
		grpc.MaxRecvMsgSize(s.opts.MaxBodyBytes),
		grpc.ConnectionTimeout(s.opts.ReadTimeout),
		// grpc-go allows 2^32 streams on a connection, each holding a
		// message of up to MaxRecvMsgSize before the batcher's queue limit
		// can refuse it; past this many a client's further calls wait
		// their turn on its side.
		grpc.MaxConcurrentStreams(1024),
		grpc.ChainUnaryInterceptor(s.grpcRecover),
		grpc.ChainStreamInterceptor(s.grpcStreamCount),
		grpc.ForceServerCodecV2(inferCodec{encoding.GetCodecV2(proto.Name)}),
	}
	// The client certificate check runs after grpcRecover, so a refused
	// call is counted in the metrics.
	g := grpc.NewServer(append(opts, s.grpcTLS()...)...)
	inferpb.RegisterGRPCInferenceServiceServer(g, &grpcService{s: s})
	healthpb.RegisterHealthServer(g, healthService{s.grpcHealth, s.stopping})
	reflection.Register(g)
	return g
}

// healthService is grpc-go's health service, except that a Watch ends
// when the server starts shutting down (Shutdown has just set
// NOT_SERVING): a watch never ends by itself, and would hold a graceful
// stop to its deadline.
type healthService struct {
	*health.Server
	stopping <-chan struct{}
}

func (h healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, watchStream{stream, ctx})
}

// watchStream is a Watch's stream with a context that ends at shutdown.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }

// ServeGRPC answers the gRPC API on ln until Shutdown.
func (s *Server) ServeGRPC(ln net.Listener) error {
	if err := s.grpc.Serve(ln); !errors.Is(err, grpc.ErrServerStopped) {
		return err // nil once stopped while serving
	}
	return nil // stopped before it began
}

// stopGRPC stops the gRPC server as Shutdown does the HTTP one: no new
// calls, in-flight ones finish, until ctx ends, when the rest are cut.
func (s *Server) stopGRPC(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}

// grpcRecover turns a handler's panic into codes.Internal, as the HTTP
// recoverer does into a 500 (grpc-go would let it end the process), and
// counts every call by method and code.
func (s *Server) grpcRecover(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("handler panic", "method", info.FullMethod, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			s.metrics.panics.Inc()
			resp, err = nil, status.Error(codes.Internal, "internal server error")
		}
		s.countGRPC("unary", info.FullMethod, err)
	}()
	return next(ctx, req)
}

// grpcStreamCount counts streams by method and code as they end; a
// stream's requests are counted as requests by ModelInfer.
func (s *Server) grpcStreamCount(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	err := next(srv, ss)
	kind := "bidi_stream"
	switch {
	case !info.IsClientStream:
		kind = "server_stream" // health's Watch
	case !info.IsServerStream:
		kind = "client_stream"
	}
	s.countGRPC(kind, info.FullMethod, err)
	return err
}

func (s *Server) countGRPC(kind, fullMethod string, err error) {
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	s.metrics.grpcCalls.WithLabelValues(kind, service, method, status.Code(err).String()).Inc()
}

// grpcError is an HTTP API error as a gRPC status: the code that carries
// the HTTP status's meaning, and the same message.
func grpcError(e *apiError) error {
	c := codes.Internal
	switch e.status {
	case 400, 405, 413, 415, 422:
		c = codes.InvalidArgument
	case 401:
		c = codes.Unauthenticated
	case 403:
		c = codes.PermissionDenied
	case 404:
		c = codes.NotFound
	case 429:
		c = codes.ResourceExhausted
	case 501:
		c = codes.Unimplemented
	case 499:
		c = codes.Canceled
	case 503:
		c = codes.Unavailable
	case 504:
		c = codes.DeadlineExceeded
	}
	return status.Error(c, e.message)
}

// grpcAuthorized checks the bearer token in the call's "authorization"
// metadata when t is set.
func grpcAuthorized(ctx context.Context, t token) *apiError {
	if !t.set {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t.allows([]byte(v)) {
			return nil
		}
	}
	return errUnauthorized
}

type grpcService struct {
	inferpb.UnimplementedGRPCInferenceServiceServer
	s *Server
}

func (g *grpcService) ServerLive(context.Context, *inferpb.ServerLiveRequest) (*inferpb.ServerLiveResponse, error) {
	return &inferpb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcService) ServerReady(context.Context, *inferpb.ServerReadyRequest) (*inferpb.ServerReadyResponse, error) {
	return &inferpb.ServerReadyResponse{Ready: g.s.ready.Load()}, nil
}

// ModelReady says false, not NotFound, for a model or version not served:
// clients poll it (tritonclient's is_model_ready) until a model loads.
func (g *grpcService) ModelReady(_ context.Context, r *inferpb.ModelReadyRequest) (*inferpb.ModelReadyResponse, error) {
	_, aerr := g.s.models.get(r.Name, r.Version)
	return &inferpb.ModelReadyResponse{Ready: aerr == nil && g.s.ready.Load()}, nil
}

func (g *grpcService) ServerMetadata(context.Context, *inferpb.ServerMetadataRequest) (*inferpb.ServerMetadataResponse, error) {
	return &inferpb.ServerMetadataResponse{Name: "fastinfer", Version: g.s.opts.Version, Extensions: g.s.extensions()}, nil
}

func (g *grpcService) ModelMetadata(_ context.Context, r *inferpb.ModelMetadataRequest) (*inferpb.ModelMetadataResponse, error) {
	m, aerr := g.s.models.get(r.Name, r.Version)
	if aerr != nil {
		return nil, grpcError(aerr)
	}
	out := &inferpb.ModelMetadataResponse{Name: m.Name, Platform: m.Platform}
	for _, v := range g.s.models.versions(m.Name) {
		out.Versions = append(out.Versions, strconv.Itoa(v))
	}
	meta := func(ts []Tensor) []*inferpb.ModelMetadataResponse_TensorMetadata {
		var out []*inferpb.ModelMetadataResponse_TensorMetadata
		for _, t := range ts {
			out = append(out, &inferpb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
		}
		return out
	}
	out.Inputs, out.Outputs = meta(m.Inputs), meta(m.Outputs)
	return out, nil
}

func (g *grpcService) ModelConfig(_ context.Context, r *inferpb.ModelConfigRequest) (*inferpb.ModelConfigResponse, error) {
	m, aerr := g.s.models.get(r.Name, r.Version)
	if aerr != nil {
		return nil, grpcError(aerr)
	}
	c := m.tritonConfig()
	out := &inferpb.ModelConfig{Name: c.Name, Platform: c.Platform, Backend: c.Backend, MaxBatchSize: int32(c.MaxBatchSize)}
	for _, t := range c.Input {
		out.Input = append(out.Input, &inferpb.ModelInput{Name: t.Name, DataType: inferpb.DataType(inferpb.DataType_value[t.DataType]), Dims: t.Dims})
	}
	for _, t := range c.Output {
		out.Output = append(out.Output, &inferpb.ModelOutput{Name: t.Name, DataType: inferpb.DataType(inferpb.DataType_value[t.DataType]), Dims: t.Dims})
	}
	for _, ig := range c.InstanceGroup {
		g := &inferpb.ModelInstanceGroup{
			Name: ig.Name, Count: int32(ig.Count), Kind: inferpb.ModelInstanceGroup_Kind(inferpb.ModelInstanceGroup_Kind_value[ig.Kind])}
		for _, d := range ig.GPUs {
			g.Gpus = append(g.Gpus, int32(d))
		}
		out.InstanceGroup = append(out.InstanceGroup, g)
	}
	if b := c.DynamicBatching; b != nil {
		db := &inferpb.ModelDynamicBatching{
			MaxQueueDelayMicroseconds: uint64(b.MaxQueueDelayMicroseconds), PriorityLevels: uint64(b.PriorityLevels),
			DefaultQueuePolicy: &inferpb.ModelQueuePolicy{
				MaxQueueSize: uint32(b.DefaultQueuePolicy.MaxQueueSize), DefaultTimeoutMicroseconds: uint64(b.DefaultQueuePolicy.DefaultTimeoutMicroseconds)},
		}
		for _, p := range b.PreferredBatchSize {
			db.PreferredBatchSize = append(db.PreferredBatchSize, int32(p))
		}
		out.SchedulingChoice = &inferpb.ModelConfig_DynamicBatching{DynamicBatching: db}
	}
	return &inferpb.ModelConfigResponse{Config: out}, nil
}

func (g *grpcService) ModelStatistics(_ context.Context, r *inferpb.ModelStatisticsRequest) (*inferpb.ModelStatisticsResponse, error) {
	models, aerr := g.s.statsModels(r.Name, r.Version)
	if aerr != nil {
		return nil, grpcError(aerr)
	}
	d := func(j durationJSON) *inferpb.StatisticDuration {
		return &inferpb.StatisticDuration{Count: uint64(j.Count), Ns: uint64(j.Ns)}
	}
	out := &inferpb.ModelStatisticsResponse{}
	for _, m := range models {
		st := m.statistics()
		is := st.InferenceStats
		ms := &inferpb.ModelStatistics{
			Name: st.Name, Version: st.Version, LastInference: uint64(st.LastInference),
			InferenceCount: uint64(st.InferenceCount), ExecutionCount: uint64(st.ExecutionCount),
			InferenceStats: &inferpb.InferStatistics{
				Success: d(is.Success), Fail: d(is.Fail), Queue: d(is.Queue),
				ComputeInput: d(is.ComputeInput), ComputeInfer: d(is.ComputeInfer), ComputeOutput: d(is.ComputeOutput),
				CacheHit: d(is.CacheHit), CacheMiss: d(is.CacheMiss),
			},
		}
		for _, b := range st.BatchStats {
			ms.BatchStats = append(ms.BatchStats, &inferpb.InferBatchStatistics{
				BatchSize: uint64(b.BatchSize), ComputeInput: d(b.ComputeInput), ComputeInfer: d(b.ComputeInfer), ComputeOutput: d(b.ComputeOutput)})
		}
		out.ModelStats = append(out.ModelStats, ms)
	}
	return out, nil
}

// repository checks what every repository call needs: the admin token, and
// model control being on.
func (g *grpcService) repository(ctx context.Context) *apiError {
	if aerr := grpcAuthorized(ctx, g.s.adminToken); aerr != nil {
		return aerr
	}
	if g.s.opts.Repository == nil {
		return errorf(403, "forbidden", "model control is disabled (--model-control=none)")
	}
	return nil
}

func (g *grpcService) RepositoryIndex(ctx context.Context, r *inferpb.RepositoryIndexRequest) (*inferpb.RepositoryIndexResponse, error) {
	if aerr := g.repository(ctx); aerr != nil {
		return nil, grpcError(aerr)
	}
	out := &inferpb.RepositoryIndexResponse{}
	for _, e := range g.s.repositoryIndex() {
		if r.Ready && e.State != "READY" {
			continue
		}
		out.Models = append(out.Models, &inferpb.RepositoryIndexResponse_ModelIndex{Name: e.Name, Version: e.Version, State: e.State, Reason: e.Reason})
	}
	return out, nil
}

func (g *grpcService) RepositoryModelLoad(ctx context.Context, r *inferpb.RepositoryModelLoadRequest) (*inferpb.RepositoryModelLoadResponse, error) {
	if aerr := g.repository(ctx); aerr != nil {
		return nil, grpcError(aerr)
	}
	if len(r.Parameters) > 0 {
		// Triton's "config" and "file:" overrides would load something
		// other than the repository holds; refusing says so.
		return nil, status.Error(codes.InvalidArgument, "load parameters (config or file overrides) are not supported: change the repository and load again")
	}
	if aerr := g.s.loadOrUnload(r.ModelName, true); aerr != nil {
		return nil, grpcError(aerr)
	}
	return &inferpb.RepositoryModelLoadResponse{}, nil
}

func (g *grpcService) RepositoryModelUnload(ctx context.Context, r *inferpb.RepositoryModelUnloadRequest) (*inferpb.RepositoryModelUnloadResponse, error) {
	if aerr := g.repository(ctx); aerr != nil {
		return nil, grpcError(aerr)
	}
	if aerr := g.s.loadOrUnload(r.ModelName, false); aerr != nil {
		return nil, grpcError(aerr)
	}
	return &inferpb.RepositoryModelUnloadResponse{}, nil
}

// The system shared memory calls (shm.go), with the token of the inference calls.
func (g *grpcService) SystemSharedMemoryStatus(ctx context.Context, r *inferpb.SystemSharedMemoryStatusRequest) (*inferpb.SystemSharedMemoryStatusResponse, error) {
	if aerr := grpcAuthorized(ctx, g.s.apiToken); aerr != nil {
		return nil, grpcError(aerr)
	}
	st, aerr := g.s.shm.status(r.Name)
	if aerr != nil {
		return nil, grpcError(aerr)
	}
	out := &inferpb.SystemSharedMemoryStatusResponse{Regions: map[string]*inferpb.SystemSharedMemoryStatusResponse_RegionStatus{}}
	for _, e := range st {
		out.Regions[e.Name] = &inferpb.SystemSharedMemoryStatusResponse_RegionStatus{Name: e.Name, Key: e.Key, Offset: uint64(e.Offset), ByteSize: uint64(e.ByteSize)}
	}
	return out, nil
}

func (g *grpcService) SystemSharedMemoryRegister(ctx context.Context, r *inferpb.SystemSharedMemoryRegisterRequest) (*inferpb.SystemSharedMemoryRegisterResponse, error) {
	if aerr := grpcAuthorized(ctx, g.s.apiToken); aerr != nil {
		return nil, grpcError(aerr)
	}
	if r.Offset > math.MaxInt64 || r.ByteSize > math.MaxInt64 {
		return nil, status.Error(codes.InvalidArgument, "offset and byte_size must be below 2^63")
	}
	if aerr := g.s.shm.register(r.Name, r.Key, int64(r.Offset), int64(r.ByteSize)); aerr != nil {
		return nil, grpcError(aerr)
	}
	return &inferpb.SystemSharedMemoryRegisterResponse{}, nil
}

func (g *grpcService) SystemSharedMemoryUnregister(ctx context.Context, r *inferpb.SystemSharedMemoryUnregisterRequest) (*inferpb.SystemSharedMemoryUnregisterResponse, error) {
	if aerr := grpcAuthorized(ctx, g.s.apiToken); aerr != nil {
		return nil, grpcError(aerr)
	}
	if aerr := g.s.shm.unregister(r.Name, false); aerr != nil {
		return nil, grpcError(aerr)
	}
	return &inferpb.SystemSharedMemoryUnregisterResponse{}, nil
}

// The CUDA shared memory calls (shm.go): raw_handle carries the handle's
// bytes as they are, where HTTP carries them in base64.
func (g *grpcService) CudaSharedMemoryStatus(ctx context.Context, r *inferpb.CudaSharedMemoryStatusRequest) (*inferpb.CudaSharedMemoryStatusResponse, error) {
	if aerr := grpcAuthorized(ctx, g.s.apiToken); aerr != nil {
		return nil, grpcError(aerr)
	}
	st, aerr := g.s.shm.cudaStatus(r.Name)
	if aerr != nil {
		return nil, grpcError(aerr)
	}
	out := &inferpb.CudaSharedMemoryStatusResponse{Regions: map[string]*inferpb.CudaSharedMemoryStatusResponse_RegionStatus{}}
	for _, e := range st {
		out.Regions[e.Name] = &inferpb.CudaSharedMemoryStatusResponse_RegionStatus{Name: e.Name, DeviceId: uint64(e.DeviceID), ByteSize: uint64(e.ByteSize)}
	}
	return out, nil
}

func (g *grpcService) CudaSharedMemoryRegister(ctx context.Context, r *inferpb.CudaSharedMemoryRegisterRequest) (*inferpb.CudaSharedMemoryRegisterResponse, error) {
	if aerr := grpcAuthorized(ctx, g.s.apiToken); aerr != nil {
		return nil, grpcError(aerr)
	}
	if r.ByteSize > math.MaxInt64 {
		return nil, status.Error(codes.InvalidArgument, "byte_size must be below 2^63")
	}
	if aerr := g.s.shm.registerCUDA(r.Name, r.RawHandle, r.DeviceId, int64(r.ByteSize)); aerr != nil {
		return nil, grpcError(aerr)
	}
	return &inferpb.CudaSharedMemoryRegisterResponse{}, nil
}

func (g *grpcService) CudaSharedMemoryUnregister(ctx context.Context, r *inferpb.CudaSharedMemoryUnregisterRequest) (*inferpb.CudaSharedMemoryUnregisterResponse, error) {
	if aerr := grpcAuthorized(ctx, g.s.apiToken); aerr != nil {
		return nil, grpcError(aerr)
	}
	if aerr := g.s.shm.unregister(r.Name, true); aerr != nil {
		return nil, grpcError(aerr)
	}
	return &inferpb.CudaSharedMemoryUnregisterResponse{}, nil
}

// ModelInfer is POST /v2/models/{m}/infer over gRPC. Inputs come as
// raw_input_contents (what tritonclient sends) or as typed contents; the
// answer comes in the same form, raw as Triton answers it.
func (g *grpcService) ModelInfer(ctx context.Context, r *inferpb.ModelInferRequest) (*inferpb.ModelInferResponse, error) {
	defer releaseRequest(r)
	s := g.s
	start := time.Now()
	var m *Model
	resp, aerr := func() (*inferpb.ModelInferResponse, *apiError) {
		if aerr := grpcAuthorized(ctx, s.apiToken); aerr != nil {
			return nil, aerr
		}
		var aerr *apiError
		m, aerr = s.models.acquire(r.ModelName, r.ModelVersion)
		if aerr != nil {
			return nil, aerr
		}
		defer m.refs.Done()
		return g.infer(ctx, m, r, start)
	}()
	code := 200
	if aerr != nil {
		code = aerr.status
	}
	s.finished(m, code, start)
	if aerr != nil {
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		return nil, grpcError(aerr)
	}
	return resp, nil
}

// streamInFlight bounds the requests of one ModelStreamInfer stream being
// answered at once: past it, the stream reads no more until one finishes,
// and HTTP/2 flow control holds the client back. The batcher's queue
// limit still answers overload with ResourceExhausted.
const streamInFlight = 256

// ModelStreamInfer is Triton's streaming inference (tritonclient's
// start_stream and async_stream_infer, perf_analyzer --streaming): each
// request on the stream is a ModelInfer, run as it arrives, and its answer
// (or error_message) is sent as it finishes, so answers may overtake one
// another; clients match them by id.
func (g *grpcService) ModelStreamInfer(stream inferpb.GRPCInferenceService_ModelStreamInferServer) error {
	ctx := stream.Context()
	var (
		sendMu  sync.Mutex // grpc-go's Send is not safe from several goroutines
		sendErr error
		wg      sync.WaitGroup
		slots   = make(chan struct{}, streamInFlight)
	)
	defer wg.Wait()
	// Recv blocks, and a client may keep a stream open, idle, for its whole
	// life (tritonclient's start_stream): reading on a goroutine of its own
	// lets shutdown end the stream instead of waiting for it.
	type received struct {
		r   *inferpb.ModelInferRequest
		err error
	}
	in, returned := make(chan received), make(chan struct{})
	defer close(returned)
	go func() {
		for {
			r, err := stream.Recv()
			select {
			case in <- received{r, err}:
			case <-returned:
				if r != nil {
					releaseRequest(r)
				}
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var m received
		select {
		case m = <-in:
		case <-ctx.Done(): // the client has gone
			return status.FromContextError(ctx.Err()).Err()
		case <-g.s.stopping:
			wg.Wait() // what was read is answered
			return status.Error(codes.Unavailable, "the server is shutting down: requests not yet answered on this stream were not run")
		}
		if m.err != nil {
			wg.Wait() // every answer sent (or failed): sendErr is settled
			switch {
			case sendErr != nil:
				return sendErr
			case errors.Is(m.err, io.EOF):
				return nil // the client has sent everything, and has every answer
			}
			return m.err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			releaseRequest(m.r)
			return status.FromContextError(ctx.Err()).Err()
		}
		wg.Add(1)
		go func(r *inferpb.ModelInferRequest) {
			defer func() { <-slots; wg.Done() }()
			out := g.streamAnswer(ctx, r)
			sendMu.Lock()
			defer sendMu.Unlock()
			if sendErr == nil {
				sendErr = stream.Send(out)
			}
		}(m.r)
	}
}

// streamAnswer runs one request of a stream, a panic included: no
// interceptor sees the goroutines a stream's requests run on.
func (g *grpcService) streamAnswer(ctx context.Context, r *inferpb.ModelInferRequest) (out *inferpb.ModelStreamInferResponse) {
	id, model, version := r.Id, r.ModelName, r.ModelVersion // r is released by ModelInfer
	fail := func(err error) *inferpb.ModelStreamInferResponse {
		return &inferpb.ModelStreamInferResponse{ErrorMessage: status.Convert(err).Message(),
			InferResponse: &inferpb.ModelInferResponse{ModelName: model, ModelVersion: version, Id: id}}
	}
	defer func() {
		if v := recover(); v != nil {
			g.s.log.Error("handler panic", "method", "ModelStreamInfer", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			g.s.metrics.panics.Inc()
			out = fail(status.Error(codes.Internal, "internal server error"))
		}
	}()
	resp, err := g.ModelInfer(ctx, r)
	if err != nil {
		return fail(err)
	}
	return &inferpb.ModelStreamInferResponse{InferResponse: resp}
}

func (g *grpcService) infer(ctx context.Context, m *Model, r *inferpb.ModelInferRequest, start time.Time) (*inferpb.ModelInferResponse, *apiError) {
	req := inferRequest{ID: r.Id}
	var aerr *apiError
	if req.Parameters.Priority, aerr = intParam(r.Parameters, "priority", math.MaxInt32); aerr != nil {
		return nil, aerr
	}
	timeout, aerr := intParam(r.Parameters, "timeout", math.MaxInt64)
	if aerr != nil {
		return nil, aerr
	}
	req.Parameters.TimeoutUS = int64(timeout)
	shmIn := false
	for _, in := range r.Inputs {
		p, aerr := shmParams(in.Parameters)
		if aerr != nil {
			return nil, aerr
		}
		shmIn = shmIn || p.SharedMemoryRegion != ""
		req.Inputs = append(req.Inputs, inferInput{Name: in.Name, Shape: in.Shape, Datatype: in.Datatype, Parameters: p})
	}
	for _, o := range r.Outputs {
		p, aerr := shmParams(o.Parameters)
		if aerr != nil {
			return nil, aerr
		}
		if p.Classification, aerr = intParam(o.Parameters, "classification", math.MaxInt32); aerr != nil {
			return nil, aerr
		}
		req.Outputs = append(req.Outputs, inferOutput{Name: o.Name, Parameters: p})
	}
	raw := len(r.RawInputContents) > 0
	if raw && len(r.RawInputContents) != len(r.Inputs) {
		return nil, errorf(400, codeBadRequest, "raw_input_contents has "+strconv.Itoa(len(r.RawInputContents))+" entries for "+strconv.Itoa(len(r.Inputs))+" inputs")
	}
	data := func(in *inferInput, need int) (tensorSource, *apiError) {
		c := r.Inputs[0].Contents
		ref, aerr := in.Parameters.shmRef("input " + in.Name)
		if aerr != nil {
			return tensorSource{}, aerr
		}
		if ref != nil {
			if raw || c != nil {
				return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+" is in shared memory: the request must not carry its contents too")
			}
			return g.s.shmInput(m, ref, in, need)
		}
		if raw {
			if c != nil {
				return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+" has contents, and the request raw_input_contents: send one or the other")
			}
			b := r.RawInputContents[0]
			if len(b) != need {
				return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+": raw_input_contents holds "+strconv.Itoa(len(b))+" bytes, shape and datatype need "+strconv.Itoa(need))
			}
			return tensorSource{raw: b, binary: true}, nil
		}
		return contentsSource(in, c)
	}
	opts := batchingOptions(ctx)
	res, aerr := g.s.inferTensor(ctx, m, &req, data, opts, start, func() string { return grpcRequestID(ctx, g.s) })
	if aerr != nil {
		return nil, aerr
	}
	defer m.release(res.out)
	// An input from shared memory says nothing of the answer's form: it
	// takes Triton's, raw.
	return grpcInferResponse(m, &req, res, raw || shmIn), nil
}

// batchingOptions are a call's scheduling options: a call whose client has
// gone (cancelled, or past its deadline) is dropped before it runs.
func batchingOptions(ctx context.Context) batching.RequestOptions {
	return batching.RequestOptions{Gone: func() bool { return ctx.Err() != nil }}
}

// grpcRequestID is the call's x-request-id metadata when usable, else a
// new id, for the prediction log.
func grpcRequestID(ctx context.Context, s *Server) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-request-id"); len(v) > 0 && len(v[0]) > 0 && len(v[0]) <= 128 && printable([]byte(v[0])) {
		return v[0]
	}
	return s.newRequestID()
}

// intParam reads an integer parameter in [0, limit]; absent is 0.
func intParam(p map[string]*inferpb.InferParameter, name string, limit uint64) (int, *apiError) {
	v, ok := p[name]
	if !ok {
		return 0, nil
	}
	var n int64
	switch c := v.GetParameterChoice().(type) {
	case *inferpb.InferParameter_Int64Param:
		n = c.Int64Param
		if n < 0 {
			return 0, errorf(400, codeBadRequest, "parameter "+name+" must not be negative, got "+strconv.FormatInt(n, 10))
		}
	case *inferpb.InferParameter_Uint64Param:
		if c.Uint64Param > uint64(math.MaxInt64) {
			return 0, errorf(400, codeBadRequest, "parameter "+name+" is out of range")
		}
		n = int64(c.Uint64Param)
	default:
		return 0, errorf(400, codeBadRequest, "parameter "+name+" must be an int64_param or uint64_param")
	}
	if uint64(n) > limit {
		return 0, errorf(400, codeBadRequest, "parameter "+name+" is out of range: "+strconv.FormatInt(n, 10))
	}
	return int(n), nil
}

// contentsSource reads a tensor's typed contents: the repeated field of
// its datatype, range-checked for the narrow integer types.
func contentsSource(in *inferInput, c *inferpb.InferTensorContents) (tensorSource, *apiError) {
	if c == nil {
		return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+" has neither contents nor raw_input_contents")
	}
	ints := func(v []int32, lo, hi int32) func([]float32) (int, error) {
		return func(dst []float32) (int, error) {
			for i, x := range v {
				if x < lo || x > hi {
					return 0, errData("element " + strconv.Itoa(i) + " (" + strconv.FormatInt(int64(x), 10) + ") is out of range for " + in.Datatype)
				}
				if i < len(dst) {
					dst[i] = float32(x)
				}
			}
			return len(v), nil
		}
	}
	var values func([]float32) (int, error)
	field := ""
	switch in.Datatype {
	case "FP32":
		field, values = "fp32_contents", widen(c.Fp32Contents)
	case "FP64":
		field, values = "fp64_contents", widen(c.Fp64Contents)
	case "INT8":
		field, values = "int_contents", ints(c.IntContents, math.MinInt8, math.MaxInt8)
	case "INT16":
		field, values = "int_contents", ints(c.IntContents, math.MinInt16, math.MaxInt16)
	case "INT32":
		field, values = "int_contents", ints(c.IntContents, math.MinInt32, math.MaxInt32)
	case "INT64":
		field, values = "int64_contents", widen(c.Int64Contents)
	case "UINT8":
		field = "uint_contents"
		values = func(dst []float32) (int, error) {
			for i, x := range c.UintContents {
				if x > math.MaxUint8 {
					return 0, errData("element " + strconv.Itoa(i) + " (" + strconv.FormatUint(uint64(x), 10) + ") is out of range for UINT8")
				}
				if i < len(dst) {
					dst[i] = float32(x)
				}
			}
			return len(c.UintContents), nil
		}
	case "FP16":
		return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+": FP16 has no typed contents; send it in raw_input_contents")
	default:
		// inferTensor has refused other datatypes already.
		return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+": datatype "+in.Datatype+" is not supported")
	}
	return tensorSource{values: func(dst []float32) (int, error) {
		n, err := values(dst)
		if err == nil && n == 0 {
			err = errData(in.Datatype + " values go in contents." + field)
		}
		return n, err
	}}, nil
}

// widen converts typed contents to the model's float32, counting them
// all (dst may be shorter: a wrong count is reported, not overrun).
func widen[T float32 | float64 | int64](v []T) func([]float32) (int, error) {
	return func(dst []float32) (int, error) {
		for i, x := range v {
			if i < len(dst) {
				dst[i] = float32(x)
			}
		}
		return len(v), nil
	}
}

// grpcInferResponse is the answer: raw_output_contents when the request came
// raw (Triton's form), typed contents when it came typed.
func grpcInferResponse(m *Model, req *inferRequest, res tensorResult, raw bool) *inferpb.ModelInferResponse {
	logits := (*res.out)[:res.rows*m.Classes]
	o := res.outs[0]
	t := &inferpb.ModelInferResponse_InferOutputTensor{Name: m.Outputs[0].Name, Datatype: m.outputType(), Shape: []int64{int64(res.rows), int64(m.Classes)}}
	resp := &inferpb.ModelInferResponse{ModelName: m.Name, ModelVersion: strconv.Itoa(m.Version), Id: req.ID, Outputs: []*inferpb.ModelInferResponse_InferOutputTensor{t}}
	if o.classification > 0 {
		t.Datatype, t.Shape[1] = "BYTES", int64(o.classification)
	}
	if o.shm != nil {
		// In the region already: the answer says where, and carries no
		// contents.
		t.Parameters = map[string]*inferpb.InferParameter{
			"shared_memory_region":    {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: o.shm.region}},
			"shared_memory_byte_size": {ParameterChoice: &inferpb.InferParameter_Int64Param{Int64Param: o.shmWritten}},
		}
		if o.shm.offset != 0 {
			t.Parameters["shared_memory_offset"] = &inferpb.InferParameter{ParameterChoice: &inferpb.InferParameter_Int64Param{Int64Param: o.shm.offset}}
		}
		return resp
	}
	switch {
	case o.classification > 0:
		b := appendClassStrings(nil, m, logits, res.rows, o.classification, true)
		if raw {
			resp.RawOutputContents = [][]byte{b}
			break
		}
		var strs [][]byte
		for len(b) >= 4 {
			n := binary.LittleEndian.Uint32(b)
			strs = append(strs, b[4:4+n])
			b = b[4+n:]
		}
		t.Contents = &inferpb.InferTensorContents{BytesContents: strs}
	case raw || m.outputType() == "FP16":
		// FP16 has no typed contents field: Triton answers it raw.
		resp.RawOutputContents = [][]byte{m.appendOutput(make([]byte, 0, m.outputSize(res.rows)), logits)}
	default:
		t.Contents = &inferpb.InferTensorContents{Fp32Contents: append([]float32(nil), logits...)}
	}
	return resp
}

// shmParams reads a tensor's shared_memory_* parameters, which
// inferParameters.shmRef then checks.
func shmParams(p map[string]*inferpb.InferParameter) (inferParameters, *apiError) {
	var out inferParameters
	if v, ok := p["shared_memory_region"]; ok {
		c, ok := v.GetParameterChoice().(*inferpb.InferParameter_StringParam)
		if !ok {
			return out, errorf(400, codeBadRequest, "parameter shared_memory_region must be a string_param")
		}
		out.SharedMemoryRegion = c.StringParam
	}
	for _, f := range []struct {
		name string
		dst  **int64
	}{{"shared_memory_byte_size", &out.SharedMemoryByteSize}, {"shared_memory_offset", &out.SharedMemoryOffset}} {
		if _, ok := p[f.name]; !ok {
			continue
		}
		n, aerr := intParam(p, f.name, math.MaxInt64)
		if aerr != nil {
			return out, aerr
		}
		v := int64(n)
		*f.dst = &v
	}
	return out, nil
}
