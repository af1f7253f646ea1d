//! What an unauthenticated client can do to a listener, tried for real:
//! tens of thousands of half-finished calls on one connection, and more idle
//! sockets than the process may open files. The listener refuses what is
//! over its limits (the attacker sees the refusals on the wire), and a
//! legitimate login is still answered. Resident memory is printed here and
//! held to its limit by `make bench` (`tokend_rss_mib`), not asserted under
//! the test suite's parallel load.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// An HTTP/2 HEADERS frame opening a gRPC call to `path` on `stream`,
/// without ever sending its body: a half-finished call. HPACK literals
/// without Huffman coding, no dynamic table.
fn half_finished_call(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let literal = |block: &mut Vec<u8>, name_index: u8, value: &str| {
        block.push(name_index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, 0x04, path); // :path
    literal(&mut block, 0x01, "127.0.0.1"); // :authority
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (index 31)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.extend_from_slice(&[0x00, 2]);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    let length = u32::try_from(block.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], 0x01, 0x04];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

/// An attack connection: open while this lives.
struct Attack {
    _writer: tokio::net::tcp::OwnedWriteHalf,
    drain: tokio::task::JoinHandle<()>,
    /// What the server answered, so far.
    seen: std::sync::Arc<std::sync::Mutex<Answers>>,
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// The HTTP/2 frames the server sent on an attack connection, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Answers {
    /// RST_STREAM frames: calls refused or cancelled.
    resets: u32,
    /// The stream the first RST_STREAM was for.
    first_reset: Option<u32>,
    /// GOAWAY: the server is done with the connection.
    goaway: bool,
    /// The server closed the connection.
    closed: bool,
}

impl Answers {
    /// Whether the server has dealt with `count` calls over a cap of
    /// `allowed` concurrent ones: refused the rest, or hung up.
    fn refused_beyond(&self, count: u32, allowed: u32) -> bool {
        self.goaway || self.closed || self.resets >= count.saturating_sub(allowed)
    }
}

/// Reads HTTP/2 frames (9-byte headers: length, type, flags, stream) and
/// counts what matters into `seen`.
async fn read_frames(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    seen: std::sync::Arc<std::sync::Mutex<Answers>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                seen.lock().unwrap().closed = true;
                return;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while pending.len() >= 9 {
            let length = usize::from(pending[0]) << 16
                | usize::from(pending[1]) << 8
                | usize::from(pending[2]);
            if pending.len() < 9 + length {
                break;
            }
            match pending[3] {
                0x3 => {
                    let stream =
                        u32::from_be_bytes([pending[5], pending[6], pending[7], pending[8]])
                            & 0x7fff_ffff;
                    let mut seen = seen.lock().unwrap();
                    seen.resets += 1;
                    seen.first_reset.get_or_insert(stream);
                }
                0x7 => seen.lock().unwrap().goaway = true,
                _ => {}
            }
            pending.drain(..9 + length);
        }
    }
}

/// Opens one HTTP/2 connection to `addr` and starts `count` calls to `path`
/// on it, none ever finished, ignoring the server's limits like an attacker
/// would; returns once the server has answered the excess (see
/// [`Answers::refused_beyond`]), its answers still being read.
async fn flood_half_finished_calls(addr: std::net::SocketAddr, path: &str, count: u32) -> Attack {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (reader, mut writer) = socket.into_split();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Answers::default()));
    let drain = tokio::spawn(read_frames(reader, std::sync::Arc::clone(&seen)));
    let mut batch = Vec::new();
    for i in 0..count {
        batch.extend(half_finished_call(2 * i + 1, path));
        if batch.len() > 256 * 1024 {
            if writer.write_all(&batch).await.is_err() {
                break; // the server hung up on us: fine
            }
            batch.clear();
        }
    }
    let _ = writer.write_all(&batch).await;
    let _ = writer.flush().await;
    let answered = std::sync::Arc::clone(&seen);
    eventually(
        "the server to refuse the excess calls",
        Duration::from_secs(60),
        || {
            let answers = *answered.lock().unwrap();
            async move { answers.refused_beyond(count, MAX_STREAMS) }
        },
    )
    .await;
    Attack {
        _writer: writer,
        drain,
        seen,
    }
}

/// The listener's default cap on concurrent calls per connection
/// (`--max-concurrent-streams`).
const MAX_STREAMS: u32 = 128;

/// A login on a new connection is answered (a deadline of 10 s guards
/// against a hang; how fast is `make bench`'s business).
async fn a_login_is_answered(tokend: &Tokend) {
    let mut client = tokend.client().await;
    let mut request = tonic::Request::new(password_login("demo", "demo-password"));
    request.set_timeout(Duration::from_secs(10));
    client
        .login(request)
        .await
        .expect("a legitimate login is answered");
}

#[tokio::test]
async fn fifty_thousand_half_finished_calls_on_one_connection_are_refused_beyond_the_cap() {
    let tokend = Tokend::builder().args(["--dev"]).start();
    let pid = tokend.pid().unwrap();
    a_login_is_answered(&tokend).await;
    let before = rss_mib(pid);
    let attack =
        flood_half_finished_calls(tokend.addr, "/tokend.v1.TokenService/Login", 50_000).await;
    let during = rss_mib(pid);
    a_login_is_answered(&tokend).await;
    let answers = *attack.seen.lock().unwrap();
    drop(attack);
    eprintln!("tokend RSS: {before:.1} MiB before, {during:.1} during; answers {answers:?}");
    // The cap itself, on the wire: the first 128 calls (streams 1, 3, ...,
    // 255) were taken and wait for their bodies; from the 129th on, every
    // one was refused.
    assert_eq!(
        answers.first_reset,
        Some(2 * MAX_STREAMS + 1),
        "the first refused call is the one over the cap: {answers:?}"
    );
    // (At least: the 128 taken may be reset later by the request timeout.)
    assert!(answers.resets >= 50_000 - MAX_STREAMS, "{answers:?}");

    // The example resource server has the same limits.
    let resource = ResourceServer::for_tokend(&tokend, &[]);
    let pid = resource.pid().unwrap();
    let attack =
        flood_half_finished_calls(resource.addr, "/demo.v1.EchoService/Echo", 50_000).await;
    let during = rss_mib(pid);
    // The same cap; and the 128 calls it took are refused too, since they
    // carry no token (its auth layer answers on the headers).
    let seen = std::sync::Arc::clone(&attack.seen);
    eventually("every call answered", Duration::from_secs(60), || {
        let answers = *seen.lock().unwrap();
        async move { answers.resets == 50_000 }
    })
    .await;
    let answers = *attack.seen.lock().unwrap();
    drop(attack);
    eprintln!("resource server RSS during the flood: {during:.1} MiB; answers {answers:?}");
    assert_eq!(
        answers.first_reset,
        Some(2 * MAX_STREAMS + 1),
        "{answers:?}"
    );
    resource
        .client()
        .await
        .ping(testkit::demo::v1::PingRequest {})
        .await
        .expect("the resource server still answers");
}

#[tokio::test]
async fn idle_sockets_beyond_the_open_files_limit_do_not_lock_clients_out() {
    raise_own_open_files_limit();
    let tokend = Tokend::builder()
        .args(["--dev"])
        .open_files_limit(1_024)
        .start();
    let pid = tokend.pid().unwrap();
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        // Connect and say nothing: never the HTTP/2 preface.
        if let Ok(socket) = TcpStream::connect(tokend.addr).await {
            idle.push(socket);
        }
    }
    assert_eq!(idle.len(), 1_100, "the kernel accepted them all");
    a_login_is_answered(&tokend).await;
    let rss = rss_mib(pid);
    eprintln!("tokend RSS with 1,100 idle sockets: {rss:.1} MiB");
    assert!(
        tokend.logs().contains("open_files=1024"),
        "tokend knows its limit: {}",
        tokend.logs()
    );
    // Silent connections are closed (evicted, or once their handshake time
    // is up): the server's HTTP/2 settings, then the end.
    let mut closed = 0;
    for socket in &mut idle[..50] {
        let mut sink = Vec::new();
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut sink)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "idle connections were closed by tokend");
}

#[tokio::test]
async fn a_request_message_over_the_limit_is_invalid_request_not_out_of_range() {
    let app = spawn_app(tokend::config::StoreConfig::Memory).await;
    let mut client = app.client().await;
    let huge = "x".repeat(1024 * 1024);
    let refused = client.login(password_login("demo", &huge)).await;
    assert_reason(refused, tokend_interceptor::Reason::InvalidRequest);
    // Just under the limit, the field limit answers, with the same reason.
    let big = "x".repeat(60 * 1024);
    let refused = client.login(password_login("demo", &big)).await;
    assert_reason(refused, tokend_interceptor::Reason::InvalidRequest);
    // And the connection still serves.
    demo_login(&mut client).await;
}
