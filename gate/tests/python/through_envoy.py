"""A Python grpcio client of the demo.v1 service behind Envoy and
tokend-gate: refusals carry the same gRPC codes and ErrorInfo reasons a
tonic client gets from the interceptor.

Usage: through_envoy.py ENVOY_ADDR USER_TOKEN CLIENT_TOKEN DEMO_DESCRIPTOR_SET
(the user has scopes read and admin; the client read only).
Exits non-zero, with a message, on the first failed expectation.
"""

import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def reason_of(error):
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return (info.domain, info.reason)
    return None


def expect(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    addr, user, client, descriptors = sys.argv[1:5]
    files = descriptor_pb2.FileDescriptorSet()
    with open(descriptors, "rb") as f:
        files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    service = pool.FindServiceByName("demo.v1.EchoService")
    channel = grpc.insecure_channel(addr)

    def call(method, fields, token=None, extra=()):
        descriptor = service.FindMethodByName(method)
        request = message_factory.GetMessageClass(descriptor.input_type)(**fields)
        response = message_factory.GetMessageClass(descriptor.output_type)
        stub = channel.unary_unary(
            f"/demo.v1.EchoService/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        metadata = list(extra)
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        return stub(request, metadata=metadata, timeout=10)

    def refused(method, fields, token, code, reason):
        try:
            call(method, fields, token)
        except grpc.RpcError as error:
            expect(error.code() == code, f"{method}: expected {code}, got {error.code()}")
            got = reason_of(error)
            expect(got == ("tokend", reason), f"{method}: expected {reason}, got {got}")
            return
        expect(False, f"{method}: expected {reason}, the call succeeded")

    refused("Echo", {"message": "hi"}, None, grpc.StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_MISSING")
    refused("Echo", {"message": "hi"}, "v4.public.x", grpc.StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")
    refused("AdminEcho", {"message": "hi"}, client, grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    refused("RelayEcho", {"message": "hi"}, user, grpc.StatusCode.PERMISSION_DENIED, "PATH_NOT_ALLOWED")
    answer = call("Echo", {"message": "hi"}, user, extra=[("x-tokend-subject", "root")])
    expect(answer.subject == "demo", f"the subject Envoy passed on: {answer.subject!r}")
    call("Ping", {})
    print("all checks passed")


if __name__ == "__main__":
    main()
