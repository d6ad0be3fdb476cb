//! HTTPS end to end, with certificates made at test time: curl and reqwest read and write
//! through a server configured with `[tls]`, trusting only the test's own authority, and the
//! remote and s3 tiers reach their upstream over HTTPS when their `ca_file` names that
//! authority (and refuse to when it does not).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use common::{S3, Server, data, disk_only, eventually, memory_tier, sha256, tempdir};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Runs curl with `args`, failing the test if curl cannot start.
fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(args).output().expect("run curl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_reqwest_read_and_write_over_https() {
    let certs = tempdir();
    let pki = Pki::make(&certs);
    let server =
        Server::start_with(|dir| format!("{}\n{}", pki.tls_table(), memory_and_disk_tiers(dir)));
    assert!(
        server.base.starts_with("https://"),
        "the server says it serves HTTPS: {}",
        server.base
    );
    let url = server.object("tls", "hello");
    let ca = pki.ca.to_str().unwrap();

    // curl, trusting the test's authority: a write, then a ranged read.
    let body = certs.join("body");
    std::fs::write(&body, b"Hello, encrypted world!").unwrap();
    let data_arg = format!("@{}", body.display());
    let put =
        curl(&["-sS", "--fail", "--cacert", ca, "-X", "PUT", "--data-binary", &data_arg, &url]);
    assert!(put.status.success(), "curl PUT over HTTPS: {put:?}\n{}", server.log());
    let get = curl(&["-sS", "--fail", "--cacert", ca, "-H", "Range: bytes=7-15", "-D", "-", &url]);
    assert!(get.status.success(), "curl GET over HTTPS: {get:?}");
    let answer = String::from_utf8_lossy(&get.stdout);
    assert!(answer.starts_with("HTTP/1.1 206"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-range: bytes 7-15/23"), "{answer}");
    assert!(answer.ends_with("encrypted"), "{answer}");

    // curl without the authority refuses the certificate (exit 60: peer certificate cannot be
    // authenticated), so the test above proves verification, not its absence.
    let untrusted = curl(&["-sS", "-o", "/dev/null", &url]);
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    // A plain HTTP request to the TLS port gets no HTTP answer.
    let plain =
        curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url.replace("https", "http")]);
    assert!(!plain.status.success(), "plain HTTP to a TLS port: {plain:?}");

    // reqwest (rustls), trusting the authority alone: a large object both ways.
    let client = pki.client();
    let big = data(3 << 20, 1);
    let response = client.put(server.object("tls", "big")).body(big.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client.get(server.object("tls", "big")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11, "ALPN offers HTTP/1.1 only");
    assert_eq!(sha256(&response.bytes().await.unwrap()), sha256(&big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rangecache_get_downloads_over_https_with_its_ca_file_and_refuses_without() {
    let certs = tempdir();
    let pki = Pki::make(&certs);
    let server =
        Server::start_with(|dir| format!("{}\n{}", pki.tls_table(), memory_and_disk_tiers(dir)));
    let url = server.object("tls", "download");
    let big = data(20 << 20, 7);
    let response = pki.client().put(&url).body(big.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let get = |out: &std::path::Path, ca: Option<&std::path::Path>| {
        let mut command = Command::new(common::binary());
        command.args(["get", &url, "-o"]).arg(out);
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        command.output().expect("run rangecache get")
    };
    // With the authority: the whole object, in parallel parts over TLS.
    let out = certs.join("download.bin");
    let trusted = get(&out, Some(&pki.ca));
    assert!(trusted.status.success(), "{trusted:?}\n{}", server.log());
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&big));
    // Without it, the certificate is refused and nothing is written.
    let refused = certs.join("refused.bin");
    let untrusted = get(&refused, None);
    assert!(!untrusted.status.success(), "{untrusted:?}");
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.to_ascii_lowercase().contains("certificate"), "{stderr}");
    assert!(!refused.exists(), "a refused download wrote {}", refused.display());
    // A file that holds no certificate is a clear error too.
    let garbage = get(&refused, Some(&certs.join("download.bin")));
    assert!(!garbage.status.success(), "{garbage:?}");
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("download.bin"), "{garbage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_tier_reaches_its_upstream_over_https_with_its_ca_file() {
    let certs = tempdir();
    let pki = Pki::make(&certs);
    let upstream = Server::start_with(|dir| format!("{}\n{}", pki.tls_table(), disk_only(dir)));
    let remote = |ca_file: Option<&str>| {
        let ca_file = ca_file.map(|path| format!("ca_file = \"{path}\"\n")).unwrap_or_default();
        format!(
            "{}\n[[tier]]\nname = \"upstream\"\nkind = \"remote\"\nurl = \"{}\"\n{ca_file}",
            memory_tier("64MiB"),
            upstream.base
        )
    };
    let front = Server::start(&remote(Some(pki.ca.to_str().unwrap())));
    eventually("the front server to be ready", Duration::from_secs(20), || async {
        common::client().get(front.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;

    // A write through the front server lands upstream, over HTTPS.
    let body = data(200_000, 2);
    let etag = common::put(&front.object("chain", "one"), body.clone()).await;
    let upstream_client = pki.client();
    let response = upstream_client.get(upstream.object("chain", "one")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.bytes().await.unwrap(), body);

    // A read the front server does not hold comes from upstream and is copied into memory.
    let other = data(100_000, 3);
    let response = upstream_client
        .put(upstream.object("chain", "two"))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = common::client().get(front.object("chain", "two")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-status"].to_str().unwrap(),
        "upstream; hit, memory; fwd=uri-miss; stored"
    );
    assert_eq!(response.bytes().await.unwrap(), other);

    // Without the CA file the upstream's certificate is refused: the front server never
    // becomes ready, says why, and a read is not served from the upstream.
    let untrusting = Server::start(&remote(None));
    eventually("the probe to fail on the certificate", Duration::from_secs(20), || async {
        untrusting.log().lines().any(|line| {
            line.contains("tier failed its readiness probe") && line.contains("UnknownIssuer")
        })
    })
    .await;
    let response = common::client().get(untrusting.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503, "{}", untrusting.log());
    let response = common::client().get(untrusting.object("chain", "two")).send().await.unwrap();
    assert_ne!(response.status(), 200, "{}", untrusting.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_tier_reaches_its_endpoint_over_https_with_its_ca_file() {
    let certs = tempdir();
    let pki = Pki::make(&certs);
    let s3 = S3::get();
    let front = TlsFront::start(s3.endpoint.trim_start_matches("http://").parse().unwrap(), &pki);
    let prefix = format!("tls-{}/", fastrand::u64(..));
    let config = |ca_file: Option<&std::path::Path>| {
        let ca_file =
            ca_file.map(|path| format!("ca_file = \"{}\"\n", path.display())).unwrap_or_default();
        format!(
            "{}\n[[tier]]\nname = \"shared\"\nkind = \"s3\"\nbucket = \"{}\"\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\nprefix = \"{prefix}\"\n{ca_file}",
            memory_tier("64MiB"),
            s3.bucket,
            front.base
        )
    };
    let server = Server::start_with_env(&config(Some(&pki.ca)), &s3.env);
    eventually("the server to be ready", Duration::from_secs(20), || async {
        common::client().get(server.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    let body = data(150_000, 4);
    let etag = common::put(&server.object("s3tls", "one"), body.clone()).await;
    // Memory's copy dropped, the read comes from S3, through the TLS front.
    let response =
        common::client().post(server.url("/api/v1/object/s3tls/one/invalidate")).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let response = common::client().get(server.object("s3tls", "one")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache_status = response.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(cache_status.starts_with("shared; hit"), "{cache_status}");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.bytes().await.unwrap(), body);
    assert!(front.connections() > 0, "the tier went through the TLS front");

    // Without the CA file, the endpoint's certificate is refused.
    let untrusting = Server::start_with_env(&config(None), &s3.env);
    eventually("the probe of the s3 tier to fail", Duration::from_secs(20), || async {
        untrusting.log().lines().any(|line| {
            line.contains("tier failed its readiness probe")
                && line.contains("tier=\"shared\"")
                && line.contains("UnknownIssuer")
        })
    })
    .await;
    let response = common::client().get(untrusting.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503, "{}", untrusting.log());
}

/// A TLS front for a plain-HTTP server (here the S3-compatible one), with the test's
/// certificate: each connection's TLS is ended here and its bytes passed on as they are.
struct TlsFront {
    base: String,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    fn start(upstream: SocketAddr, pki: &Pki) -> TlsFront {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&pki.cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        TlsFront { base, connections, task }
    }

    /// Connections whose handshake succeeded.
    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A memory tier and a disk tier under `dir`.
fn memory_and_disk_tiers(dir: &std::path::Path) -> String {
    format!("{}\n{}", memory_tier("64MiB"), disk_only(dir))
}
