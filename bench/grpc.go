package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"fastinfer/server/inferpb"
)

// GRPCTensorTarget sends the tensor target's tensors over the gRPC API, as
// raw_input_contents (what tritonclient.grpc and perf_analyzer -i grpc
// send), over a few connections in turn: one HTTP/2 connection carries
// every call on one TCP stream and one server reader, which would
// measure the connection rather than the server.
type GRPCTensorTarget struct {
	conns   []*grpc.ClientConn
	clients []inferpb.GRPCInferenceServiceClient
	reqs    []*inferpb.ModelInferRequest
	batch   int
	next    atomic.Uint64
	// Timeout bounds one call (default 60 s).
	Timeout time.Duration
}

// grpcConns is how many connections the gRPC target spreads its calls over.
const grpcConns = 4

// NewGRPCTensorTarget builds variants different requests of batch rows
// each for the model's input, for the server's gRPC API at addr
// (host:port), over TLS with tlsCfg when it is not nil.
func NewGRPCTensorTarget(addr string, tlsCfg *tls.Config, meta *ModelMetadata, batch, variants int, seed uint64) (*GRPCTensorTarget, error) {
	shape, tensors, err := noiseTensors(meta, batch, variants, seed)
	if err != nil {
		return nil, err
	}
	t := &GRPCTensorTarget{batch: batch, Timeout: 60 * time.Second}
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	for range grpcConns {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("gRPC server %s: %w", addr, err)
		}
		t.conns = append(t.conns, conn)
		t.clients = append(t.clients, inferpb.NewGRPCInferenceServiceClient(conn))
	}
	for _, x := range tensors {
		t.reqs = append(t.reqs, &inferpb.ModelInferRequest{
			ModelName:        meta.Name,
			Inputs:           []*inferpb.ModelInferRequest_InferInputTensor{{Name: meta.Inputs[0].Name, Datatype: meta.Inputs[0].Datatype, Shape: shape}},
			RawInputContents: [][]byte{x},
		})
	}
	return t, nil
}

func (t *GRPCTensorTarget) BatchSize() int { return t.batch }

// Do sends one call. A failure is named by its gRPC code ("ResourceExhausted").
func (t *GRPCTensorTarget) Do(ctx context.Context) (int, string) {
	i := t.next.Add(1) - 1
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	if _, err := t.clients[i%uint64(len(t.clients))].ModelInfer(ctx, t.reqs[i%uint64(len(t.reqs))]); err != nil {
		if st, ok := status.FromError(err); ok {
			return 0, st.Code().String()
		}
		return 0, "transport"
	}
	return t.batch, ""
}

// Close closes the target's connections.
func (t *GRPCTensorTarget) Close() {
	for _, c := range t.conns {
		c.Close()
	}
}
