package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"fastinfer/batching"
	"fastinfer/server/inferpb"
)

// BenchmarkTransport is the server's cost per request without a model:
// the same binary FP32 tensor sent over HTTP (Triton's binary extension)
// and over gRPC (raw_input_contents), on loopback TCP, to a model whose
// Infer returns at once. Client and server share the machine, so ns/op is
// the pair's; compare the two transports, not the absolute figure.
// -benchtime and -cpu as usual; 8 requests in flight per GOMAXPROCS.
func BenchmarkTransport(b *testing.B) {
	for _, size := range []struct {
		name    string
		shape   []int64
		classes int
	}{
		{"fashion-28x28", []int64{1, 1, 28, 28}, 10},
		{"resnet-224x224", []int64{1, 3, 224, 224}, 1000},
	} {
		per := 1
		for _, d := range size.shape[1:] {
			per *= int(d)
		}
		m := &Model{
			Name: "bench", Version: 1, Platform: "onnxruntime_onnx", Provider: "cpu",
			Inputs:  []Tensor{{Name: "data", Datatype: "FP32", Shape: append([]int64{-1}, size.shape[1:]...)}},
			Outputs: []Tensor{{Name: "logits", Datatype: "FP32", Shape: []int64{-1, int64(size.classes)}}},
			Classes: size.classes, InputLen: per,
		}
		m.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
			return batching.Timing{}, nil
		}
		m.InferBytes = func(context.Context, []byte, int, []float32, batching.RequestOptions) (batching.Timing, error) {
			return batching.Timing{}, nil
		}
		s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBodyBytes: 64 << 20})
		s.AddModel(m)
		s.SetReady(true)
		hl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		gl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go s.Serve(hl)
		go s.ServeGRPC(gl)

		tensor := make([]float32, per)
		for i := range tensor {
			tensor[i] = float32(i%255) / 255
		}
		raw := fp32Bytes(tensor...)
		shape := strings.Trim(strings.ReplaceAll(fmt.Sprint(size.shape), " ", ","), "[]")
		header := `{"inputs":[{"name":"data","datatype":"FP32","shape":[` + shape + `],"parameters":{"binary_data_size":` +
			strconv.Itoa(len(raw)) + `}}],"parameters":{"binary_data_output":true}}`
		for len(header)%8 != 0 {
			header += " " // the tensor 8-aligned in the body, as bench's tensor target sends it
		}
		body := append([]byte(header), raw...)
		hlen := strconv.Itoa(len(header))
		hc := &fasthttp.HostClient{Addr: hl.Addr().String(), MaxConns: 1024, ReadBufferSize: 64 << 10}

		b.Run(size.name+"/http", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for pb.Next() {
					req.SetRequestURI("http://" + hl.Addr().String() + "/v2/models/bench/infer")
					req.Header.SetMethod("POST")
					req.Header.SetContentType("application/octet-stream")
					req.Header.Set(headerInferLength, hlen)
					req.SetBodyRaw(body)
					if err := hc.DoTimeout(req, resp, 10*time.Second); err != nil || resp.StatusCode() != 200 {
						b.Errorf("%v %d %s", err, resp.StatusCode(), resp.Body())
						return
					}
				}
			})
		})
		b.Run(size.name+"/grpc", func(b *testing.B) {
			var clients []inferpb.GRPCInferenceServiceClient
			for range 4 { // as bench's gRPC target
				conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				clients = append(clients, inferpb.NewGRPCInferenceServiceClient(conn))
			}
			req := &inferpb.ModelInferRequest{ModelName: "bench", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
				{Name: "data", Datatype: "FP32", Shape: size.shape}}, RawInputContents: [][]byte{raw}}
			b.SetBytes(int64(len(raw)))
			b.SetParallelism(8)
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				c := clients[int(next.Add(1))%len(clients)]
				for pb.Next() {
					if _, err := c.ModelInfer(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
}
