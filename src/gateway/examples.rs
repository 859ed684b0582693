//! Examples and links of the OpenAPI document (`openapi.rs` adds them).
//!
//! Reply examples are built from the reply types the handlers serialize,
//! so an example cannot name a field the reply lacks or miss one it has
//! (a changed type stops this file compiling). Request examples are JSON;
//! a test parses each with the request type its handler uses. Links
//! (OpenAPI 3 `links`) tell a client, and schemathesis's stateful phase,
//! which request follows which reply: a put is read back, a granted lease
//! is kept alive and revoked, a lock's grant is released with its token.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::coord::{
    HolderJson, LeaderResponse, LockAcquireResponse, LockHolderResponse, LockReleasedResponse,
};
use super::dto::{
    served, DeleteResponse, GetResponse, HealthResponse, HistoryEntryJson, HistoryResponse, KvItem,
    MemberJson, MembersResponse, PoliciesResponse, PolicyChangedResponse, PolicyJson, PutResponse,
    RangeResponse, ServedMeta, StatusResponse, TxnResponse,
};
use super::lease::{LeaseJson, LeaseResponse};
use super::service::{ServiceInstanceJson, ServicesResponse};
use crate::replication::policy::{Consistency, Policy, Replication};
use crate::types::{KeyValue, Timestamp, VersionEntry};

/// A write's timestamp in the examples (`1795639112708.0`).
const WRITTEN: Timestamp = Timestamp(384_315_472_163_635_200);
/// A later read's timestamp in the examples (`1795639112747.0`).
const READ: Timestamp = Timestamp(384_315_472_817_946_624);
/// A fencing token in the examples.
const TOKEN: u64 = 384_315_472_163_635_200;

/// An operation: its path in the document and its method.
pub(crate) type Operation = (&'static str, &'static str);

fn value_of<T: Serialize>(reply: T) -> Value {
    serde_json::to_value(reply).unwrap_or(Value::Null)
}

fn policy(prefix: Option<&[u8]>, consistency: Consistency) -> PolicyJson {
    PolicyJson::new(
        prefix,
        &Policy {
            consistency,
            home: "us-east".into(),
            replication: Replication::Async,
            max_staleness_ms: 5_000,
        },
    )
}

fn policies() -> PoliciesResponse {
    PoliciesResponse {
        local_region: "us-east".into(),
        regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
        default: policy(None, Consistency::Strong),
        prefixes: vec![policy(Some(b"ads/"), Consistency::Eventual)],
    }
}

fn lease() -> LeaseJson {
    LeaseJson {
        id: 7,
        ttl_ms: 10_000,
        remaining_ms: 9_850,
        granted_at: WRITTEN.0,
        granted_at_str: WRITTEN.to_string(),
    }
}

fn holder() -> HolderJson {
    HolderJson {
        lease: 7,
        token: TOKEN.to_string(),
        value: Some("10.0.0.7:8080".into()),
        value_b64: "MTAuMC4wLjc6ODA4MA==".into(),
    }
}

fn health() -> Value {
    let (served_at, served_at_str) = served(READ);
    value_of(HealthResponse {
        status: "ok".into(),
        served_at,
        served_at_str,
    })
}

fn db_value() -> KeyValue {
    KeyValue {
        key: b"app/config/db".to_vec(),
        value: b"postgres://db1:5432".to_vec(),
        version: WRITTEN,
    }
}

/// Example replies of the operations whose attributes give none, built
/// from the handlers' reply types.
pub(crate) fn replies() -> Vec<(Operation, Value)> {
    let (w, w_str) = served(WRITTEN);
    let (r, r_str) = served(READ);
    let changed = || {
        value_of(PolicyChangedResponse {
            version: 12,
            epoch: 3,
            policies: policies(),
        })
    };
    let released = || {
        value_of(LockReleasedResponse {
            released: true,
            served_at: r,
            served_at_str: r_str.clone(),
        })
    };
    let lease_reply = || {
        value_of(LeaseResponse {
            lease: lease(),
            served_at: r,
            served_at_str: r_str.clone(),
        })
    };
    vec![
        (
            ("/v1/kv/{key}", "get"),
            value_of(GetResponse::new(
                "app/config/db".into(),
                &db_value(),
                ServedMeta::plain(READ),
            )),
        ),
        (
            ("/v1/kv/{key}", "put"),
            value_of(PutResponse {
                version: w,
                served_at: w,
                served_at_str: w_str.clone(),
            }),
        ),
        (
            ("/v1/kv/{key}", "delete"),
            value_of(DeleteResponse {
                version: w,
                existed: true,
                served_at: w,
                served_at_str: w_str.clone(),
            }),
        ),
        (
            ("/v1/kv", "get"),
            value_of(RangeResponse {
                kvs: vec![KvItem::from(&db_value())],
                next_page_token: None,
                served_at: r,
                served_at_str: r_str.clone(),
                staleness_ms: 0,
                token: r.to_string(),
            }),
        ),
        (
            ("/v1/txn", "post"),
            value_of(TxnResponse {
                succeeded: true,
                version: w,
                served_at: w,
                served_at_str: w_str.clone(),
            }),
        ),
        (
            ("/v1/history/{key}", "get"),
            value_of(HistoryResponse {
                entries: vec![
                    HistoryEntryJson::from(&VersionEntry {
                        version: READ,
                        value: None,
                    }),
                    HistoryEntryJson::from(&VersionEntry {
                        version: WRITTEN,
                        value: Some(b"postgres://db1:5432".to_vec()),
                    }),
                ],
                next_before: None,
                served_at: r,
                served_at_str: r_str.clone(),
            }),
        ),
        (
            ("/v1/status", "get"),
            value_of(StatusResponse {
                node_id: "us-east-1".into(),
                region: "us-east".into(),
                zone: "us-east-1a".into(),
                quic_addr: "127.0.0.1:7379".into(),
                listen_addr: "127.0.0.1:7379".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                approximate_keys: 1_204,
                gc_horizon: WRITTEN.0,
                closed_ts: READ.0,
                uptime_secs: 3_600,
                served_at: r,
                served_at_str: r_str.clone(),
            }),
        ),
        (("/health", "get"), health()),
        (
            ("/metrics", "get"),
            json!("# HELP meridian_http_requests_total HTTP gateway requests by route and status\n# TYPE meridian_http_requests_total counter\nmeridian_http_requests_total{op=\"get\",status=\"200\"} 12\n"),
        ),
        (("/ready", "get"), health()),
        (
            ("/v1/members", "get"),
            value_of(MembersResponse {
                members: vec![MemberJson {
                    node: "us-east-1".into(),
                    region: "us-east".into(),
                    zone: "us-east-1a".into(),
                    addr: "127.0.0.1:7381".into(),
                    state: "alive".into(),
                    generation: 1,
                    rejoin: 0,
                    refutation: 0,
                    rtt_ms: Some(0.4),
                }],
            }),
        ),
        (("/v1/policies", "get"), value_of(policies())),
        (("/v1/policies", "put"), changed()),
        (("/v1/policies/{prefix}", "put"), changed()),
        (("/v1/policies/{prefix}", "delete"), changed()),
        (("/v1/leases/{id}", "get"), lease_reply()),
        (("/v1/leases/{id}/keepalive", "post"), lease_reply()),
        (
            ("/v1/locks/{key}", "get"),
            value_of(LockHolderResponse {
                holder: Some(holder()),
                served_at: r,
                served_at_str: r_str.clone(),
            }),
        ),
        (("/v1/locks/{key}", "delete"), released()),
        (
            ("/v1/elections/{key}", "get"),
            value_of(LeaderResponse {
                leader: Some(holder()),
                served_at: r,
                served_at_str: r_str.clone(),
            }),
        ),
        (("/v1/elections/{key}", "delete"), released()),
        (
            ("/v1/services/{name}", "get"),
            value_of(ServicesResponse {
                instances: vec![ServiceInstanceJson {
                    name: "billing".into(),
                    id: "i-1".into(),
                    addrs: vec!["10.0.0.7:8080".into()],
                    meta: BTreeMap::from([("version".into(), "1.4.2".into())]),
                    region: "us-east".into(),
                    zone: "us-east-1a".into(),
                }],
                served_at: r,
                served_at_str: r_str.clone(),
            }),
        ),
        (
            ("/v1/locks/{key}", "post"),
            value_of(LockAcquireResponse {
                granted: true,
                lease: 7,
                token: TOKEN.to_string(),
                served_at: r,
                served_at_str: r_str,
            }),
        ),
    ]
}

/// Example request bodies (JSON; the put's is the raw value).
pub(crate) fn requests() -> Vec<(Operation, Value)> {
    let policy_change =
        json!({ "consistency": "eventual", "home": "us-east", "max_staleness_ms": 5000 });
    vec![
        (("/v1/kv/{key}", "put"), json!("postgres://db1:5432")),
        (
            ("/v1/txn", "post"),
            json!({
                "compares": [{ "key": "app/config/db", "op": "equal", "exists": false }],
                "success": [{ "put": { "key": "app/config/db", "value": "postgres://db1:5432" } }],
                "failure": [],
            }),
        ),
        (("/v1/policies", "put"), policy_change.clone()),
        (("/v1/policies/{prefix}", "put"), policy_change),
        (("/v1/leases", "post"), json!({ "ttl_ms": 10000 })),
        (("/v1/leases/keepalive", "post"), json!({ "ids": [7, 8] })),
        (
            ("/v1/locks/{key}", "post"),
            json!({ "lease": 7, "wait": true, "value": "worker-1" }),
        ),
        (
            ("/v1/elections/{key}", "post"),
            json!({ "lease": 7, "value": "10.0.0.7:8080" }),
        ),
        (
            ("/v1/services/{name}/{id}", "put"),
            json!({
                "lease": 7,
                "addrs": ["10.0.0.7:8080"],
                "meta": { "version": "1.4.2" },
                "zone": "us-east-1a",
            }),
        ),
    ]
}

/// One link: from an operation's 200 reply, its name, the operation it
/// leads to (by operationId), and that operation's parameters as runtime
/// expressions.
pub(crate) struct LinkSpec {
    pub(crate) from: Operation,
    pub(crate) name: &'static str,
    pub(crate) to: &'static str,
    pub(crate) parameters: &'static [(&'static str, &'static str)],
}

const SAME_KEY: &[(&str, &str)] = &[("key", "$request.path.key")];
const LEASE_ID: &[(&str, &str)] = &[("id", "$response.body#/lease/id")];

/// The document's links.
pub(crate) const LINKS: &[LinkSpec] = &[
    LinkSpec {
        from: ("/v1/kv/{key}", "put"),
        name: "ReadBack",
        to: "get_key",
        parameters: SAME_KEY,
    },
    LinkSpec {
        from: ("/v1/kv/{key}", "put"),
        name: "History",
        to: "history",
        parameters: SAME_KEY,
    },
    LinkSpec {
        from: ("/v1/kv/{key}", "put"),
        name: "Delete",
        to: "delete_key",
        parameters: SAME_KEY,
    },
    LinkSpec {
        from: ("/v1/txn", "post"),
        name: "ReadFirstPut",
        to: "get_key",
        parameters: &[("key", "$request.body#/success/0/put/key")],
    },
    LinkSpec {
        from: ("/v1/leases", "post"),
        name: "TimeToLive",
        to: "ttl",
        parameters: LEASE_ID,
    },
    LinkSpec {
        from: ("/v1/leases", "post"),
        name: "KeepAlive",
        to: "keep_alive_one",
        parameters: LEASE_ID,
    },
    LinkSpec {
        from: ("/v1/leases", "post"),
        name: "Revoke",
        to: "revoke",
        parameters: LEASE_ID,
    },
    LinkSpec {
        from: ("/v1/locks/{key}", "post"),
        name: "Holder",
        to: "lock_holder",
        parameters: SAME_KEY,
    },
    LinkSpec {
        from: ("/v1/locks/{key}", "post"),
        name: "Release",
        to: "lock_release",
        parameters: &[
            ("key", "$request.path.key"),
            ("token", "$response.body#/token"),
        ],
    },
    LinkSpec {
        from: ("/v1/elections/{key}", "post"),
        name: "Leader",
        to: "leader",
        parameters: SAME_KEY,
    },
    LinkSpec {
        from: ("/v1/elections/{key}", "post"),
        name: "Resign",
        to: "resign",
        parameters: &[
            ("key", "$request.path.key"),
            ("term", "$response.body#/term"),
        ],
    },
    LinkSpec {
        from: ("/v1/services/{name}/{id}", "put"),
        name: "LookUp",
        to: "lookup",
        parameters: &[("name", "$request.path.name")],
    },
    LinkSpec {
        from: ("/v1/policies/{prefix}", "put"),
        name: "Remove",
        to: "remove_policy",
        parameters: &[("prefix", "$request.path.prefix")],
    },
    LinkSpec {
        from: ("/v1/policies/{prefix}", "put"),
        name: "List",
        to: "policies",
        parameters: &[],
    },
];
