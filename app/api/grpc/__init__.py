"""The gRPC Open Inference Protocol (KServe V2) transport: :mod:`app.api.grpc.server` on its own port.

``open_inference_pb2*`` are generated from ``open_inference.proto`` by ``scripts/gen_grpc.sh``.
"""
