//! A minimal HTTP/1.1 client for gateway tests: one request per
//! connection (`Connection: close`), the whole reply read and parsed
//! (chunked bodies decoded), bounded by [`REQUEST_TIMEOUT`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on one HTTP exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed HTTP response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and the error code of an error reply, and that it
    /// has the gateway's error shape.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "body: {v}"
        );
        assert!(
            v["error"]["remedy"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {v}"
        );
        v
    }
}

/// Sends one request and reads the whole reply, within [`REQUEST_TIMEOUT`].
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    timeout(REQUEST_TIMEOUT, async {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the gateway");
        exchange(stream, addr, method, path, body).await
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no reply within {REQUEST_TIMEOUT:?}"))
}

/// A client side of HTTPS to the gateway: trusts one CA, and presents a
/// client certificate or none.
#[derive(Clone)]
pub struct Https {
    connector: tokio_rustls::TlsConnector,
}

impl Https {
    /// Trusts `ca`; presents `identity` (a certificate and its key) if given.
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in meridian::certs::load_certs(ca).expect("CA file") {
            roots.add(cert).expect("CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    meridian::certs::load_certs(cert).expect("certificate"),
                    meridian::certs::load_key(key).expect("key"),
                )
                .expect("certificate and key"),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Https {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// Trusts `certs_dir/ca.pem` and presents `certs_dir/NAME.pem` (the
    /// layout of `meridian certs` and `meridian dev`).
    pub fn with_cert(certs_dir: &Path, name: &str) -> Https {
        Https::new(
            &certs_dir.join("ca.pem"),
            Some((
                &certs_dir.join(format!("{name}.pem")),
                &certs_dir.join(format!("{name}.key")),
            )),
        )
    }

    /// One request over HTTPS; an error when the connection or the TLS
    /// handshake fails (a refused certificate) or no reply comes within
    /// [`REQUEST_TIMEOUT`].
    pub async fn try_request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let attempt = async {
            let tcp = TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut tls = self.connector.connect(name, tcp).await?;
            // TLS 1.3 client certificates are checked after the client's
            // handshake is done: a refusal arrives as an alert on the first
            // read, so probe with the request itself.
            let head = request_head(addr, method, path, body.len());
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(body).await?;
            tls.flush().await?;
            let mut raw = Vec::new();
            match tls.read_to_end(&mut raw).await {
                Ok(_) => {}
                // Servers close TLS without close_notify sometimes; a reply
                // already read is the answer.
                Err(e) if !raw.is_empty() => eprintln!("read ended with {e}"),
                Err(e) => return Err(e),
            }
            Ok(parse_reply(&raw))
        };
        timeout(REQUEST_TIMEOUT, attempt).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{method} {path}: no reply within {REQUEST_TIMEOUT:?}"),
            ))
        })
    }

    /// [`Https::try_request`] that must get a reply.
    pub async fn request(&self, addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
        self.try_request(addr, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} over HTTPS: {e}"))
    }
}

fn request_head(addr: SocketAddr, method: &str, path: &str, len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    )
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Reply {
    let head = request_head(addr, method, path, body.len());
    // The server may answer (413) and close before it has read a large
    // body; then these writes fail, and the reply is what the test checks.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the reply (unread request body) ends the read.
            Err(e) if !raw.is_empty() => {
                eprintln!("read ended with {e} after {} bytes", raw.len());
                break;
            }
            Err(e) => panic!("{method} {path}: read failed: {e}"),
        }
    }
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("headers are ASCII");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size is ASCII");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}
