"""A gRPC client of fastinfer in Python, on grpcio (gRPC's C core, as
tritonclient.grpc and perf_analyzer use it), for TestGRPCPythonClient.

    python3 client.py HOST:PORT MODEL

It prints one JSON object: what each call answered. The Go test checks it.
grpc_service_pb2.py beside it is generated from
server/inferpb/grpc_service.proto (go generate ./server/inferpb).
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import grpc_service_pb2 as pb  # noqa: E402

SERVICE = "/inference.GRPCInferenceService/"


def unary(channel, method, response):
    return channel.unary_unary(SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response.FromString)


def strings(raw):
    """BYTES in raw form: each string behind its 4-byte little-endian length."""
    out = []
    while len(raw) >= 4:
        (n,) = struct.unpack_from("<I", raw)
        out.append(raw[4:4 + n].decode())
        raw = raw[4 + n:]
    return out


def main():
    addr, model = sys.argv[1], sys.argv[2]
    result = {}
    with grpc.insecure_channel(addr) as ch:
        result["live"] = unary(ch, "ServerLive", pb.ServerLiveResponse)(pb.ServerLiveRequest()).live
        meta = unary(ch, "ModelMetadata", pb.ModelMetadataResponse)(pb.ModelMetadataRequest(name=model))
        inp = meta.inputs[0]
        result["input"] = {"name": inp.name, "datatype": inp.datatype, "shape": list(inp.shape)}
        cfg = unary(ch, "ModelConfig", pb.ModelConfigResponse)(pb.ModelConfigRequest(name=model)).config
        result["max_batch_size"] = cfg.max_batch_size

        shape = [2] + list(inp.shape[1:])
        count = 1
        for d in shape:
            count *= d
        req = pb.ModelInferRequest(model_name=model, id="py-1")
        t = req.inputs.add(name=inp.name, datatype="FP32")
        t.shape.extend(shape)
        o = req.outputs.add(name=meta.outputs[0].name)
        o.parameters["classification"].int64_param = 1
        req.raw_input_contents.append(struct.pack("<%df" % count, *([0.0] * count)))
        infer = unary(ch, "ModelInfer", pb.ModelInferResponse)
        answers = {}
        for name, compression in [("none", grpc.Compression.NoCompression), ("gzip", grpc.Compression.Gzip),
                                  ("deflate", grpc.Compression.Deflate)]:
            resp = infer(req, compression=compression)
            answers[name] = {"id": resp.id, "datatype": resp.outputs[0].datatype,
                             "shape": list(resp.outputs[0].shape), "top": strings(resp.raw_output_contents[0])}
        result["infer"] = answers

        try:
            infer(pb.ModelInferRequest(model_name="no-such-model"))
            result["unknown_model"] = "OK"
        except grpc.RpcError as e:
            result["unknown_model"] = e.code().name

        stream = ch.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=pb.ModelStreamInferResponse.FromString)

        def requests():
            for i in range(3):
                r = pb.ModelInferRequest()
                r.CopyFrom(req)
                r.id = "s%d" % i
                yield r
            bad = pb.ModelInferRequest(model_name="no-such-model", id="s-bad")
            yield bad

        streamed = {}
        for r in stream(requests()):
            streamed[r.infer_response.id] = r.error_message or strings(r.infer_response.raw_output_contents[0])[0]
        result["stream"] = streamed
        result["shm"] = shared_memory_infer(ch, model, inp.name, shape, count, infer)
        result["cuda_shm"] = cuda_shared_memory(ch)
    print(json.dumps(result, sort_keys=True))


def shared_memory_infer(ch, model, input_name, shape, count, infer):
    """The same request through system shared memory, as tritonclient's
    utils.shared_memory does it: an object from shm_open (Python's
    SharedMemory), two regions of it registered, the input read from one
    and the classification strings written into the other."""
    from multiprocessing import shared_memory
    size = 4 * count
    shm = shared_memory.SharedMemory(create=True, size=size + 4096)
    try:
        shm.buf[:size] = bytes(size)
        key = "/" + shm.name
        register = unary(ch, "SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterResponse)
        register(pb.SystemSharedMemoryRegisterRequest(name="py-in", key=key, offset=0, byte_size=size))
        register(pb.SystemSharedMemoryRegisterRequest(name="py-out", key=key, offset=size, byte_size=4096))
        status = unary(ch, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusResponse)(pb.SystemSharedMemoryStatusRequest())

        req = pb.ModelInferRequest(model_name=model, id="py-shm")
        t = req.inputs.add(name=input_name, datatype="FP32")
        t.shape.extend(shape)
        t.parameters["shared_memory_region"].string_param = "py-in"
        t.parameters["shared_memory_byte_size"].int64_param = size
        o = req.outputs.add(name="logits")
        o.parameters["classification"].int64_param = 1
        o.parameters["shared_memory_region"].string_param = "py-out"
        o.parameters["shared_memory_byte_size"].int64_param = 4096
        resp = infer(req)
        written = resp.outputs[0].parameters["shared_memory_byte_size"].int64_param
        top = strings(bytes(shm.buf[size:size + written]))
        unary(ch, "SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterResponse)(
            pb.SystemSharedMemoryUnregisterRequest())
        left = unary(ch, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusResponse)(pb.SystemSharedMemoryStatusRequest())
        return {"regions": sorted(status.regions), "key_ok": status.regions["py-in"].key == key, "top": top,
                "raw_outputs": len(resp.raw_output_contents), "left": len(left.regions)}
    finally:
        shm.close()
        shm.unlink()


def cuda_shared_memory(ch):
    """The CUDA extension's calls by tritonclient's names and messages: the
    status lists nothing; registering a handle no process exported is
    refused (Unimplemented without a GPU, InvalidArgument with one)."""
    status = unary(ch, "CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusResponse)(pb.CudaSharedMemoryStatusRequest())
    try:
        unary(ch, "CudaSharedMemoryRegister", pb.CudaSharedMemoryRegisterResponse)(
            pb.CudaSharedMemoryRegisterRequest(name="py-cuda", raw_handle=bytes(64), device_id=0, byte_size=16))
        register, details = "OK", ""
    except grpc.RpcError as e:
        register, details = e.code().name, e.details()
    return {"regions": len(status.regions), "register": register, "details": details}


if __name__ == "__main__":
    main()
