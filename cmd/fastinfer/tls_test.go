package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"fastinfer/bench"
	"fastinfer/internal/testutil"
	"fastinfer/server/inferpb"
)

// serve with --tls-cert, --tls-key and --tls-client-ca: images classified
// over HTTPS and tensors over gRPC with TLS for a client the CA signed,
// refused for one without a certificate; and fastinfer bench drives it
// with --tls-ca and its own client pair.
func TestServeMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	dir := t.TempDir()
	ca := testutil.NewCA(t, "test CA")
	f := testutil.WriteTLS(t, dir, ca)
	certFile, keyFile := f.ClientCert, f.ClientKey
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}

	repo := fashionRepo(t)
	base, logs, stop := startServe(t, repo, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-client-ca", f.CA)
	defer stop()
	if !strings.HasPrefix(base, "https://") || !strings.Contains(logs.String(), "tls=mutual") {
		t.Fatalf("base %s; log:\n%s", base, logs)
	}

	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	classify := func(c *http.Client) (int, string) {
		var body bytes.Buffer
		w := multipart.NewWriter(&body)
		part, _ := w.CreateFormFile("image", "boot.png")
		part.Write(img)
		w.Close()
		resp, err := c.Post(base+"/v1/models/fashion-resnet/classify", w.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs}}}
	}
	if st, body := classify(client(pair)); st != 200 || !strings.Contains(body, `"label":"Ankle boot"`) {
		t.Fatalf("classify with a client certificate = %d %s", st, body)
	}
	if st, body := classify(client()); st != 401 || !strings.Contains(body, "client_certificate_required") {
		t.Fatalf("classify without a client certificate = %d %s", st, body)
	}

	gaddr, _ := grpcAddrs.Load(base)
	conn, err := grpc.NewClient(gaddr.(string), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md, err := inferpb.NewGRPCInferenceServiceClient(conn).ModelMetadata(ctx, &inferpb.ModelMetadataRequest{Name: "fashion-resnet"})
	if err != nil || md.Inputs[0].Name != "data" {
		t.Fatalf("gRPC ModelMetadata over mutual TLS: %v, %v", md, err)
	}

	// The bench, as a client the CA signed; without the pair it is refused.
	out := filepath.Join(dir, "r.json")
	args := []string{"bench", "--url", base, "--grpc-addr", gaddr.(string), "--model", "fashion-resnet", "--targets", "tensor,grpc",
		"--concurrency", "1", "--warmup", "100ms", "--duration", "300ms", "--out", out, "--tls-ca", f.CA}
	var stdout, stderr bytes.Buffer
	if code := run(append(args, "--tls-cert", certFile, "--tls-key", keyFile), &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("bench over mutual TLS: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	res, err := bench.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 {
		t.Fatalf("steps %+v", res.Steps)
	}
	for _, s := range res.Steps {
		if s.Requests == 0 || len(s.Errors) > 0 {
			t.Errorf("%s: %d requests, errors %v", s.Key(), s.Requests, s.Errors)
		}
	}
	stderr.Reset()
	if code := run(args, io.Discard, &stderr, func(string) string { return "" }); code == 0 || !strings.Contains(stderr.String(), "401") {
		t.Fatalf("bench without a client certificate: exit %d, %s", code, stderr.String())
	}
}

func TestTLSFlagRefusals(t *testing.T) {
	dir := t.TempDir()
	f := testutil.WriteTLS(t, dir, testutil.NewCA(t, "test CA"))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"serve: certificate without key", []string{"serve", "--models", dir, "--tls-cert", f.Cert}, "both a certificate and its key"},
		{"serve: client CA alone", []string{"serve", "--models", dir, "--tls-client-ca", f.CA}, "both a certificate and its key"},
		{"serve: swapped", []string{"serve", "--models", dir, "--tls-cert", f.Key, "--tls-key", f.Cert}, "swapped"},
		{"bench: client pair without CA", []string{"bench", "--url", "https://127.0.0.1:1", "--model", "m", "--targets", "tensor", "--tls-cert", f.Cert, "--tls-key", f.Key}, "need --tls-ca"},
		{"bench: CA for plain HTTP", []string{"bench", "--url", "http://127.0.0.1:1", "--model", "m", "--targets", "tensor", "--tls-ca", f.CA}, "is not https://"},
		{"bench: CA file without certificates", []string{"bench", "--url", "https://127.0.0.1:1", "--model", "m", "--targets", "tensor", "--tls-ca", f.Key}, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, io.Discard, &stderr, func(string) string { return "" })
			if code == 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// Clients on other TLS stacks than Go's: grpcio (gRPC's C core, under
// tritonclient.grpc and perf_analyzer) and Python's ssl (OpenSSL), with a
// client certificate and without one.
func TestTLSPythonClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	py := grpcPython()
	if py == "" {
		t.Skip("no python3 with grpcio and protobuf (scripts/deps.sh installs python3-grpcio and python3-protobuf)")
	}
	f := testutil.WriteTLS(t, t.TempDir(), testutil.NewCA(t, "test CA"))
	base, _, stop := startServe(t, fashionRepo(t), "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-client-ca", f.CA)
	defer stop()
	gaddr, _ := grpcAddrs.Load(base)
	// The certificate names localhost: the clients must not connect by IP
	// to check the name.
	local := func(addr string) string { return strings.Replace(addr, "127.0.0.1", "localhost", 1) }
	out, err := exec.Command(py, filepath.Join("testdata", "grpcpy", "tls_client.py"), local(base), local(gaddr.(string)),
		"fashion-resnet", f.CA, f.ClientCert, f.ClientKey).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got struct {
		With    map[string]any `json:"grpc_with_cert"`
		Without map[string]any `json:"grpc_without_cert"`
		HTTPS   map[string]int `json:"https"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.With["live"] != true || got.With["metadata"] != "data" {
		t.Errorf("grpcio with a client certificate: %v", got.With)
	}
	if got.Without["live"] != true || got.Without["metadata"] != "UNAUTHENTICATED" {
		t.Errorf("grpcio without a client certificate: %v", got.Without)
	}
	if h := got.HTTPS; h["ready_without_cert"] != 200 || h["metadata_without_cert"] != 401 || h["metadata_with_cert"] != 200 {
		t.Errorf("Python ssl over HTTPS: %v", h)
	}
}

// A bearer token on a port other hosts can reach, without TLS, is
// warned about once; on loopback, or with TLS, it is not.
func TestTokenInTheClearWarning(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	const warning = "bearer tokens cross the network in the clear"
	repo := fashionRepo(t)
	_, logs, stop := startServe(t, repo, "--api-token", "secret")
	stop()
	if strings.Contains(logs.String(), warning) {
		t.Errorf("warned on loopback:\n%s", logs)
	}
	_, logs, stop = startServe(t, repo, "--addr", ":0", "--admin-token", "secret")
	stop()
	if strings.Count(logs.String(), warning) != 1 {
		t.Errorf("no single warning on all interfaces:\n%s", logs)
	}
	f := testutil.WriteTLS(t, t.TempDir(), testutil.NewCA(t, "test CA"))
	_, logs, stop = startServe(t, repo, "--addr", ":0", "--api-token", "secret", "--tls-cert", f.Cert, "--tls-key", f.Key)
	stop()
	if strings.Contains(logs.String(), warning) {
		t.Errorf("warned with TLS on:\n%s", logs)
	}
}
