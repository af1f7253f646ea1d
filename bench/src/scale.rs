//! What scaling out costs and carries: Refresh on a three-primary Redis
//! Cluster against one Redis, with replica acknowledgements on and off, the
//! Redis and tokend CPU one Refresh takes (for the capacity arithmetic in
//! BENCHMARKS.md), and the revocation feed fanned out to 1,000 watchers.

use std::error::Error;
use std::time::{Duration, Instant};

use testkit::{RedisCluster, Tokend, Watcher, process_cpu_time, with_bearer};
use tokend::proto::tokend::v1 as pb;
use tokend::store::RedisTarget;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::load::run;
use crate::measure::rss_mib;
use crate::report::Report;
use crate::setup::{self, Deployment};
use crate::workers::TokenClient;
use crate::{CONCURRENCY, MEASURE, WARMUP};

/// Watchers of the fan-out phase, each on a connection of its own as
/// resource servers would be.
const WATCHERS: usize = 1_000;
/// Revocations timed in the fan-out phase.
const REVOCATIONS: usize = 20;

/// Fresh users on `target`, a session each through `channels`, then one
/// Refresh run; returns the rate and how long the measured part took.
async fn refresh_run(
    channels: &[tonic::transport::Channel],
    target: RedisTarget,
    prefix: &str,
) -> Result<f64, Box<dyn Error>> {
    let client = |i: usize| TokenClient::new(channels[i % setup::CONNECTIONS].clone());
    let users = setup::users_on(target, prefix, CONCURRENCY).await?;
    let refreshers = setup::refreshers(client, &users).await?;
    Ok(run(refreshers, WARMUP, MEASURE).await.rps())
}

/// CPU time of `pids` together.
fn cpu(pids: &[u32]) -> Duration {
    pids.iter().map(|pid| process_cpu_time(*pid)).sum()
}

/// Refresh on one Redis (the deployment's, no replicas), on a cluster with
/// acknowledgements (the default, `auto`) and without (`0`); alternating,
/// two rounds each.
pub async fn cluster_refresh(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    eprintln!("starting a Redis Cluster (3 primaries, 3 replicas)...");
    let cluster = RedisCluster::start();
    let target = RedisTarget::Cluster(cluster.urls());
    let acked = Tokend::builder()
        .redis(&cluster)
        .args(setup::TOKEND_ARGS)
        .env("RUST_LOG", "warn")
        .start();
    let unacked = Tokend::builder()
        .redis(&cluster)
        .args(setup::TOKEND_ARGS)
        .args(["--redis-replica-acks", "0"])
        .env("RUST_LOG", "warn")
        .start();
    let acked_channels = setup::channels(&acked.url()).await?;
    let unacked_channels = setup::channels(&unacked.url()).await?;
    // The deployment's single Redis has no replica: `auto` confirms
    // nothing there, but still sends writes through the batches.
    let lone_unconfirmed = setup::start_tokend(&dep.redis, &["--redis-replica-acks", "0"]);
    let lone_unconfirmed_channels = setup::channels(&lone_unconfirmed.url()).await?;
    let single_target = RedisTarget::Node(dep.redis.url());
    let primaries: Vec<u32> = (0..cluster.len())
        .filter(|i| cluster.replica_of(*i).is_some())
        .filter_map(|i| cluster.node(i).pid())
        .collect();
    let tokend_pid: Vec<u32> = acked.pid().into_iter().collect();

    let mut rates = [0.0f64; 3];
    let mut lone_unconfirmed_rate = 0.0;
    let mut redis_cpu_per_refresh = 0.0;
    let mut redis_cpu_unacked = 0.0;
    let mut tokend_cpu_per_refresh = 0.0;
    for round in 0..2 {
        eprintln!("Refresh on one Redis (round {})...", round + 1);
        let rps = refresh_run(
            &dep.tokend_channels,
            single_target.clone(),
            &format!("single-{round}"),
        )
        .await?;
        rates[0] += rps / 2.0;
        eprintln!(
            "Refresh on one Redis, --redis-replica-acks 0 (round {})...",
            round + 1
        );
        let rps = refresh_run(
            &lone_unconfirmed_channels,
            single_target.clone(),
            &format!("single-0-{round}"),
        )
        .await?;
        lone_unconfirmed_rate += rps / 2.0;
        eprintln!(
            "Refresh on the cluster, no acknowledgements (round {})...",
            round + 1
        );
        let redis_before = cpu(&primaries);
        let started = Instant::now();
        let rps = refresh_run(
            &unacked_channels,
            target.clone(),
            &format!("cluster-0-{round}"),
        )
        .await?;
        let refreshes = rps * started.elapsed().as_secs_f64();
        redis_cpu_unacked +=
            cpu(&primaries).saturating_sub(redis_before).as_secs_f64() * 1e6 / refreshes / 2.0;
        rates[1] += rps / 2.0;
        eprintln!(
            "Refresh on the cluster, acknowledged by a replica (round {})...",
            round + 1
        );
        let (redis_before, tokend_before) = (cpu(&primaries), cpu(&tokend_pid));
        let started = Instant::now();
        let rps = refresh_run(
            &acked_channels,
            target.clone(),
            &format!("cluster-acked-{round}"),
        )
        .await?;
        // CPU over the whole run, logins and warm-up included (an
        // overestimate of a few percent): the refreshes are the measured
        // rate times the whole run's length.
        let refreshes = rps * started.elapsed().as_secs_f64();
        let redis_cpu = cpu(&primaries).saturating_sub(redis_before);
        let tokend_cpu = cpu(&tokend_pid).saturating_sub(tokend_before);
        redis_cpu_per_refresh += redis_cpu.as_secs_f64() * 1e6 / refreshes / 2.0;
        tokend_cpu_per_refresh += tokend_cpu.as_secs_f64() * 1e6 / refreshes / 2.0;
        rates[2] += rps / 2.0;
    }
    let [single, unacked_rps, acked_rps] = rates;
    report.set("refresh_rps_single_redis", single);
    report.set("refresh_rps_cluster_no_acks", unacked_rps);
    report.set("refresh_rps_cluster", acked_rps);
    report.set("cluster_refresh_vs_single", acked_rps / single);
    report.set("wait_cost_ratio", acked_rps / unacked_rps);
    report.set("refresh_rps_single_redis_acks_0", lone_unconfirmed_rate);
    report.set("lone_node_auto_vs_acks_0", single / lone_unconfirmed_rate);
    report.set("redis_cpu_us_per_refresh", redis_cpu_per_refresh);
    report.set("redis_cpu_us_per_refresh_no_acks", redis_cpu_unacked);
    report.set("tokend_cpu_us_per_refresh", tokend_cpu_per_refresh);
    report.row(
        "cluster_refresh_vs_single",
        "cluster_refresh_vs_single",
        format!(
            "{} rps on 3 primaries (acknowledged) vs {} on one Redis",
            report.show("refresh_rps_cluster"),
            report.show("refresh_rps_single_redis")
        ),
    );
    report.row(
        "wait_cost_ratio",
        "wait_cost_ratio",
        format!(
            "{} vs {} rps without acknowledgements; target >= 0.75",
            report.show("refresh_rps_cluster"),
            report.show("refresh_rps_cluster_no_acks")
        ),
    );
    report.row(
        "... one Redis, auto vs 0",
        "lone_node_auto_vs_acks_0",
        format!(
            "{} vs {} rps: what the confirmed-write path costs where nothing needs confirming",
            report.show("refresh_rps_single_redis"),
            report.show("refresh_rps_single_redis_acks_0")
        ),
    );
    report.row(
        "Redis CPU us per Refresh",
        "redis_cpu_us_per_refresh",
        format!(
            "all primaries together ({} without acknowledgements); tokend {} us per Refresh",
            report.show("redis_cpu_us_per_refresh_no_acks"),
            report.show("tokend_cpu_us_per_refresh")
        ),
    );
    Ok(())
}

/// 1,000 watchers of one fresh tokend, each on a connection of its own:
/// the memory each costs, and the time from Revoke's answer until every
/// one of them has the entry, over 20 revocations; then the memory of
/// 1,000 watchers sharing 10 connections, to tell the watcher's own cost
/// from its connection's.
pub async fn fanout(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let (own_kib, mut delays) = fanout_run(dep, WATCHERS, REVOCATIONS).await?;
    let (shared_kib, _) = fanout_run(dep, 10, 0).await?;
    delays.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let i = ((delays.len() as f64 - 1.0) * p).round() as usize;
        delays.get(i).copied().unwrap_or(f64::NAN)
    };
    report.set("fanout_1000_p50_ms", percentile(0.5));
    report.set("fanout_1000_p99_ms", percentile(0.99));
    report.set("fanout_rss_kib_per_watcher", own_kib);
    report.set("fanout_rss_kib_per_watcher_shared_connections", shared_kib);
    report.row(
        "fanout_1000_p99_ms",
        "fanout_1000_p99_ms",
        format!(
            "Revoke answered -> all {WATCHERS} watchers have it; p50 {} ms over {REVOCATIONS}; target < 100",
            report.show("fanout_1000_p50_ms")
        ),
    );
    report.row(
        "fanout_rss_kib_per_watcher",
        "fanout_rss_kib_per_watcher",
        format!(
            "tokend RSS growth per watcher on its own connection; {} KiB sharing 10 connections",
            report.show("fanout_rss_kib_per_watcher_shared_connections")
        ),
    );
    Ok(())
}

/// [`WATCHERS`] watchers over `connections` connections to a fresh tokend;
/// returns tokend's RSS growth per watcher (KiB) and, for each of
/// `revocations` Revokes, the ms from its answer until every watcher had it.
async fn fanout_run(
    dep: &Deployment,
    connections: usize,
    revocations: usize,
) -> Result<(f64, Vec<f64>), Box<dyn Error>> {
    let tokend = setup::start_tokend(&dep.redis, &[]);
    let pid = tokend.pid().ok_or("tokend has no pid")?;
    let channels = setup::channels(&tokend.url()).await?;
    let mut client = TokenClient::new(channels[0].clone());
    let watcher = Watcher::in_redis(&dep.redis);
    let token = watcher.token(&mut client).await;
    let users = setup::users(&dep.redis, &format!("fanout-{connections}"), revocations).await?;
    let sessions = setup::refreshers(
        |i| TokenClient::new(channels[i % setup::CONNECTIONS].clone()),
        &users,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib(pid).ok_or("no RSS")?;

    eprintln!("connecting {WATCHERS} watchers over {connections} connections...");
    let mut watcher_channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        watcher_channels.push(Endpoint::from_shared(tokend.url())?.connect().await?);
    }
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let (ready, mut readied) = mpsc::unbounded_channel::<()>();
    let mut watchers = tokio::task::JoinSet::new();
    for i in 0..WATCHERS {
        let mut client = TokenClient::new(watcher_channels[i % connections].clone());
        let request = with_bearer(pb::WatchRevocationsRequest::default(), &token);
        let mut stream = client.watch_revocations(request).await?.into_inner();
        let (arrivals, ready) = (arrivals.clone(), ready.clone());
        watchers.spawn(async move {
            let mut caught_up = false;
            while let Ok(Some(message)) = stream.message().await {
                match message.event {
                    Some(pb::watch_revocations_response::Event::Session(s)) => {
                        let _ = arrivals.send((s.session_id, Instant::now()));
                    }
                    Some(pb::watch_revocations_response::Event::Heartbeat(_)) if !caught_up => {
                        caught_up = true;
                        let _ = ready.send(());
                    }
                    _ => {}
                }
            }
            drop(client);
        });
    }
    for _ in 0..WATCHERS {
        readied.recv().await.ok_or("a watcher ended early")?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_mib(pid).ok_or("no RSS")?;

    if revocations > 0 {
        eprintln!("timing {revocations} revocations to all {WATCHERS} watchers...");
    }
    let mut delays = Vec::with_capacity(revocations);
    for mut session in sessions {
        let sid = session
            .token
            .strip_prefix("tkd_rt_")
            .and_then(|rest| rest.split('.').next())
            .ok_or("refresh token shape")?
            .to_owned();
        let request = pb::RevokeRequest {
            refresh_token: session.token.clone(),
        };
        session.client.revoke(request).await?;
        let answered = Instant::now();
        let mut last = answered;
        let mut count = 0;
        while count < WATCHERS {
            let (id, at) = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
                .await?
                .ok_or("watchers ended")?;
            if id == sid {
                count += 1;
                last = last.max(at);
            }
        }
        delays.push(last.saturating_duration_since(answered).as_secs_f64() * 1000.0);
    }
    watchers.abort_all();
    let per_watcher_kib = (rss_after - rss_before) * 1024.0 / WATCHERS as f64;
    Ok((per_watcher_kib, delays))
}
