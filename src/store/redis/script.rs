//! Lua script calls: run by hash (`EVALSHA`), loaded on `NOSCRIPT` (a new
//! node, a promoted replica, a restarted Redis).

use std::sync::Arc;

use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, ToRedisArgs,
    Value,
};

use super::link::Link;

/// One call of a script: its keys and arguments.
#[derive(Clone)]
pub(super) struct ScriptCall {
    script: Arc<Script>,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl ScriptCall {
    /// A call of `script`, keys and arguments to follow.
    pub(super) fn new(script: &Arc<Script>) -> ScriptCall {
        ScriptCall {
            script: Arc::clone(script),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a key (`KEYS[n]`).
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The first key: where the call runs (all keys share its slot).
    pub(super) fn first_key(&self) -> &[u8] {
        self.keys.first().map_or(&[], Vec::as_slice)
    }

    /// The `EVALSHA` command.
    pub(super) fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Runs the call on `link`, loading the script if the node lacks it.
    pub(super) async fn run<T: FromRedisValue>(&self, link: &mut Link) -> RedisResult<T> {
        let cmd = self.evalsha();
        match link.command_at(self.first_key(), &cmd).await {
            Err(err) if no_script(&err) => {
                self.load(link).await?;
                parse(link.command_at(self.first_key(), &cmd).await?)
            }
            answer => parse(answer?),
        }
    }

    /// Loads the script (on a cluster, into every node).
    pub(super) async fn load(&self, link: &mut Link) -> RedisResult<()> {
        self.script.load_async(link).await.map(|_| ())
    }
}

/// A reply as `T`.
pub(super) fn parse<T: FromRedisValue>(value: Value) -> RedisResult<T> {
    Ok(T::from_redis_value(value)?)
}

/// Whether Redis did not know the script.
pub(super) fn no_script(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}
