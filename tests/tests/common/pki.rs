//! Certificates made at test time with rcgen: a certificate authority of the test's own, and a
//! server certificate it signed for `localhost` and `127.0.0.1`, so clients verify the server
//! as they would a real one, against a root they were told to trust.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The PEM files of one test's authority and server.
pub struct Pki {
    /// The authority's certificate: what a client trusts (`curl --cacert`, `ca_file`).
    pub ca: PathBuf,
    /// The server's certificate, for `[tls] cert`.
    pub cert: PathBuf,
    /// The server's private key, for `[tls] key`.
    pub key: PathBuf,
}

impl Pki {
    /// Makes an authority and a server certificate, written into `dir`.
    pub fn make(dir: &Path) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.distinguished_name.push(DnType::CommonName, "rangecache test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");

        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate signed by the CA");

        std::fs::create_dir_all(dir).expect("create the certificates' directory");
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&pki.ca, ca.pem()).expect("write the CA");
        std::fs::write(&pki.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&pki.key, key.serialize_pem()).expect("write the key");
        pki
    }

    /// A `[tls]` table serving this server certificate.
    pub fn tls_table(&self) -> String {
        format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", self.cert.display(), self.key.display())
    }

    /// An HTTP client that trusts this authority alone.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("read the CA");
        let ca = reqwest::Certificate::from_pem(&pem).expect("the CA parses");
        reqwest::Client::builder().no_proxy().tls_certs_only([ca]).build().expect("client")
    }
}
