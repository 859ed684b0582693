//! The gateway's JSON request and response types and their conversions to and
//! from the domain types in [`crate::types`].
//!
//! These are the HTTP API's wire format, kept apart from the domain types
//! (as [`crate::wire`] is for QUIC) so that a change in the engine never
//! silently changes the JSON. Everything here is pure: no IO, no engine.
//!
//! Bytes appear twice in replies: as a UTF-8 string (`null` when the bytes
//! are not valid UTF-8) and as standard base64 (`*_b64`). HLC timestamps are
//! `u64`s; `served_at_str` repeats the reply's timestamp in the
//! `unix_ms.logical` form, which `at=` also accepts.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::strict::{self, Object};
use crate::error_code::{ApiError, ErrorCode};
use crate::types::{
    prefix_end, Compare, CompareOp, CompareTarget, KeyValue, Op, Timestamp, Txn, VersionEntry,
};

/// Decodes page tokens with or without `=` padding (clients differ).
const TOKEN_DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The largest integer a request may carry: JSON clients read numbers as
/// int64 (or as doubles, exact to 2^53; HLC values are read back as
/// strings for that reason), and the OpenAPI document declares int64.
pub(crate) const MAX_JSON_INTEGER: u64 = i64::MAX as u64;

/// Parses `body` as `T` read from a JSON object; errors say where (the
/// JSON path and line/column) in words a caller can act on.
pub(crate) fn parse_json_object<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(what, &path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(what, ".", e))?;
    Ok(value)
}

fn json_error(what: &str, path: &str, e: serde_json::Error) -> ApiError {
    let place = if path == "." {
        String::new()
    } else {
        format!(" at {path}")
    };
    let detail = match e.classify() {
        serde_json::error::Category::Eof => format!("the JSON ends early ({e})"),
        serde_json::error::Category::Syntax => format!("not valid JSON ({e})"),
        _ => e.to_string(),
    };
    ApiError::new(
        ErrorCode::MalformedRequest,
        format!("{what}{place}: {detail}"),
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

/// A reply's `served_at` and `served_at_str`.
pub(crate) fn served(at: Timestamp) -> (u64, String) {
    (at.0, at.to_string())
}

/// `bytes` as a string, or `None` when they are not valid UTF-8.
pub(crate) fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// `bytes` in standard base64.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The smallest bare integer `at=` takes as a packed HLC value: 10^13. Unix
/// milliseconds stay below it until the year 2286, and packed values pass it
/// 40 minutes after the HLC epoch (2024-01-01), so a bare number below it is
/// milliseconds written without `.logical`, refused rather than misread.
pub(crate) const MIN_PACKED_TIMESTAMP: u64 = 10_000_000_000_000;

/// Parses a snapshot timestamp: the packed `u64` (at least
/// [`MIN_PACKED_TIMESTAMP`]), or `unix_ms.logical` as printed by
/// [`Timestamp`]'s `Display` (and in `served_at_str`).
pub(crate) fn parse_timestamp(s: &str) -> Result<Timestamp, ApiError> {
    let bad = || {
        invalid(format!(
            "at={s:?} is not a timestamp (a u64, or unix_ms.logical)"
        ))
    };
    match s.split_once('.') {
        None => {
            let packed = s.parse::<u64>().map_err(|_| bad())?;
            if packed < MIN_PACKED_TIMESTAMP {
                return Err(invalid(format!(
                    "at={s} is ambiguous: as a packed HLC value it is minutes after the HLC epoch, so it is probably Unix milliseconds; write {s}.0 (unix_ms.logical) or pass a reply's served_at"
                )));
            }
            Ok(Timestamp(packed))
        }
        Some((ms, logical)) => {
            let ms = ms.parse::<i64>().map_err(|_| bad())?;
            let logical = logical.parse::<u64>().map_err(|_| bad())?;
            Timestamp::from_parts(ms, logical).ok_or_else(bad)
        }
    }
}

/// Encodes the engine's `next` key as an opaque page token (base64url, no padding).
pub(crate) fn encode_page_token(next: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(next)
}

/// `on_stale=`: what a bounded read does when this region is too stale.
/// Only documents the parameter's values (the handler reads the text).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) enum OnStale {
    /// 421 MER-3006 naming the home region.
    Redirect,
    /// 503 MER-3007.
    Fail,
}

/// The `{key}` of a key route (documents the path parameter; the handler
/// reads it from the path).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct KeyPath {
    /// The key, percent-encoded (RFC 3986: every `%` starts a complete
    /// escape, and the decoded bytes are UTF-8); may contain `/`. 1..=
    /// `max_key_bytes` (4096) bytes after decoding (413 MER-1001 past
    /// that), and no `.` or `..` segment (400 MER-1007).
    // No `pattern` for the dot-segment rule: with the length bounds it
    // leaves generators too few strings; the description states it.
    #[param(min_length = 1, max_length = 4096)]
    key: String,
}

/// The `{prefix}` of a policy route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct PrefixPath {
    /// The key prefix, percent-encoded as a key is; may contain `/`.
    #[param(min_length = 1, max_length = 4096)]
    prefix: String,
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetQuery {
    /// Snapshot timestamp: a packed u64 HLC value (a reply's `served_at`,
    /// at least 10^13) or `unix_ms.logical` (a reply's `served_at_str`).
    /// Default: latest. Not with bounded, causal or eventual reads. A
    /// timestamp ahead of the node's clock is refused (400 MER-1007), one
    /// below the garbage-collection horizon is gone (410 MER-1008).
    #[param(pattern = r"^([1-9][0-9]{13,19}|-?[0-9]{1,16}\.[0-9]{1,7})$")]
    pub(crate) at: Option<String>,
    /// Read level: `linearizable`, `serializable`, `bounded` (the prefix's
    /// `max_staleness_ms`), `bounded:MS`, `causal` or `eventual`
    /// (docs/consistency.md, "Read levels"). Absent: the key prefix's own
    /// level (linearizable for a strong prefix). A level above the
    /// prefix's consistency is refused (400 MER-1009).
    #[param(pattern = r"^(linearizable|serializable|bounded|bounded:[0-9]{1,8}|causal|eventual)$")]
    pub(crate) consistency: Option<String>,
    /// Session token of a causal read: a previous reply's `token`. Only
    /// with `consistency=causal`.
    #[param(pattern = r"^[0-9]{1,20}$")]
    pub(crate) token: Option<String>,
    /// What a bounded read does when this region is too stale:
    /// `redirect` (default; 421 MER-3006 naming the home region) or `fail`
    /// (503 MER-3007). Only with `consistency=bounded...`.
    #[param(value_type = Option<OnStale>)]
    pub(crate) on_stale: Option<String>,
}

/// Query of `PUT /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PutQuery {
    /// Attach the key to this lease (a `POST /v1/leases` reply's `id`):
    /// it is deleted when the lease expires or is revoked. Only on keys of
    /// a strong prefix (400 MER-1015 elsewhere); a lease that is not live
    /// is 404 MER-1014. Nothing is written when refused.
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub(crate) lease: Option<u64>,
    /// Guard the write with a fencing token, `NAME:TOKEN` (a lock's name
    /// and a token its acquire returned, split at the last `:`): refused
    /// with 409 MER-1017 when a newer token has been granted, nothing
    /// written. Not together with `lease`; only on strong prefixes.
    #[param(max_length = 4116, pattern = "^.+:[1-9][0-9]{0,18}$")]
    pub(crate) fence: Option<String>,
}

/// Query of `DELETE /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// Guard the delete with a fencing token, `NAME:TOKEN` (as for a put).
    #[param(max_length = 4116, pattern = "^.+:[1-9][0-9]{0,18}$")]
    pub(crate) fence: Option<String>,
}

/// The fencing token guarding a transaction.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FenceJson {
    /// The lock's name.
    #[schema(min_length = 1, max_length = 4096, example = "jobs/leader")]
    pub(crate) lock: String,
    /// A token the lock granted, as a decimal string (1..=2^63-1).
    #[schema(pattern = "^[1-9][0-9]{0,18}$", example = "384315472163635200")]
    pub(crate) token: String,
}

/// Query of `GET /v1/kv` (a range scan).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RangeQuery {
    /// List the keys starting with this prefix (not with `start`/`end`).
    /// At most `max_key_bytes` (4096) bytes.
    #[param(max_length = 4096)]
    pub(crate) prefix: Option<String>,
    /// First key of the range, inclusive. Default: the first key. At most
    /// `max_key_bytes` (4096) bytes.
    #[param(max_length = 4096)]
    pub(crate) start: Option<String>,
    /// End of the range, exclusive. Default: no end. At most
    /// `max_key_bytes` (4096) bytes.
    #[param(max_length = 4096)]
    pub(crate) end: Option<String>,
    /// Most pairs in the page; 0 or absent means the default (1000), at
    /// most `limits.max_scan_page` (10000). A page also ends before its
    /// JSON passes `limits.max_scan_page_bytes` (4 MiB by default).
    #[param(minimum = 0, maximum = 10000)]
    pub(crate) limit: Option<usize>,
    /// Snapshot timestamp, as for `GET /v1/kv/{key}`. Keep it equal across pages
    /// (use the first page's `served_at`) for a consistent listing.
    #[param(pattern = r"^([1-9][0-9]{13,19}|-?[0-9]{1,16}\.[0-9]{1,7})$")]
    pub(crate) at: Option<String>,
    /// `next_page_token` of the previous page (base64url); a token from
    /// another listing is refused (400 MER-1007).
    #[param(pattern = r"^[A-Za-z0-9_-]+={0,2}$", max_length = 8192)]
    pub(crate) page_token: Option<String>,
    /// Read level, as for `GET /v1/kv/{key}`; decided for the policy of the
    /// page's first key (a page stops at a policy boundary).
    #[param(pattern = r"^(linearizable|serializable|bounded|bounded:[0-9]{1,8}|causal|eventual)$")]
    pub(crate) consistency: Option<String>,
    /// Session token of a causal read.
    #[param(pattern = r"^[0-9]{1,20}$")]
    pub(crate) token: Option<String>,
    /// `redirect` (default) or `fail`, for bounded reads.
    #[param(value_type = Option<OnStale>)]
    pub(crate) on_stale: Option<String>,
}

/// A resolved range scan: `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RangeBounds {
    /// First key, inclusive.
    pub(crate) start: Vec<u8>,
    /// End, exclusive; `None` scans to the last key.
    pub(crate) end: Option<Vec<u8>>,
}

impl RangeQuery {
    /// Turns `prefix` or `start`/`end`, plus a page token, into scan bounds.
    pub(crate) fn bounds(&self) -> Result<RangeBounds, ApiError> {
        let (start, end) = match (&self.prefix, &self.start, &self.end) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(invalid("give either prefix or start/end, not both"));
            }
            (Some(p), None, None) => (p.as_bytes().to_vec(), prefix_end(p.as_bytes())),
            (None, s, e) => (
                s.as_deref().unwrap_or_default().as_bytes().to_vec(),
                e.as_ref().map(|e| e.as_bytes().to_vec()),
            ),
        };
        let Some(token) = &self.page_token else {
            return Ok(RangeBounds { start, end });
        };
        // Strictly the alphabet `encode_page_token` writes (padding
        // tolerated): the lenient decoder alone would take some strings no
        // reply ever held.
        let body = token.trim_end_matches('=');
        let well_formed = !body.is_empty()
            && token.len() - body.len() <= 2
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(invalid(
                "page_token is not a next_page_token from a reply (base64url)",
            ));
        }
        let resume = TOKEN_DECODER
            .decode(token)
            .map_err(|e| invalid(format!("page_token is not base64url: {e}")))?;
        // A token from another listing would silently read outside this one.
        let inside = resume >= start && end.as_ref().is_none_or(|e| resume < *e);
        if !inside {
            return Err(invalid("page_token lies outside the requested range"));
        }
        Ok(RangeBounds { start: resume, end })
    }
}

/// Query of `GET /v1/history/{key}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Most versions to return, newest first; 0 or absent means the maximum
    /// (1000). A page also ends before its values pass
    /// `limits.max_scan_page_bytes` (4 MiB by default; one version always fits).
    #[param(minimum = 0, maximum = 1000)]
    pub(crate) limit: Option<usize>,
    /// Only versions older than this timestamp: a previous page's
    /// `next_before`, as a packed u64 or `unix_ms.logical`.
    #[param(pattern = r"^([1-9][0-9]{13,19}|-?[0-9]{1,16}\.[0-9]{1,7})$")]
    pub(crate) before: Option<String>,
}

/// Reply of `GET /v1/kv/{key}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GetResponse {
    /// The key.
    pub(crate) key: String,
    /// The value as UTF-8, or null when it is not valid UTF-8.
    pub(crate) value: Option<String>,
    /// The value in standard base64.
    pub(crate) value_b64: String,
    /// HLC timestamp of the write that produced the value.
    pub(crate) version: u64,
    /// HLC timestamp of the snapshot read.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
    /// How far the snapshot was behind the node's clock, ms (0 for
    /// linearizable and serializable reads, which do not measure it).
    pub(crate) staleness_ms: u64,
    /// The session token to pass as `token=` to the next causal read, as a
    /// decimal string (HLC values exceed JSON's exact integers).
    pub(crate) token: String,
}

/// Where and how stale a read was served, and the token it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServedMeta {
    /// HLC of the snapshot.
    pub(crate) served_at: Timestamp,
    /// Staleness, ms.
    pub(crate) staleness_ms: u64,
    /// The new session token.
    pub(crate) token: Timestamp,
}

impl ServedMeta {
    /// A read that reports no staleness: its token is its snapshot.
    pub(crate) fn plain(served_at: Timestamp) -> Self {
        ServedMeta {
            served_at,
            staleness_ms: 0,
            token: served_at,
        }
    }
}

impl GetResponse {
    pub(crate) fn new(key: String, kv: &KeyValue, meta: ServedMeta) -> Self {
        GetResponse {
            key,
            value: utf8(&kv.value),
            value_b64: b64(&kv.value),
            version: kv.version.0,
            served_at: meta.served_at.0,
            served_at_str: meta.served_at.to_string(),
            staleness_ms: meta.staleness_ms,
            token: meta.token.0.to_string(),
        }
    }
}

/// The body of `PUT /v1/kv/{key}`: the value's raw bytes. Only documents the
/// body in the OpenAPI document (as `type: string, format: binary`, not an
/// array of integers); the handler reads the bytes directly.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct RawValue(Vec<u8>);

/// Reply of `PUT /v1/kv/{key}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PutResponse {
    /// HLC timestamp the write committed at.
    pub(crate) version: u64,
    /// Same as `version`.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `DELETE /v1/kv/{key}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeleteResponse {
    /// HLC timestamp of the tombstone.
    pub(crate) version: u64,
    /// Whether the key was live before the delete.
    pub(crate) existed: bool,
    /// Same as `version`.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// One pair of a range page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KvItem {
    /// The key as UTF-8, or null when it is not valid UTF-8.
    pub(crate) key: Option<String>,
    /// The key in standard base64.
    pub(crate) key_b64: String,
    /// The value as UTF-8, or null when it is not valid UTF-8.
    pub(crate) value: Option<String>,
    /// The value in standard base64.
    pub(crate) value_b64: String,
    /// HLC timestamp of the write that produced the value.
    pub(crate) version: u64,
}

impl From<&KeyValue> for KvItem {
    fn from(kv: &KeyValue) -> Self {
        KvItem {
            key: utf8(&kv.key),
            key_b64: b64(&kv.key),
            value: utf8(&kv.value),
            value_b64: b64(&kv.value),
            version: kv.version.0,
        }
    }
}

/// Reply of `GET /v1/kv` (range scan).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RangeResponse {
    /// Live pairs in key order.
    pub(crate) kvs: Vec<KvItem>,
    /// Pass as `page_token` for the next page; null when the range is done.
    /// A page may be short, even empty, while a token is still returned.
    pub(crate) next_page_token: Option<String>,
    /// HLC timestamp of the snapshot read.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
    /// How far the snapshot was behind the node's clock, ms.
    pub(crate) staleness_ms: u64,
    /// The session token for the next causal read (decimal string).
    pub(crate) token: String,
}

/// One policy in `GET /v1/policies`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PolicyJson {
    /// The key prefix (UTF-8, lossy); null for the default policy.
    pub(crate) prefix: Option<String>,
    /// strong, causal or eventual.
    pub(crate) consistency: String,
    /// The home region.
    pub(crate) home: String,
    /// async or sync-N.
    pub(crate) replication: String,
    /// Default bound of bounded reads, ms.
    pub(crate) max_staleness_ms: u64,
}

/// Reply of `GET /v1/policies`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PoliciesResponse {
    /// The answering node's region.
    pub(crate) local_region: String,
    /// Every region of the cluster.
    pub(crate) regions: Vec<String>,
    /// The policy of keys under no prefix policy.
    pub(crate) default: PolicyJson,
    /// Prefix policies, in key order.
    pub(crate) prefixes: Vec<PolicyJson>,
}

impl PoliciesResponse {
    /// `table` as a node of `local_region` holds it.
    pub(crate) fn new(local_region: &str, table: &crate::replication::policy::PolicyTable) -> Self {
        PoliciesResponse {
            local_region: local_region.to_string(),
            regions: table.regions().to_vec(),
            default: PolicyJson::new(None, table.default_policy()),
            prefixes: table
                .prefixes()
                .map(|(p, policy)| PolicyJson::new(Some(p), policy))
                .collect(),
        }
    }
}

/// Body of `PUT /v1/policies` (the default policy) and `PUT
/// /v1/policies/{prefix}`: the fields to change; the others keep their
/// value. At least one is required; `null` is not a value (leave the field
/// out instead).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub(crate) struct PolicyChangeRequest {
    /// strong, causal or eventual.
    #[serde(default, deserialize_with = "strict::present")]
    #[schema(value_type = ConsistencyJson, required = false)]
    pub(crate) consistency: Option<String>,
    /// The home region: one of the cluster's regions (`GET /v1/policies`
    /// lists them).
    #[serde(default, deserialize_with = "strict::present")]
    #[schema(value_type = String, required = false, min_length = 1)]
    pub(crate) home: Option<String>,
    /// async or sync-N (N = 1..=8, at most the other regions).
    #[serde(default, deserialize_with = "strict::present")]
    #[schema(value_type = ReplicationJson, required = false)]
    pub(crate) replication: Option<String>,
    /// Default staleness bound of bounded reads, ms (0..=86400000).
    #[serde(default, deserialize_with = "strict::present")]
    #[schema(value_type = u64, required = false, minimum = 0, maximum = 86_400_000)]
    pub(crate) max_staleness_ms: Option<u64>,
}

/// A prefix's replication: async, or sync-N (acknowledged after N other
/// regions applied the write; N at most the number of other regions).
#[derive(ToSchema)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) enum ReplicationJson {
    /// Acknowledged once the home region committed.
    #[schema(rename = "async")]
    Async,
    /// One other region.
    #[schema(rename = "sync-1")]
    Sync1,
    /// Two other regions.
    #[schema(rename = "sync-2")]
    Sync2,
    /// Three other regions.
    #[schema(rename = "sync-3")]
    Sync3,
    /// Four other regions.
    #[schema(rename = "sync-4")]
    Sync4,
    /// Five other regions.
    #[schema(rename = "sync-5")]
    Sync5,
    /// Six other regions.
    #[schema(rename = "sync-6")]
    Sync6,
    /// Seven other regions.
    #[schema(rename = "sync-7")]
    Sync7,
    /// Eight other regions.
    #[schema(rename = "sync-8")]
    Sync8,
}

/// A prefix's consistency.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) enum ConsistencyJson {
    /// Linearizable, homed writes.
    Strong,
    /// Causal, writes anywhere.
    Causal,
    /// Eventual, writes anywhere.
    Eventual,
}

impl PolicyChangeRequest {
    /// Parses a body (a JSON object; unknown fields refused) into the
    /// change of `prefix`'s policy (`None`: the default's).
    pub(crate) fn parse(
        body: &[u8],
        prefix: Option<Vec<u8>>,
    ) -> Result<crate::wire::SetPolicyV1, ApiError> {
        let Object(req): Object<PolicyChangeRequest> =
            parse_json_object(body, "policy change body")?;
        let bad = |field: &str, e: crate::replication::policy::PolicyError| {
            ApiError::new(ErrorCode::InvalidArgument, format!("{field}: {e}"))
        };
        let consistency = req
            .consistency
            .as_deref()
            .map(str::parse::<crate::replication::policy::Consistency>)
            .transpose()
            .map_err(|e| bad("consistency", e))?;
        let replication = req
            .replication
            .as_deref()
            .map(str::parse::<crate::replication::policy::Replication>)
            .transpose()
            .map_err(|e| bad("replication", e))?;
        let set = crate::wire::SetPolicyV1 {
            prefix,
            consistency: consistency.map(Into::into),
            home: req.home,
            replication: replication.map(Into::into),
            max_staleness_ms: req.max_staleness_ms,
        };
        if set.consistency.is_none()
            && set.home.is_none()
            && set.replication.is_none()
            && set.max_staleness_ms.is_none()
        {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "a policy change must set at least one of consistency, home, replication, max_staleness_ms",
            ));
        }
        Ok(set)
    }
}

/// Reply of a policy change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PolicyChangedResponse {
    /// The policy table's version after the change.
    pub(crate) version: u64,
    /// The changed policy's epoch (0 for a removal).
    pub(crate) epoch: u64,
    /// The table after the change, as the control range's leader holds it.
    pub(crate) policies: PoliciesResponse,
}

impl PolicyJson {
    pub(crate) fn new(prefix: Option<&[u8]>, p: &crate::replication::policy::Policy) -> Self {
        PolicyJson {
            prefix: prefix.map(|b| String::from_utf8_lossy(b).into_owned()),
            consistency: p.consistency.as_str().to_owned(),
            home: p.home.clone(),
            replication: p.replication.to_string(),
            max_staleness_ms: p.max_staleness_ms,
        }
    }
}

/// Relation of a transaction compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CompareOpJson {
    /// Stored == operand.
    Equal,
    /// Stored != operand.
    NotEqual,
    /// Stored < operand.
    Less,
    /// Stored > operand.
    Greater,
}

impl CompareOpJson {
    fn as_str(self) -> &'static str {
        match self {
            CompareOpJson::Equal => "equal",
            CompareOpJson::NotEqual => "not_equal",
            CompareOpJson::Less => "less",
            CompareOpJson::Greater => "greater",
        }
    }
}

impl From<CompareOpJson> for CompareOp {
    fn from(op: CompareOpJson) -> Self {
        match op {
            CompareOpJson::Equal => CompareOp::Equal,
            CompareOpJson::NotEqual => CompareOp::NotEqual,
            CompareOpJson::Less => CompareOp::Less,
            CompareOpJson::Greater => CompareOp::Greater,
        }
    }
}

/// One guard of a transaction: exactly one of `value`, `version`, `exists`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompareJson {
    /// The key compared.
    pub(crate) key: String,
    /// The relation of the stored state to the operand.
    pub(crate) op: CompareOpJson,
    /// Compare the current value (a missing key never matches).
    #[serde(default)]
    pub(crate) value: Option<String>,
    /// Compare the current version; a missing key has version 0.
    #[serde(default)]
    pub(crate) version: Option<u64>,
    /// Compare existence (use `equal` / `not_equal`).
    #[serde(default)]
    pub(crate) exists: Option<bool>,
}

impl CompareJson {
    fn into_compare(self, index: usize) -> Result<Compare, ApiError> {
        let target = match (self.value, self.version, self.exists) {
            (Some(v), None, None) => CompareTarget::Value(v.into_bytes()),
            (None, Some(v), None) => CompareTarget::Version(Timestamp(v)),
            (None, None, Some(e)) => CompareTarget::Exists(e),
            (None, None, None) => {
                return Err(invalid(format!(
                    "compares[{index}] has no target: give one of value, version, exists"
                )))
            }
            _ => {
                return Err(invalid(format!(
                "compares[{index}] has several targets: give exactly one of value, version, exists"
            )))
            }
        };
        check_compare_op(index, self.op, &target)?;
        strict::check_no_dot_segments(&self.key, &format!("compares[{index}].key"))?;
        Ok(Compare {
            key: self.key.into_bytes(),
            op: self.op.into(),
            target,
        })
    }
}

/// The operators each target takes: existence is equal or not, never
/// ordered; a version is at most [`MAX_JSON_INTEGER`] (JSON's int64).
fn check_compare_op(
    index: usize,
    op: CompareOpJson,
    target: &CompareTarget,
) -> Result<(), ApiError> {
    match target {
        CompareTarget::Exists(_)
            if !matches!(op, CompareOpJson::Equal | CompareOpJson::NotEqual) =>
        {
            Err(invalid(format!(
                "compares[{index}]: an exists compare takes op equal or not_equal, not {}",
                op.as_str()
            )))
        }
        CompareTarget::Version(v) if v.0 > MAX_JSON_INTEGER => Err(invalid(format!(
            "compares[{index}].version {} is above {MAX_JSON_INTEGER} (int64)",
            v.0
        ))),
        _ => Ok(()),
    }
}

// The schemas below state the rules `CompareJson` and `OpJson` enforce in
// the shape a generator can follow (exactly one target, the operators each
// target takes, one operation per object). The handler parses with the
// types above, whose errors name what is wrong; `schema_examples_parse`
// (tests below) and the schemathesis run keep the two in step.

/// A transaction guard: the key, an operator and exactly one target.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) enum CompareSchema {
    /// Compare the value.
    Value(ValueCompare),
    /// Compare the version.
    Version(VersionCompare),
    /// Compare existence.
    Exists(ExistsCompare),
}

/// Compares the current value (a missing key never matches).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct ValueCompare {
    /// The key compared (UTF-8, 1..=`max_key_bytes` bytes, no `.` or `..` segment).
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?)*$"
    )]
    key: String,
    /// The relation of the stored value to `value`.
    op: CompareOpJson,
    /// The operand.
    value: String,
}

/// Compares the current version; a missing key has version 0.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct VersionCompare {
    /// The key compared.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?)*$"
    )]
    key: String,
    /// The relation of the stored version to `version`.
    op: CompareOpJson,
    /// The operand (an HLC timestamp, int64).
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    version: u64,
}

/// Compares existence: equal or not_equal only.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct ExistsCompare {
    /// The key compared.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?)*$"
    )]
    key: String,
    /// equal or not_equal (existence has no order).
    op: ExistsOpJson,
    /// The operand.
    exists: bool,
}

/// The operators an exists compare takes.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) enum ExistsOpJson {
    /// Exists as `exists` says.
    Equal,
    /// Exists otherwise.
    NotEqual,
}

/// One operation: `{"put": {...}}` or `{"delete": {...}}`.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) enum OpSchema {
    /// Set a key.
    Put(PutOp),
    /// Delete a key.
    Delete(DeleteOp),
}

/// `{"put": {...}}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct PutOp {
    /// The write.
    put: PutOpJson,
}

/// `{"delete": {...}}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // never built: it exists for its schema
pub(crate) struct DeleteOp {
    /// The delete.
    delete: DeleteOpJson,
}

/// Body of a `put` operation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutOpJson {
    /// The key (UTF-8, 1..=`max_key_bytes` bytes, no `.` or `..` segment).
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?)*$"
    )]
    pub(crate) key: String,
    /// The value (UTF-8).
    pub(crate) value: String,
}

/// Body of a `delete` operation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteOpJson {
    /// The key (UTF-8, 1..=`max_key_bytes` bytes, no `.` or `..` segment).
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)?)*$"
    )]
    pub(crate) key: String,
}

/// One operation of a transaction branch: `{"put": {...}}` or `{"delete": {...}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum OpJson {
    /// Set a key.
    Put(#[serde(deserialize_with = "strict::object")] PutOpJson),
    /// Delete a key.
    Delete(#[serde(deserialize_with = "strict::object")] DeleteOpJson),
}

impl OpJson {
    /// The engine's operation; `at` names it in errors (`success[2]`).
    fn into_op(self, at: &str) -> Result<Op, ApiError> {
        Ok(match self {
            OpJson::Put(p) => {
                strict::check_no_dot_segments(&p.key, &format!("{at}.put.key"))?;
                Op::Put {
                    key: p.key.into_bytes(),
                    value: p.value.into_bytes(),
                }
            }
            OpJson::Delete(d) => {
                strict::check_no_dot_segments(&d.key, &format!("{at}.delete.key"))?;
                Op::Delete {
                    key: d.key.into_bytes(),
                }
            }
        })
    }
}

/// Body of `POST /v1/txn`: if every compare holds, `success` runs, else `failure`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TxnRequest {
    /// Guards; all must hold. Empty means "always succeed".
    #[serde(default, deserialize_with = "strict::objects")]
    #[schema(value_type = Vec<CompareSchema>, max_items = 128)]
    pub(crate) compares: Vec<CompareJson>,
    /// Operations applied when every compare holds.
    #[serde(default, deserialize_with = "strict::objects")]
    #[schema(value_type = Vec<OpSchema>, max_items = 128)]
    pub(crate) success: Vec<OpJson>,
    /// Operations applied otherwise.
    #[serde(default, deserialize_with = "strict::objects")]
    #[schema(value_type = Vec<OpSchema>, max_items = 128)]
    pub(crate) failure: Vec<OpJson>,
    /// Run only if this fencing token is its lock's newest grant (409
    /// MER-1017 otherwise, nothing written). Every key must then be in one
    /// range, under a strong prefix.
    #[serde(default, deserialize_with = "strict::present_object")]
    pub(crate) fence: Option<FenceJson>,
}

impl TxnRequest {
    /// Parses a request body: a JSON object with named fields only (arrays
    /// in place of objects and unknown fields are refused), else
    /// `MalformedRequest` naming where.
    pub(crate) fn parse(body: &[u8]) -> Result<TxnRequest, ApiError> {
        let Object(txn) = parse_json_object(body, "transaction body")?;
        Ok(txn)
    }

    /// Converts to the engine's transaction, checking each compare has one
    /// target and an operator that target takes, and no key has a dot
    /// segment.
    pub(crate) fn into_txn(self) -> Result<Txn, ApiError> {
        let compares = self
            .compares
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.into_compare(i))
            .collect::<Result<_, _>>()?;
        let ops = |branch: Vec<OpJson>, name: &str| {
            branch
                .into_iter()
                .enumerate()
                .map(|(i, op)| op.into_op(&format!("{name}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Txn {
            compares,
            success: ops(self.success, "success")?,
            failure: ops(self.failure, "failure")?,
        })
    }
}

/// Reply of `POST /v1/txn`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TxnResponse {
    /// Whether every compare held (and `success` ran).
    pub(crate) succeeded: bool,
    /// Commit timestamp (the evaluation timestamp when the branch was empty).
    pub(crate) version: u64,
    /// Same as `version`.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// One version of a key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryEntryJson {
    /// HLC timestamp of the write.
    pub(crate) version: u64,
    /// The value as UTF-8; null for a delete or a non-UTF-8 value.
    pub(crate) value: Option<String>,
    /// The value in standard base64; null for a delete.
    pub(crate) value_b64: Option<String>,
    /// Whether this version is a delete (tombstone).
    pub(crate) deleted: bool,
}

impl From<&VersionEntry> for HistoryEntryJson {
    fn from(e: &VersionEntry) -> Self {
        HistoryEntryJson {
            version: e.version.0,
            value: e.value.as_deref().and_then(utf8),
            value_b64: e.value.as_deref().map(b64),
            deleted: e.value.is_none(),
        }
    }
}

/// Reply of `GET /v1/history/{key}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryResponse {
    /// Versions, newest first, up to the closed timestamp.
    pub(crate) entries: Vec<HistoryEntryJson>,
    /// Pass as `before` for the older versions; null when there are none.
    /// Set when the page ended at `limit` or at its byte bound.
    pub(crate) next_before: Option<u64>,
    /// The closed timestamp the history was cut at.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `GET /v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusResponse {
    /// Node name.
    pub(crate) node_id: String,
    /// Region.
    pub(crate) region: String,
    /// Zone.
    pub(crate) zone: String,
    /// The QUIC address other nodes and clients dial (`server.advertise_addr`,
    /// or the bound address when that is empty).
    pub(crate) quic_addr: String,
    /// The QUIC address the node is bound to (`server.listen_addr`).
    pub(crate) listen_addr: String,
    /// Meridian version of the node.
    pub(crate) version: String,
    /// Approximate stored versions (tombstones included): a gauge, not a count.
    pub(crate) approximate_keys: u64,
    /// The lowest garbage-collection horizon over the ranges: snapshot reads
    /// at or above it are served in every range; below it, MER-1008.
    pub(crate) gc_horizon: u64,
    /// Closed timestamp: the lowest applied timestamp over this node's
    /// ranges; every write at or below it is applied on this node.
    pub(crate) closed_ts: u64,
    /// Seconds since the gateway started.
    pub(crate) uptime_secs: u64,
    /// Same as `closed_ts`.
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

/// Reply of `GET /health` and `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    /// `ok` (health) or `ready` (readiness).
    pub(crate) status: String,
    /// The node's clock (the latest timestamp it issued or saw).
    pub(crate) served_at: u64,
    /// `served_at` as `unix_ms.logical`.
    pub(crate) served_at_str: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(json: &str) -> Result<Txn, ApiError> {
        TxnRequest::parse(json.as_bytes())?.into_txn()
    }

    #[test]
    fn txn_json_converts_every_target_and_op() {
        let t = txn(r#"{"compares":[{"key":"a","op":"equal","value":"x"},
                            {"key":"b","op":"less","version":7},
                            {"key":"c","op":"not_equal","exists":true}],
                "success":[{"put":{"key":"a","value":"y"}}],
                "failure":[{"delete":{"key":"a"}}]}"#)
        .unwrap();
        assert_eq!(t.compares[0].target, CompareTarget::Value(b"x".to_vec()));
        assert_eq!(t.compares[1].target, CompareTarget::Version(Timestamp(7)));
        assert_eq!(t.compares[1].op, CompareOp::Less);
        assert_eq!(t.compares[2].target, CompareTarget::Exists(true));
        assert_eq!(
            t.success,
            vec![Op::Put {
                key: b"a".to_vec(),
                value: b"y".to_vec()
            }]
        );
        assert_eq!(t.failure, vec![Op::Delete { key: b"a".to_vec() }]);
        assert_eq!(txn("{}").unwrap(), Txn::default());
    }

    #[test]
    fn txn_json_refuses_ambiguous_or_unknown_input() {
        let none = txn(r#"{"compares":[{"key":"a","op":"equal"}]}"#).unwrap_err();
        assert_eq!(none.code, ErrorCode::InvalidArgument);
        assert!(none.message.contains("no target"), "{}", none.message);
        let two = txn(r#"{"compares":[{"key":"a","op":"equal","value":"x","exists":true}]}"#)
            .unwrap_err();
        assert!(two.message.contains("several targets"), "{}", two.message);
        for bad in [
            r#"{"compare":[]}"#,
            r#"{"success":[{"put":{"key":"a","value":"b","ttl":1}}]}"#,
            r#"{"success":[{"upsert":{"key":"a"}}]}"#,
            r#"{"compares":[{"key":"a","op":"like","value":"x"}]}"#,
            r#"{"compares":"#,
        ] {
            assert_eq!(
                txn(bad).unwrap_err().code,
                ErrorCode::MalformedRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_parse_in_both_forms() {
        let ts = Timestamp::from_parts(1_750_000_000_123, 5).unwrap();
        assert_eq!(parse_timestamp(&ts.0.to_string()).unwrap(), ts);
        assert_eq!(parse_timestamp(&ts.to_string()).unwrap(), ts);
        for bad in ["", "x", "1.2.3", "-1", "1000.1"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn range_bounds_honour_prefix_range_and_token() {
        let q = RangeQuery {
            prefix: Some("ab".into()),
            ..Default::default()
        };
        assert_eq!(
            q.bounds().unwrap(),
            RangeBounds {
                start: b"ab".to_vec(),
                end: Some(b"ac".to_vec())
            }
        );
        let q = RangeQuery {
            start: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            q.bounds().unwrap(),
            RangeBounds {
                start: b"b".to_vec(),
                end: None
            }
        );
        let both = RangeQuery {
            prefix: Some("a".into()),
            end: Some("b".into()),
            ..Default::default()
        };
        assert!(both.bounds().is_err());
        let token = encode_page_token(b"abc");
        let q = RangeQuery {
            prefix: Some("ab".into()),
            page_token: Some(token.clone()),
            ..Default::default()
        };
        assert_eq!(q.bounds().unwrap().start, b"abc".to_vec());
        let outside = RangeQuery {
            prefix: Some("x".into()),
            page_token: Some(token),
            ..Default::default()
        };
        assert!(outside.bounds().is_err());
        let garbage = RangeQuery {
            page_token: Some("***".into()),
            ..Default::default()
        };
        assert!(garbage.bounds().is_err());
    }

    #[test]
    fn history_entries_mark_tombstones() {
        let del = HistoryEntryJson::from(&VersionEntry {
            version: Timestamp(9),
            value: None,
        });
        assert!(del.deleted && del.value.is_none() && del.value_b64.is_none());
        let bin = HistoryEntryJson::from(&VersionEntry {
            version: Timestamp(8),
            value: Some(vec![0xff]),
        });
        assert!(!bin.deleted);
        assert_eq!((bin.value, bin.value_b64.as_deref()), (None, Some("/w==")));
    }
}

/// One member in `GET /v1/members`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberJson {
    /// Node name.
    pub node: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// QUIC address.
    pub addr: String,
    /// alive, suspect, down or left.
    pub state: String,
    /// Process generation.
    pub generation: u64,
    /// Rejoins after a false Down.
    pub rejoin: u32,
    /// SWIM incarnation.
    pub refutation: u16,
    /// Smoothed RTT measured by this node, ms.
    pub rtt_ms: Option<f64>,
}

/// Reply of `GET /v1/members`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MembersResponse {
    /// Every member this node's gossip knows, itself included.
    pub members: Vec<MemberJson>,
}
