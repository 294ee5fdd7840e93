package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"fastinfer/internal/testutil"
	"fastinfer/internal/tlsconf"
	"fastinfer/server/inferpb"
)

// tlsServer serves a toy model over TLS on loopback, HTTP and gRPC, with
// client certificates checked when mutual; it returns both addresses and
// the CA that signed everything.
func tlsServer(t *testing.T, mutual bool, o Options) (httpAddr, grpcAddr string, ca *testutil.CA) {
	t.Helper()
	ca = testutil.NewCA(t, "test CA")
	f := testutil.WriteTLS(t, t.TempDir(), ca)
	files := tlsconf.Files{Cert: f.Cert, Key: f.Key}
	if mutual {
		files.ClientCA = f.CA
	}
	r, err := tlsconf.New(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.TLS, o.ClientCertRequired = r.Config(), r.ClientCertRequired()
	o.Logger = slog.New(slog.DiscardHandler)
	s := New(o)
	s.AddModel(fakeModel("toy", 1))
	s.SetReady(true)
	httpAddr, served := serveLoopback(t, s)
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gserved := make(chan error, 1)
	go func() { gserved <- s.ServeGRPC(gln) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		<-served
		<-gserved
	})
	return httpAddr, gln.Addr().String(), ca
}

func httpsClient(ca *testutil.CA, certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs},
	}}
}

const toyInfer = `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[300,200]}]}`

// call sends one request and returns the status and the error code of a
// JSON error answer.
func call(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == "POST" {
		body = strings.NewReader(toyInfer)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string }
	}
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code
}

func TestTLS(t *testing.T) {
	httpAddr, grpcAddr, ca := tlsServer(t, false, Options{})
	c := httpsClient(ca)
	for _, path := range []string{"/v2/health/ready", "/v2", "/metrics"} {
		if st, code := call(t, c, "GET", "https://"+httpAddr+path); st != 200 {
			t.Errorf("GET %s over TLS = %d %s", path, st, code)
		}
	}
	if st, code := call(t, c, "POST", "https://"+httpAddr+"/v2/models/toy/infer"); st != 200 {
		t.Errorf("infer over TLS = %d %s", st, code)
	}
	// In the clear, the TLS port answers nothing an HTTP client can read.
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get("http://" + httpAddr + "/v2/health/ready"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("the TLS port answered plain HTTP with 200")
		}
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := inferpb.NewGRPCInferenceServiceClient(conn).ModelInfer(ctx, toyGRPCRequest()); err != nil {
		t.Errorf("gRPC ModelInfer over TLS: %v", err)
	}
	clear, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer clear.Close()
	if _, err := inferpb.NewGRPCInferenceServiceClient(clear).ServerLive(ctx, &inferpb.ServerLiveRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC in the clear to the TLS port: %v, want Unavailable", err)
	}
}

func toyGRPCRequest() *inferpb.ModelInferRequest {
	return &inferpb.ModelInferRequest{
		ModelName: "toy",
		Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{
			Name: "data", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &inferpb.InferTensorContents{Fp32Contents: []float32{300, 200}},
		}},
	}
}

// With client certificates required, the health checks answer anyone
// (Kubernetes' probes present no certificate) and everything else only
// clients whose certificate the client CA signed.
func TestMutualTLS(t *testing.T) {
	httpAddr, grpcAddr, ca := tlsServer(t, true, Options{})
	anon, signed := httpsClient(ca), httpsClient(ca, ca.ClientCert(t, "client"))
	for _, tc := range []struct {
		method, path string
		open         bool
	}{
		{"GET", "/v2/health/live", true},
		{"GET", "/v2/health/ready", true},
		{"GET", "/v2", false},
		{"GET", "/v2/models/toy", false},
		{"POST", "/v2/models/toy/infer", false},
		{"GET", "/v1/models", false},
		{"GET", "/metrics", false},
		{"GET", "/", false},
	} {
		url := "https://" + httpAddr + tc.path
		st, code := call(t, anon, tc.method, url)
		if tc.open && st != 200 || !tc.open && (st != 401 || code != "client_certificate_required") {
			t.Errorf("%s %s without a client certificate = %d %q", tc.method, tc.path, st, code)
		}
		if st, code := call(t, signed, tc.method, url); st != 200 {
			t.Errorf("%s %s with a client certificate = %d %q", tc.method, tc.path, st, code)
		}
	}

	dial := func(certs ...tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name  string
		conn  *grpc.ClientConn
		infer codes.Code
	}{
		{"without a client certificate", dial(), codes.Unauthenticated},
		{"with a client certificate", dial(ca.ClientCert(t, "client")), codes.OK},
	} {
		c := inferpb.NewGRPCInferenceServiceClient(tc.conn)
		if _, err := c.ServerLive(ctx, &inferpb.ServerLiveRequest{}); err != nil {
			t.Errorf("ServerLive %s: %v", tc.name, err)
		}
		if _, err := healthpb.NewHealthClient(tc.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health Check %s: %v", tc.name, err)
		}
		if _, err := c.ModelInfer(ctx, toyGRPCRequest()); status.Code(err) != tc.infer {
			t.Errorf("ModelInfer %s: %v, want %v", tc.name, err, tc.infer)
		}
		if _, err := c.ServerMetadata(ctx, &inferpb.ServerMetadataRequest{}); status.Code(err) != tc.infer {
			t.Errorf("ServerMetadata %s: %v, want %v", tc.name, err, tc.infer)
		}
		stream, err := c.ModelStreamInfer(ctx)
		if err == nil {
			stream.Send(toyGRPCRequest())
			_, err = stream.Recv()
		}
		if status.Code(err) != tc.infer {
			t.Errorf("ModelStreamInfer %s: %v, want %v", tc.name, err, tc.infer)
		}
	}
}

// A connection over MaxConnsPerIP is closed rather than answered in the
// clear, which a TLS client would take for a broken handshake.
func TestTLSConnsOverCap(t *testing.T) {
	httpAddr, _, ca := tlsServer(t, false, Options{MaxConnsPerIP: 1})
	first, err := tls.Dial("tcp", httpAddr, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = tls.Dial("tcp", httpAddr, &tls.Config{RootCAs: ca.Pool()})
	if err == nil || strings.Contains(err.Error(), "does not look like a TLS handshake") {
		t.Fatalf("second connection: %v, want the connection closed", err)
	}
}

// Under TLS, a client that went away is still seen on the socket below.
func TestPeerClosedUnderTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Server(raw, &tls.Config{})
	defer conn.Close()
	if peerClosed(conn) {
		t.Fatal("an open connection reported closed")
	}
	client.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !peerClosed(conn) {
		if time.Now().After(deadline) {
			t.Fatal("a closed client was not noticed under TLS")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
