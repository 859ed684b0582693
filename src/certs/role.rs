//! The role a certificate grants, and how it is written into and read out of
//! an X.509 certificate.
//!
//! **Encoding.** A Meridian certificate carries exactly one subject
//! alternative name of type URI, `urn:meridian:role:<role>` (for example
//! `urn:meridian:role:node`). A SAN rather than a Subject OU because SANs are
//! where X.509 binds identities to a key, they are never shown or compared as
//! display names, and the `urn:meridian:role:` prefix cannot collide with
//! anything an operator puts into a subject. TLS name checks ignore URI SANs,
//! so the role never influences which host names a certificate is valid for.

use std::fmt;
use std::str::FromStr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::CertError;

/// Prefix of the SAN URI that names the role; the role name follows it.
pub const ROLE_URI_PREFIX: &str = "urn:meridian:role:";

/// What the holder of a certificate may do. Checked by the server on every
/// request that needs more than read/write access to data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Meridian node: may serve clients and open peer (replication) traffic.
    Node,
    /// An application client: may call the data API.
    Client,
    /// An operator: may call the data API and administrative APIs.
    Admin,
}

impl Role {
    /// Every role, in declaration order (for help texts and tests).
    pub const ALL: [Role; 3] = [Role::Node, Role::Client, Role::Admin];

    /// The lowercase name used in config, the CLI and certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// The SAN URI that encodes this role, e.g. `urn:meridian:role:node`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `node`, `client` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {input:?}: expected node, client or admin")]
pub struct ParseRoleError {
    /// The text that was given.
    pub input: String,
}

impl FromStr for Role {
    type Err = ParseRoleError;

    /// Parses the exact lowercase names; `Node` or `NODE` are refused so that
    /// config files and certificates have one spelling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| ParseRoleError {
                input: s.to_owned(),
            })
    }
}

/// Parses DER bytes as exactly one X.509 certificate.
pub(super) fn parse_der(cert_der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CertError::Malformed {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CertError::Malformed {
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

/// The single role URI in a parsed certificate.
pub(super) fn role_in(cert: &X509Certificate<'_>) -> Result<Role, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Malformed {
            reason: format!("subject alternative names: {e}"),
        })?
        .ok_or(CertError::NoRole)?;
    let mut role_names = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX),
            _ => None,
        });
    let first = role_names.next().ok_or(CertError::NoRole)?;
    let others = role_names.count();
    if others > 0 {
        // Two roles would make authorisation depend on which one we read
        // first, so such a certificate is refused outright.
        return Err(CertError::MultipleRoles { count: others + 1 });
    }
    first.parse().map_err(|_| CertError::UnknownRole {
        uri: format!("{ROLE_URI_PREFIX}{first}"),
    })
}

/// The first subject common name of a parsed certificate.
pub(super) fn common_name_in(cert: &X509Certificate<'_>) -> Result<String, CertError> {
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or(CertError::NoCommonName)?;
    let text = cn.as_str().map_err(|e| CertError::Malformed {
        reason: format!("subject common name: {e}"),
    })?;
    Ok(text.to_owned())
}

// Tests may panic on unexpected results; that is how they fail.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            assert_eq!(role.uri(), format!("urn:meridian:role:{role}"));
        }
    }

    #[test]
    fn role_parse_is_exact() {
        for bad in ["", "Node", "NODE", "nodes", " node", "root"] {
            let err = bad.parse::<Role>().expect_err(bad);
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn role_serde_uses_lowercase_names() {
        let json = serde_json::to_string(&Role::Admin).expect("serialize");
        assert_eq!(json, "\"admin\"");
        let back: Role = serde_json::from_str("\"node\"").expect("deserialize");
        assert_eq!(back, Role::Node);
    }
}
