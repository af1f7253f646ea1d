//! A closed-loop load generator: N workers, each calling as soon as its
//! previous call returns; calls during the warm-up are not counted.

use std::future::Future;
use std::time::{Duration, Instant};

use testkit::process_cpu_time;

/// One closed-loop caller.
pub trait Worker: Send + 'static {
    /// Makes one call; `true` if it succeeded.
    fn call(&mut self) -> impl Future<Output = bool> + Send;
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Successful calls in the measured window.
    pub ok: u64,
    /// Failed calls in the measured window.
    pub errors: u64,
    /// The measured window.
    pub window: Duration,
    /// Latency of every measured call, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Stats {
    /// Successful calls per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)]) / 1000.0
    }
}

/// Runs `workers` concurrently: `warmup`, then `measure`.
pub async fn run<W: Worker>(workers: Vec<W>, warmup: Duration, measure: Duration) -> Stats {
    run_measuring_cpu(workers, warmup, measure, &[]).await.0
}

/// [`run`], and the CPU time (user and system) each of `pids` used in the
/// measured window, in their order.
pub async fn run_measuring_cpu<W: Worker>(
    workers: Vec<W>,
    warmup: Duration,
    measure: Duration,
    pids: &[u32],
) -> (Stats, Vec<Duration>) {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let pids = pids.to_vec();
    let cpu = tokio::spawn(async move {
        let used = || {
            pids.iter()
                .map(|pid| process_cpu_time(*pid))
                .collect::<Vec<_>>()
        };
        tokio::time::sleep_until(measure_from.into()).await;
        let before = used();
        tokio::time::sleep_until(end.into()).await;
        used()
            .into_iter()
            .zip(before)
            .map(|(after, before)| after.saturating_sub(before))
            .collect::<Vec<_>>()
    });
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut local = Stats::default();
            loop {
                let began = Instant::now();
                let ok = worker.call().await;
                let done = Instant::now();
                if done >= end {
                    break;
                }
                if began >= measure_from {
                    if ok {
                        local.ok += 1;
                        let us = done.duration_since(began).as_micros();
                        local
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    } else {
                        local.errors += 1;
                    }
                }
            }
            local
        }));
    }
    let mut total = Stats {
        window: measure,
        ..Stats::default()
    };
    for task in tasks {
        if let Ok(local) = task.await {
            total.ok += local.ok;
            total.errors += local.errors;
            total.latencies_us.extend(local.latencies_us);
        }
    }
    total.latencies_us.sort_unstable();
    (total, cpu.await.unwrap_or_default())
}
