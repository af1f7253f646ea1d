//! What tokend keeps in Redis, read and written behind its back: key
//! listings, raw dumps (no secret in the clear), bulk sessions.

use super::*;

/// Every key in Redis with its type.
pub async fn all_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(conn)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// The raw bytes of every value in Redis, for looking for secrets.
pub async fn dump_values(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for key in all_keys(conn).await {
        values.push(key.clone().into_bytes());
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("TYPE");
        match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .expect("GET");
                values.push(v);
            }
            "hash" => {
                let v: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .expect("HGETALL");
                values.extend(v);
            }
            "zset" => {
                let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(conn)
                    .await
                    .expect("ZRANGE");
                values.extend(v);
            }
            "stream" => {
                let v: redis::Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(conn)
                    .await
                    .expect("XRANGE");
                values.push(format!("{v:?}").into_bytes());
            }
            other => panic!("unexpected key type {other} for {key}"),
        }
    }
    values
}

/// Whether `needle` occurs in any of `haystack`.
pub fn contains_bytes(haystack: &[Vec<u8>], needle: &[u8]) -> bool {
    haystack
        .iter()
        .any(|h| h.windows(needle.len()).any(|w| w == needle))
}

/// Writes `count` sessions of `user` straight into Redis in tokend's key
/// layout (session hashes with their TTL, entries in the user's session
/// index), as a long-lived account would have accumulated them, much faster
/// than logging in `count` times. Returns their ids.
pub async fn write_sessions(redis: &RedisServer, user: &str, count: usize) -> Vec<String> {
    let mut conn = redis.connection().await;
    let account = format!("tokend:user:{{{user}}}");
    let version: Option<i64> = redis::cmd("HGET")
        .arg(&account)
        .arg("ep")
        .query_async(&mut conn)
        .await
        .expect("HGET ep");
    let version = version.unwrap_or(0);
    let now = tokend::clock::Clock::system().now_ms();
    let absolute = now + 30 * 86_400_000;
    let mut ids = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(2_000) {
        let mut pipe = redis::pipe();
        let mut index = redis::cmd("HSET");
        index.arg(&account);
        for i in 0..2_000.min(count - chunk * 2_000) {
            let sid = format!("b{chunk:05}x{i:015}");
            let key = format!("tokend:session:{{{sid}}}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("sub")
                .arg(user)
                .arg("scp")
                .arg("read")
                .arg("aud")
                .arg("internal")
                .arg("ct")
                .arg(now)
                .arg("ax")
                .arg(absolute)
                .arg("av")
                .arg(version)
                .arg("cur")
                .arg([7u8; 32].as_slice())
                .arg("ua")
                .arg("bulk/1.0")
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(7 * 86_400_000)
                .ignore();
            index.arg(format!("s:{sid}")).arg(absolute);
            ids.push(sid);
        }
        pipe.add_command(index).ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .expect("write sessions");
    }
    ids
}

/// How many sessions the user's index in Redis lists.
pub async fn indexed_sessions(redis: &RedisServer, user: &str) -> usize {
    let mut conn = redis.connection().await;
    let key = format!("tokend:user:{{{user}}}");
    // The account's own fields are the only ones not named `s:SID`.
    let (len, own): (usize, Vec<Option<String>>) = redis::pipe()
        .cmd("HLEN")
        .arg(&key)
        .cmd("HMGET")
        .arg(&key)
        .arg(&["ph", "sd", "scope", "disabled", "dl", "ep", "ct"])
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    len - own.iter().flatten().count()
}

/// Writes `count` users named `PREFIX-NNNNN` straight into Redis in
/// tokend's key layout (account hashes and the user directory), as an
/// established deployment would hold them, much faster than `user add`
/// (one argon2id hash each). Their password hash is no password's.
pub async fn write_users(redis: &RedisServer, prefix: &str, count: usize) -> Vec<String> {
    let mut conn = redis.connection().await;
    let now = tokend::clock::Clock::system().now_ms();
    let mut names = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(1_000) {
        let mut pipe = redis::pipe();
        let mut directory = redis::cmd("ZADD");
        directory.arg("tokend:{accounts}:users");
        for i in chunk * 1_000..count.min((chunk + 1) * 1_000) {
            let name = format!("{prefix}-{i:05}");
            pipe.cmd("HSET")
                .arg(format!("tokend:user:{{{name}}}"))
                .arg("ph")
                .arg("$argon2id$v=19$m=19456,t=2,p=1$bm9ub25lbm9uZQ$bm9ub25lbm9ub25lbm9ub25lbm9ub25l")
                .arg("scope")
                .arg("read")
                .arg("disabled")
                .arg("0")
                .arg("ep")
                .arg(now * 1000)
                .arg("ct")
                .arg(now)
                .ignore();
            directory.arg(0).arg(&name);
            names.push(name);
        }
        pipe.add_command(directory).ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .expect("write users");
    }
    names
}
