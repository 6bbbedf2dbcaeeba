//! The agent server's telemetry: log lines to stderr (text or JSON, filtered by `RUST_LOG`),
//! each scrubbed of the server's secrets, and, in a build with the `otlp` feature and with
//! `--otlp-endpoint` set, the same spans (connections, runs, sub-runs, tool calls) exported to
//! an OpenTelemetry collector over OTLP/HTTP. Spans carry what the log lines carry: run ids,
//! agent and tool names, the user's hashed tag; never a token or a raw user id.
//!
//! Only the server (`agent-server`, which forwards its `otlp` feature here) uses it; it knows
//! nothing of the server but the settings below, which the server's configuration reads from
//! its flags and re-exports under `agent_server::config`.
//!
//! **Architecture Invariant:** what it writes or exports passes the one `Scrubber` it is given:
//! log lines through [`Scrubbed`], spans through the exporter's scrubbing wrapper
//! (`tests/it/secrets.rs`, `tests/it/otlp.rs`).

use std::sync::Arc;

use clap::ValueEnum;
use secrets::{Scrubber, Site};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How spans are encoded for an OpenTelemetry collector (OTLP/HTTP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// Protocol buffers (`application/x-protobuf`), OTLP's default.
    #[default]
    Protobuf,
    /// JSON (`application/json`).
    Json,
}

/// Where and how spans are exported (validated by the server's configuration from
/// `--otlp-endpoint` and `--otlp-protocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// The collector's traces URL: `--otlp-endpoint` followed by `/v1/traces`.
    pub traces_url: String,
    /// The encoding.
    pub protocol: OtlpProtocol,
}

/// Why `--otlp-endpoint` cannot be used in a build without the `otlp` feature.
pub const NO_OTLP: &str = "this agent-server was built without OpenTelemetry export; build it with \
     `cargo build --release -p agent-server --features otlp`, or leave --otlp-endpoint unset";

/// The subscriber's layers sit on the `RUST_LOG` filter: what it leaves out is neither
/// logged nor exported.
type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;

/// What must outlive the subscriber: the exporter, flushed by [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Blocks until the collector
    /// answered or the export timed out: call it off the async runtime.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "telemetry: the last spans did not reach the collector");
        }
    }
}

/// What is logged without `RUST_LOG`: `info`, except the MCP client library's own info lines
/// (`rmcp`), which hold an MCP server's whole initialize answer (its instructions, written for
/// a model) and every notification; `mcp-tools` says what matters of them itself (the
/// instructions at debug).
pub const DEFAULT_FILTER: &str = "info,rmcp=warn";

/// The process's subscriber: the `RUST_LOG` filter ([`DEFAULT_FILTER`] without it), lines in `format`
/// to `writer` (colour codes only when `ansi`), and the OTLP export when `otlp` is set (its
/// spans scrubbed of the server's secrets by `scrubber` before they are exported).
/// Fails when `otlp` is set in a build without the `otlp` feature (the configuration
/// refuses that first) or the exporter cannot be built.
pub fn subscriber<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
    otlp: Option<&Otlp>,
    scrubber: &Arc<Scrubber>,
) -> Result<(Box<dyn tracing::Subscriber + Send + Sync>, Telemetry), String>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let (export, telemetry) = exporting(otlp, scrubber)?;
    let layers: Vec<BoxedLayer> = std::iter::once(lines).chain(export).collect();
    let subscriber = Registry::default().with(filter).with(layers);
    Ok((Box::new(subscriber), telemetry))
}

/// A layer of the subscriber.
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// The export layer for `otlp`, when set, and what flushes it.
#[cfg(feature = "otlp")]
fn exporting(
    otlp: Option<&Otlp>,
    scrubber: &Arc<Scrubber>,
) -> Result<(Option<BoxedLayer>, Telemetry), String> {
    let Some(otlp) = otlp else {
        return Ok((None, Telemetry::default()));
    };
    let (layer, provider) = export::layer(otlp, Arc::clone(scrubber))?;
    let telemetry = Telemetry {
        provider: Some(provider),
    };
    Ok((Some(layer), telemetry))
}

/// A build without the exporter refuses an export.
#[cfg(not(feature = "otlp"))]
fn exporting(
    otlp: Option<&Otlp>,
    _scrubber: &Arc<Scrubber>,
) -> Result<(Option<BoxedLayer>, Telemetry), String> {
    match otlp {
        None => Ok((None, Telemetry::default())),
        Some(otlp) => Err(format!(
            "cannot export spans to {}: {}",
            otlp.traces_url, NO_OTLP
        )),
    }
}

/// Logs to stderr in `format` from now on, each line scrubbed of the server's secrets by
/// `scrubber`, and exports spans when `otlp` is set (once per process; later calls change
/// nothing and return an inert [`Telemetry`]).
pub fn init(
    format: LogFormat,
    otlp: Option<&Otlp>,
    scrubber: Arc<Scrubber>,
) -> Result<Telemetry, String> {
    // Colour codes only for a person at a terminal, not in a log file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = Scrubbed {
        scrubber: Arc::clone(&scrubber),
        inner: std::io::stderr,
    };
    let (subscriber, telemetry) = subscriber(format, writer, ansi, otlp, &scrubber)?;
    match tracing::subscriber::set_global_default(subscriber) {
        Ok(()) => Ok(telemetry),
        Err(_) => Ok(Telemetry::default()),
    }
}

/// Log lines written through `inner`, scrubbed of the server's secrets first. The
/// formatter writes each line with one `write`, so a secret is never split between two.
#[derive(Debug, Clone)]
pub struct Scrubbed<W> {
    /// What removes the secrets.
    pub scrubber: Arc<Scrubber>,
    /// Where the lines go.
    pub inner: W,
}

impl<'w, W: tracing_subscriber::fmt::MakeWriter<'w>> tracing_subscriber::fmt::MakeWriter<'w>
    for Scrubbed<W>
{
    type Writer = ScrubbedLine<'w, W::Writer>;

    fn make_writer(&'w self) -> Self::Writer {
        ScrubbedLine {
            scrubber: &self.scrubber,
            inner: self.inner.make_writer(),
        }
    }
}

/// One log line's writer of [`Scrubbed`].
#[derive(Debug)]
pub struct ScrubbedLine<'w, W> {
    scrubber: &'w Scrubber,
    inner: W,
}

impl<W: std::io::Write> std::io::Write for ScrubbedLine<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner
            .write_all(&self.scrubber.scrub_bytes(Site::Logs, buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(feature = "otlp")]
mod export {
    //! The OTLP exporter: the SDK's batching span processor (its own thread), the OTLP/HTTP
    //! encoders, and the server's HTTP client (reqwest with rustls, so `https://` collectors
    //! work) in its blocking form, on the processor's thread.

    use std::borrow::Cow;
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use opentelemetry::trace::Status;
    use opentelemetry::{Array, KeyValue, StringValue, Value};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;

    use super::{BoxedLayer, Otlp, OtlpProtocol, Scrubber, Site};

    /// How long one export may take, the collector's answer included.
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A collector's answer is a small status message; a larger one is not read.
    const MAX_ANSWER: u64 = 64 * 1024;

    /// The tracing layer that exports to `otlp`, and the provider that flushes it.
    pub(super) fn layer(
        otlp: &Otlp,
        scrubber: Arc<Scrubber>,
    ) -> Result<(BoxedLayer, SdkTracerProvider), String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Blocking::default())
            .with_protocol(match otlp.protocol {
                OtlpProtocol::Protobuf => Protocol::HttpBinary,
                OtlpProtocol::Json => Protocol::HttpJson,
            })
            .with_endpoint(otlp.traces_url.clone())
            .with_timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot export spans to {}: {e}", otlp.traces_url))?;
        let resource = Resource::builder()
            .with_service_name("agent-server")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let exporter = ScrubbedSpans {
            inner: exporter,
            scrubber,
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("agent-server");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((layer, provider))
    }

    /// Spans scrubbed of the server's secrets (their names, attributes, events and error
    /// status) before `inner` exports them: an error logged inside a span travels as one of
    /// its events' attributes.
    #[derive(Debug)]
    struct ScrubbedSpans<E> {
        inner: E,
        scrubber: Arc<Scrubber>,
    }

    impl<E: SpanExporter> SpanExporter for ScrubbedSpans<E> {
        fn export(
            &self,
            mut batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            if self.scrubber.is_active() {
                for span in &mut batch {
                    self.scrub_span(span);
                }
            }
            self.inner.export(batch)
        }

        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.inner.shutdown_with_timeout(timeout)
        }

        fn force_flush(&self) -> OTelSdkResult {
            self.inner.force_flush()
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.inner.set_resource(resource);
        }
    }

    impl<E> ScrubbedSpans<E> {
        fn scrub_span(&self, span: &mut SpanData) {
            self.scrub_text(&mut span.name);
            self.scrub_attributes(&mut span.attributes);
            for event in &mut span.events.events {
                self.scrub_text(&mut event.name);
                self.scrub_attributes(&mut event.attributes);
            }
            if let Status::Error { description } = &mut span.status {
                self.scrub_text(description);
            }
        }

        fn scrub_text(&self, text: &mut Cow<'static, str>) {
            if let Cow::Owned(clean) = self.scrubber.scrub(Site::Telemetry, text) {
                *text = Cow::Owned(clean);
            }
        }

        fn scrub_attributes(&self, attributes: &mut [KeyValue]) {
            for attribute in attributes {
                match &mut attribute.value {
                    Value::String(text) => self.scrub_value(text),
                    Value::Array(Array::String(texts)) => {
                        texts.iter_mut().for_each(|text| self.scrub_value(text));
                    }
                    _ => {}
                }
            }
        }

        fn scrub_value(&self, value: &mut StringValue) {
            if let Cow::Owned(clean) = self.scrubber.scrub(Site::Telemetry, value.as_str()) {
                *value = StringValue::from(clean);
            }
        }
    }

    /// reqwest's blocking client, made on first use: on the span processor's own thread,
    /// outside the async runtime, where a blocking client may be made, used and dropped.
    #[derive(Debug, Default)]
    struct Blocking(OnceLock<Result<reqwest::blocking::Client, String>>);

    #[async_trait::async_trait]
    impl HttpClient for Blocking {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            use std::io::Read;
            let client = self
                .0
                .get_or_init(|| {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    reqwest::blocking::Client::builder()
                        .timeout(TIMEOUT)
                        .build()
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| HttpError::from(e.clone()))?;
            let answer = client.execute(request.try_into()?)?;
            let status = answer.status();
            let mut body = Vec::new();
            answer.take(MAX_ANSWER).read_to_end(&mut body)?;
            Ok(Response::builder().status(status).body(Bytes::from(body))?)
        }
    }
}
