//! `tokend.admin.v1.AdminService`: administration over gRPC, on its own
//! listener, with the CLI's semantics, its own authorization (refused,
//! throttled and audited), and listings that page through thousands.

use std::time::Instant;

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;

use crate::harness::admin_pb as admin;
use crate::harness::*;

/// A Redis with the administrator `root` (scope tokend.admin), the
/// read-only `auditor` and alice (scope read), and a tokend on it serving
/// the administration API apart.
struct Setup {
    redis: RedisServer,
    tokend: Tokend,
    client: TokenServiceClient<tonic::transport::Channel>,
    admin: AdminClient,
    root: String,
}

impl Setup {
    async fn start(extra: &[&str]) -> Setup {
        let redis = RedisServer::start();
        add_user(&redis, "root", "root-pw", &["tokend.admin"]);
        add_user(&redis, "auditor", "auditor-pw", &["tokend.admin.read"]);
        add_user(&redis, "alice", "pw", &["read"]);
        let tokend = Tokend::builder()
            .redis(&redis)
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra.iter().copied())
            .start();
        let mut client = tokend.client().await;
        let root = login_for_tokend(&mut client, "root", "root-pw")
            .await
            .access_token;
        let admin = tokend.admin_client().await;
        Setup {
            redis,
            tokend,
            client,
            admin,
            root,
        }
    }

    /// `name`'s access token for tokend.
    async fn token(&self, name: &str, password: &str) -> String {
        login_for_tokend(&mut self.client.clone(), name, password)
            .await
            .access_token
    }
}

fn named(name: &str) -> admin::GetUserRequest {
    admin::GetUserRequest { name: name.into() }
}

#[tokio::test]
async fn administrators_manage_users_and_their_sessions_with_the_clis_semantics() {
    let s = Setup::start(&[]).await;
    let mut a = s.admin.clone();
    let root = s.root.as_str();

    // Create: hashed like the CLI's (bob logs in with it), never twice.
    let create = admin::CreateUserRequest {
        name: "bob".into(),
        password: "bob-password".into(),
        scopes: vec!["read".into()],
    };
    let bob = a
        .create_user(with_bearer(create.clone(), root))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(bob.name, "bob");
    assert_eq!(bob.scopes, ["read"]);
    assert!(!bob.disabled);
    assert_eq!(bob.session_count, 0);
    assert!(bob.created_at.is_some());
    assert_reason(
        a.create_user(with_bearer(create, root)).await,
        Reason::AccountExists,
    );
    let mut client = s.client.clone();
    let first = login(&mut client, "bob", "bob-password").await;
    let second = login(&mut client, "bob", "bob-password").await;
    for _ in 0..3 {
        assert_reason(
            client.login(password_login("bob", "wrong")).await,
            Reason::InvalidCredentials,
        );
    }
    let bob = a
        .get_user(with_bearer(named("bob"), root))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(bob.session_count, 2);
    assert_eq!(bob.failed_logins, 3, "the throttle's counter is shown");
    assert!(bob.last_failed_login_at.is_some());

    // Sessions: listed, one ended (only bob's own), all ended.
    let list = |name: &str| admin::ListUserSessionsRequest {
        name: name.into(),
        page_size: 0,
        page_token: String::new(),
    };
    let sessions = a
        .list_user_sessions(with_bearer(list("bob"), root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sessions.sessions.len(), 2);
    assert!(sessions.next_page_token.is_empty());
    assert!(sessions.sessions.iter().all(|s| s.scopes == ["read"]));
    let sid = &sessions.sessions[0].session_id;
    let alice_sid = {
        let pair = login(&mut client, "alice", "pw").await;
        let _ = pair;
        a.list_user_sessions(with_bearer(list("alice"), root))
            .await
            .unwrap()
            .into_inner()
            .sessions[0]
            .session_id
            .clone()
    };
    let revoke_one = |name: &str, sid: &str| admin::RevokeUserSessionRequest {
        name: name.into(),
        session_id: sid.into(),
    };
    assert_reason(
        a.revoke_user_session(with_bearer(revoke_one("bob", &alice_sid), root))
            .await,
        Reason::SessionNotFound,
    );
    a.revoke_user_session(with_bearer(revoke_one("bob", sid), root))
        .await
        .unwrap();
    let gone = [&first, &second]
        .into_iter()
        .find(|pair| pair.session_id == *sid)
        .unwrap();
    assert_reason(
        refresh(&mut client, &gone.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );

    // Scopes: narrowed sessions at their next refresh, like the CLI.
    let scopes = admin::SetUserScopesRequest {
        name: "bob".into(),
        scopes: vec!["read".into(), "write".into()],
    };
    let bob = a
        .set_user_scopes(with_bearer(scopes, root))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(bob.scopes, ["read", "write"]);

    // A new password ends every session.
    let password = admin::SetUserPasswordRequest {
        name: "bob".into(),
        password: "new-password".into(),
    };
    let ended = a
        .set_user_password(with_bearer(password, root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_ended, 1);
    assert_reason(
        client.login(password_login("bob", "bob-password")).await,
        Reason::InvalidCredentials,
    );
    let third = login(&mut client, "bob", "new-password").await;

    // Disable, enable.
    let ended = a
        .disable_user(with_bearer(
            admin::DisableUserRequest { name: "bob".into() },
            root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_ended, 1);
    assert_reason(
        refresh(&mut client, &third.refresh_token).await,
        Reason::RefreshTokenInvalid,
    );
    assert_reason(
        client.login(password_login("bob", "new-password")).await,
        Reason::InvalidCredentials,
    );
    let shown = a
        .get_user(with_bearer(named("bob"), root))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(shown.disabled);
    a.enable_user(with_bearer(
        admin::EnableUserRequest { name: "bob".into() },
        root,
    ))
    .await
    .unwrap();
    login(&mut client, "bob", "new-password").await;
    login(&mut client, "bob", "new-password").await;
    let ended = a
        .revoke_all_user_sessions(with_bearer(
            admin::RevokeAllUserSessionsRequest { name: "bob".into() },
            root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_ended, 2);

    // Delete: gone from reads and listings.
    a.delete_user(with_bearer(
        admin::DeleteUserRequest { name: "bob".into() },
        root,
    ))
    .await
    .unwrap();
    assert_reason(
        a.get_user(with_bearer(named("bob"), root)).await,
        Reason::AccountNotFound,
    );
    let listed = a
        .list_users(with_bearer(
            admin::ListUsersRequest {
                prefix: String::new(),
                page_size: 0,
                page_token: String::new(),
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "auditor", "root"]);
    for missing in ["EnableUser", "DisableUser", "DeleteUser"] {
        let name = admin::EnableUserRequest { name: "bob".into() };
        let result = match missing {
            "EnableUser" => a.enable_user(with_bearer(name, root)).await.map(|_| ()),
            "DisableUser" => a
                .disable_user(with_bearer(
                    admin::DisableUserRequest { name: name.name },
                    root,
                ))
                .await
                .map(|_| ()),
            _ => a
                .delete_user(with_bearer(
                    admin::DeleteUserRequest { name: name.name },
                    root,
                ))
                .await
                .map(|_| ()),
        };
        assert_reason(result, Reason::AccountNotFound);
    }

    // Every call was audited, and no password reached the log.
    let logs = s.tokend.logs();
    for method in ["CreateUser", "SetUserPassword", "DisableUser", "DeleteUser"] {
        assert!(
            logs.contains(&format!("method=\"{method}\"")) || logs.contains(method),
            "{method} audited:\n{logs}"
        );
    }
    assert!(logs.contains("admin_call"), "{logs}");
    for secret in ["bob-password", "new-password", "root-pw"] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn administrators_manage_service_clients_keys_and_see_the_feed() {
    let s = Setup::start(&[]).await;
    let mut a = s.admin.clone();
    let root = s.root.as_str();
    let mut client = s.client.clone();
    let create = admin::CreateClientRequest {
        client_id: "billing".into(),
        scopes: vec!["read".into()],
        require_cert: false,
        cert_identities: vec![],
    };
    let created = a
        .create_client(with_bearer(create.clone(), root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.client_id, "billing");
    let secret = created.client_secret;
    assert!(secret.starts_with("tkd_cs_"), "a secret like the CLI's");
    client
        .login(client_login("billing", &secret))
        .await
        .expect("the secret works");
    assert_reason(
        a.create_client(with_bearer(create, root)).await,
        Reason::AccountExists,
    );
    // Names are one namespace.
    assert_reason(
        a.create_client(with_bearer(
            admin::CreateClientRequest {
                client_id: "alice".into(),
                ..Default::default()
            },
            root,
        ))
        .await,
        Reason::AccountExists,
    );

    let id = |id: &str| id.to_owned();
    let rotated = a
        .rotate_client_secret(with_bearer(
            admin::RotateClientSecretRequest {
                client_id: id("billing"),
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner()
        .client_secret;
    assert_ne!(rotated, secret);
    assert_reason(
        client.login(client_login("billing", &secret)).await,
        Reason::InvalidCredentials,
    );
    client
        .login(client_login("billing", &rotated))
        .await
        .expect("the new secret works");
    let shown = a
        .set_client_scopes(with_bearer(
            admin::SetClientScopesRequest {
                client_id: id("billing"),
                scopes: vec!["read".into(), "write".into()],
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!(shown.scopes, ["read", "write"]);
    a.disable_client(with_bearer(
        admin::DisableClientRequest {
            client_id: id("billing"),
        },
        root,
    ))
    .await
    .unwrap();
    assert_reason(
        client.login(client_login("billing", &rotated)).await,
        Reason::InvalidCredentials,
    );
    let shown = a
        .get_client(with_bearer(
            admin::GetClientRequest {
                client_id: id("billing"),
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert!(shown.disabled);
    // The old secret and the login while disabled.
    assert_eq!(shown.failed_logins, 2);
    a.enable_client(with_bearer(
        admin::EnableClientRequest {
            client_id: id("billing"),
        },
        root,
    ))
    .await
    .unwrap();
    client
        .login(client_login("billing", &rotated))
        .await
        .expect("enabled again");
    let listed = a
        .list_clients(with_bearer(
            admin::ListClientsRequest {
                prefix: "bil".into(),
                page_size: 10,
                page_token: String::new(),
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.clients.len(), 1);
    a.delete_client(with_bearer(
        admin::DeleteClientRequest {
            client_id: id("billing"),
        },
        root,
    ))
    .await
    .unwrap();
    assert_reason(
        a.get_client(with_bearer(
            admin::GetClientRequest {
                client_id: id("billing"),
            },
            root,
        ))
        .await,
        Reason::AccountNotFound,
    );

    // Keys: the active one is the one GetPublicKeys publishes first.
    let keys = a
        .get_keys(with_bearer(admin::GetKeysRequest {}, root))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let published = client
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].state(), admin::KeyState::Active);
    assert_eq!(keys[0].key_id, published[0].key_id);
    assert!(keys[0].created_at.is_some());

    // The feed holds the cut-offs above.
    let feed = a
        .get_feed_status(with_bearer(admin::GetFeedStatusRequest {}, root))
        .await
        .unwrap()
        .into_inner();
    assert!(feed.entries >= 3, "{feed:?}");
    assert!(feed.oldest_entry_at.is_some() && feed.newest_entry_at.is_some());
    assert!(!feed.replica.is_empty());

    // The administration API is only where --admin-listen put it.
    let mut main = AdminClient::new(channel(&s.tokend.url()).await.unwrap());
    let status = main
        .get_keys(with_bearer(admin::GetKeysRequest {}, root))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

#[tokio::test]
async fn every_refusal_says_why_and_counts_against_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("exchange.toml");
    std::fs::write(
        &policy,
        "[[exchange]]\nactor = \"gateway\"\ntargets = [\"tokend\"]\nscopes = [\"read\"]\nmax_ttl = \"10m\"\n",
    )
    .unwrap();
    let s = Setup::start(&[
        "--exchange-policy",
        policy.to_str().unwrap(),
        "--trusted-proxy",
        "127.0.0.0/8",
        "--throttle-account-source",
        "3",
    ])
    .await;
    let gateway_secret = add_client(&s.redis, "gateway", &[]);
    let mut a = s.admin.clone();
    let get = || named("alice");
    // Each refusal below from a source of its own (tokend trusts the
    // loopback proxy's x-forwarded-for here), so none is throttled.
    let mut sources = 0u8;
    let mut from_new_source = |mut request: tonic::Request<admin::GetUserRequest>| {
        sources += 1;
        let source = format!("10.0.0.{sources}");
        request
            .metadata_mut()
            .insert("x-forwarded-for", source.parse().unwrap());
        request
    };

    // Anonymous, garbage, a user without the scope, another audience.
    assert_reason(
        a.get_user(from_new_source(tonic::Request::new(get())))
            .await,
        Reason::AccessTokenMissing,
    );
    assert_reason(
        a.get_user(from_new_source(with_bearer(get(), "v4.public.garbage")))
            .await,
        Reason::AccessTokenInvalid,
    );
    let alice = s.token("alice", "pw").await;
    assert_reason(
        a.get_user(from_new_source(with_bearer(get(), &alice)))
            .await,
        Reason::InsufficientScope,
    );
    let mut client = s.client.clone();
    let root_internal = login(&mut client, "root", "root-pw").await.access_token;
    assert_reason(
        a.get_user(from_new_source(with_bearer(get(), &root_internal)))
            .await,
        Reason::WrongAudience,
    );
    // Read-only: reads yes, changes no.
    let auditor = s.token("auditor", "auditor-pw").await;
    a.get_user(from_new_source(with_bearer(get(), &auditor)))
        .await
        .expect("a reader reads");
    assert_reason(
        a.disable_user(with_bearer(
            admin::DisableUserRequest {
                name: "alice".into(),
            },
            &auditor,
        ))
        .await,
        Reason::InsufficientScope,
    );
    // A delegated token for tokend, obtained by a service from a user's.
    let mut gateway_login = client_login("gateway", &gateway_secret);
    gateway_login.audience = TOKEND_AUDIENCE.into();
    let gateway = client
        .login(gateway_login)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let mut alice_login = password_login("alice", "pw");
    alice_login.audience = "gateway".into();
    let alice_for_gateway = client
        .login(alice_login)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let delegated = client
        .exchange(with_bearer(
            pb::ExchangeRequest {
                subject_token: alice_for_gateway,
                audience: TOKEND_AUDIENCE.into(),
                scopes: vec![],
                ttl: None,
            },
            &gateway,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert_reason(
        a.get_user(from_new_source(with_bearer(get(), &delegated)))
            .await,
        Reason::ChainNotAllowed,
    );
    // Nothing was changed by any of them, and each was audited.
    let logs = s.tokend.logs();
    assert!(
        logs.matches("admin_call").count() >= 7,
        "every call audited:\n{logs}"
    );

    // A source that keeps failing is throttled, valid token or not; the
    // administrator elsewhere is not held up.
    let from = |source: &str, token: &str| {
        let mut request = with_bearer(get(), token);
        request
            .metadata_mut()
            .insert("x-forwarded-for", source.parse().unwrap());
        request
    };
    let mut throttled = None;
    for _ in 0..10 {
        match a.get_user(from("10.9.9.9", "v4.public.guess")).await {
            Err(status) if Reason::of(&status) == Some(Reason::LoginThrottled) => {
                throttled = Some(status);
                break;
            }
            Err(status) => assert_eq!(Reason::of(&status), Some(Reason::AccessTokenInvalid)),
            Ok(_) => panic!("a guess was let in"),
        }
    }
    let throttled = throttled.expect("the guessing source is throttled");
    assert!(Reason::retry_delay(&throttled).is_some());
    assert_reason(
        a.get_user(from("10.9.9.9", &s.root)).await,
        Reason::LoginThrottled,
    );
    a.get_user(from("10.8.8.8", &s.root))
        .await
        .expect("the administrator's own source is not throttled");
}

#[tokio::test]
async fn malformed_input_on_every_call_is_invalid_argument_with_a_reason() {
    let s = Setup::start(&[]).await;
    let mut a = s.admin.clone();
    let root = s.root.as_str();
    let bad = "no spaces{}";
    let long = "x".repeat(200);
    macro_rules! refused {
        ($call:ident, $request:expr) => {
            assert_reason(
                a.$call(with_bearer($request, root)).await,
                Reason::InvalidRequest,
            )
        };
    }
    for name in ["", bad, long.as_str()] {
        refused!(get_user, named(name));
        refused!(
            create_user,
            admin::CreateUserRequest {
                name: name.into(),
                password: "pw".into(),
                scopes: vec![],
            }
        );
        refused!(
            set_user_scopes,
            admin::SetUserScopesRequest {
                name: name.into(),
                scopes: vec![],
            }
        );
        refused!(
            set_user_password,
            admin::SetUserPasswordRequest {
                name: name.into(),
                password: "pw".into(),
            }
        );
        refused!(
            disable_user,
            admin::DisableUserRequest { name: name.into() }
        );
        refused!(enable_user, admin::EnableUserRequest { name: name.into() });
        refused!(delete_user, admin::DeleteUserRequest { name: name.into() });
        refused!(
            list_user_sessions,
            admin::ListUserSessionsRequest {
                name: name.into(),
                ..Default::default()
            }
        );
        refused!(
            revoke_user_session,
            admin::RevokeUserSessionRequest {
                name: name.into(),
                session_id: "s".into(),
            }
        );
        refused!(
            revoke_all_user_sessions,
            admin::RevokeAllUserSessionsRequest { name: name.into() }
        );
        refused!(
            get_client,
            admin::GetClientRequest {
                client_id: name.into()
            }
        );
        refused!(
            create_client,
            admin::CreateClientRequest {
                client_id: name.into(),
                ..Default::default()
            }
        );
        refused!(
            rotate_client_secret,
            admin::RotateClientSecretRequest {
                client_id: name.into()
            }
        );
        refused!(
            set_client_scopes,
            admin::SetClientScopesRequest {
                client_id: name.into(),
                scopes: vec![],
            }
        );
        refused!(
            disable_client,
            admin::DisableClientRequest {
                client_id: name.into()
            }
        );
        refused!(
            enable_client,
            admin::EnableClientRequest {
                client_id: name.into()
            }
        );
        refused!(
            delete_client,
            admin::DeleteClientRequest {
                client_id: name.into()
            }
        );
    }
    // Passwords, scopes, identities, pages.
    refused!(
        create_user,
        admin::CreateUserRequest {
            name: "carol".into(),
            password: String::new(),
            scopes: vec![],
        }
    );
    refused!(
        create_user,
        admin::CreateUserRequest {
            name: "carol".into(),
            password: "p".repeat(5000),
            scopes: vec![],
        }
    );
    refused!(
        create_user,
        admin::CreateUserRequest {
            name: "carol".into(),
            password: "pw".into(),
            scopes: vec!["bad scope".into()],
        }
    );
    refused!(
        create_user,
        admin::CreateUserRequest {
            name: "tokend".into(),
            password: "pw".into(),
            scopes: vec![],
        }
    );
    refused!(
        create_client,
        admin::CreateClientRequest {
            client_id: "svc".into(),
            cert_identities: vec!["has space".into()],
            ..Default::default()
        }
    );
    refused!(
        set_user_password,
        admin::SetUserPasswordRequest {
            name: "alice".into(),
            password: String::new(),
        }
    );
    for (size, token, prefix) in [
        (-1, "", ""),
        (1001, "", ""),
        (10, "not-a-token", ""),
        (10, "", "bad prefix"),
    ] {
        refused!(
            list_users,
            admin::ListUsersRequest {
                prefix: prefix.into(),
                page_size: size,
                page_token: token.into(),
            }
        );
        refused!(
            list_clients,
            admin::ListClientsRequest {
                prefix: prefix.into(),
                page_size: size,
                page_token: token.into(),
            }
        );
    }
    refused!(
        list_user_sessions,
        admin::ListUserSessionsRequest {
            name: "alice".into(),
            page_size: 10,
            page_token: "AAAA".into(),
        }
    );
    // Undecodable bytes are INVALID_ARGUMENT too, and nothing broke.
    let channel = channel(&format!("http://{}", s.tokend.admin_addr().unwrap()))
        .await
        .unwrap();
    let status = raw_unary(
        channel,
        "/tokend.admin.v1.AdminService/GetUser",
        vec![0xff, 0xff, 0xff],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    a.get_user(with_bearer(named("alice"), root))
        .await
        .expect("still serving");
    // Nothing was created by any of them.
    let listed = a
        .list_users(with_bearer(admin::ListUsersRequest::default(), root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users.len(), 3);
}

#[tokio::test]
async fn listings_page_through_ten_thousand_users_and_five_thousand_sessions() {
    let s = Setup::start(&["--max-sessions-per-user", "10000"]).await;
    let mut a = s.admin.clone();
    let root = s.root.as_str();
    let written = write_users(&s.redis, "load", 10_000).await;
    write_sessions(&s.redis, "alice", 5_000).await;

    let started = Instant::now();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = a
            .list_users(with_bearer(
                admin::ListUsersRequest {
                    prefix: "load-".into(),
                    page_size: 500,
                    page_token: token.clone(),
                },
                root,
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.users.len() <= 500);
        seen.extend(page.users.into_iter().map(|u| u.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    println!("10,000 users in {pages} pages in {:?}", started.elapsed());
    assert_eq!(seen, written, "every user once, in name order");

    let started = Instant::now();
    let mut sessions = std::collections::BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = a
            .list_user_sessions(with_bearer(
                admin::ListUserSessionsRequest {
                    name: "alice".into(),
                    page_size: 1000,
                    page_token: token.clone(),
                },
                root,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.sessions.len() <= 1000);
        for session in page.sessions {
            assert!(sessions.insert(session.session_id), "listed twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    println!("5,000 sessions listed in {:?}", started.elapsed());
    assert_eq!(sessions.len(), 5_000);
    let alice = a
        .get_user(with_bearer(named("alice"), root))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(alice.session_count, 5_000);
    // Disabling her over gRPC sweeps them all, in bounded batches.
    let ended = a
        .disable_user(with_bearer(
            admin::DisableUserRequest {
                name: "alice".into(),
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_ended, 5_000);
    assert_eq!(indexed_sessions(&s.redis, "alice").await, 0);
}

#[tokio::test]
async fn a_disable_over_grpc_reaches_a_watching_resource_server_at_once() {
    let s = Setup::start(&[]).await;
    let watcher_secret = add_client(&s.redis, "watcher", &["tokend.revocations"]);
    let resource = ResourceServer::watching(
        &s.tokend,
        &Watcher {
            id: "watcher".into(),
            secret: watcher_secret,
        },
        &[],
    );
    // Connected now: a client idle on this test's thread while the
    // resource server started could not answer tokend's keepalive pings.
    let mut echo = resource.client().await;
    let mut client = s.tokend.client().await;
    let token = bearer(&login(&mut client, "alice", "pw").await.access_token);
    echo.echo(echo_request("x", Some(&token)))
        .await
        .expect("alice's token works");
    let mut a = s.tokend.admin_client().await;
    a.disable_user(with_bearer(
        admin::DisableUserRequest {
            name: "alice".into(),
        },
        &s.root,
    ))
    .await
    .unwrap();
    let answered = Instant::now();
    let took = time_until_refused(
        &mut echo,
        &token,
        Reason::SessionRevoked,
        REVOCATION_DEADLINE,
    )
    .await
    .expect("the cut-off reaches the resource server");
    println!(
        "refused {:?} after DisableUser answered",
        answered.elapsed().min(took)
    );
}

#[tokio::test]
async fn the_cli_and_the_admin_api_interleave_on_the_same_accounts() {
    let s = Setup::start(&[]).await;
    let mut a = s.admin.clone();
    let root = s.root.as_str();
    let mut client = s.client.clone();
    let scopes_of = |a: &mut AdminClient| {
        let mut a = a.clone();
        let root = root.to_owned();
        async move {
            a.get_user(with_bearer(named("alice"), &root))
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap()
                .scopes
        }
    };
    for round in 0..5 {
        // CLI, then API, then CLI: each sees the other's change.
        let cli_scope = format!("cli{round}");
        crate::harness::admin(
            &s.redis,
            &["user", "set-scopes", "alice", "--scope", &cli_scope],
            None,
        );
        assert_eq!(scopes_of(&mut a).await, [cli_scope]);
        let api_scope = format!("api{round}");
        a.set_user_scopes(with_bearer(
            admin::SetUserScopesRequest {
                name: "alice".into(),
                scopes: vec![api_scope.clone()],
            },
            root,
        ))
        .await
        .unwrap();
        assert_eq!(scopes_of(&mut a).await, [api_scope]);

        crate::harness::admin(&s.redis, &["user", "disable", "alice"], None);
        assert_reason(
            client.login(password_login("alice", "pw")).await,
            Reason::InvalidCredentials,
        );
        a.enable_user(with_bearer(
            admin::EnableUserRequest {
                name: "alice".into(),
            },
            root,
        ))
        .await
        .unwrap();
        login(&mut client, "alice", "pw").await;
    }
    // Created by the API, deleted by the CLI; created by the CLI, deleted
    // by the API: each once.
    a.create_user(with_bearer(
        admin::CreateUserRequest {
            name: "dave".into(),
            password: "dave-pw".into(),
            scopes: vec![],
        },
        root,
    ))
    .await
    .unwrap();
    crate::harness::admin(&s.redis, &["user", "delete", "dave"], None);
    assert_reason(
        a.get_user(with_bearer(named("dave"), root)).await,
        Reason::AccountNotFound,
    );
    add_user(&s.redis, "erin", "erin-pw", &["read"]);
    login(&mut client, "erin", "erin-pw").await;
    let ended = a
        .delete_user(with_bearer(
            admin::DeleteUserRequest {
                name: "erin".into(),
            },
            root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_ended, 1);
    let listed = a
        .list_users(with_bearer(admin::ListUsersRequest::default(), root))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "auditor", "root"]);
}

#[test]
fn a_python_grpcio_client_administers_tokend_by_reflection() {
    let tokend = Tokend::builder()
        .args(["--dev", "--admin-listen", "127.0.0.1:0"])
        .start();
    let admin_addr = tokend.admin_addr().expect("the admin address is printed");
    let path = format!(
        "{}/tests/python/admin_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new(tool("python3"))
        .arg(path)
        .arg(admin_addr.to_string())
        .arg(tokend.addr.to_string())
        .output()
        .expect("run python3 (`make test` sets up .venv with grpcio)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "admin_client.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let logs = tokend.logs();
    for secret in ["py-password", "reader-pw", "plain-pw", "tkd_cs_"] {
        assert!(!logs.contains(secret), "{secret} reached the log");
    }
}

#[test]
fn grpcurl_administers_tokend_beside_the_token_service_by_reflection() {
    // No --admin-listen: the administration API is on the main listener.
    let tokend = Tokend::builder().args(["--dev"]).start();
    let addr = tokend.addr.to_string();
    let (ok, listed) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("tokend.admin.v1.AdminService"), "{listed}");
    assert!(listed.contains("tokend.v1.TokenService"), "{listed}");
    let (ok, described) = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "tokend.admin.v1.AdminService",
    ]);
    assert!(ok, "{described}");
    for rpc in [
        "ListUsers",
        "GetUser",
        "CreateUser",
        "SetUserScopes",
        "SetUserPassword",
        "DisableUser",
        "EnableUser",
        "DeleteUser",
        "ListUserSessions",
        "RevokeUserSession",
        "RevokeAllUserSessions",
        "ListClients",
        "GetClient",
        "CreateClient",
        "RotateClientSecret",
        "SetClientScopes",
        "DisableClient",
        "EnableClient",
        "DeleteClient",
        "GetKeys",
        "GetFeedStatus",
    ] {
        assert!(
            described.contains(&format!("rpc {rpc}")),
            "{rpc}: {described}"
        );
    }

    let login =
        r#"{"password":{"username":"demo","password":"demo-password"},"audience":"tokend"}"#;
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        login,
        &addr,
        "tokend.v1.TokenService/Login",
    ]);
    assert!(ok, "{out}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = reply["tokens"]["accessToken"].as_str().unwrap().to_owned();
    let auth = format!("authorization: Bearer {token}");
    let call = |method: &str, body: &str| {
        grpcurl(&[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            body,
            &addr,
            &format!("tokend.admin.v1.AdminService/{method}"),
        ])
    };

    let (ok, out) = call(
        "CreateUser",
        r#"{"name":"carol","password":"carol-secret-pw","scopes":["read"]}"#,
    );
    assert!(ok, "{out}");
    assert!(
        !out.contains("carol-secret-pw"),
        "the password is never echoed"
    );
    let (ok, out) = call("GetUser", r#"{"name":"carol"}"#);
    assert!(ok && out.contains(r#""name": "carol""#), "{out}");
    let (ok, out) = call("ListUsers", r#"{"prefix":"c"}"#);
    assert!(ok && out.contains("carol"), "{out}");
    let (ok, out) = call("DisableUser", r#"{"name":"carol"}"#);
    assert!(ok, "{out}");
    let (ok, out) = call("GetUser", r#"{"name":"carol"}"#);
    assert!(ok && out.contains(r#""disabled": true"#), "{out}");
    let (ok, out) = call(
        "CreateClient",
        r#"{"client_id":"reports","scopes":["read"]}"#,
    );
    assert!(ok && out.contains("tkd_cs_"), "{out}");
    let (ok, out) = call("GetKeys", "{}");
    assert!(ok && out.contains("KEY_STATE_ACTIVE"), "{out}");
    let (ok, out) = call("GetFeedStatus", "{}");
    assert!(ok && out.contains("replica"), "{out}");
    // A refusal shows its reason, decoded thanks to reflection.
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name":"carol"}"#,
        &addr,
        "tokend.admin.v1.AdminService/DeleteUser",
    ]);
    assert!(!ok);
    assert!(out.contains("Unauthenticated"), "{out}");
    assert!(out.contains(r#""reason":"ACCESS_TOKEN_MISSING""#), "{out}");
    let (ok, out) = call("GetUser", r#"{"name":"nobody"}"#);
    assert!(!ok && out.contains("ACCOUNT_NOT_FOUND"), "{out}");
}

#[tokio::test]
async fn a_certified_administrator_client_needs_no_token_on_the_tls_admin_listener() {
    use crate::harness::pki::Pki;
    let pki = Pki::new("admin");
    let redis = RedisServer::start();
    add_user(&redis, "alice", "pw", &["read"]);
    add_client(&redis, "ops-console", &["tokend.admin"]);
    add_client(&redis, "ops-viewer", &["tokend.admin.read"]);
    add_client(&redis, "plain", &["read"]);
    let server = pki.server("tokend");
    let tokend = Tokend::builder()
        .redis(&redis)
        .tls(&server)
        .args(["--tls-client-ca", pki.ca_arg()])
        .args(["--admin-listen", "127.0.0.1:0"])
        .start();
    let url = format!("https://{}", tokend.admin_addr().unwrap());
    let over = |identity: Option<crate::harness::pki::CertFiles>| {
        let url = url.clone();
        let ca = pki.ca().to_owned();
        async move { AdminClient::new(tls_channel(&url, &ca, identity.as_ref()).await.unwrap()) }
    };
    let disable = || {
        tonic::Request::new(admin::DisableUserRequest {
            name: "alice".into(),
        })
    };
    // The admin listener speaks the same TLS: a plaintext client gets nowhere.
    assert!(
        channel(&format!("http://{}", tokend.admin_addr().unwrap()))
            .await
            .is_err()
            || AdminClient::new(
                channel(&format!("http://{}", tokend.admin_addr().unwrap()))
                    .await
                    .unwrap()
            )
            .get_keys(admin::GetKeysRequest {})
            .await
            .is_err()
    );
    let mut viewer = over(Some(pki.client("ops-viewer"))).await;
    viewer
        .get_user(tonic::Request::new(named("alice")))
        .await
        .expect("a read-only certified client reads");
    assert_reason(
        viewer.disable_user(disable()).await,
        Reason::InsufficientScope,
    );
    let mut plain = over(Some(pki.client("plain"))).await;
    assert_reason(
        plain.get_user(tonic::Request::new(named("alice"))).await,
        Reason::InsufficientScope,
    );
    let mut stranger = over(Some(pki.client("stranger"))).await;
    assert_reason(
        stranger.get_user(tonic::Request::new(named("alice"))).await,
        Reason::AccessTokenMissing,
    );
    let mut console = over(Some(pki.client("ops-console"))).await;
    let ended = console.disable_user(disable()).await.unwrap().into_inner();
    assert_eq!(ended.sessions_ended, 0);
    let logs = tokend.logs();
    assert!(
        logs.contains("ops-console") && logs.contains("certificate"),
        "the audit names the certified administrator:\n{logs}"
    );
}
