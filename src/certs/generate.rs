//! Certificate parameters for the development CA and for leaves. Pure apart
//! from key generation: the current time is passed in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, PublicKeyData, SanType,
};

use super::{CertError, Role};

/// How long the development CA is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long an issued node, client or admin certificate is valid: one year.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start being valid this long before they are made, so a peer
/// whose clock is a little behind ours does not reject a fresh certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60 * 60);

/// Longest certificate name (CN, file stem and DNS SAN).
pub const MAX_NAME_LEN: usize = 64;
/// Most extra subject alternative names one certificate may carry.
pub const MAX_EXTRA_SANS: usize = 32;

/// Subject organisation of every certificate we make.
const ORGANIZATION: &str = "Meridian";
/// Subject common name of the development CA, before its key tag.
const CA_COMMON_NAME: &str = "Meridian development CA";

/// Parameters of a self-signed development CA made at `now` for `key`.
pub(super) fn ca_params(
    now: SystemTime,
    key: &impl PublicKeyData,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    // Every development CA would otherwise have the same name, and a
    // certificate from another cluster's CA would then fail as "bad
    // signature" instead of the clearer "unknown CA". The tag comes from the
    // (random) public key, so no extra randomness is needed.
    params.distinguished_name = subject(&format!("{CA_COMMON_NAME} {}", key_tag(key)));
    // Path length 0: the CA signs leaves directly. An intermediate it signed
    // by mistake could not issue certificates that we would accept.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, CA_VALIDITY)?;
    Ok(params)
}

/// Parameters of a leaf certificate for `name` with `role`, made at `now`.
/// `name` must already have passed [`validate_name`].
pub(super) fn leaf_params(
    role: Role,
    name: &str,
    extra_sans: &[String],
    now: SystemTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(name);
    params.subject_alt_names = subject_alt_names(role, name, extra_sans)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Only nodes may act as TLS servers. Clients and admins get no
    // serverAuth, so their certificate cannot impersonate a node even though
    // it carries the same loopback SANs.
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, LEAF_VALIDITY)?;
    Ok(params)
}

/// Checks a certificate name: non-empty, at most [`MAX_NAME_LEN`] bytes of
/// `[A-Za-z0-9._-]`, starting with a letter or digit. The name becomes a file
/// stem, so the first-character rule keeps out hidden files and names that
/// look like command-line options.
pub fn validate_name(name: &str) -> Result<(), CertError> {
    let invalid = |reason| {
        Err(CertError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 64 bytes");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid("it must start with a letter or digit");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return invalid("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Role URI, the name (when it is a valid DNS name), loopback names and
/// addresses, then the caller's extras; duplicates are dropped.
fn subject_alt_names(
    role: Role,
    name: &str,
    extra_sans: &[String],
) -> Result<Vec<SanType>, CertError> {
    if extra_sans.len() > MAX_EXTRA_SANS {
        return Err(CertError::TooManySans {
            count: extra_sans.len(),
            max: MAX_EXTRA_SANS,
        });
    }
    let mut sans = vec![SanType::URI(ia5(&role.uri())?)];
    // A name like "node_1" is a fine CN and file name but not a DNS name;
    // then peers must dial it by address, which the IP SANs cover.
    if let Ok(dns) = dns_san(name) {
        sans.push(dns);
    }
    let loopback = [
        SanType::DnsName(ia5("localhost")?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    sans.extend(loopback);
    for extra in extra_sans {
        let san = match extra.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => dns_san(extra)?,
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A DNS SAN, if `name` is a syntactically valid DNS name.
fn dns_san(name: &str) -> Result<SanType, CertError> {
    let invalid = || CertError::InvalidSan {
        san: name.to_owned(),
    };
    rustls::pki_types::DnsName::try_from(name).map_err(|_| invalid())?;
    Ia5String::try_from(name)
        .map(SanType::DnsName)
        .map_err(|_| invalid())
}

fn ia5(text: &str) -> Result<Ia5String, CertError> {
    Ia5String::try_from(text).map_err(|_| CertError::InvalidSan {
        san: text.to_owned(),
    })
}

/// Eight hex digits from the end of the public key (the random part of an
/// EC point), to tell CAs apart by name.
fn key_tag(key: &impl PublicKeyData) -> String {
    let raw = key.der_bytes();
    let tail = &raw[raw.len().saturating_sub(4)..];
    tail.iter().map(|b| format!("{b:02x}")).collect()
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Sets not-before to `now` minus [`CLOCK_SKEW_ALLOWANCE`] and not-after to
/// `now` plus `lifetime`.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(), CertError> {
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Clock {
            reason: "the system clock is before 1970".to_owned(),
        })?;
    // rcgen's times are `time::OffsetDateTime`; building them from its own
    // epoch helper plus std durations avoids a direct dependency on `time`.
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + lifetime;
    Ok(())
}

// Tests may panic on unexpected results; that is how they fail.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_pass() {
        for name in ["n1", "node-1", "node_1", "a.b.c", "A9", &"x".repeat(64)] {
            validate_name(name).expect(name);
        }
    }

    #[test]
    fn invalid_names_are_refused_with_the_name() {
        let too_long = "x".repeat(65);
        for name in ["", "-rf", ".hidden", "a/b", "a b", "ünï", "a\0", &too_long] {
            match validate_name(name) {
                Err(CertError::InvalidName { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn sans_cover_name_loopback_and_extras_once() {
        let extras = [
            "10.0.0.7".to_owned(),
            "db.example".to_owned(),
            "::1".to_owned(),
        ];
        let sans = subject_alt_names(Role::Node, "n1", &extras).expect("sans");
        let ip = |s: &str| SanType::IpAddress(s.parse().expect("ip"));
        let dns = |s: &str| SanType::DnsName(ia5(s).expect("ia5"));
        let expected = vec![
            SanType::URI(ia5("urn:meridian:role:node").expect("ia5")),
            dns("n1"),
            dns("localhost"),
            ip("127.0.0.1"),
            ip("::1"),
            ip("10.0.0.7"),
            dns("db.example"),
        ];
        assert_eq!(sans, expected);
    }

    #[test]
    fn bad_extra_san_is_refused() {
        let err = subject_alt_names(Role::Client, "c1", &["not a name".to_owned()]);
        assert!(matches!(err, Err(CertError::InvalidSan { san }) if san == "not a name"));
    }

    #[test]
    fn too_many_extra_sans_are_refused() {
        let extras: Vec<String> = (0..=MAX_EXTRA_SANS).map(|i| format!("h{i}")).collect();
        let err = subject_alt_names(Role::Client, "c1", &extras);
        assert!(matches!(
            err,
            Err(CertError::TooManySans { count: 33, max: 32 })
        ));
    }

    #[test]
    fn clock_before_epoch_is_an_error() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        let key = rcgen::KeyPair::generate().expect("key");
        assert!(matches!(
            ca_params(before, &key),
            Err(CertError::Clock { .. })
        ));
    }
}
