//! `wss://`: what the TLS client trusts and presents, checked once at start (a bad CA or
//! key file is an error before any connection opens), and a fresh rustls `ClientConfig`
//! per worker, so each worker's session cache is its own (no lock shared between cores).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::Target;

/// Session tickets a worker keeps for resumption (`--tls-resume`).
const SESSIONS_PER_WORKER: usize = 4096;

/// The crypto of every TLS client here: *ring*, which builds anywhere without a C
/// toolchain's extras and is what the servers use too, so handshake costs compare. rustls
/// 0.23.48 deprecated it for lacking post-quantum key exchange; the X25519 and P-256 it has
/// are what today's servers negotiate.
#[allow(deprecated)]
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS side of a run.
#[derive(Clone)]
pub struct TlsClient {
    /// Server certificates are not checked (`--insecure`, said in the report).
    pub insecure: bool,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// Resume sessions on reconnect (`--tls-resume`).
    pub resume: bool,
    /// Where the trusted roots came from: `system (N)` or the `--ca` path.
    pub roots_from: String,
    roots: Arc<RootCertStore>,
    client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("insecure", &self.insecure)
            .field("server_name", &self.server_name)
            .field("resume", &self.resume)
            .field("roots_from", &self.roots_from)
            .field("client_cert", &self.client_auth.is_some())
            .finish()
    }
}

/// The TLS options of `run`, `ceiling` (through its agents' run arguments) and `doctor`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// wss://: accept any server certificate (the handshake's signatures are still
    /// checked). Said in the report.
    #[arg(long, help_heading = "TLS (wss://)")]
    pub insecure: bool,

    /// wss://: trust the CA certificates in this PEM file instead of the system's roots.
    #[arg(long, value_name = "FILE", help_heading = "TLS (wss://)")]
    pub ca: Option<PathBuf>,

    /// wss://: the server name sent (SNI) and checked against its certificate (default:
    /// the URL's host).
    #[arg(long, value_name = "NAME", help_heading = "TLS (wss://)")]
    pub sni: Option<String>,

    /// wss://: present this certificate chain (PEM) to servers that ask for one.
    #[arg(long, value_name = "FILE", help_heading = "TLS (wss://)")]
    pub client_cert: Option<PathBuf>,

    /// wss://: the private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", help_heading = "TLS (wss://)")]
    pub client_key: Option<PathBuf>,

    /// wss://: resume TLS sessions (tickets) on reconnect; the report counts resumed and
    /// full handshakes.
    #[arg(long, help_heading = "TLS (wss://)")]
    pub tls_resume: bool,
}

impl TlsArgs {
    /// The same options as command-line words (for `ceiling`'s agents).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        let path = |p: &PathBuf| p.display().to_string();
        let flags = [
            (self.insecure, "--insecure"),
            (self.tls_resume, "--tls-resume"),
        ];
        v.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
        let valued = [
            ("--ca", self.ca.as_ref().map(path)),
            ("--sni", self.sni.clone()),
            ("--client-cert", self.client_cert.as_ref().map(path)),
            ("--client-key", self.client_key.as_ref().map(path)),
        ];
        for (flag, value) in valued {
            if let Some(x) = value {
                v.push(flag.to_string());
                v.push(x);
            }
        }
        v
    }

    /// The TLS client of a `wss://` target; TLS options with a `ws://` one are refused.
    pub fn client_for(&self, target: &Target, url: &str) -> Result<Option<TlsClient>, String> {
        if target.tls {
            return TlsClient::new(self, &target.host).map(Some);
        }
        let given = [
            (self.insecure, "--insecure"),
            (self.ca.is_some(), "--ca"),
            (self.sni.is_some(), "--sni"),
            (self.client_cert.is_some(), "--client-cert"),
            (self.client_key.is_some(), "--client-key"),
            (self.tls_resume, "--tls-resume"),
        ];
        match given.iter().find(|g| g.0) {
            Some((_, flag)) => Err(format!("{flag} needs a wss:// URL ({url} is ws://)")),
            None => Ok(None),
        }
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsClient {
    /// Checks the options for a server named `host` (the URL's host).
    pub fn new(o: &TlsArgs, host: &str) -> Result<Self, String> {
        let provider = Arc::new(provider());
        let name = o.sni.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("--sni {name:?} is not a DNS name or IP address"))?;
        let mut roots = RootCertStore::empty();
        let roots_from = match &o.ca {
            Some(p) => {
                for c in read_certs(p, "--ca")? {
                    roots
                        .add(c)
                        .map_err(|e| format!("--ca {}: {e}", p.display()))?;
                }
                p.display().to_string()
            }
            None if o.insecure => "none (--insecure)".into(),
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "no trusted root certificates on this system (install ca-certificates, \
                         or give --ca FILE, or --insecure)"
                            .into(),
                    );
                }
                format!("system ({added})")
            }
        };
        let client_auth = match (&o.client_cert, &o.client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let certs = read_certs(c, "--client-cert")?;
                let key = PrivateKeyDer::from_pem_file(k)
                    .map_err(|e| format!("--client-key {}: {e}", k.display()))?;
                Some((certs, Arc::new(key)))
            }
            _ => return Err("--client-cert and --client-key go together".into()),
        };
        let t = Self {
            insecure: o.insecure,
            server_name,
            resume: o.tls_resume,
            roots_from,
            roots: Arc::new(roots),
            client_auth,
            provider,
        };
        t.config()?; // a key that does not match its certificate is refused here
        Ok(t)
    }

    /// Whether a client certificate is presented.
    pub fn has_client_cert(&self) -> bool {
        self.client_auth.is_some()
    }

    /// A fresh client configuration (one per worker: its own session cache).
    pub fn config(&self) -> Result<Arc<ClientConfig>, String> {
        self.config_with_resumption(self.resume)
    }

    /// A fresh client configuration that does (or does not) resume sessions.
    pub fn config_with_resumption(&self, resume: bool) -> Result<Arc<ClientConfig>, String> {
        let b = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(self.roots.clone());
        let mut c = match &self.client_auth {
            Some((certs, key)) => b
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| format!("--client-cert/--client-key: {e}"))?,
            None => b.with_no_client_auth(),
        };
        c.resumption = if resume {
            Resumption::in_memory_sessions(SESSIONS_PER_WORKER)
        } else {
            Resumption::disabled()
        };
        if self.insecure {
            c.dangerous()
                .set_certificate_verifier(Arc::new(AnyCertificate(self.provider.clone())));
        }
        Ok(Arc::new(c))
    }
}

/// `--insecure`: any certificate is accepted, but the handshake's signatures are still
/// checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
