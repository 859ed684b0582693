//! Unit tests for certificate generation, files and role extraction.

use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, SanType};
use x509_parser::extensions::GeneralName;

use super::*;

const DAY_SECS: i64 = 24 * 60 * 60;

fn now_secs() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("fits i64")
}

fn first_cert(path: &Path) -> Vec<u8> {
    load_certs(path).expect("load cert").swap_remove(0).to_vec()
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// A self-signed certificate with the given SAN URIs, for role parsing.
fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).expect("ia5")))
        .collect();
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("sign").der().to_vec()
}

#[test]
fn init_ca_writes_a_ten_year_ca_with_a_private_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let paths = init_ca(&ca_dir, false).expect("init_ca");
    assert_eq!(paths, CaPaths::in_dir(&ca_dir));
    load_key(&paths.key).expect("key loads");
    let der = first_cert(&paths.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    assert!(cert.is_ca());
    let validity = cert.validity();
    let lifetime = validity.not_after.timestamp() - now_secs();
    assert!(
        (3649 * DAY_SECS..=3650 * DAY_SECS).contains(&lifetime),
        "{lifetime}"
    );
    assert!(validity.not_before.timestamp() < now_secs());
    #[cfg(unix)]
    assert_eq!(mode_of(&paths.key), 0o600);
}

#[test]
fn init_ca_refuses_to_overwrite_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = init_ca(dir.path(), false).expect("first init");
    let before = std::fs::read(&paths.cert).expect("read");
    match init_ca(dir.path(), false) {
        Err(err @ CertError::AlreadyExists { .. }) => {
            assert!(err.to_string().contains("ca.pem"), "{err}");
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(std::fs::read(&paths.cert).expect("read"), before);

    // A lone key (a crash between the two writes) also blocks a new CA.
    std::fs::remove_file(&paths.cert).expect("rm");
    let err = init_ca(dir.path(), false).expect_err("key exists");
    assert!(err.to_string().contains("ca.key"), "{err}");

    init_ca(dir.path(), true).expect("forced init");
    assert_ne!(std::fs::read(&paths.cert).expect("read"), before);
    #[cfg(unix)]
    assert_eq!(mode_of(&paths.key), 0o600);
}

#[test]
fn issue_encodes_each_role_name_and_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_ca(dir.path(), false).expect("init_ca");
    let out = dir.path().join("out");
    for role in Role::ALL {
        let name = format!("{role}-1");
        let paths = issue(dir.path(), role, &name, &out, &[]).expect("issue");
        assert_eq!(paths.cert, out.join(format!("{name}.pem")));
        let der = first_cert(&paths.cert);
        assert_eq!(role_of(&der).expect("role"), role);
        assert_eq!(common_name_of(&der).expect("cn"), name);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth);
        assert_eq!(eku.value.server_auth, role == Role::Node);
        let lifetime = cert.validity().not_after.timestamp() - now_secs();
        assert!(
            (364 * DAY_SECS..=365 * DAY_SECS).contains(&lifetime),
            "{lifetime}"
        );
        #[cfg(unix)]
        assert_eq!(mode_of(&paths.key), 0o600);
    }
}

#[test]
fn issue_adds_extra_sans_as_ip_or_dns() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_ca(dir.path(), false).expect("init_ca");
    let extras = ["192.0.2.10".to_owned(), "n1.example".to_owned()];
    let paths = issue(dir.path(), Role::Node, "n1", dir.path(), &extras).expect("issue");
    let der = first_cert(&paths.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("present");
    let names = &san.value.general_names;
    assert!(names.contains(&GeneralName::IPAddress(&[192, 0, 2, 10])));
    assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    assert!(names.contains(&GeneralName::DNSName("n1.example")));
    assert!(names.contains(&GeneralName::DNSName("n1")));
    assert!(names.contains(&GeneralName::DNSName("localhost")));
    assert!(names.contains(&GeneralName::URI("urn:meridian:role:node")));
}

#[test]
fn issue_without_a_ca_names_the_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = issue(dir.path(), Role::Client, "c1", dir.path(), &[]).expect_err("no CA");
    assert!(matches!(&err, CertError::Io { path, .. } if path.ends_with("ca.pem")));
    assert!(!dir.path().join("c1.key").exists());
}

#[test]
fn issue_refuses_a_ca_key_from_another_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    init_ca(&a, false).expect("ca a");
    init_ca(&b, false).expect("ca b");
    std::fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).expect("swap key");
    let err = issue(&a, Role::Node, "n1", dir.path(), &[]).expect_err("mismatch");
    assert!(matches!(err, CertError::CaMismatch { .. }), "{err:?}");
}

#[test]
fn issue_never_replaces_the_ca_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = init_ca(dir.path(), false).expect("init_ca");
    let before = std::fs::read(&paths.key).expect("read");
    let err = issue(dir.path(), Role::Node, "ca", dir.path(), &[]).expect_err("collision");
    assert!(matches!(err, CertError::WouldOverwriteCa { .. }), "{err:?}");
    assert_eq!(std::fs::read(&paths.key).expect("read"), before);
}

#[test]
fn issue_rejects_a_bad_name_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_ca(dir.path(), false).expect("init_ca");
    let out = dir.path().join("out");
    let err = issue(dir.path(), Role::Node, "../evil", &out, &[]).expect_err("bad name");
    assert!(matches!(err, CertError::InvalidName { .. }), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn role_of_requires_exactly_one_known_role() {
    assert!(matches!(
        role_of(&cert_with_uris(&[])),
        Err(CertError::NoRole)
    ));
    let unrelated = cert_with_uris(&["https://example.com/"]);
    assert!(matches!(role_of(&unrelated), Err(CertError::NoRole)));
    let two = cert_with_uris(&["urn:meridian:role:node", "urn:meridian:role:admin"]);
    assert!(matches!(
        role_of(&two),
        Err(CertError::MultipleRoles { count: 2 })
    ));
    let unknown = cert_with_uris(&["urn:meridian:role:root"]);
    assert!(matches!(
        role_of(&unknown),
        Err(CertError::UnknownRole { .. })
    ));
    let one = cert_with_uris(&["https://example.com/", "urn:meridian:role:admin"]);
    assert_eq!(role_of(&one).expect("role"), Role::Admin);
}

#[test]
fn role_of_rejects_garbage_and_trailing_bytes() {
    assert!(matches!(
        role_of(b"not a cert"),
        Err(CertError::Malformed { .. })
    ));
    let mut der = cert_with_uris(&["urn:meridian:role:node"]);
    der.push(0);
    assert!(matches!(role_of(&der), Err(CertError::Malformed { .. })));
}

#[test]
fn loaders_name_the_file_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = init_ca(dir.path(), false).expect("init_ca");
    let missing = dir.path().join("missing.pem");
    let err = load_certs(&missing).expect_err("missing");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = load_certs(&paths.key).expect_err("a key is no cert");
    assert!(matches!(&err, CertError::NoCertificate { path } if *path == paths.key));
    let err = load_key(&paths.cert).expect_err("a cert is no key");
    assert!(matches!(&err, CertError::NoPrivateKey { path } if *path == paths.cert));
}

#[test]
fn loaders_refuse_oversized_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.pem");
    let size = usize::try_from(MAX_PEM_FILE_BYTES).expect("fits") + 1;
    std::fs::write(&big, vec![b'A'; size]).expect("write");
    assert!(matches!(load_certs(&big), Err(CertError::Pem { .. })));
}

#[test]
fn each_ca_gets_a_distinct_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = init_ca(&dir.path().join("a"), false).expect("ca a");
    let b = init_ca(&dir.path().join("b"), false).expect("ca b");
    let name_a = common_name_of(&first_cert(&a.cert)).expect("cn a");
    let name_b = common_name_of(&first_cert(&b.cert)).expect("cn b");
    assert!(name_a.starts_with("Meridian development CA "), "{name_a}");
    assert_ne!(name_a, name_b);
}
