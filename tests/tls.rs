//! Certificates and the QUIC + mutual-TLS transport, end to end on loopback.
//!
//! Each test makes its own temporary PKI (a CA with node, client and admin
//! certificates, plus an unrelated CA with a client certificate) and its own
//! echo server. Every wait is bounded by `WAIT`.
//!
//! With TLS 1.3 the client sends its certificate in its last flight and may
//! consider the handshake complete before the server has judged it, so a
//! refused client certificate can surface at `connect` or only at the first
//! stream operation. The refusal tests therefore assert that the whole
//! exchange fails within the timeout, and that the server never saw an
//! identity for that client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use meridian::certs::{self, Role};
use meridian::transport::{
    self, read_frame, write_frame, EndpointLimits, FrameError, PeerIdentity, TlsFiles,
    TransportError, ALPN,
};
use tempfile::TempDir;

mod common;
use common::custom_client;

/// TLS alert `certificate_required` (RFC 8446): the client sent no certificate.
const ALERT_CERTIFICATE_REQUIRED: u8 = 116;
/// TLS alert `unknown_ca`: the certificate does not chain to a trusted CA.
const ALERT_UNKNOWN_CA: u8 = 48;
/// TLS alert `no_application_protocol` (RFC 7301): no common ALPN.
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;
/// Upper bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// Largest frame the test server reads; bigger than one 64 KiB read chunk.
const SERVER_MAX_FRAME: usize = 1024 * 1024;
/// Length claimed by the oversize-frame test: 1 GiB, never sent.
const HUGE_LEN: u32 = 1 << 30;

/// A temporary PKI: our CA with three roles, and an unrelated CA.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    node: TlsFiles,
    client: TlsFiles,
    admin: TlsFiles,
    /// A client certificate from the other CA, trusting our CA for the server.
    intruder: TlsFiles,
    /// Our client certificate, but trusting only the other CA.
    wrong_trust: TlsFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let other_ca_dir = dir.path().join("other-ca");
    let out = dir.path().join("issued");
    let ca = certs::init_ca(&ca_dir, false).expect("init ca").cert;
    let other_ca = certs::init_ca(&other_ca_dir, false)
        .expect("init other ca")
        .cert;
    let issue = |ca_dir: &Path, role, name: &str, trust: &Path| {
        let paths = certs::issue(ca_dir, role, name, &out, &[]).expect("issue");
        TlsFiles {
            ca: trust.to_owned(),
            cert: paths.cert,
            key: paths.key,
        }
    };
    let client = issue(&ca_dir, Role::Client, "client-1", &ca);
    let wrong_trust = TlsFiles {
        ca: other_ca.clone(),
        ..client.clone()
    };
    Pki {
        node: issue(&ca_dir, Role::Node, "node-1", &ca),
        admin: issue(&ca_dir, Role::Admin, "admin-1", &ca),
        intruder: issue(&other_ca_dir, Role::Client, "intruder", &ca),
        client,
        wrong_trust,
        ca,
        _dir: dir,
    }
}

/// A running echo server and the identities of the peers it accepted.
struct Server {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<PeerIdentity>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn start(tls: &TlsFiles) -> Server {
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let endpoint = transport::server_endpoint(bind, tls, &EndpointLimits::default())
            .expect("server endpoint");
        let addr = endpoint.local_addr().expect("local addr");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(endpoint.clone(), accepted.clone()));
        Server {
            endpoint,
            addr,
            accepted,
            task,
        }
    }

    fn accepted_names(&self) -> Vec<String> {
        let accepted = self.accepted.lock().expect("lock");
        accepted.iter().map(|id| id.name.clone()).collect()
    }

    fn stop(self) {
        self.endpoint.close(0u32.into(), b"test over");
        self.task.abort();
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, accepted: Arc<Mutex<Vec<PeerIdentity>>>) {
    while let Some(incoming) = endpoint.accept().await {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            // Refused handshakes (no or foreign certificate) end here.
            let Ok(conn) = incoming.await else { return };
            let Ok(id) = transport::peer_identity(&conn) else {
                conn.close(1u32.into(), b"no identity");
                return;
            };
            accepted.lock().expect("lock").push(id.clone());
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_stream(send, recv, id.clone()));
            }
        });
    }
}

/// One request per stream: `peer` asks for node-only access; anything else
/// is echoed, followed by a frame with the caller's role.
async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, id: PeerIdentity) {
    let replies = match read_frame(&mut recv, SERVER_MAX_FRAME).await {
        Ok(request) if request == b"peer" => vec![peer_reply(&id)],
        Ok(request) => vec![request, id.role.to_string().into_bytes()],
        Err(FrameError::TooLarge { len, max }) => {
            let _ = recv.stop(0u32.into());
            vec![format!("too large: len={len} max={max}").into_bytes()]
        }
        Err(e @ FrameError::Truncated { .. }) => vec![format!("truncated: {e}").into_bytes()],
        Err(_) => return,
    };
    for reply in replies {
        if write_frame(&mut send, &reply).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(WAIT, send.stopped()).await;
}

fn peer_reply(id: &PeerIdentity) -> Vec<u8> {
    match transport::require_role(id, &[Role::Node]) {
        Ok(()) => b"ok".to_vec(),
        Err(e @ TransportError::PermissionDenied { .. }) => {
            format!("denied {}: {e}", e.code()).into_bytes()
        }
        Err(e) => format!("unexpected error: {e}").into_bytes(),
    }
}

/// Sends one frame on a new stream and collects the reply frames.
async fn request(conn: &quinn::Connection, body: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let (mut send, mut recv) = conn.open_bi().await.context("open stream")?;
    write_frame(&mut send, body).await.context("write")?;
    send.finish().context("finish")?;
    read_replies(&mut recv).await
}

async fn read_replies(recv: &mut quinn::RecvStream) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    loop {
        match read_frame(recv, SERVER_MAX_FRAME).await {
            Ok(frame) => frames.push(frame),
            Err(FrameError::Finished) => return Ok(frames),
            Err(e) => return Err(e).context("read reply"),
        }
        anyhow::ensure!(frames.len() <= 2, "server sent too many frames");
    }
}

/// Connects with `tls` through this crate's client endpoint.
async fn connect_as(tls: &TlsFiles, server: &Server) -> anyhow::Result<quinn::Connection> {
    let endpoint = transport::client_endpoint(tls, &EndpointLimits::default())?;
    Ok(transport::connect(&endpoint, server.addr, None).await?)
}

/// Connects and makes one request, as one fallible exchange.
async fn exchange(tls: &TlsFiles, server: &Server, body: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let conn = connect_as(tls, server).await?;
    request(&conn, body).await
}

/// Asserts that an exchange fails within `WAIT` because the server aborted
/// the TLS handshake with the given alert, not for some later reason (such
/// as the application closing a connection it could not identify).
async fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    alert: u8,
    exchange: impl std::future::Future<Output = anyhow::Result<T>>,
) {
    let outcome = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no refusal within {WAIT:?}"));
    let err = match outcome {
        Ok(reply) => panic!("{what}: exchange succeeded with {reply:?}"),
        Err(e) => e,
    };
    assert_eq!(tls_alert(&err), Some(alert), "{what}: {err:#}");
}

/// The TLS alert with which the peer closed the connection, if that is
/// what `err` comes down to. QUIC carries TLS alerts as transport error
/// codes 0x100 + alert (RFC 9001, section 4.8).
fn tls_alert(err: &anyhow::Error) -> Option<u8> {
    err.chain().find_map(
        |cause| match cause.downcast_ref::<quinn::ConnectionError>()? {
            quinn::ConnectionError::ConnectionClosed(close) => {
                let code = u64::from(close.error_code);
                let alert = code.checked_sub(0x100)?;
                u8::try_from(alert).ok()
            }
            _ => None,
        },
    )
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out after {WAIT:?}"))
}

async fn exchange_custom(
    config: quinn::ClientConfig,
    server: &Server,
    body: &[u8],
) -> anyhow::Result<Vec<Vec<u8>>> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint
        .connect_with(config, server.addr, "127.0.0.1")?
        .await?;
    request(&conn, body).await
}

#[tokio::test]
async fn client_with_valid_certificate_gets_echo_and_role() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let conn = bounded("connect", connect_as(&pki.client, &server))
        .await
        .expect("connect");
    let server_id = transport::peer_identity(&conn).expect("server identity");
    assert_eq!(server_id.role, Role::Node);
    assert_eq!(server_id.name, "node-1");

    let replies = bounded("request", request(&conn, b"hello"))
        .await
        .expect("reply");
    assert_eq!(replies, vec![b"hello".to_vec(), b"client".to_vec()]);

    // A body larger than one read chunk arrives whole.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let replies = bounded("big request", request(&conn, &big))
        .await
        .expect("reply");
    assert_eq!(replies[0], big);
    assert_eq!(server.accepted_names(), vec!["client-1".to_owned()]);
    server.stop();
}

#[tokio::test]
async fn admin_certificate_reports_admin_role() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let replies = bounded("exchange", exchange(&pki.admin, &server, b"x"))
        .await
        .expect("exchange");
    assert_eq!(replies, vec![b"x".to_vec(), b"admin".to_vec()]);
    server.stop();
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let config = custom_client(&pki.ca, None, ALPN).expect("config");
    assert_refused(
        "no client certificate",
        ALERT_CERTIFICATE_REQUIRED,
        exchange_custom(config, &server, b"hi"),
    )
    .await;
    assert!(server.accepted_names().is_empty());

    // The same hand-built client with a valid certificate gets through, so
    // the refusal above was about the missing certificate.
    let config = custom_client(&pki.ca, Some(&pki.client), ALPN).expect("config");
    let replies = bounded("control", exchange_custom(config, &server, b"hi"))
        .await
        .expect("valid certificate accepted");
    assert_eq!(replies[1], b"client");
    server.stop();
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let server = Server::start(&pki.node);
    assert_refused(
        "foreign CA",
        ALERT_UNKNOWN_CA,
        exchange(&pki.intruder, &server, b"hi"),
    )
    .await;
    assert!(server.accepted_names().is_empty());
    server.stop();
}

#[tokio::test]
async fn client_refuses_a_server_from_another_ca() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let result = bounded("connect", connect_as(&pki.wrong_trust, &server)).await;
    let err = result.expect_err("server certificate must not verify");
    let transport_err = err
        .downcast_ref::<TransportError>()
        .expect("transport error");
    assert!(
        matches!(transport_err, TransportError::Handshake { .. }),
        "{err:#}"
    );
    server.stop();
}

#[tokio::test]
async fn wrong_alpn_is_refused() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let config = custom_client(&pki.ca, Some(&pki.client), b"meridian/0").expect("config");
    assert_refused(
        "wrong ALPN",
        ALERT_NO_APPLICATION_PROTOCOL,
        exchange_custom(config, &server, b"hi"),
    )
    .await;
    server.stop();
}

#[tokio::test]
async fn node_only_request_checks_role_on_the_live_connection() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let denied = bounded(
        "client peer request",
        exchange(&pki.client, &server, b"peer"),
    )
    .await
    .expect("exchange");
    let denied = String::from_utf8(denied[0].clone()).expect("utf8");
    assert!(denied.starts_with("denied MER-2001: "), "{denied}");
    assert!(denied.contains("role client"), "{denied}");

    let allowed = bounded("node peer request", exchange(&pki.node, &server, b"peer"))
        .await
        .expect("exchange");
    assert_eq!(allowed, vec![b"ok".to_vec()]);

    // The identities the server saw give the same verdicts.
    let accepted = server.accepted.lock().expect("lock").clone();
    let client_id = accepted
        .iter()
        .find(|id| id.role == Role::Client)
        .expect("client seen");
    let err = transport::require_role(client_id, &[Role::Node]).expect_err("client denied");
    assert!(
        matches!(&err, TransportError::PermissionDenied { role: Role::Client, needed } if needed == &[Role::Node]),
        "{err:?}"
    );
    let node_id = accepted
        .iter()
        .find(|id| id.role == Role::Node)
        .expect("node seen");
    transport::require_role(node_id, &[Role::Node]).expect("node allowed");
    server.stop();
}

#[tokio::test]
async fn server_rejects_oversize_frame_without_reading_the_body() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let conn = bounded("connect", connect_as(&pki.client, &server))
        .await
        .expect("connect");
    let (mut send, mut recv) = bounded("open", conn.open_bi()).await.expect("open");
    // Only the header is sent and the stream stays open: if the server tried
    // to read (or wait for) the 1 GiB body, no reply would come.
    bounded("write header", send.write_all(&HUGE_LEN.to_be_bytes()))
        .await
        .expect("write header");
    let replies = bounded("reply", read_replies(&mut recv))
        .await
        .expect("reply");
    let expected = format!("too large: len={HUGE_LEN} max={SERVER_MAX_FRAME}");
    assert_eq!(replies, vec![expected.into_bytes()]);
    server.stop();
}

#[tokio::test]
async fn client_read_frame_rejects_oversize_prefix_promptly() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let conn = bounded("connect", connect_as(&pki.client, &server))
        .await
        .expect("connect");
    // Ask the server to echo a frame whose body is a bare 1 GiB header. After
    // skipping the echo's own header, the client's next read_frame sees that
    // 1 GiB prefix and must refuse it from the header alone.
    let (mut send, mut recv) = bounded("open", conn.open_bi()).await.expect("open");
    let mut nested = 4u32.to_be_bytes().to_vec();
    nested.extend_from_slice(&HUGE_LEN.to_be_bytes());
    bounded("write", send.write_all(&nested))
        .await
        .expect("write");
    send.finish().expect("finish");
    let mut outer = [0u8; 4];
    bounded("outer header", recv.read_exact(&mut outer))
        .await
        .expect("outer header");
    assert_eq!(outer, 4u32.to_be_bytes());
    let err = bounded("read", read_frame(&mut recv, 1024))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u64::from(HUGE_LEN)),
        "{err:?}"
    );
    server.stop();
}

#[tokio::test]
async fn truncated_frame_is_reported() {
    let pki = pki();
    let server = Server::start(&pki.node);
    let conn = bounded("connect", connect_as(&pki.client, &server))
        .await
        .expect("connect");
    let (mut send, mut recv) = bounded("open", conn.open_bi()).await.expect("open");
    let mut partial = 10u32.to_be_bytes().to_vec();
    partial.extend_from_slice(b"abc");
    bounded("write", send.write_all(&partial))
        .await
        .expect("write");
    send.finish().expect("finish");
    let replies = bounded("reply", read_replies(&mut recv))
        .await
        .expect("reply");
    let reply = String::from_utf8(replies[0].clone()).expect("utf8");
    assert!(
        reply.starts_with("truncated: stream finished 7 bytes into a 14-byte frame"),
        "{reply}"
    );
    server.stop();
}

#[tokio::test]
async fn server_endpoint_requires_a_node_certificate() {
    let pki = pki();
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let err = transport::server_endpoint(bind, &pki.client, &EndpointLimits::default())
        .expect_err("client cert cannot serve");
    assert!(
        matches!(
            err,
            TransportError::NotANode {
                role: Role::Client,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn mismatched_key_names_both_files() {
    let pki = pki();
    let mixed = TlsFiles {
        key: pki.client.key.clone(),
        ..pki.node.clone()
    };
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let err = transport::server_endpoint(bind, &mixed, &EndpointLimits::default())
        .expect_err("key of another certificate");
    assert!(matches!(err, TransportError::CertAndKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("node-1.pem") && text.contains("client-1.key"),
        "{text}"
    );
}

#[test]
fn role_of_reads_each_issued_certificate() {
    let pki = pki();
    let cases = [
        (&pki.node, Role::Node, "node-1"),
        (&pki.client, Role::Client, "client-1"),
        (&pki.admin, Role::Admin, "admin-1"),
        (&pki.intruder, Role::Client, "intruder"),
    ];
    for (files, role, name) in cases {
        let der = certs::load_certs(&files.cert).expect("load").swap_remove(0);
        assert_eq!(certs::role_of(&der).expect("role"), role, "{name}");
        assert_eq!(certs::common_name_of(&der).expect("cn"), name);
    }
    let ca_der = certs::load_certs(&pki.ca).expect("load ca").swap_remove(0);
    assert!(matches!(
        certs::role_of(&ca_der),
        Err(certs::CertError::NoRole)
    ));
}

/// A peer connection to a node that went silent (its process stopped, as
/// after a SIGKILL: no close, nothing at all) is dropped after the peer
/// idle timeout (`transport::PEER_IDLE_TIMEOUT_MS`), not the clients' 30 s,
/// so the next request to that address dials afresh (a restarted node is
/// reached again). The server runs on a runtime of its own thread, which
/// the test then blocks: its endpoint stops answering anything.
#[tokio::test]
async fn a_silent_peer_connection_is_dropped_after_the_peer_idle_timeout() {
    let pki = pki();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel::<()>();
    let node = pki.node.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = transport::server_endpoint(
                "127.0.0.1:0".parse().unwrap(),
                &node,
                &EndpointLimits::default(),
            )
            .unwrap();
            addr_tx.send(server.local_addr().unwrap()).unwrap();
            let conn = server.accept().await.unwrap().await.unwrap();
            accepted_tx.send(()).unwrap();
            // The only thread of this runtime sleeps: the endpoint goes
            // silent with the connection open, as a killed process would.
            std::thread::sleep(Duration::from_secs(20));
            drop(conn);
        });
    });
    let addr: SocketAddr = addr_rx.recv_timeout(WAIT).unwrap();
    let endpoint = transport::client_endpoint(&pki.node, &EndpointLimits::default()).unwrap();
    let config = transport::peer_client_config(&pki.node, &EndpointLimits::default()).unwrap();
    let conn = tokio::time::timeout(WAIT, transport::connect_peer(&endpoint, &config, addr))
        .await
        .expect("bounded")
        .unwrap();
    accepted_rx.recv_timeout(WAIT).unwrap();
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("a silent peer's connection is dropped well before the clients' 30 s idle timeout");
    assert!(
        matches!(reason, quinn::ConnectionError::TimedOut),
        "dropped for silence, not {reason:?}"
    );
    println!(
        "silent peer connection dropped after {:.1} s (bound {} ms)",
        started.elapsed().as_secs_f64(),
        transport::PEER_IDLE_TIMEOUT_MS
    );
}
