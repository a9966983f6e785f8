//! Observability: a span per call on both sides with its service, method, call id, peer,
//! outcome and duration; one trace id along a chain of calls across services; and metrics
//! through the `metrics` facade.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rpc_core::{ChannelConfig, Context, Server, ServerConfig, service};
use rpc_tests::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

/// A span a subscriber saw: its id, name and fields.
type SeenSpan = (u64, &'static str, HashMap<String, String>);

/// The fields of every span a subscriber saw, by span, in creation order.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<SeenSpan>>>);

struct FieldWriter<'a>(&'a mut HashMap<String, String>);

impl Visit for FieldWriter<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: LayerContext<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut FieldWriter(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((id.into_u64(), attrs.metadata().name(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, _, fields)) = spans
            .iter_mut()
            .rev()
            .find(|(span, ..)| *span == id.into_u64())
        {
            values.record(&mut FieldWriter(fields));
        }
    }
}

impl SpanLog {
    fn spans(&self, name: &str) -> Vec<HashMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span_name, _)| *span_name == name)
            .map(|(_, _, fields)| fields.clone())
            .collect()
    }
}

/// A front service whose handler calls the calculator behind it.
#[service]
trait Front {
    /// Adds through the back service.
    async fn add_via_back(&self, a: i64, b: i64) -> i64;
}

struct FrontImpl {
    back: CalculatorClient,
}

impl Front for FrontImpl {
    async fn add_via_back(&self, a: i64, b: i64) -> i64 {
        self.back.add(a, b).await.unwrap_or(-1)
    }
}

#[tokio::test]
async fn every_call_has_a_span_on_both_sides_and_a_chain_shares_one_trace() {
    let log = SpanLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let back = TestServer::start(test_server().0, Transport::Tcp).await;
    let back_client = CalculatorClient::new(back.connect().await);
    let front = TestServer::start(
        Server::new().add_service(FrontServer::new(FrontImpl { back: back_client })),
        Transport::Tcp,
    )
    .await;
    let client = FrontClient::new(front.connect().await);
    assert_eq!(client.add_via_back(2, 3).await.unwrap(), 5);

    let clients = log.spans("rpc.client");
    let servers = log.spans("rpc.server");
    let front_call = clients
        .iter()
        .find(|span| span["method"] == "add_via_back")
        .unwrap();
    let back_call = clients.iter().find(|span| span["method"] == "add").unwrap();
    let front_served = servers
        .iter()
        .find(|span| span["method"] == "add_via_back")
        .unwrap();
    let back_served = servers.iter().find(|span| span["method"] == "add").unwrap();
    for span in [front_call, back_call, front_served, back_served] {
        assert_eq!(span["outcome"], "ok", "{span:?}");
        assert!(span.contains_key("duration_us"), "{span:?}");
        assert!(span.contains_key("call_id"), "{span:?}");
        assert!(span["peer"].starts_with("tcp://"), "{span:?}");
    }
    assert_eq!(back_served["service"], "Calculator");
    let trace = &front_call["trace_id"];
    assert_eq!(trace.len(), 32);
    for span in [back_call, front_served, back_served] {
        assert_eq!(
            &span["trace_id"], trace,
            "one trace along the chain: {span:?}"
        );
    }
}

#[tokio::test]
async fn a_handler_can_read_the_trace_id_of_its_call() {
    /// Reports the trace id it runs under.
    #[service]
    trait Tracer {
        async fn trace_id(&self, cx: &Context) -> Option<String>;
    }
    struct TracerImpl;
    impl Tracer for TracerImpl {
        async fn trace_id(&self, _cx: &Context) -> Option<String> {
            rpc_core::observe::current_trace_id().map(|id| format!("{id:032x}"))
        }
    }
    let server = Server::new().add_service(TracerServer::new(TracerImpl));
    let server = TestServer::start(server, Transport::Loopback).await;
    let client = TracerClient::new(server.connect().await);
    // Untraced: nothing is sent and the handler sees no trace.
    assert_eq!(client.trace_id().await.unwrap(), None);
    // A caller can pass trace context on as metadata.
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let traced = client.with_metadata(rpc_core::observe::TRACEPARENT, traceparent);
    assert_eq!(
        traced.trace_id().await.unwrap().as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
}

/// A `metrics` recorder that keeps every counter, gauge and histogram in memory.
#[derive(Default)]
struct MemoryRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// `name{label=value,...}` with labels sorted.
fn key_text(key: &metrics::Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl metrics::Recorder for MemoryRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut counters = self.counters.lock().unwrap();
        metrics::Counter::from_arc(counters.entry(key_text(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        metrics::Gauge::from_arc(gauges.entry(key_text(key)).or_default().clone())
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        metrics::Histogram::from_arc(histograms.entry(key_text(key)).or_default().clone())
    }
}

impl MemoryRecorder {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |value| value.load(Ordering::SeqCst))
    }

    fn gauge(&self, key: &str) -> f64 {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map_or(0.0, |value| f64::from_bits(value.load(Ordering::SeqCst)))
    }

    fn samples(&self, key: &str) -> usize {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |samples| samples.0.lock().unwrap().len())
    }
}

#[tokio::test]
async fn metrics_count_calls_errors_latency_in_flight_and_connections() {
    let recorder = MemoryRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut server_config = ServerConfig::default();
    server_config.metrics = true;
    let server = TestServer::start(test_server_with(server_config).0, Transport::Tcp).await;
    let mut channel_config = ChannelConfig::default();
    channel_config.metrics = true;
    let channel = server.connect_with(channel_config).await;
    let calc = CalculatorClient::new(channel.clone());
    let probe = ProbeClient::new(channel);
    for i in 0..5 {
        calc.add(i, i).await.unwrap();
    }
    let _ = probe.panic("boom".into()).await.unwrap_err();
    eventually("the server counted the calls", || {
        recorder.counter("rpc_server_calls_total{method=add,outcome=ok,service=Calculator}") == 5
    })
    .await;

    assert_eq!(
        recorder.counter("rpc_client_calls_total{method=add,outcome=ok,service=Calculator}"),
        5
    );
    assert_eq!(
        recorder
            .counter("rpc_client_calls_total{method=panic,outcome=handler_panicked,service=Probe}"),
        1
    );
    assert_eq!(
        recorder
            .counter("rpc_server_calls_total{method=panic,outcome=handler_panicked,service=Probe}"),
        1
    );
    assert_eq!(
        recorder.samples("rpc_client_call_duration_seconds{method=add,service=Calculator}"),
        5
    );
    assert_eq!(
        recorder.samples("rpc_server_call_duration_seconds{method=add,service=Calculator}"),
        5
    );
    assert_eq!(
        recorder.gauge("rpc_client_calls_in_flight{method=add,service=Calculator}"),
        0.0
    );
    assert_eq!(
        recorder.gauge("rpc_server_calls_in_flight{method=add,service=Calculator}"),
        0.0
    );
    assert_eq!(recorder.gauge("rpc_server_connections{}"), 1.0);
}
