//! What observability costs: Refresh on a tokend serving Prometheus metrics
//! (`--metrics-listen`, scraped every second meanwhile as Prometheus would)
//! against the same tokend without them, alternating, two rounds each.

use std::error::Error;
use std::time::Duration;

use crate::report::Report;
use crate::setup::{self, Deployment};

/// Runs the observability phase.
pub async fn measure(dep: &Deployment, report: &mut Report) -> Result<(), Box<dyn Error>> {
    let metrics_addr = format!("127.0.0.1:{}", testkit::free_port());
    let observed = setup::start_tokend(&dep.redis, &["--metrics-listen", &metrics_addr]);
    let observed_channels = setup::channels(&observed.url()).await?;
    let scraper = tokio::spawn(scrape_every_second(metrics_addr));
    let [without, with] = setup::alternating_refresh(
        dep,
        [
            ("without-metrics", &dep.tokend_channels),
            ("with-metrics", &observed_channels),
        ],
    )
    .await?;
    scraper.abort();
    report.set("refresh_rps_without_metrics", without);
    report.set("refresh_rps_with_metrics", with);
    report.set("metrics_overhead_ratio", with / without);
    let note = format!(
        "{} vs {} rps; target >= 0.97",
        report.show("refresh_rps_with_metrics"),
        report.show("refresh_rps_without_metrics")
    );
    report.row("metrics_overhead_ratio", "metrics_overhead_ratio", note);
    Ok(())
}

/// GETs `/metrics` once a second, as a Prometheus server would.
async fn scrape_every_second(addr: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await {
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
