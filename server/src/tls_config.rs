//! TLS settings shared by both servers: the certificate and key from `--tls-cert` and
//! `--tls-key`, the rustls `ServerConfig` built from them (the same suites, key and tickets
//! for ws-server and the tokio baseline, so their figures compare), the session-ticket key,
//! and the names under which TLS failures are counted.
//!
//! Resumption uses stateless tickets sealed with one key made at start-up: any core can
//! open a ticket another core issued, with no session cache, lock or shared map (rustls's
//! own rotating ticketer takes a lock per ticket). The key lives as long as the process,
//! so a restart invalidates every ticket; tickets are advertised for 6 hours.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::{AlertDescription, Error, ServerConfig};

/// The certificate chain and key, read once at start-up.
#[derive(Debug)]
pub struct TlsFiles {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsFiles {
    fn clone(&self) -> Self {
        TlsFiles {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsFiles {
    /// Reads a PEM chain and a PEM key (PKCS#8, PKCS#1 or SEC1), with errors naming the file.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("--tls-cert {}: {}", cert.display(), pem_error(&e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--tls-cert {}: {}", cert.display(), pem_error(&e)))?;
        if chain.is_empty() {
            return Err(format!(
                "--tls-cert {}: no CERTIFICATE block in the file (PEM expected)",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {}", key.display(), pem_error(&e)))?;
        Ok(TlsFiles { chain, key })
    }
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        E::NoItemsFound => "no PEM block of the expected kind in the file".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// `--tls-cert`/`--tls-key` as a server configuration (None: plain ws://), with errors that
/// name the flag and the file.
pub fn from_cli(cfg: &crate::cli::Config) -> Result<Option<ServerConfig>, String> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles::load(cert, key)?;
    server_config(&files, Tickets::new()?).map(Some)
}

/// The server configuration both binaries use. `tickets` is shared by every core (and by
/// both listeners of a process), so a ticket from one connection resumes on any core.
pub fn server_config(
    files: &TlsFiles,
    tickets: Arc<dyn ProducesTickets>,
) -> Result<ServerConfig, String> {
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(files.chain.clone(), files.key.clone_key())
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    cfg.ticketer = tickets;
    // One ticket per full handshake: enough to resume once, half the sealing work.
    cfg.send_tls13_tickets = 1;
    // ws-server takes the records over after the handshake (tls_record.rs; where kTLS would).
    cfg.enable_secret_extraction = true;
    Ok(cfg)
}

/// Stateless session tickets: ChaCha20-Poly1305 under a key made at start-up.
///
/// A ticket is `nonce ‖ sealed`. Nonces never repeat under the key: each thread takes a
/// distinct 32-bit prefix the first time it seals, and counts the remaining 64 bits.
#[derive(Debug)]
pub struct Tickets {
    key: LessSafeKey,
}

impl Tickets {
    pub fn new() -> Result<Arc<Tickets>, String> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| "no randomness for the session-ticket key".to_string())?;
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &k)
            .map_err(|_| "session-ticket key refused".to_string())?;
        Ok(Arc::new(Tickets {
            key: LessSafeKey::new(key),
        }))
    }
}

static NEXT_PREFIX: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static NONCE: std::cell::Cell<(u32, u64)> = const { std::cell::Cell::new((u32::MAX, 0)) };
}

fn next_nonce() -> [u8; NONCE_LEN] {
    let (prefix, n) = NONCE.with(|c| {
        let (mut p, n) = c.get();
        if p == u32::MAX {
            p = NEXT_PREFIX.fetch_add(1, Ordering::Relaxed);
        }
        c.set((p, n + 1));
        (p, n)
    });
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(&prefix.to_be_bytes());
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        6 * 3600
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let nonce = next_nonce();
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + aead::MAX_TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut out[NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&cipher[..NONCE_LEN]).ok()?;
        let mut body = cipher[NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::empty(), &mut body)
            .ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }
}

/// Why a TLS handshake or connection failed, as counted by `ws_tls_failures_total{reason}`.
pub const TLS_FAILURES: [&str; 10] = [
    "not_tls",
    "alert_unknown_ca",
    "alert_bad_certificate",
    "alert_other",
    "incompatible",
    "decrypt",
    "protocol",
    "timeout",
    "eof",
    "other",
];

/// Index into [`TLS_FAILURES`] by name.
pub fn failure_index(name: &str) -> usize {
    TLS_FAILURES
        .iter()
        .position(|n| *n == name)
        .unwrap_or(TLS_FAILURES.len() - 1)
}

/// The class of a rustls error: a client that does not trust our certificate says so with
/// an alert (`alert_unknown_ca`, or `alert_bad_certificate` for a name mismatch); bytes that
/// are not TLS at all (plain HTTP on a wss port) are `not_tls`.
pub fn classify(e: &Error) -> &'static str {
    match e {
        Error::AlertReceived(AlertDescription::UnknownCA) => "alert_unknown_ca",
        Error::AlertReceived(AlertDescription::BadCertificate)
        | Error::AlertReceived(AlertDescription::CertificateUnknown) => "alert_bad_certificate",
        Error::AlertReceived(_) => "alert_other",
        Error::InvalidMessage(_) => "not_tls",
        Error::PeerIncompatible(_) | Error::NoCertificatesPresented => "incompatible",
        Error::DecryptError => "decrypt",
        Error::PeerMisbehaved(_) | Error::InappropriateMessage { .. } => "protocol",
        Error::InappropriateHandshakeMessage { .. } => "protocol",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_open_what_they_seal_and_nothing_else() {
        let t = Tickets::new().unwrap();
        let a = t.encrypt(b"session state").unwrap();
        let b = t.encrypt(b"session state").unwrap();
        assert_ne!(a, b, "nonces repeat");
        assert_eq!(t.decrypt(&a).as_deref(), Some(&b"session state"[..]));
        let mut forged = a.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(t.decrypt(&forged), None);
        assert_eq!(t.decrypt(&a[..10]), None);
        let other = Tickets::new().unwrap();
        assert_eq!(other.decrypt(&a), None);
    }

    #[test]
    fn failures_have_names() {
        assert_eq!(
            classify(&Error::AlertReceived(AlertDescription::UnknownCA)),
            "alert_unknown_ca"
        );
        assert_eq!(TLS_FAILURES[failure_index("timeout")], "timeout");
        assert_eq!(failure_index("nonsense"), TLS_FAILURES.len() - 1);
    }
}
