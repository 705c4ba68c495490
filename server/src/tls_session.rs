//! TLS on one connection of a core, sans-I/O, on rustls's unbuffered API.
//!
//! The core hands over the ciphertext the kernel put in a provided receive buffer; rustls
//! decrypts it and the plaintext goes to the handshake or frame loop exactly as bytes read
//! from a plain socket would (through the core's one scratch buffer). Output is sealed into
//! the core's scratch buffer and leaves like any other bytes (so a connection's send queue
//! holds ciphertext). The connection keeps no buffer of its own except the tail of a record
//! split across reads. rustls runs the handshake; once it is done, the records are ours
//! ([`crate::tls_record`]): an idle TLS connection holds two keys, two counters and what
//! rustls needs for a KeyUpdate, and nothing else. How much that is, is measured, not guessed:
//! every call into rustls is bracketed by the thread's allocation counter
//! ([`crate::alloc_count`]), so [`TlsConn::state_bytes`] is what this connection holds.

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{Error, HandshakeKind, ServerConfig};
use std::sync::Arc;

use crate::alloc_count;
use crate::tls_record::Traffic;

/// Where a connection's TLS is: rustls's handshake, or our record layer after it.
/// (Traffic is inline on purpose: the box around the whole `TlsConn` already holds it, and
/// a second allocation would add its own header to every idle connection.)
#[allow(clippy::large_enum_variant)]
enum Stage {
    Handshake(Box<UnbufferedServerConnection>),
    Traffic(Traffic),
    /// Failed or moving between the two.
    Done,
}

pub struct TlsConn {
    stage: Stage,
    /// Ciphertext not yet consumed: a record (or handshake message) split across reads.
    /// No capacity between such reads.
    partial: Vec<u8>,
    /// Heap bytes rustls holds for this connection (measured).
    heap: i64,
}

/// What one call to [`TlsConn::receive`] produced besides plaintext and output records.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    /// The handshake completed in this call; `Some(true)` if it resumed a session.
    pub established: Option<bool>,
    /// The peer sent close_notify: no more data will come.
    pub peer_closed: bool,
}

/// Bytes held by the caller's buffers, to tell their growth from rustls's.
fn held(bufs: &[&Vec<u8>]) -> i64 {
    bufs.iter().map(|b| b.capacity() as i64).sum()
}

/// Makes room for `need` bytes at `at` (the buffer only grows, and is reused).
fn room(out: &mut Vec<u8>, at: usize, need: usize) {
    if out.len() < at + need {
        out.resize(at + need, 0);
    }
}

impl TlsConn {
    pub fn new(config: Arc<ServerConfig>) -> Result<Box<TlsConn>, Error> {
        let before = alloc_count::net();
        let conn = Box::new(UnbufferedServerConnection::new(config)?);
        let heap = alloc_count::net() - before;
        Ok(Box::new(TlsConn {
            stage: Stage::Handshake(conn),
            partial: Vec::new(),
            heap,
        }))
    }

    /// The handshake is done (the records are ours).
    pub fn established(&self) -> bool {
        matches!(self.stage, Stage::Traffic(_))
    }

    /// User-space bytes this connection's TLS costs: its box, rustls's heap, a split record.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<TlsConn>() + self.heap.max(0) as usize + self.partial.capacity()
    }

    /// Feeds ciphertext `data`. Plaintext is appended to `plain`; records to send (handshake
    /// messages, tickets, alerts) are written to `out` from `*out_len` on, which advances.
    pub fn receive(
        &mut self,
        data: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<Received, Error> {
        let before = alloc_count::net();
        let bufs0 = held(&[plain, out, &self.partial]);
        let r = if self.partial.is_empty() {
            match self.process(data, plain, out, out_len) {
                Ok((rx, used)) => {
                    if used < data.len() {
                        self.partial.extend_from_slice(&data[used..]);
                    }
                    Ok(rx)
                }
                Err(e) => Err(e),
            }
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let r = self.process(&mut buf, plain, out, out_len);
            if let Ok((_, used)) = r {
                buf.drain(..used);
                if !buf.is_empty() {
                    self.partial = buf;
                }
            }
            r.map(|(rx, _)| rx)
        };
        self.heap += alloc_count::net() - before - (held(&[plain, out, &self.partial]) - bufs0);
        r
    }

    /// Works through `buf` until it needs more bytes; returns how many it consumed.
    fn process(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<(Received, usize), Error> {
        let mut rx = Received::default();
        let mut used = 0;
        if let Stage::Handshake(conn) = &mut self.stage {
            used = handshake(conn, buf, plain, out, out_len, &mut rx)?;
            if !conn.is_handshaking() {
                let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
                let Stage::Handshake(conn) = std::mem::replace(&mut self.stage, Stage::Done) else {
                    unreachable!()
                };
                // The records are ours from here on; rustls keeps its key schedule only.
                let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
                self.stage = Stage::Traffic(Traffic::new(secrets, kernel)?);
                rx.established = Some(resumed);
            }
        }
        if let Stage::Traffic(t) = &mut self.stage {
            let opened = t.open(&mut buf[used..], plain, out, out_len)?;
            used += opened.used;
            rx.peer_closed |= opened.peer_closed;
        }
        Ok((rx, used))
    }

    /// Seals `data` into records written to `out` from `*out_len` on.
    pub fn seal(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        out_len: &mut usize,
    ) -> Result<(), Error> {
        match &mut self.stage {
            Stage::Traffic(t) => t.seal(data, out, out_len),
            _ => Err(Error::HandshakeNotComplete),
        }
    }

    /// Writes a close_notify alert (once the handshake is done; nothing before).
    pub fn close_notify(&mut self, out: &mut Vec<u8>, out_len: &mut usize) -> Result<(), Error> {
        match &mut self.stage {
            Stage::Traffic(t) => t.close_notify(out, out_len),
            _ => Ok(()),
        }
    }

    /// After a failure in the handshake: the alert rustls queued for the peer, if any.
    pub fn alert(&mut self, out: &mut Vec<u8>, out_len: &mut usize) {
        let Stage::Handshake(conn) = &mut self.stage else {
            return;
        };
        let before = alloc_count::net();
        let out0 = out.capacity() as i64;
        let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut [][..]);
        if let Ok(ConnectionState::EncodeTlsData(mut enc)) = state {
            encode(&mut enc, out, out_len);
        }
        self.heap += alloc_count::net() - before - (out.capacity() as i64 - out0);
    }
}

/// Runs rustls's handshake over `buf` until it needs more bytes (or is done); returns how
/// many bytes it consumed. Application data that came with the last flight goes to `plain`.
fn handshake(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
    out_len: &mut usize,
    rx: &mut Received,
) -> Result<usize, Error> {
    let mut off = 0;
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut buf[off..]);
        let stop = match state? {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(rec) = records.next_record() {
                    plain.extend_from_slice(rec?.payload);
                }
                false
            }
            ConnectionState::EncodeTlsData(mut enc) => {
                encode(&mut enc, out, out_len);
                false
            }
            // The caller sends `out` before anything else, which is all rustls asks.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                false
            }
            ConnectionState::PeerClosed => {
                rx.peer_closed = true;
                false
            }
            // Needs more bytes, or is done with these (WriteTraffic: established).
            _ => true,
        };
        off += discard;
        if stop {
            return Ok(off);
        }
    }
}

/// Writes one queued handshake record to `out` at `*out_len`.
fn encode(
    enc: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    out: &mut Vec<u8>,
    out_len: &mut usize,
) {
    let mut need = 2048;
    for _ in 0..4 {
        room(out, *out_len, need);
        match enc.encode(&mut out[*out_len..]) {
            Ok(n) => {
                *out_len += n;
                return;
            }
            Err(EncodeError::InsufficientSize(s)) => need = s.required_size,
            Err(EncodeError::AlreadyEncoded) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! A real rustls client against [`TlsConn`] in memory, with the counting allocator
    //! installed, so the measured state of an idle connection is checked against its target.
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::io::{Read, Write};

    #[global_allocator]
    static ALLOC: crate::alloc_count::Counting = crate::alloc_count::Counting;

    struct Pair {
        server: Box<TlsConn>,
        client: ClientConnection,
    }

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        configs_with(None)
    }

    fn configs_with(
        suite: Option<rustls::SupportedCipherSuite>,
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let files = crate::tls_config::TlsFiles {
            chain: vec![der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        };
        let tickets = crate::tls_config::Tickets::new().unwrap();
        let server = crate::tls_config::server_config(&files, tickets).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        #[allow(deprecated)] // the ring provider: what the servers themselves use
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suite) = suite {
            provider.cipher_suites = vec![suite];
        }
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    impl Pair {
        fn new(s: &Arc<ServerConfig>, c: &Arc<ClientConfig>) -> Pair {
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                server: TlsConn::new(s.clone()).unwrap(),
                client: ClientConnection::new(c.clone(), name).unwrap(),
            }
        }

        /// Moves bytes both ways until neither side has any; returns the server's plaintext.
        fn pump(&mut self, chunk: usize) -> Vec<u8> {
            let mut plain = Vec::new();
            for _ in 0..32 {
                let mut c2s = Vec::new();
                while self.client.wants_write() {
                    self.client.write_tls(&mut c2s).unwrap();
                }
                let mut out = Vec::new();
                let mut n = 0;
                for piece in c2s.chunks_mut(chunk.max(1)) {
                    self.server
                        .receive(piece, &mut plain, &mut out, &mut n)
                        .unwrap();
                }
                if c2s.is_empty() && n == 0 {
                    break;
                }
                let mut s2c = &out[..n];
                while !s2c.is_empty() {
                    self.client.read_tls(&mut s2c).unwrap();
                    self.client.process_new_packets().unwrap();
                }
            }
            plain
        }

        fn deliver(&mut self, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut n = 0;
            self.server.seal(data, &mut out, &mut n).unwrap();
            let mut s2c = &out[..n];
            while !s2c.is_empty() {
                self.client.read_tls(&mut s2c).unwrap();
                self.client.process_new_packets().unwrap();
            }
            let mut got = vec![0u8; data.len() + 16];
            let k = self.client.reader().read(&mut got).unwrap_or(0);
            got.truncate(k);
            got
        }
    }

    /// Every suite the server offers (ECDSA certificate: the RSA key-exchange-signature
    /// suites of TLS 1.2 do not apply), both directions, records split at every size, a
    /// KeyUpdate asking for ours; and the idle state within its 2 KiB target.
    #[test]
    fn every_suite_echoes_updates_keys_and_stays_small() {
        for suite in rustls::crypto::ring::ALL_CIPHER_SUITES {
            if format!("{:?}", suite.suite()).contains("_RSA_") {
                continue;
            }
            let (s, c) = configs_with(Some(*suite));
            for chunk in [1, 5, 6, 33, 1 << 20] {
                let mut p = Pair::new(&s, &c);
                p.pump(chunk);
                assert!(p.server.established(), "{suite:?}");
                let big = vec![7u8; 40_000];
                p.client.writer().write_all(b"hello").unwrap();
                p.client.writer().write_all(&big).unwrap();
                let got = p.pump(chunk);
                assert_eq!(got.len(), 5 + big.len(), "{suite:?} chunk {chunk}");
                assert_eq!(&got[..5], b"hello");
                assert_eq!(p.deliver(b"world"), b"world", "{suite:?}");
                if suite.version() == &rustls::version::TLS13 {
                    p.client.refresh_traffic_keys().unwrap();
                    p.client.writer().write_all(b"after update").unwrap();
                    assert_eq!(p.pump(chunk), b"after update", "{suite:?}");
                    assert_eq!(p.deliver(b"still here"), b"still here", "{suite:?}");
                }
                assert_eq!(p.server.partial.capacity(), 0);
                let bytes = p.server.state_bytes();
                assert!(bytes <= 2048, "{suite:?}: {bytes} bytes");
            }
        }
    }

    #[test]
    fn records_split_anywhere_and_echo_both_ways() {
        let (s, c) = configs();
        for chunk in [1, 7, 100, 1 << 20] {
            let mut p = Pair::new(&s, &c);
            p.pump(chunk);
            assert!(p.server.established());
            p.client
                .writer()
                .write_all(b"GET /ws HTTP/1.1\r\n\r\n")
                .unwrap();
            assert_eq!(p.pump(chunk), b"GET /ws HTTP/1.1\r\n\r\n", "chunk {chunk}");
            assert_eq!(p.deliver(b"HTTP/1.1 101"), b"HTTP/1.1 101");
            // Nothing of a split record is left once it is whole.
            assert_eq!(p.server.partial.capacity(), 0);
        }
    }

    /// The target of issue 14: an idle TLS connection holds at most 2 KiB in user space.
    #[test]
    fn an_idle_tls_connection_holds_at_most_2_kib() {
        let (s, c) = configs();
        let mut p = Pair::new(&s, &c);
        p.pump(1 << 20);
        p.client
            .writer()
            .write_all(&[0x81, 0x80, 1, 2, 3, 4])
            .unwrap();
        p.pump(1 << 20);
        p.deliver(&[0x81, 0x00]);
        let bytes = p.server.state_bytes();
        eprintln!(
            "idle TLS state: {bytes} bytes (struct {}, heap {})",
            std::mem::size_of::<TlsConn>(),
            p.server.heap
        );
        assert!(bytes <= 2048, "{bytes} bytes");
    }
}
