"""Cross-language check of the administration API: a Python grpcio client,
with stubs built at run time from server reflection (no proto files),
calls every tokend.admin.v1.AdminService method as the demo administrator,
and each refusal: anonymous, a user without the scope, a read-only
administrator changing something, a token for another audience, malformed
input.

Usage: admin_client.py ADMIN_ADDR TOKEND_ADDR
(the tokend runs with --dev: the demo user has scope tokend.admin).
Exits non-zero (with a message) on the first failed expectation.
"""

import sys

import grpc

from echo_client import Reflected, expect, expect_error

ADMIN = "tokend.admin.v1.AdminService"
TOKENS = "tokend.v1.TokenService"


def main():
    admin_addr, tokend_addr = sys.argv[1:3]
    admin = Reflected(grpc.insecure_channel(admin_addr))
    tokend = Reflected(grpc.insecure_channel(tokend_addr))

    def token(username, password, audience="tokend"):
        reply = tokend.call(
            TOKENS,
            "Login",
            {"password": {"username": username, "password": password}, "audience": audience},
        )
        return (("authorization", f"Bearer {reply.tokens.access_token}"),)

    root = token("demo", "demo-password")

    def call(method, fields, auth=root):
        return admin.call(ADMIN, method, fields, auth)

    # Users.
    created = call("CreateUser", {"name": "py-user", "password": "py-password", "scopes": ["read"]})
    expect(created.user.name == "py-user" and list(created.user.scopes) == ["read"], f"{created}")
    call("CreateUser", {"name": "py-reader", "password": "reader-pw", "scopes": ["tokend.admin.read"]})
    tokend.call(TOKENS, "Login", {"password": {"username": "py-user", "password": "py-password"}})
    got = call("GetUser", {"name": "py-user"})
    expect(got.user.session_count == 1, f"one session: {got}")
    listed = call("ListUsers", {"prefix": "py-", "page_size": 1})
    expect([u.name for u in listed.users] == ["py-reader"], f"{listed}")
    expect(listed.next_page_token != "", "a next page")
    rest = call("ListUsers", {"prefix": "py-", "page_size": 1, "page_token": listed.next_page_token})
    expect([u.name for u in rest.users] == ["py-user"], f"{rest}")
    sessions = call("ListUserSessions", {"name": "py-user"})
    expect(len(sessions.sessions) == 1, f"{sessions}")
    call("RevokeUserSession", {"name": "py-user", "session_id": sessions.sessions[0].session_id})
    call("SetUserScopes", {"name": "py-user", "scopes": ["read", "write"]})
    call("SetUserPassword", {"name": "py-user", "password": "py-password-2"})
    tokend.call(TOKENS, "Login", {"password": {"username": "py-user", "password": "py-password-2"}})
    ended = call("RevokeAllUserSessions", {"name": "py-user"})
    expect(ended.sessions_ended == 1, f"{ended}")
    call("DisableUser", {"name": "py-user"})
    expect_error(
        lambda: tokend.call(TOKENS, "Login", {"password": {"username": "py-user", "password": "py-password-2"}}),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    call("EnableUser", {"name": "py-user"})
    call("DeleteUser", {"name": "py-user"})
    expect_error(lambda: call("GetUser", {"name": "py-user"}), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")

    # Service clients.
    made = call("CreateClient", {"client_id": "py-svc", "scopes": ["read"]})
    expect(made.client_secret.startswith("tkd_cs_"), "a secret, once")
    tokend.call(TOKENS, "Login", {"client": {"client_id": "py-svc", "client_secret": made.client_secret}})
    rotated = call("RotateClientSecret", {"client_id": "py-svc"})
    expect_error(
        lambda: tokend.call(TOKENS, "Login", {"client": {"client_id": "py-svc", "client_secret": made.client_secret}}),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    tokend.call(TOKENS, "Login", {"client": {"client_id": "py-svc", "client_secret": rotated.client_secret}})
    shown = call("SetClientScopes", {"client_id": "py-svc", "scopes": ["write"]})
    expect(list(shown.client.scopes) == ["write"], f"{shown}")
    expect(call("GetClient", {"client_id": "py-svc"}).client.client_id == "py-svc", "GetClient")
    expect([c.client_id for c in call("ListClients", {"prefix": "py-"}).clients] == ["py-svc"], "ListClients")
    call("DisableClient", {"client_id": "py-svc"})
    call("EnableClient", {"client_id": "py-svc"})
    call("DeleteClient", {"client_id": "py-svc"})
    expect_error(
        lambda: call("GetClient", {"client_id": "py-svc"}), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"
    )

    # Keys and the feed.
    keys = call("GetKeys", {})
    expect(len(keys.keys) == 1 and keys.keys[0].key_id.startswith("k4.pid."), f"{keys}")
    feed = call("GetFeedStatus", {})
    expect(feed.entries > 0 and feed.replica != "", f"{feed}")

    # Refusals.
    expect_error(
        lambda: admin.call(ADMIN, "GetUser", {"name": "demo"}),
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_MISSING",
    )
    expect_error(
        lambda: call("GetUser", {"name": "demo"}, (("authorization", "Bearer v4.public.junk"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_INVALID",
    )
    call("CreateUser", {"name": "py-plain", "password": "plain-pw", "scopes": ["read"]})
    expect_error(
        lambda: call("GetUser", {"name": "demo"}, token("py-plain", "plain-pw")),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    reader = token("py-reader", "reader-pw")
    expect(call("GetUser", {"name": "demo"}, reader).user.name == "demo", "a reader reads")
    expect_error(
        lambda: call("DisableUser", {"name": "demo"}, reader),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    expect_error(
        lambda: call("GetUser", {"name": "demo"}, token("demo", "demo-password", audience="")),
        grpc.StatusCode.PERMISSION_DENIED,
        "WRONG_AUDIENCE",
    )
    for method, fields in [
        ("GetUser", {"name": ""}),
        ("CreateUser", {"name": "bad name", "password": "x"}),
        ("CreateUser", {"name": "ok-name", "password": ""}),
        ("ListUsers", {"page_size": -5}),
        ("ListUsers", {"page_token": "forged"}),
        ("ListUserSessions", {"name": "demo", "page_size": 5000}),
        ("GetClient", {"client_id": "{x}"}),
        ("RevokeUserSession", {"name": "demo", "session_id": ""}),
    ]:
        expect_error(lambda: call(method, fields), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    print("python admin client: all checks passed")


if __name__ == "__main__":
    main()
