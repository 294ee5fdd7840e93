"""Python clients of a fastinfer serving mutual TLS, for TestTLSPythonClients:
gRPC on grpcio (gRPC's C core with its own TLS stack, as tritonclient.grpc
and perf_analyzer use it) and HTTPS on Python's ssl module (OpenSSL).

    python3 tls_client.py HTTPS_BASE GRPC_ADDR MODEL CA CERT KEY

It prints one JSON object: what each call answered, with the client
certificate and without it. The Go test checks it.
"""
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import grpc_service_pb2 as pb  # noqa: E402

SERVICE = "/inference.GRPCInferenceService/"


def unary(channel, method, response):
    return channel.unary_unary(SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response.FromString)


def grpc_calls(addr, model, creds):
    out = {}
    with grpc.secure_channel(addr, creds) as ch:
        out["live"] = unary(ch, "ServerLive", pb.ServerLiveResponse)(pb.ServerLiveRequest()).live
        try:
            meta = unary(ch, "ModelMetadata", pb.ModelMetadataResponse)(pb.ModelMetadataRequest(name=model))
            out["metadata"] = meta.inputs[0].name
        except grpc.RpcError as e:
            out["metadata"] = e.code().name
    return out


def https_get(url, ctx):
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    base, addr, model, ca, cert, key = sys.argv[1:7]
    read = lambda p: open(p, "rb").read()  # noqa: E731
    result = {
        "grpc_with_cert": grpc_calls(addr, model, grpc.ssl_channel_credentials(
            root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))),
        "grpc_without_cert": grpc_calls(addr, model, grpc.ssl_channel_credentials(root_certificates=read(ca))),
    }
    with_cert = ssl.create_default_context(cafile=ca)
    with_cert.load_cert_chain(cert, key)
    without = ssl.create_default_context(cafile=ca)
    result["https"] = {
        "ready_without_cert": https_get(base + "/v2/health/ready", without),
        "metadata_without_cert": https_get(base + "/v2/models/" + model, without),
        "metadata_with_cert": https_get(base + "/v2/models/" + model, with_cert),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
