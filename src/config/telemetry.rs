//! `[telemetry]`: OpenTelemetry trace export (see docs/operations.md,
//! "Tracing").
//!
//! Off by default; one setting (`otlp_endpoint`) turns it on. Spans are
//! sampled per trace at the root (`sampling_ratio`) and every node follows
//! the decision carried in the trace context it receives (parent-based), so
//! a sampled request is sampled on every node it reaches.

use serde::{Deserialize, Serialize};

use super::{check_name, invalid, ConfigError};

/// Default share of root traces sampled: 1 in 100.
pub const DEFAULT_SAMPLING_RATIO: f64 = 0.01;

/// Default `service.name` resource attribute of exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "meridian";

/// The OTLP path of the trace signal, appended to an endpoint given without
/// a path (the OTLP/HTTP convention: `http://collector:4318` posts to
/// `http://collector:4318/v1/traces`).
pub const OTLP_TRACES_PATH: &str = "/v1/traces";

/// `[telemetry]` as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP/HTTP collector URL, `http://host:port` (the path defaults to
    /// `/v1/traces`) or a full `http://host:port/path`. Empty (the
    /// default) turns trace export off. Plain `http` only: point it at a
    /// collector agent on the node or its private network.
    pub otlp_endpoint: String,
    /// `http-protobuf` (the default and the only protocol this build
    /// exports with: OTLP over HTTP, protobuf bodies).
    pub otlp_protocol: String,
    /// Share of traces started on this node that are sampled, 0.0..=1.0.
    /// Default 0.01. A trace started elsewhere keeps its root's decision.
    pub sampling_ratio: f64,
    /// `service.name` of exported spans; `[A-Za-z0-9._-]`, 1..=64 chars.
    /// Default `meridian`.
    pub service_name: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            otlp_endpoint: String::new(),
            otlp_protocol: "http-protobuf".into(),
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            service_name: DEFAULT_SERVICE_NAME.into(),
        }
    }
}

/// The transport of OTLP export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over HTTP/1.1 with protobuf bodies.
    HttpProtobuf,
}

/// `[telemetry]`, validated, when export is on.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// Where spans are posted: the full URL, path included.
    pub otlp_endpoint: String,
    /// How.
    pub otlp_protocol: OtlpProtocol,
    /// Share of root traces sampled, 0.0..=1.0.
    pub sampling_ratio: f64,
    /// `service.name` of exported spans.
    pub service_name: String,
}

impl RawTelemetry {
    /// Validates; `None` when export is off (no endpoint). Every other field
    /// is checked either way, so a typo is found before export is turned on.
    pub fn validate(&self) -> Result<Option<TelemetryConfig>, ConfigError> {
        let otlp_protocol = match self.otlp_protocol.as_str() {
            "http-protobuf" => OtlpProtocol::HttpProtobuf,
            other => {
                return Err(invalid(
                    "telemetry.otlp_protocol",
                    "must be `http-protobuf` (gRPC export is not built in)",
                    other,
                ))
            }
        };
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(invalid(
                "telemetry.sampling_ratio",
                "must be between 0.0 and 1.0",
                self.sampling_ratio,
            ));
        }
        check_name("telemetry.service_name", &self.service_name)?;
        let endpoint = self.otlp_endpoint.trim();
        if endpoint.is_empty() {
            return Ok(None);
        }
        Ok(Some(TelemetryConfig {
            otlp_endpoint: traces_url(endpoint)?,
            otlp_protocol,
            sampling_ratio: self.sampling_ratio,
            service_name: self.service_name.clone(),
        }))
    }
}

/// The URL spans are posted to: `endpoint` checked (plain `http`, a host),
/// with [`OTLP_TRACES_PATH`] when it names no path.
fn traces_url(endpoint: &str) -> Result<String, ConfigError> {
    const FIELD: &str = "telemetry.otlp_endpoint";
    let uri: http::Uri = endpoint.parse().map_err(|_| {
        invalid(
            FIELD,
            "must be a URL such as http://127.0.0.1:4318",
            endpoint,
        )
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            FIELD,
            "must be an http:// URL (export goes to a collector agent on the node's network; https is not built in)",
            endpoint,
        ));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(invalid(FIELD, "must name a host", endpoint));
    }
    if uri.query().is_some() {
        return Err(invalid(FIELD, "must not have a query string", endpoint));
    }
    let path = uri.path();
    Ok(if path.is_empty() || path == "/" {
        format!("{}{OTLP_TRACES_PATH}", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoint: &str) -> RawTelemetry {
        RawTelemetry {
            otlp_endpoint: endpoint.into(),
            ..RawTelemetry::default()
        }
    }

    fn field_of(r: Result<Option<TelemetryConfig>, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn off_by_default_and_on_with_one_setting() {
        assert_eq!(RawTelemetry::default().validate().unwrap(), None);
        let on = raw("http://127.0.0.1:4318").validate().unwrap().unwrap();
        assert_eq!(on.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(on.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(on.sampling_ratio, DEFAULT_SAMPLING_RATIO);
        assert_eq!(on.service_name, "meridian");
    }

    #[test]
    fn an_endpoint_with_a_path_is_kept_as_written() {
        let on = raw("http://collector:4318/custom/traces")
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(on.otlp_endpoint, "http://collector:4318/custom/traces");
        let slash = raw("http://collector:4318/").validate().unwrap().unwrap();
        assert_eq!(slash.otlp_endpoint, "http://collector:4318/v1/traces");
    }

    #[test]
    fn errors_name_the_field() {
        for bad in [
            "https://c:4318",
            "c:4318",
            "not a url",
            "http://c:4318/?a=1",
        ] {
            assert_eq!(
                field_of(raw(bad).validate()),
                "telemetry.otlp_endpoint",
                "{bad}"
            );
        }
        for ratio in [-0.1, 1.5, f64::NAN] {
            let r = RawTelemetry {
                sampling_ratio: ratio,
                ..raw("http://c:4318")
            };
            assert_eq!(
                field_of(r.validate()),
                "telemetry.sampling_ratio",
                "{ratio}"
            );
        }
        let grpc = RawTelemetry {
            otlp_protocol: "grpc".into(),
            ..raw("")
        };
        assert_eq!(field_of(grpc.validate()), "telemetry.otlp_protocol");
        let name = RawTelemetry {
            service_name: "has space".into(),
            ..raw("")
        };
        assert_eq!(field_of(name.validate()), "telemetry.service_name");
    }

    #[test]
    fn the_sampling_ratio_bounds_are_allowed() {
        for ratio in [0.0, 1.0] {
            let r = RawTelemetry {
                sampling_ratio: ratio,
                ..raw("http://c:4318")
            };
            assert_eq!(r.validate().unwrap().unwrap().sampling_ratio, ratio);
        }
    }
}
