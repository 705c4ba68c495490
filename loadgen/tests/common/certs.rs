//! Certificates made fresh for each test (rcgen): a CA, a server certificate for
//! localhost and 127.0.0.1 signed by it, a client certificate signed by it, and a second
//! CA nobody trusts. Written as PEM files into a temporary directory; nothing is committed.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).expect("CA certificate"), key)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write PEM");
    p
}

impl Certs {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("cert dir");
        let (ca_cert, ca_key) = ca("ws-ceiling test CA");
        let (other, _) = ca("a CA nobody trusts");
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("leaf key");
            let mut p = CertificateParams::new(names).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p
                .signed_by(&key, &ca_cert, &ca_key)
                .expect("leaf certificate");
            (cert, key)
        };
        let (srv, srv_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let (cli, cli_key) = leaf(vec!["client.test".into()], "ws-loadgen test client");
        Self {
            ca: write(dir, "ca.pem", &ca_cert.pem()),
            server_cert: write(dir, "server.pem", &srv.pem()),
            server_key: write(dir, "server.key", &srv_key.serialize_pem()),
            client_cert: write(dir, "client.pem", &cli.pem()),
            client_key: write(dir, "client.key", &cli_key.serialize_pem()),
            other_ca: write(dir, "other-ca.pem", &other.pem()),
            dir: dir.to_path_buf(),
        }
    }
}
