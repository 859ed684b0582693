//! OpenTelemetry traces across nodes: a three-node `meridian dev` region
//! exports spans (sampling 1.0) to an in-process OTLP/HTTP receiver that
//! decodes the real protobuf `ExportTraceServiceRequest`. A put sent to a
//! follower (which refuses it, naming the leader; the SDK follows) must
//! leave one trace covering the entry node, the leader's propose and apply,
//! and a follower's append, every span's parent in the same trace.
//!
//! Ports: the cluster at `--port-offset` [`PORT_OFFSET`] (30079..=30087),
//! the receiver at [`RECEIVER_PORT`]; loopback 30000..=30999 only.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::post;
use common::dev::DevCluster;
use meridian::client::{Client, ClientConfig};
use meridian::config::telemetry::{OtlpProtocol, TelemetryConfig};
use meridian::config::LogFormat;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// `meridian dev --port-offset`: local-3's ports 7379..=7387 become
/// 30079..=30087.
const PORT_OFFSET: u16 = 22_700;

/// The OTLP receiver's port.
const RECEIVER_PORT: u16 = 30_990;

/// Longest the cluster may take to elect the key's leader.
const LEADER_BOUND: Duration = Duration::from_secs(30);

/// Longest the spans may take to arrive (export runs every second).
const SPANS_BOUND: Duration = Duration::from_secs(30);

/// One received span, with the node (`service.instance.id`) that sent it.
#[derive(Clone, Debug)]
struct Received {
    node: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

async fn receive(
    State(spans): State<Spans>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let node = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.instance.id")
            .and_then(|kv| kv.value.as_ref()?.value.clone())
            .map(|v| match v {
                Value::StringValue(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Received {
                node: node.clone(),
                name: span.name,
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
            });
        }
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, protobuf, reply)
}

async fn start_receiver() -> Spans {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], RECEIVER_PORT));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    spans
}

/// The node names of the key's range leader and of the other two nodes,
/// once the range has a leader (bounded).
async fn leader_and_followers(cluster: &DevCluster) -> (String, Vec<String>) {
    let client = Client::connect(cluster.client_config(Duration::from_secs(10)))
        .await
        .unwrap();
    let deadline = Instant::now() + LEADER_BOUND;
    loop {
        let status = client.region_status().await.unwrap();
        let range = status.iter().find(|s| s.start == b"config/").unwrap();
        if let Some(leader) = range.leader {
            let leader = format!("node{leader}");
            let followers = ["node1", "node2", "node3"]
                .into_iter()
                .filter(|n| *n != leader)
                .map(String::from)
                .collect();
            return (leader, followers);
        }
        assert!(Instant::now() < deadline, "config/ has no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The spans of `trace`, once they hold every `(node, name)` of `wanted`
/// (a node of `None` matches any) and every parent is a span of the trace.
fn complete_trace(
    spans: &[Received],
    trace: &[u8],
    wanted: &[(Option<&str>, &str)],
) -> Result<Vec<Received>, String> {
    let ours: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    for (node, name) in wanted {
        if !ours
            .iter()
            .any(|s| s.name == *name && node.is_none_or(|n| s.node == n))
        {
            return Err(format!("no span {name} from {node:?}"));
        }
    }
    let ids: HashSet<&[u8]> = ours.iter().map(|s| s.span_id.as_slice()).collect();
    if let Some(orphan) = ours
        .iter()
        .find(|s| !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_slice()))
    {
        return Err(format!(
            "span {} of {} has a parent outside the trace",
            orphan.name, orphan.node
        ));
    }
    Ok(ours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_a_follower_is_one_trace_across_the_region() {
    let spans = start_receiver().await;
    let endpoint = format!("http://127.0.0.1:{RECEIVER_PORT}");
    let env = [
        ("MERIDIAN_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("MERIDIAN_TELEMETRY__SAMPLING_RATIO", "1.0"),
    ];
    let cluster = DevCluster::start_at(PORT_OFFSET, &env);
    let (leader, followers) = leader_and_followers(&cluster).await;
    let entry = followers[0].clone();

    // This process is the client: its spans go to the same receiver, so
    // the trace's root is the test's own span.
    let telemetry = meridian::telemetry::init(
        LogFormat::Human,
        "warn",
        Some(&TelemetryConfig {
            otlp_endpoint: format!("{endpoint}/v1/traces"),
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: 1.0,
            service_name: "meridian-test".into(),
        }),
        &meridian::telemetry::Identity {
            node: "test-client".into(),
            region: "local".into(),
            zone: "test".into(),
        },
    )
    .unwrap();
    assert!(telemetry.exporting());

    let mut config: ClientConfig = cluster.client_config(Duration::from_secs(10));
    config.endpoints = vec![cluster.quic_addr(&entry).parse().unwrap()];
    let client = Client::connect(config).await.unwrap();
    // A trace starts where the sampling decision is taken (at ratio 1.0
    // here): a span opened outside one never reaches the exporter.
    let root = meridian::trace_context::entry_span(
        None,
        || tracing::info_span!(target: "meridian::test", "test_put"),
    );
    let trace_id = meridian::trace_context::of_span(&root)
        .expect("the test's root span is sampled")
        .trace_id;
    {
        use tracing::Instrument;
        client
            .put("config/traced", "v")
            .instrument(root)
            .await
            .unwrap();
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let wanted = [
        (Some("test-client"), "test_put"),
        (Some("test-client"), "client_request"),
        (Some(entry.as_str()), "request"),
        (Some(leader.as_str()), "request"),
        (Some(leader.as_str()), "raft_propose"),
        (Some(leader.as_str()), "raft_append_entries_send"),
        (Some(leader.as_str()), "raft_log_append"),
        (Some(leader.as_str()), "raft_apply"),
        (None, "raft_rpc"),
        (None, "raft_log_fsync"),
    ];
    let deadline = Instant::now() + SPANS_BOUND;
    let trace = loop {
        let got = spans.lock().unwrap().clone();
        match complete_trace(&got, &trace_id, &wanted) {
            Ok(trace) => break trace,
            Err(why) => {
                assert!(
                    Instant::now() < deadline,
                    "trace incomplete after {SPANS_BOUND:?}: {why}; got {:?}",
                    got.iter()
                        .filter(|s| s.trace_id == trace_id)
                        .map(|s| format!("{}@{}", s.name, s.node))
                        .collect::<Vec<_>>()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // One root, the test's; a follower of the leader appended the entry
    // (its AppendEntries span is a child of the leader's send).
    let roots: Vec<&Received> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert_eq!(roots[0].name, "test_put");
    let by_id: HashMap<&[u8], &Received> =
        trace.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let follower_append = trace
        .iter()
        .find(|s| {
            s.name == "raft_rpc"
                && followers.contains(&s.node)
                && by_id[s.parent_span_id.as_slice()].name == "raft_append_entries_send"
                && by_id[s.parent_span_id.as_slice()].node == leader
        })
        .unwrap_or_else(|| panic!("no follower append under the leader's send: {trace:#?}"));
    assert!(
        trace.iter().any(|s| s.name == "raft_log_append"
            && s.node == follower_append.node
            && by_id[s.parent_span_id.as_slice()].span_id == follower_append.span_id),
        "the follower's log append joins its AppendEntries: {trace:#?}"
    );
    // The entry node's request is a child of the client's, not of the leader's.
    let entry_request = trace
        .iter()
        .find(|s| s.name == "request" && s.node == entry)
        .unwrap();
    assert_eq!(
        by_id[entry_request.parent_span_id.as_slice()].name,
        "client_request"
    );
    drop(cluster);
}
