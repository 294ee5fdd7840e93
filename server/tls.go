package server

import (
	"context"
	"crypto/tls"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"fastinfer/internal/tlsconf"
)

// Mutual TLS (Options.ClientCertRequired). The handshake accepts a client
// without a certificate, so that Kubernetes' probes, which present none,
// reach the health checks; every other endpoint refuses such a client.
// A certificate that is presented but does not verify fails the
// handshake itself.

var errClientCert = errorf(401, "client_certificate_required",
	"this server requires a TLS client certificate signed by one of its client CAs (--tls-client-ca)")

// grpcOpen are the gRPC methods answered without a client certificate:
// the health checks, as over HTTP.
func grpcOpen(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		method == "/inference.GRPCInferenceService/ServerLive" ||
		method == "/inference.GRPCInferenceService/ServerReady"
}

func grpcVerified(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && tlsconf.Verified(&info.State)
}

func (s *Server) grpcClientCert(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if !grpcOpen(info.FullMethod) && !grpcVerified(ctx) {
		return nil, status.Error(codes.Unauthenticated, errClientCert.message)
	}
	return next(ctx, req)
}

func (s *Server) grpcStreamClientCert(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if !grpcOpen(info.FullMethod) && !grpcVerified(ss.Context()) {
		return status.Error(codes.Unauthenticated, errClientCert.message)
	}
	return next(srv, ss)
}

// grpcTLS is the gRPC server's options for Options.TLS.
func (s *Server) grpcTLS() []grpc.ServerOption {
	if s.opts.TLS == nil {
		return nil
	}
	// NewTLS clones the configuration and offers h2 by ALPN.
	opts := []grpc.ServerOption{grpc.Creds(credentials.NewTLS(s.opts.TLS))}
	if s.opts.ClientCertRequired {
		opts = append(opts, grpc.ChainUnaryInterceptor(s.grpcClientCert), grpc.ChainStreamInterceptor(s.grpcStreamClientCert))
	}
	return opts
}

// netConn is the connection under a TLS one, for peerClosed's peek.
func netConn(c any) any {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}
