//! The command line as an operator uses it.

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;

use crate::harness::*;

#[tokio::test]
async fn keys_generate_writes_a_private_key_and_prints_its_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let path_text = path.to_str().unwrap();
    let out = tokend_command(&["keys", "generate", "--out", path_text], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("k4.public."));
    assert!(lines[1].starts_with("k4.pid."));

    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(secret.trim().starts_with("k4.secret."));
    assert!(
        !stdout.contains(secret.trim()),
        "the secret is never printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Never overwritten.
    let again = tokend_command(&["keys", "generate", "--out", path_text], None);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), secret);

    // tokend signs with it and publishes exactly that key.
    let tokend = Tokend::builder()
        .args(["--signing-key-file", path_text])
        .start();
    let mut client = tokend.client().await;
    let keys = client
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].public_key, lines[0]);
    assert_eq!(keys[0].key_id, lines[1]);
}

#[tokio::test]
async fn user_add_creates_users_and_never_overwrites_one() {
    let redis = RedisServer::start();
    add_user(&redis, "alice", "first-password", &["read"]);
    let tokend = spawn_app_args(&["--redis-url", &redis.url()]).await;
    let mut client = tokend.client().await;
    login(&mut client, "alice", "first-password").await;

    // Running it again fails and changes nothing.
    let url = redis.url();
    let again = tokend_command(
        &[
            "user",
            "add",
            "alice",
            "--scope",
            "admin",
            "--password-stdin",
            "--redis-url",
            &url,
        ],
        Some("second-password\n"),
    );
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("set-password"),
        "{stderr}"
    );
    let pair = login(&mut client, "alice", "first-password").await;
    let claims = crate::login::verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.scope(), "read");

    // What Redis keeps is an argon2id hash.
    let mut conn = redis.connection().await;
    let hash: String = redis::cmd("HGET")
        .arg("tokend:user:{alice}")
        .arg("ph")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
}

#[tokio::test]
async fn user_add_reads_the_password_only_from_stdin() {
    let redis = RedisServer::start();
    let url = redis.url();
    let out = tokend_command(
        &["user", "add", "bob", "--scope", "read", "--redis-url", &url],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));

    let empty = tokend_command(
        &[
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--redis-url",
            &url,
        ],
        Some(""),
    );
    assert!(!empty.status.success());
    let said = String::from_utf8_lossy(&empty.stderr);
    assert!(said.contains("first line of stdin is empty"), "{said}");

    let bad_name = tokend_command(
        &[
            "user",
            "add",
            "b{o}b",
            "--password-stdin",
            "--redis-url",
            &url,
        ],
        Some("pw\n"),
    );
    assert!(!bad_name.status.success());
    assert!(String::from_utf8_lossy(&bad_name.stderr).contains("not a valid name"));

    let no_redis = tokend_command(&["user", "add", "bob", "--password-stdin"], Some("pw\n"));
    assert!(!no_redis.status.success());
    assert!(String::from_utf8_lossy(&no_redis.stderr).contains("--redis-url"));
}

#[tokio::test]
async fn client_add_prints_the_secret_once_alone_on_stdout() {
    let redis = RedisServer::start();
    let url = redis.url();
    let out = tokend_command(
        &[
            "client",
            "add",
            "svc",
            "--scope",
            "read,write",
            "--redis-url",
            &url,
        ],
        None,
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let secret = stdout.trim();
    assert!(secret.starts_with("tkd_cs_"));
    assert!(secret.len() >= 7 + 43, "256 bits of secret");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));

    let tokend = spawn_app_args(&["--redis-url", &redis.url()]).await;
    let mut client = tokend.client().await;
    client
        .login(client_login("svc", secret))
        .await
        .expect("client login");

    // Adding it again fails; rotating its secret is explicit.
    let again = tokend_command(&["client", "add", "svc", "--redis-url", &url], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(again.stdout.is_empty(), "no secret printed");
    let out = tokend_command(
        &["client", "rotate-secret", "svc", "--redis-url", &url],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(rotated.starts_with("tkd_cs_"));
    assert_ne!(rotated, secret);
    assert_reason(
        client.login(client_login("svc", secret)).await,
        Reason::InvalidCredentials,
    );
    client
        .login(client_login("svc", &rotated))
        .await
        .expect("new secret works");
}

#[tokio::test]
async fn users_and_clients_share_one_namespace() {
    let redis = RedisServer::start();
    add_user(&redis, "shared", "pw", &["read"]);
    let url = redis.url();
    let out = tokend_command(&["client", "add", "shared", "--redis-url", &url], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already a user"));

    add_client(&redis, "svc", &[]);
    let out = tokend_command(
        &[
            "user",
            "add",
            "svc",
            "--password-stdin",
            "--redis-url",
            &url,
        ],
        Some("pw\n"),
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn environment_variables_configure_serve() {
    let tokend = Tokend::builder()
        .args(["--dev"])
        .env("TOKEND_ISSUER", "from-env")
        .env("TOKEND_ACCESS_TTL", "90s")
        .env("TOKEND_AUDIENCE", "env-audience")
        .start();
    let mut client = tokend.client().await;
    let pair = login(&mut client, "demo", "demo-password").await;
    let claims = crate::login::verify_with_published_key(&mut client, &pair.access_token).await;
    assert_eq!(claims.iss(), "from-env");
    assert_eq!(claims.aud(), "env-audience");
    assert!((90..=91).contains(&(claims.exp() - claims.iat())));
}

#[tokio::test]
async fn dev_mode_prints_working_demo_credentials() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let output = tokend.stdout_lines.join("\n");
    assert!(
        output.contains("username=demo password=demo-password"),
        "{output}"
    );
    let secret = tokend
        .demo_client_secret()
        .expect("demo client secret printed");
    let mut client = tokend.client().await;
    login(&mut client, "demo", "demo-password").await;
    client
        .login(client_login("demo-client", &secret))
        .await
        .expect("demo client");
}

#[test]
fn impossible_settings_are_refused_with_a_reason() {
    let out = tokend_command(&["serve", "--refresh-reuse-grace", "8d"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--refresh-reuse-grace"));

    let out = tokend_command(
        &["serve", "--dev", "--redis-url", "redis://127.0.0.1:1"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev"));

    let out = tokend_command(&["serve", "--access-ttl", "soon"], None);
    assert!(!out.status.success());

    let out = tokend_command(&["serve", "--signing-key-file", "/nonexistent/key"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let tokend = Tokend::builder()
        .args(["--dev", "--log-format", "json"])
        .start();
    let mut client = tokend.client().await;
    login(&mut client, "demo", "demo-password").await;
    let logs = tokend.logs();
    let mut lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert!(value.get("level").is_some(), "{line}");
        lines += 1;
    }
    assert!(lines >= 3, "{logs}");
    assert!(
        logs.contains(r#""sub":"demo""#),
        "fields are JSON fields: {logs}"
    );
}

#[test]
fn help_never_shows_the_redis_url_from_the_environment() {
    let out = std::process::Command::new(tokend_bin())
        .args(["serve", "--help"])
        .env("TOKEND_REDIS_URL", "redis://user:hunter2-secret@redis:6379")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--redis-url"), "{help}");
    assert!(!help.contains("hunter2-secret"), "{help}");
}

#[test]
fn a_signing_key_others_can_read_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let path = path.to_str().unwrap();
    assert!(
        tokend_command(&["keys", "generate", "--out", path], None)
            .status
            .success()
    );
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokend_command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signing-key-file",
            path,
        ],
        None,
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("readable by group or others") && said.contains("chmod 600"),
        "{said}"
    );
    // Allowed explicitly: it starts, with a warning.
    let tokend = Tokend::builder()
        .args(["--signing-key-file", path, "--allow-insecure-key-file"])
        .start();
    assert!(tokend.logs().contains("readable by group or others"));
}

#[test]
fn one_redis_deployment_at_a_time_and_sentinel_needs_the_primary_name() {
    let out = tokend_command(
        &[
            "serve",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--redis-cluster",
            "redis://127.0.0.1:2",
        ],
        None,
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--redis-url") && said.contains("--redis-cluster"),
        "{said}"
    );

    let out = tokend_command(
        &[
            "sessions",
            "list",
            "x",
            "--redis-sentinel",
            "redis://127.0.0.1:1",
        ],
        None,
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--redis-sentinel-master"), "{said}");

    let out = tokend_command(&["serve", "--redis-replica-acks", "all"], None);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("auto"), "{said}");
}

/// The first official PASERK k4.secret test vector: a seed of zeros.
const ZERO_SEED_KEY: &str = "k4.secret.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6wEihi1naKQ";

#[test]
fn a_key_file_with_an_all_zero_seed_is_refused_clearly_never_a_crash() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero.key");
    std::fs::write(&path, format!("{ZERO_SEED_KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = path.to_str().unwrap();
    for flag in ["--signing-key-file", "--verification-key-file"] {
        let out = tokend_command(&["serve", "--listen", "127.0.0.1:0", flag, path], None);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {said}");
        assert!(said.contains("all zeros"), "{flag}: {said}");
        assert!(!said.contains("panicked"), "{flag}: {said}");
    }
}

#[test]
fn duration_flags_beyond_their_maximum_are_refused_with_the_limit() {
    for (flag, value) in [
        ("--refresh-idle-ttl", "100000000000d"),
        ("--refresh-absolute-ttl", "367d"),
        ("--access-ttl", "2d"),
        ("--refresh-reuse-grace", "2h"),
        ("--redis-timeout", "18446744073709551615s"),
        ("--request-timeout", "1000y"),
    ] {
        let out = tokend_command(&["serve", "--listen", "127.0.0.1:0", flag, value], None);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {said}");
        assert!(said.contains(flag) && said.contains("maximum"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
    }
}

/// An unreachable store is named in the error (which Redis, which user),
/// its password never: for the CLI and for `serve` alike.
#[test]
fn an_unreachable_store_is_named_without_its_password() {
    let port = free_port();
    let url = format!("redis://ops:hunter2@127.0.0.1:{port}/");
    let cli = tokend_command(
        &[
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--redis-url",
            &url,
        ],
        Some("pw\n"),
    );
    assert!(!cli.status.success());
    let said = String::from_utf8_lossy(&cli.stderr);
    assert!(
        said.contains(&format!("redis://ops:***@127.0.0.1:{port}/")),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");

    let serve = tokend_command(
        &["serve", "--listen", "127.0.0.1:0", "--redis-url", &url],
        None,
    );
    assert!(!serve.status.success());
    let said = String::from_utf8_lossy(&serve.stderr);
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

/// An operator's command on a primary whose replica cannot confirm yet (a
/// freshly formed cluster still syncing; here a replica stopped with
/// SIGSTOP) waits for it, says that it is waiting, and succeeds once the
/// replica confirms, instead of failing at the service's 1 s budget.
#[test]
fn an_admin_command_waits_for_a_replica_that_cannot_confirm_yet() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    replica.node().pause();
    let mut child = Command::new(tokend_bin())
        .args(["client", "add", "svc", "--redis-url", &primary.url()])
        .env_remove("TOKEND_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokend");
    let stderr = child.stderr.take().expect("stderr");
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    // The command says it is waiting (and has not failed meanwhile).
    let waiting = heard
        .recv_timeout(Duration::from_secs(20))
        .expect("a line on stderr");
    assert!(waiting.contains("still waiting for Redis"), "{waiting}");
    assert!(
        child.try_wait().expect("child").is_none(),
        "it kept waiting"
    );
    replica.node().resume();
    let out = child.wait_with_output().expect("tokend output");
    let rest: Vec<String> = heard.try_iter().collect();
    assert!(out.status.success(), "{rest:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("tkd_cs_"),
        "the secret, once"
    );
    // Confirmed: the replica holds the new client.
    wait_until(
        "the replica has the client",
        Duration::from_secs(10),
        || {
            replica
                .node()
                .query::<Vec<String>>(redis::cmd("KEYS").arg("tokend:*"))
                .is_some_and(|keys| !keys.is_empty())
        },
    );
}

/// The Kubernetes manifest as shipped: with `fsGroup`, kubelet mounts the
/// signing-key secret root-owned, group `fsGroup`, mode 0440, and tokend
/// runs as the pod's user. tokend must start like that (PostgreSQL's rule:
/// root-owned key files may be group-readable), and still refuse a key
/// that others can read. Runs tokend as uid/gid 65532, as the manifest
/// does; needs root to set that up (CI runs as root).
#[test]
fn the_kubernetes_fs_group_layout_of_the_signing_key_is_accepted() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if me.ok() != Some(0) {
        // Not silently green elsewhere: a machine without root says so.
        assert!(
            std::env::var_os("TOKEND_TEST_SKIP_ROOT").is_some(),
            "needs root (to make a root:65532 0440 key and run tokend as 65532; CI runs as \
             root); set TOKEND_TEST_SKIP_ROOT=1 to skip it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.path().join("signing.key");
    let key = key.to_str().unwrap();
    assert!(
        tokend_command(&["keys", "generate", "--out", key], None)
            .status
            .success()
    );
    // What kubelet makes of `defaultMode: 0400` with `fsGroup: 65532`.
    std::os::unix::fs::chown(key, Some(0), Some(65532)).unwrap();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o440)).unwrap();
    // A copy of the binary the pod's user can reach (the build directory
    // may sit below one only root can enter, as a `mktemp -d` checkout does).
    let bin = dir.path().join("tokend");
    // Copied by cp, not by this process: a file this process holds open
    // for writing is inherited by any child another test forks meanwhile,
    // and executing it then fails with ETXTBSY ("Text file busy").
    let copied = Command::new("cp")
        .arg(tokend_bin())
        .arg(&bin)
        .status()
        .unwrap();
    assert!(copied.success(), "cp the tokend binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let serve = |key: &str| {
        let mut command = Command::new(&bin);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--signing-key-file",
                key,
            ])
            .env_remove("TOKEND_REDIS_URL")
            .uid(65532)
            .gid(65532);
        command
    };
    // It starts: the readiness line comes, then it is stopped.
    let mut started = serve(key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tokend as 65532");
    let stdout = started.stdout.take().expect("stdout");
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = said.send(line);
        }
    });
    let ready = heard.recv_timeout(std::time::Duration::from_secs(30));
    let _ = started.kill();
    let out = started.wait_with_output().expect("tokend output");
    let ready = ready.unwrap_or_else(|_| String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(ready.contains("tokend listening on"), "{ready}");
    // Readable by others: refused, root-owned or not.
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o444)).unwrap();
    // Refused at once; were it not, tokend would serve forever: give it 30 s.
    let mut refused = serve(key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tokend as 65532");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while refused.try_wait().expect("tokend").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            panic!("tokend started with a world-readable signing key");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = refused.wait_with_output().expect("tokend output");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("readable by group or others"), "{said}");
}
