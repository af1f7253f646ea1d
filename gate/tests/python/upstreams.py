"""The services tokend-gate protects in its tests: Python, with no
authentication code at all. They trust the identity headers Envoy passes on
(x-tokend-subject, x-tokend-scopes, x-tokend-session, x-tokend-actor-chain)
and report what they received, so a test can tell what reached them.

- a grpcio demo.v1.EchoService (messages built at run time from the
  checked-in descriptor set, no generated code), with grpc.health.v1 and
  server reflection;
- a plain HTTP server: any request answers 200 with a JSON body of the
  method, path and identity headers it got.

Usage: upstreams.py DEMO_DESCRIPTOR_SET [GRPC_ADDR HTTP_ADDR]
(default: free ports on 127.0.0.1). Prints "http on ADDR", then
"grpc on ADDR" once both serve.
"""

import http.server
import json
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

IDENTITY = ("x-tokend-subject", "x-tokend-scopes", "x-tokend-session", "x-tokend-actor-chain")


def load_pool(path):
    """The demo API, and google.rpc's error details so that reflection lets
    grpcurl decode the ErrorInfo of a refusal."""
    pool = descriptor_pool.DescriptorPool()
    for module in (duration_pb2, error_details_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    files = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        files.ParseFromString(f.read())
    for file in files.file:
        pool.Add(file)
    return pool


def identity(context):
    metadata = dict(context.invocation_metadata())
    return {name: metadata.get(name) for name in IDENTITY}


def echo_service(pool):
    service = pool.FindServiceByName("demo.v1.EchoService")

    def message_class(method, which):
        descriptor = service.FindMethodByName(method)
        return message_factory.GetMessageClass(
            descriptor.input_type if which == "in" else descriptor.output_type
        )

    def ping(request, context):
        return message_class("Ping", "out")()

    def echo(request, context):
        seen = identity(context)
        chain = seen["x-tokend-actor-chain"]
        return message_class("Echo", "out")(
            message=request.message,
            subject=seen["x-tokend-subject"] or "",
            actor_chain=chain.split(",") if chain else [],
        )

    def admin_echo(request, context):
        seen = identity(context)
        return message_class("AdminEcho", "out")(
            message=request.message, subject=seen["x-tokend-subject"] or ""
        )

    def relay_echo(request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "no downstream here")

    handlers = {}
    for name, function in (
        ("Ping", ping),
        ("Echo", echo),
        ("AdminEcho", admin_echo),
        ("RelayEcho", relay_echo),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            function,
            request_deserializer=message_class(name, "in").FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler("demo.v1.EchoService", handlers)


class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "identity": {name: self.headers.get(name) for name in IDENTITY},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass


def main():
    pool = load_pool(sys.argv[1])
    grpc_addr, http_addr = (sys.argv[2:4] + ["127.0.0.1:0", "127.0.0.1:0"])[:2]
    http_host, http_port = http_addr.rsplit(":", 1)
    api = http.server.ThreadingHTTPServer((http_host, int(http_port)), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    print(f"http on {http_host}:{api.server_address[1]}", flush=True)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((echo_service(pool),))
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    checks.set("demo.v1.EchoService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    reflection.enable_server_reflection(
        ("demo.v1.EchoService", health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=pool
    )
    port = server.add_insecure_port(grpc_addr)
    server.start()
    print(f"grpc on {grpc_addr.rsplit(':', 1)[0]}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
