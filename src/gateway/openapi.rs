//! The OpenAPI 3 document served at `/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` attributes and the DTOs' `ToSchema` derives,
//! so it cannot drift from the routes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::OpenApi;

use super::coord::{
    self, CampaignRequest, CampaignResponse, HolderJson, LeaderResponse, LockAcquireRequest,
    LockAcquireResponse, LockHolderResponse, LockReleasedResponse,
};
use super::dto::{
    CompareOpJson, CompareSchema, ConsistencyJson, DeleteOp, DeleteOpJson, DeleteResponse,
    ExistsCompare, ExistsOpJson, FenceJson, GetResponse, HealthResponse, HistoryEntryJson,
    HistoryResponse, KvItem, MemberJson, MembersResponse, OnStale, OpSchema, PoliciesResponse,
    PolicyChangeRequest, PolicyChangedResponse, PolicyJson, PutOp, PutOpJson, PutResponse,
    RangeResponse, RawValue, ReplicationJson, StatusResponse, TxnRequest, TxnResponse,
    ValueCompare, VersionCompare,
};
use super::error::{ErrorBody, ErrorDetail};
use super::examples;
use super::handlers;
use super::lease::{
    self, LeaseGrantRequest, LeaseIdSchema, LeaseJson, LeaseKeepAliveRequest, LeaseResponse,
    LeaseRevokedResponse, LeasesResponse,
};
use super::service::{
    self, ServiceInstanceJson, ServiceRegisterRequest, ServiceRegisteredResponse, ServicesResponse,
};
use super::watch::{self, WatchLine};
use super::{observe, GatewayState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian HTTP gateway",
        description = "HTTP/JSON access to one Meridian node. With server.http_tls the node serves HTTPS \
                       and every request needs a client certificate from the cluster CA (mutual TLS); its role \
                       (client, admin, node) grants what it grants on the QUIC protocol, and policy changes need \
                       admin. Plain HTTP (no authentication) is allowed only on loopback unless the node is \
                       configured insecure. Every error reply is {\"error\": {code, message, remedy}}."
    ),
    paths(
        handlers::get_key,
        handlers::put_key,
        handlers::delete_key,
        handlers::range,
        handlers::txn,
        handlers::history,
        handlers::status,
        handlers::members,
        handlers::policies,
        handlers::set_default_policy,
        handlers::set_prefix_policy,
        handlers::remove_policy,
        watch::watch,
        lease::grant,
        lease::list,
        lease::ttl,
        lease::revoke,
        lease::keep_alive_one,
        lease::keep_alive_many,
        coord::lock_acquire,
        coord::lock_holder,
        coord::lock_release,
        coord::campaign,
        coord::leader,
        coord::resign,
        service::register,
        service::lookup,
        handlers::health,
        handlers::ready,
        handlers::metrics,
        serve_document,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, RawValue, GetResponse, PutResponse, DeleteResponse, KvItem, RangeResponse, TxnRequest,
        CompareSchema, ValueCompare, VersionCompare, ExistsCompare, ExistsOpJson, CompareOpJson, OpSchema, PutOp, DeleteOp, PutOpJson, DeleteOpJson, OnStale, ConsistencyJson, ReplicationJson, TxnResponse, HistoryEntryJson,
        HistoryResponse, StatusResponse, HealthResponse, MemberJson, MembersResponse,
        PoliciesResponse, PolicyJson, PolicyChangeRequest, PolicyChangedResponse,
        WatchLine, LeaseJson, LeaseResponse, LeasesResponse, LeaseRevokedResponse,
        LeaseGrantRequest, LeaseKeepAliveRequest, LeaseIdSchema, FenceJson,
        HolderJson, LockAcquireRequest, LockAcquireResponse, LockHolderResponse, LockReleasedResponse,
        CampaignRequest, CampaignResponse, LeaderResponse,
        ServiceRegisterRequest, ServiceInstanceJson, ServiceRegisteredResponse, ServicesResponse,
    )),
    tags(
        (name = "kv", description = "Keys, values, transactions and history"),
        (name = "watch", description = "Change streams of a key or prefix (newline-delimited JSON)"),
        (name = "lease", description = "Leases: keys attached to one are deleted when it expires or is revoked"),
        (name = "lock", description = "Locks held by leases, with a fencing token per grant; guard writes with fence=NAME:TOKEN"),
        (name = "election", description = "Leader elections: a lock whose holder carries the leader's value; the term is its fencing token"),
        (name = "service", description = "Service discovery: instances registered under leases, looked up nearest first"),
        (name = "node", description = "Status, health, metrics and this document"),
    )
)]
struct ApiDoc;

/// This API's OpenAPI 3 document. (Beside the document rather than with the
/// other handlers, so the handlers do not import the document that lists
/// them.)
#[utoipa::path(get, path = "/openapi.json", tag = "node",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub(crate) async fn serve_document(State(state): State<GatewayState>) -> Response {
    observe(&state, "openapi", async {
        Ok(Json(document_json()).into_response())
    })
    .await
}

/// The document as served: [`document`] in JSON, with each link's
/// `operation_id` written `operationId` as OpenAPI 3 names it (utoipa 5.5
/// serializes its `Link` fields in snake case, which clients and
/// schemathesis ignore).
pub(crate) fn document_json() -> serde_json::Value {
    let mut json = serde_json::to_value(document()).unwrap_or_default();
    let responses = json["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let links = response.get_mut("links").and_then(|l| l.as_object_mut());
        for link in links.into_iter().flat_map(|l| l.values_mut()) {
            if let Some(link) = link.as_object_mut() {
                if let Some(id) = link.remove("operation_id") {
                    link.insert("operationId".into(), id);
                }
            }
        }
    }
    json
}

/// Builds the document (cheap; built per request rather than cached). Its
/// `info.version` is the crate version.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            add_refusals_of_every_route(operation);
        }
    }
    add_examples_and_links(&mut doc);
    // `PUT /v1/kv/{key}` without a body stores an empty value (a body of
    // zero bytes), so the body is not required.
    if let Some(put) = doc
        .paths
        .paths
        .get_mut("/v1/kv/{key}")
        .and_then(|item| item.put.as_mut())
    {
        if let Some(body) = put.request_body.as_mut() {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
    doc
}

fn operation_mut(
    doc: &mut utoipa::openapi::OpenApi,
    (path, method): examples::Operation,
) -> Option<&mut utoipa::openapi::path::Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "put" => item.put.as_mut(),
        "post" => item.post.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
}

fn ok_response(
    operation: &mut utoipa::openapi::path::Operation,
) -> Option<&mut utoipa::openapi::Response> {
    match operation.responses.responses.get_mut("200")? {
        utoipa::openapi::RefOr::T(response) => Some(response),
        utoipa::openapi::RefOr::Ref(_) => None,
    }
}

/// Adds `examples.rs`'s reply and request examples where an operation's
/// attributes give none, and its links.
fn add_examples_and_links(doc: &mut utoipa::openapi::OpenApi) {
    for (at, example) in examples::replies() {
        let reply = operation_mut(doc, at).and_then(ok_response);
        for content in reply.into_iter().flat_map(|r| r.content.values_mut()) {
            content.example.get_or_insert_with(|| example.clone());
        }
    }
    for (at, example) in examples::requests() {
        let body = operation_mut(doc, at).and_then(|o| o.request_body.as_mut());
        for content in body.into_iter().flat_map(|b| b.content.values_mut()) {
            content.example.get_or_insert_with(|| example.clone());
        }
    }
    for spec in examples::LINKS {
        let mut link = utoipa::openapi::link::LinkBuilder::new().operation_id(spec.to);
        for (name, expression) in spec.parameters {
            link = link.parameter(*name, *expression);
        }
        if let Some(reply) = operation_mut(doc, spec.from).and_then(ok_response) {
            reply
                .links
                .insert(spec.name.to_owned(), link.build().into());
        }
    }
}

/// The answers any route can give before its handler runs (see
/// `gateway::guard` and `gateway::automatic_reply`), each with the JSON
/// error body: 400 (a malformed HTTP request, percent-escape or query),
/// 401 and 403 (HTTPS without a usable client certificate), 414, 415 and
/// 431.
fn add_refusals_of_every_route(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let refusals = [
        ("400", "Malformed HTTP request (MER-1005), or a malformed percent-escape or non-UTF-8 bytes in the path or query string (MER-1007)"),
        ("401", "HTTPS: the connection presented no client certificate (MER-2003); nothing was read or written"),
        ("403", "HTTPS: the client certificate carries no usable Meridian role (MER-2001); nothing was read or written"),
        ("414", "URI longer than 64 KiB (MER-1012)"),
        ("415", "A Content-Encoding other than identity (MER-1011); nothing was read"),
        ("431", "Header section too large (MER-1013)"),
    ];
    for (status, description) in refusals {
        let responses = &mut operation.responses.responses;
        if responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        responses.insert(status.to_owned(), response.into());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_lists_every_route() {
        let doc = super::document();
        for path in [
            "/v1/kv/{key}",
            "/v1/kv",
            "/v1/txn",
            "/v1/history/{key}",
            "/v1/status",
            "/v1/policies",
            "/health",
            "/ready",
            "/metrics",
            "/openapi.json",
            "/v1/watch/{key}",
            "/v1/leases",
            "/v1/leases/keepalive",
            "/v1/leases/{id}",
            "/v1/leases/{id}/keepalive",
            "/v1/locks/{key}",
            "/v1/elections/{key}",
            "/v1/services/{name}",
            "/v1/services/{name}/{id}",
        ] {
            assert!(doc.paths.paths.contains_key(path), "missing {path}");
        }
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        assert!(json["components"]["schemas"]["TxnRequest"].is_object());
        let get = &json["paths"]["/v1/kv/{key}"]["get"];
        let params: Vec<&str> = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for name in ["consistency", "token", "on_stale"] {
            assert!(params.contains(&name), "GET /v1/kv/{{key}} lacks {name}");
        }
        let get_response = &json["components"]["schemas"]["GetResponse"]["properties"];
        assert!(get_response["staleness_ms"].is_object());
        assert!(get_response["token"].is_object());
        assert!(json["components"]["schemas"]["PoliciesResponse"].is_object());
    }

    /// Issue 12: examples per operation, and links a stateful client can
    /// follow (each names an operation that exists, with its parameters).
    #[test]
    fn every_operation_has_examples_and_every_link_leads_somewhere() {
        use std::collections::BTreeMap;
        let json = super::document_json();
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut links = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                let names = op["parameters"].as_array().into_iter().flatten();
                params.insert(
                    id,
                    names
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect(),
                );
                if path == "/openapi.json" {
                    continue;
                }
                let ok = op["responses"]["200"]["content"].as_object().unwrap();
                let has_example = |c: &serde_json::Value| {
                    c.get("example").is_some() || c.get("examples").is_some()
                };
                assert!(
                    ok.values().all(has_example),
                    "{method} {path}: its 200 reply has no example"
                );
                if let Some(body) = op["requestBody"]["content"].as_object() {
                    assert!(
                        body.values().all(has_example),
                        "{method} {path}: its request body has no example"
                    );
                }
                for (name, link) in op["responses"]["200"]["links"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    links.push((format!("{method} {path} {name}"), link.clone()));
                }
            }
        }
        assert_eq!(links.len(), super::examples::LINKS.len(), "{links:?}");
        for (at, link) in links {
            let target = link["operationId"].as_str().unwrap();
            let known = params
                .get(target)
                .unwrap_or_else(|| panic!("{at}: no operation {target}"));
            for name in link["parameters"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, _)| n)
            {
                assert!(
                    known.contains(name),
                    "{at}: {target} has no parameter {name}"
                );
            }
        }
    }

    /// The request examples are accepted by the types their handlers
    /// parse bodies with.
    #[test]
    fn request_examples_parse_with_the_handlers_types() {
        use crate::gateway::coord::{CampaignRequest, LockAcquireRequest};
        use crate::gateway::dto::{parse_json_object, PolicyChangeRequest, TxnRequest};
        use crate::gateway::lease::{LeaseGrantRequest, LeaseKeepAliveRequest};
        use crate::gateway::service::ServiceRegisterRequest;
        use crate::gateway::strict::Object;
        fn parses<T: serde::de::DeserializeOwned>(body: &[u8]) -> bool {
            parse_json_object::<Object<T>>(body, "example").is_ok()
        }
        for ((path, method), example) in super::examples::requests() {
            let body = example.to_string();
            let body = body.as_bytes();
            let ok = match (path, method) {
                ("/v1/kv/{key}", "put") => example.is_string(),
                ("/v1/txn", _) => TxnRequest::parse(body)
                    .and_then(TxnRequest::into_txn)
                    .is_ok(),
                ("/v1/policies" | "/v1/policies/{prefix}", _) => {
                    parses::<PolicyChangeRequest>(body)
                }
                ("/v1/leases", _) => parses::<LeaseGrantRequest>(body),
                ("/v1/leases/keepalive", _) => parses::<LeaseKeepAliveRequest>(body),
                ("/v1/locks/{key}", _) => parses::<LockAcquireRequest>(body),
                ("/v1/elections/{key}", _) => parses::<CampaignRequest>(body),
                ("/v1/services/{name}/{id}", _) => parses::<ServiceRegisterRequest>(body),
                other => panic!("no parser listed for {other:?}"),
            };
            assert!(ok, "{method} {path}: example {example} is refused");
        }
    }
}
