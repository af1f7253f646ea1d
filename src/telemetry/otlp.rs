//! Export of spans to an OpenTelemetry collector over OTLP/gRPC (the `otlp`
//! cargo feature, `--otlp-endpoint`), through `tracing-opentelemetry`.
//! Each call's span becomes a child of the caller's W3C `traceparent`.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, Registry};

use super::TelemetryError;

/// The running exporter; flushes and stops when dropped.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Starts exporting to `endpoint` (e.g. `http://127.0.0.1:4317`) and
    /// returns the layer that feeds it.
    pub(super) fn start(
        endpoint: &str,
    ) -> Result<(Exporter, Box<dyn Layer<Registry> + Send + Sync>), TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("tokend").build())
            .build();
        let tracer = provider.tracer("tokend");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((Exporter { provider }, layer))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Makes `span` (a call's new `grpc` span, not yet entered) a child of the
/// trace named by the request's `traceparent`, if any.
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// Request headers as OpenTelemetry reads propagation fields.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A collector that keeps what it is sent.
    #[derive(Clone, Default)]
    struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.0.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_calls_span_is_exported_as_a_child_of_the_callers_traceparent() {
        let collector = Collector::default();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", testkit_redis::free_port())
            .parse()
            .unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve(addr),
        );
        let (exporter, layer) = Exporter::start(&format!("http://{addr}")).unwrap();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller_span = "00f067aa0ba902b7";
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let mut headers = http::HeaderMap::new();
            let traceparent = format!("00-{trace_id}-{caller_span}-01");
            headers.insert("traceparent", traceparent.parse().unwrap());
            let span = tracing::info_span!("grpc", method = "/tokend.v1.TokenService/Login");
            adopt_parent(&span, &headers);
            let _entered = span.enter();
        });

        // Export until the collector has the span (the collector may still
        // be starting: flush again).
        let deadline = Instant::now() + Duration::from_secs(20);
        let span = loop {
            let provider = exporter.provider.clone();
            tokio::task::spawn_blocking(move || provider.force_flush())
                .await
                .unwrap()
                .ok();
            let found = collector
                .0
                .lock()
                .unwrap()
                .iter()
                .flat_map(|r| &r.resource_spans)
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .find(|s| s.name == "grpc")
                .cloned();
            if let Some(span) = found {
                break span;
            }
            assert!(Instant::now() < deadline, "no span reached the collector");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(hex(&span.trace_id), trace_id, "the caller's trace");
        assert_eq!(
            hex(&span.parent_span_id),
            caller_span,
            "a child of the caller's span"
        );
        drop(exporter);
    }
}
