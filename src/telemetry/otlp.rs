//! The OTLP trace exporter, configured the standard way: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on, `OTEL_EXPORTER_OTLP_PROTOCOL` picks
//! `http/protobuf` (the default) or `http/json`, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` name the process, and the `OTEL_BSP_*` variables tune the
//! batching. Spans leave on the exporter's own thread, never on a request's path. The
//! exporter speaks plain HTTP (no TLS is linked in): the collector is expected beside the
//! process, in the cluster or as a sidecar.

use anyhow::{bail, Context};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Where traces go, if anywhere.
pub fn endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
}

fn protocol() -> anyhow::Result<Protocol> {
    let var = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok());
    match var.as_deref().map(str::trim) {
        None | Some("") | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some(other) => bail!("OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use http/protobuf (the default, port 4318) or http/json"),
    }
}

/// The tracer provider when an endpoint is configured.
pub fn provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = endpoint() else {
        return Ok(None);
    };
    if !endpoint.trim_start().starts_with("http://") {
        bail!("the OTLP endpoint {endpoint} is not http://: this build exports over plain HTTP only; send traces to a collector in the cluster or a sidecar");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .context("starting the OTLP trace exporter")?;
    // The environment's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins over the
    // role's default name.
    let mut resource = Resource::builder_empty()
        .with_service_name(service.to_string())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    if std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok()
    {
        let env = Resource::builder().build();
        resource = resource.with_attributes(
            env.iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        );
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}
