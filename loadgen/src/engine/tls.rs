//! TLS on a slot, sans-I/O: rustls turns the ciphertext the worker reads into plaintext for
//! the frame parser, and the plaintext the worker sends into records for the socket. It
//! never touches the socket itself, so the epoll loop, the send queue (`wbuf` holds
//! ciphertext), receive timestamps and ticks work over TLS exactly as over TCP.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, HandshakeKind};

pub struct Tls {
    conn: ClientConnection,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

/// Plaintext read out of rustls per call.
const CHUNK: usize = 16 * 1024;

impl Tls {
    pub fn new(config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Box<Self>, String> {
        ClientConnection::new(config, name)
            .map(|conn| Box::new(Self { conn }))
            .map_err(|e| class(&e))
    }

    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// Feeds ciphertext and appends the plaintext it yields to `plain`; `Err` is the
    /// failure class (`tls_unknown_issuer`, `tls_alert_handshake_failure`, ...).
    pub fn receive(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), String> {
        while !data.is_empty() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break, // close_notify seen: the server's EOF follows
                Ok(_) => {}
                Err(e) => return Err(format!("tls_{}", io_class(&e))),
            }
            let state = self.conn.process_new_packets().map_err(|e| class(&e))?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let at = plain.len();
                plain.resize(at + left.min(CHUNK), 0);
                match self.conn.reader().read(&mut plain[at..]) {
                    Ok(n) => {
                        plain.truncate(at + n);
                        left = left.saturating_sub(n);
                        if n == 0 {
                            break;
                        }
                    }
                    Err(_) => {
                        plain.truncate(at);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Seals `data` into records appended to `out`.
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // The writer buffers without limit before the handshake is done and encrypts at
        // once after it; neither can fail.
        let _ = self.conn.writer().write_all(data);
        self.records(out);
    }

    /// Appends the records rustls wants to send (handshake messages, alerts, sealed data).
    pub fn records(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// A close_notify alert for a clean end.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.records(out);
    }
}

fn io_class(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::InvalidData => "record_too_large",
        _ => "buffer_full",
    }
}

/// `AlertDescription::HandshakeFailure` → `handshake_failure`.
fn snake(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        } else if ch.is_ascii_alphanumeric() {
            s.push(ch);
        }
    }
    s
}

/// The failure class of a rustls error, named for what a person would check first.
pub fn class(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "tls_unknown_issuer".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "tls_name_mismatch".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "tls_certificate_expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "tls_certificate_not_yet_valid".into()
            }
            CertificateError::Revoked => "tls_certificate_revoked".into(),
            _ => "tls_bad_certificate".into(),
        },
        E::AlertReceived(a) => alert_class(*a),
        E::NoCertificatesPresented => "tls_no_certificate".into(),
        E::PeerIncompatible(_) => "tls_incompatible".into(),
        E::PeerMisbehaved(_) => "tls_peer_misbehaved".into(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => "tls_invalid_message".into(),
        E::InappropriateHandshakeMessage { .. } => "tls_invalid_message".into(),
        E::DecryptError => "tls_decrypt_error".into(),
        _ => "tls_error".into(),
    }
}

/// `tls_alert_<name>` for an alert the server sent.
pub fn alert_class(a: AlertDescription) -> String {
    format!("tls_alert_{}", snake(&format!("{a:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_read_like_the_cause() {
        assert_eq!(
            alert_class(AlertDescription::HandshakeFailure),
            "tls_alert_handshake_failure"
        );
        assert_eq!(
            alert_class(AlertDescription::BadCertificate),
            "tls_alert_bad_certificate"
        );
        assert_eq!(
            class(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            "tls_unknown_issuer"
        );
        assert_eq!(
            class(&rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName
            )),
            "tls_name_mismatch"
        );
    }
}
