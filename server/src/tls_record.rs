//! TLS records after the handshake, sealed and opened by us with the keys rustls hands over.
//!
//! Once a connection's handshake is done, rustls gives up its record layer
//! (`dangerous_into_kernel_connection`, the API made for kTLS): we get the traffic keys and
//! sequence numbers, and rustls keeps only what computes new keys on a TLS 1.3 KeyUpdate.
//! That is what makes an idle TLS connection small (two AEAD keys and two counters, no
//! buffered library state) and a message cheap (records are opened in place in the
//! receive buffer, no copy into a library buffer, no allocation). It is also exactly where
//! kernel TLS would take over: the same keys and counters go to `setsockopt(SOL_TLS,
//! TLS_TX/TLS_RX)` and the record work leaves user space (not on this kernel: no CONFIG_TLS).
//!
//! Record formats (RFC 8446 §5.2, RFC 5288 §3, RFC 7905 §2): TLS 1.3 seals `data ‖ type`
//! under nonce `iv ⊕ seq` with the record header as associated data; TLS 1.2 AES-GCM carries
//! an explicit 8-byte nonce after the header, and both 1.2 suites authenticate
//! `seq ‖ type ‖ version ‖ length`.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ConnectionTrafficSecrets, Error, PeerMisbehaved, ProtocolVersion};

const HEADER: usize = 5;
const TAG: usize = 16;
/// Largest plaintext per record (RFC 8446 §5.1).
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Largest ciphertext a peer may send: plaintext + 256 (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;

/// One direction's key, IV and sequence number.
pub struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Keys, Error> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => {
                return Err(Error::General(
                    "cipher suite without a record layer here".into(),
                ))
            }
        };
        let key = UnboundKey::new(alg, key.as_ref())
            .map_err(|_| Error::General("traffic key refused".into()))?;
        let mut v = [0u8; 12];
        let iv = iv.as_ref();
        if iv.len() != 12 {
            return Err(Error::General("traffic IV of unexpected length".into()));
        }
        v.copy_from_slice(iv);
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv: v,
            seq,
        })
    }

    /// `iv ⊕ seq` (the sequence number right-aligned), and the number used up.
    fn next_nonce(&mut self) -> Result<[u8; 12], Error> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(Error::EncryptError)?;
        Ok(n)
    }
}

/// What opening a run of records found besides application data.
#[derive(Debug, Default, Clone, Copy)]
pub struct Opened {
    /// close_notify arrived: no data after it.
    pub peer_closed: bool,
    /// Bytes of `buf` consumed (whole records); the rest is a record still arriving.
    pub used: usize,
}

/// The record layer of an established connection.
pub struct Traffic {
    kernel: KernelConnection<ServerConnectionData>,
    tx: Keys,
    rx: Keys,
    tls13: bool,
    /// TLS 1.2 AES-GCM: an explicit 8-byte nonce follows each record header.
    explicit_nonce: bool,
    /// Records we may seal under one key before it must change (AES-GCM's limit).
    limit: u64,
    peer_closed: bool,
}

impl Traffic {
    pub fn new(
        secrets: rustls::ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Traffic, Error> {
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let explicit_nonce = !tls13
            && !matches!(
                secrets.tx.1,
                ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
            );
        let limit = match kernel.negotiated_cipher_suite() {
            rustls::SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            rustls::SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        Ok(Traffic {
            tx: Keys::new(secrets.tx.0, secrets.tx.1)?,
            rx: Keys::new(secrets.rx.0, secrets.rx.1)?,
            kernel,
            tls13,
            explicit_nonce,
            limit,
            peer_closed: false,
        })
    }

    /// Opens the whole records at the front of `buf` in place, appending their application
    /// data to `plain`; a KeyUpdate that asks for ours is answered into `out`.
    pub fn open(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<Opened, Error> {
        let mut at = 0;
        let mut opened = Opened::default();
        while buf.len() - at >= HEADER {
            let typ = buf[at];
            let len = u16::from_be_bytes([buf[at + 3], buf[at + 4]]) as usize;
            if len > MAX_CIPHERTEXT {
                return Err(Error::PeerSentOversizedRecord);
            }
            if buf.len() - at < HEADER + len {
                break;
            }
            if self.peer_closed {
                at = buf.len(); // nothing after close_notify counts
                break;
            }
            let record = &mut buf[at..at + HEADER + len];
            at += HEADER + len;
            let (typ, content) = self.open_one(typ, record)?;
            match typ {
                APPLICATION_DATA => plain.extend_from_slice(content),
                ALERT => {
                    if content.len() != 2 {
                        return Err(Error::PeerMisbehaved(
                            PeerMisbehaved::IllegalTlsInnerPlaintext,
                        ));
                    }
                    let desc = AlertDescription::from(content[1]);
                    if desc == AlertDescription::CloseNotify {
                        self.peer_closed = true;
                        opened.peer_closed = true;
                    } else if content[0] == 2 || self.tls13 {
                        // TLS 1.3 treats every alert but close_notify as fatal.
                        return Err(Error::AlertReceived(desc));
                    }
                }
                HANDSHAKE if self.tls13 => {
                    let content = content.to_vec();
                    self.on_handshake(&content, out, out_len)?
                }
                // Renegotiation (1.2) and anything else: refused.
                _ => {
                    return Err(Error::InappropriateMessage {
                        expect_types: vec![rustls::ContentType::ApplicationData],
                        got_type: rustls::ContentType::from(typ),
                    })
                }
            }
        }
        opened.used = at;
        Ok(opened)
    }

    /// Opens one record in place: its content type and content.
    fn open_one<'a>(&mut self, typ: u8, record: &'a mut [u8]) -> Result<(u8, &'a [u8]), Error> {
        let (header, body) = record.split_at_mut(HEADER);
        let nonce_bytes = self.rx.next_nonce()?;
        if self.tls13 {
            if typ != APPLICATION_DATA {
                return Err(Error::PeerMisbehaved(
                    PeerMisbehaved::IllegalTlsInnerPlaintext,
                ));
            }
            let aad = Aad::from([header[0], header[1], header[2], header[3], header[4]]);
            let p = self
                .rx
                .key
                .open_in_place(Nonce::assume_unique_for_key(nonce_bytes), aad, body)
                .map_err(|_| Error::DecryptError)?;
            // The real content type is the last non-zero byte (zeros are padding).
            let end = p
                .iter()
                .rposition(|b| *b != 0)
                .ok_or(Error::PeerMisbehaved(
                    PeerMisbehaved::IllegalTlsInnerPlaintext,
                ))?;
            let inner = p[end];
            return Ok((inner, &p[..end]));
        }
        let seq = self.rx.seq - 1;
        let (nonce, body) = if self.explicit_nonce {
            if body.len() < 8 + TAG {
                return Err(Error::DecryptError);
            }
            let (explicit, rest) = body.split_at_mut(8);
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(&self.rx.iv[..4]);
            n[4..].copy_from_slice(explicit);
            (n, rest)
        } else {
            (nonce_bytes, body)
        };
        if body.len() < TAG {
            return Err(Error::DecryptError);
        }
        let aad = tls12_aad(seq, typ, body.len() - TAG);
        let p = self
            .rx
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| Error::DecryptError)?;
        Ok((typ, p))
    }

    /// A TLS 1.3 post-handshake message from the client: only KeyUpdate is expected.
    fn on_handshake(
        &mut self,
        msg: &[u8],
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<(), Error> {
        if msg.len() != 5 || msg[0] != KEY_UPDATE || msg[1..4] != [0, 0, 1] || msg[4] > 1 {
            return Err(Error::PeerMisbehaved(
                PeerMisbehaved::IllegalTlsInnerPlaintext,
            ));
        }
        let (seq, secrets) = self.kernel.update_rx_secret()?;
        self.rx = Keys::new(seq, secrets)?;
        if msg[4] == 1 {
            self.update_tx(out, out_len)?;
        }
        Ok(())
    }

    /// Sends KeyUpdate(update_not_requested) under the current key, then moves to the next.
    fn update_tx(&mut self, out: &mut Vec<u8>, out_len: &mut usize) -> Result<(), Error> {
        self.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out, out_len)?;
        let (seq, secrets) = self.kernel.update_tx_secret()?;
        self.tx = Keys::new(seq, secrets)?;
        Ok(())
    }

    /// Seals `data` as application data records into `out` from `*out_len` on.
    pub fn seal(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<(), Error> {
        // Each record makes its own room in `out` (seal_record).
        for chunk in data.chunks(MAX_FRAGMENT) {
            self.seal_record(APPLICATION_DATA, chunk, out, out_len)?;
        }
        Ok(())
    }

    pub fn close_notify(&mut self, out: &mut Vec<u8>, out_len: &mut usize) -> Result<(), Error> {
        self.seal_record(ALERT, &[1, 0], out, out_len)
    }

    fn seal_record(
        &mut self,
        typ: u8,
        data: &[u8],
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<(), Error> {
        if self.tx.seq >= self.limit {
            if self.tls13 && typ != HANDSHAKE {
                self.update_tx(out, out_len)?;
            } else if !self.tls13 {
                return Err(Error::EncryptError);
            }
        }
        let seq = self.tx.seq;
        let nonce = self.tx.next_nonce()?;
        let start = *out_len;
        let (body_len, explicit) = if self.tls13 {
            (data.len() + 1 + TAG, 0)
        } else if self.explicit_nonce {
            (8 + data.len() + TAG, 8)
        } else {
            (data.len() + TAG, 0)
        };
        let end = start + HEADER + body_len;
        if out.len() < end {
            out.resize(end, 0);
        }
        let rec = &mut out[start..end];
        let outer = if self.tls13 { APPLICATION_DATA } else { typ };
        let len = (body_len as u16).to_be_bytes();
        rec[..HEADER].copy_from_slice(&[outer, 3, 3, len[0], len[1]]);
        let (header, body) = rec.split_at_mut(HEADER);
        let (prefix, body) = body.split_at_mut(explicit);
        prefix.copy_from_slice(&nonce[4..4 + explicit]);
        let text = data.len() + usize::from(self.tls13);
        let (text_part, tag_part) = body.split_at_mut(text);
        text_part[..data.len()].copy_from_slice(data);
        if self.tls13 {
            text_part[data.len()] = typ;
        }
        let mut aad = [0u8; 13];
        let aad_len = if self.tls13 {
            aad[..HEADER].copy_from_slice(header);
            HEADER
        } else {
            aad = tls12_aad(seq, typ, data.len());
            13
        };
        let aad = Aad::from(&aad[..aad_len]);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), aad, text_part)
            .map_err(|_| Error::EncryptError)?;
        tag_part.copy_from_slice(tag.as_ref());
        *out_len = end;
        Ok(())
    }
}

fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9] = 3;
    a[10] = 3;
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}
