"""A gRPC (KServe v2) upstream for gateway fault tests: live at once, ModelInfer hangs.

Run as ``python grpc_upstream.py``; prints its port on the first stdout line.
"""

from __future__ import annotations

import time
from concurrent import futures

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def ServerLive(
        self, request: service_pb2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    def ModelInfer(
        self, request: service_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        time.sleep(60)
        return service_pb2.ModelInferResponse(model_name=request.model_name)


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
