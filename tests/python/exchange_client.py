"""Cross-language check of on-behalf-of calls: a Python grpcio service trades a
user's token for one good at the example resource server (TokenService.Exchange)
and calls it with that; stubs come from server reflection.

Usage: exchange_client.py TOKEND_ADDR RESOURCE_ADDR CLIENT_SECRET
TOKEND_ADDR runs with --dev and the example exchange policy (the demo client
may obtain "orders" tokens with scope read); RESOURCE_ADDR is a resource
server for the audience "orders". Exits non-zero on the first failed
expectation.
"""

import sys

import grpc

from echo_client import Reflected, expect, expect_error

SERVICE = "tokend.v1.TokenService"


def main():
    tokend_addr, resource_addr, client_secret = sys.argv[1:4]
    tokend = Reflected(grpc.insecure_channel(tokend_addr))
    resource = Reflected(grpc.insecure_channel(resource_addr))

    user = tokend.call(
        SERVICE,
        "Login",
        {"password": {"username": "demo", "password": "demo-password"}, "audience": "demo-client"},
    )
    own = tokend.call(
        SERVICE,
        "Login",
        {
            "client": {"client_id": "demo-client", "client_secret": client_secret},
            "audience": "tokend",
        },
    )
    auth = (("authorization", f"Bearer {own.tokens.access_token}"),)

    derived = tokend.call(
        SERVICE,
        "Exchange",
        {"subject_token": user.tokens.access_token, "audience": "orders"},
        auth,
    )
    expect(derived.access_token.startswith("v4.public."), "a derived access token")
    expect(list(derived.actor_chain) == ["demo-client"], f"actor chain {derived.actor_chain}")
    expect(list(derived.scopes) == ["read"], f"scopes {derived.scopes}")
    expect(derived.expires_at.seconds > 0, "an expiry")
    expect(
        derived.expires_at.seconds <= user.tokens.access_token_expires_at.seconds,
        "never beyond the user's token",
    )

    on_behalf = (("authorization", f"Bearer {derived.access_token}"),)
    reply = resource.call("demo.v1.EchoService", "Echo", {"message": "via python"}, on_behalf)
    expect(reply.subject == "demo", f"the user, got {reply.subject!r}")
    expect(list(reply.actor_chain) == ["demo-client"], f"actors {reply.actor_chain}")

    expect_error(
        lambda: tokend.call(
            SERVICE,
            "Exchange",
            {"subject_token": user.tokens.access_token, "audience": "orders", "scopes": ["admin"]},
            auth,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_NOT_ALLOWED",
    )
    expect_error(
        lambda: tokend.call(
            SERVICE,
            "Exchange",
            {"subject_token": user.tokens.refresh_token, "audience": "orders"},
            auth,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    expect_error(
        lambda: tokend.call(
            SERVICE,
            "Exchange",
            {"subject_token": user.tokens.access_token, "audience": "orders"},
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_MISSING",
    )
    # The user's own token is not for orders: the exchange was the way in.
    expect_error(
        lambda: resource.call(
            "demo.v1.EchoService",
            "Echo",
            {"message": "x"},
            (("authorization", f"Bearer {user.tokens.access_token}"),),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_INVALID",
    )
    print("python exchange client: all checks passed")


if __name__ == "__main__":
    main()
