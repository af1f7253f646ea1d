//! `grpc.health.v1.Health`: SERVING while the store answers.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::api::TokenApi;
use crate::authority::Authority;
use crate::proto::tokend::v1::token_service_server::TokenServiceServer;

/// How often the health service re-checks the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Reports NOT_SERVING while the store does not answer, so load balancers and
/// orchestrators route around a tokend that cannot reach Redis.
pub(super) async fn watch_store_health(
    authority: Arc<Authority>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let status = match authority.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                if last != Some(ServingStatus::NotServing) {
                    warn!(error = %err, "session store unreachable: health NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        crate::telemetry::record(&crate::facts::Fact::StoreUp(
            status == ServingStatus::Serving,
        ));
        if last != Some(status) {
            if status == ServingStatus::Serving && last.is_some() {
                info!("session store reachable again: health SERVING");
            }
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(
                    <TokenServiceServer<TokenApi> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            last = Some(status);
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}
