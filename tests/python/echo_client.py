"""Cross-language check: a Python grpcio client logs in at tokend and calls the
example resource server, with stubs built at run time from server reflection
(no generated code, no proto files).

Usage: echo_client.py TOKEND_ADDR RESOURCE_ADDR CLIENT_SECRET [CA_PEM [CERT_PEM KEY_PEM]]
With CA_PEM both servers are reached over TLS, verified against that CA; with
CERT_PEM and KEY_PEM the client presents that certificate (mTLS).
Exits non-zero (with a message) on the first failed expectation.
"""

import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status


class Reflected:
    """Calls any unary method of a server, by name, via reflection."""

    def __init__(self, channel):
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))

    def call(self, service, method, fields, metadata=()):
        descriptor = self.pool.FindServiceByName(service).FindMethodByName(method)
        request_class = message_factory.GetMessageClass(descriptor.input_type)
        response_class = message_factory.GetMessageClass(descriptor.output_type)
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        return stub(request_class(**fields), metadata=metadata, timeout=10)


def reason_of(error):
    """The ErrorInfo reason of a failed call, or None."""
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


def expect_error(call, code, reason):
    try:
        call()
    except grpc.RpcError as error:
        expect(error.code() == code, f"expected {code}, got {error.code()}: {error.details()}")
        got = reason_of(error)
        expect(got == ("tokend", reason), f"expected reason {reason}, got {got}")
        return
    expect(False, f"expected {code} {reason}, the call succeeded")


def channel(addr, tls):
    if tls is None:
        return grpc.insecure_channel(addr)
    return grpc.secure_channel(addr, grpc.ssl_channel_credentials(*tls))


def main():
    tokend_addr, resource_addr, client_secret = sys.argv[1:4]
    tls = None
    if len(sys.argv) > 4:
        read = lambda path: open(path, "rb").read()
        root = read(sys.argv[4])
        key, chain = (read(sys.argv[6]), read(sys.argv[5])) if len(sys.argv) > 6 else (None, None)
        tls = (root, key, chain)
    tokend = Reflected(channel(tokend_addr, tls))
    resource = Reflected(channel(resource_addr, tls))

    user = tokend.call(
        "tokend.v1.TokenService",
        "Login",
        {"password": {"username": "demo", "password": "demo-password"}},
    )
    expect(user.tokens.access_token.startswith("v4.public."), "user access token")
    expect(user.tokens.token_type == "Bearer", "token type")

    service = tokend.call(
        "tokend.v1.TokenService",
        "Login",
        {"client": {"client_id": "demo-client", "client_secret": client_secret}},
    )
    expect(service.tokens.refresh_token == "", "client credentials get no refresh token")

    auth = (("authorization", f"Bearer {user.tokens.access_token}"),)
    reply = resource.call("demo.v1.EchoService", "Echo", {"message": "from python"}, auth)
    expect(reply.message == "from python", "echoed message")
    expect(reply.subject == "demo", f"subject is the token's sub, got {reply.subject!r}")

    reply = resource.call("demo.v1.EchoService", "AdminEcho", {"message": "x"}, auth)
    expect(reply.subject == "demo", "the demo user has admin")

    resource.call("demo.v1.EchoService", "Ping", {})

    expect_error(
        lambda: resource.call("demo.v1.EchoService", "Echo", {"message": "x"}),
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_MISSING",
    )
    expect_error(
        lambda: resource.call(
            "demo.v1.EchoService", "Echo", {"message": "x"}, (("authorization", "Bearer v4.public.junk"),)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_INVALID",
    )
    service_auth = (("authorization", f"Bearer {service.tokens.access_token}"),)
    expect_error(
        lambda: resource.call("demo.v1.EchoService", "AdminEcho", {"message": "x"}, service_auth),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    expect_error(
        lambda: tokend.call(
            "tokend.v1.TokenService",
            "Refresh",
            {"refresh_token": "tkd_rt_not.a-real-token"},
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
