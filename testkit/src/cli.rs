//! The `tokend` command line as an administrator runs it: accounts, keys.

use super::*;

/// Runs the tokend binary with `args` to completion, feeding `stdin`.
pub fn tokend_command(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(tokend_bin())
        .args(args)
        .env_remove("TOKEND_REDIS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokend");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("tokend output")
}

/// Generates a signing key file `name` in `dir` with `tokend keys
/// generate`; returns its path and the printed k4.public line. Replicas
/// given the same file issue tokens the same verifiers accept.
pub fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let path_arg = path.to_str().expect("UTF-8 temp path");
    let out = tokend_command(&["keys", "generate", "--out", path_arg], None);
    assert!(out.status.success(), "keys generate failed");
    let public = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .next()
        .expect("a k4.public line")
        .to_owned();
    (path, public)
}

/// Runs an admin command (`tokend ARGS` plus the flags naming `redis`),
/// insists it succeeds, and returns what it printed (stdout, then stderr).
#[track_caller]
pub fn admin(redis: &impl Deployment, args: &[&str], stdin: Option<&str>) -> String {
    let redis_args = redis.tokend_args();
    let mut all = args.to_vec();
    all.extend(redis_args.iter().map(String::as_str));
    let out = tokend_command(&all, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tokend {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// Runs an admin command like [`admin`], insists it fails, and returns its
/// stderr.
#[track_caller]
pub fn admin_fails(redis: &impl Deployment, args: &[&str], stdin: Option<&str>) -> String {
    let redis_args = redis.tokend_args();
    let mut all = args.to_vec();
    all.extend(redis_args.iter().map(String::as_str));
    let out = tokend_command(&all, stdin);
    assert!(!out.status.success(), "tokend {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Accounts a test sets up are written with time to spare: on a loaded test
/// machine a replica's confirmation can take longer than the default second,
/// and the command would (rightly) refuse to report an unconfirmed write.
const SETUP_PATIENCE: [&str; 2] = ["--redis-timeout", "10s"];

/// Creates a user through the CLI, as an operator would.
pub fn add_user(redis: &impl Deployment, name: &str, password: &str, scopes: &[&str]) {
    let redis_args = redis.tokend_args();
    let mut args = vec!["user", "add", name, "--password-stdin"];
    args.extend(redis_args.iter().map(String::as_str));
    args.extend(SETUP_PATIENCE);
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let out = tokend_command(&args, Some(&format!("{password}\n")));
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a service client through the CLI and returns its secret.
pub fn add_client(redis: &impl Deployment, id: &str, scopes: &[&str]) -> String {
    add_client_with(redis, id, scopes, &[])
}

/// Like [`add_client`], with more flags of `client add` (`--require-cert`,
/// `--cert-san SAN`).
pub fn add_client_with(
    redis: &impl Deployment,
    id: &str,
    scopes: &[&str],
    flags: &[&str],
) -> String {
    let redis_args = redis.tokend_args();
    let mut args = vec!["client", "add", id];
    args.extend(redis_args.iter().map(String::as_str));
    args.extend(SETUP_PATIENCE);
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    args.extend_from_slice(flags);
    let out = tokend_command(&args, None);
    assert!(
        out.status.success(),
        "client add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}
