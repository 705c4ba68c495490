//! Who may do what: signed identities for WebSocket clients (HS256 JWT) and the API key of
//! the admin listener. Both servers and ws-loadgen (which mints tokens) use this file, so
//! a token one of them accepts the other accepts too.
//!
//! A JWT is `base64url(header).base64url(claims).base64url(HMAC-SHA256(secret, first two))`.
//! Only `HS256` is accepted: a header naming `none` or another algorithm is refused before
//! any signature check (the classic algorithm-confusion hole). Claims used: `sub` (the user
//! id, required), `exp` and `nbf` (Unix seconds, enforced when present), `rooms` (an array
//! of room names `/broadcast` may join; absent means any room).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts, not JSON, no `sub`, or an algorithm other than HS256.
    Malformed,
    /// The signature does not match the secret (forged or signed with another secret).
    BadSignature,
    /// `exp` is in the past (or `nbf` in the future).
    Expired,
}

/// The claims of an accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: Option<u64>,
    /// Rooms the holder may join; `None`: any.
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == room))
    }
}

/// An HS256 key made from `--token-secret`.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Checks `token` at Unix time `now` (seconds). Cost: one HMAC over the token and one
    /// small JSON parse, once per handshake.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = decode_json(h)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Malformed);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let signed = &token[..h.len() + 1 + c.len()];
        // ring compares in constant time.
        hmac::verify(&self.0, signed.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let claims = decode_json(c)?;
        let sub = match claims.get("sub") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::Malformed),
        };
        let time = |name: &str| -> Result<Option<u64>, TokenError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|t| t.is_finite() && *t >= 0.0)
                    .map(|t| Some(t as u64))
                    .ok_or(TokenError::Malformed),
            }
        };
        let exp = time("exp")?;
        if exp.is_some_and(|e| now >= e) || time("nbf")?.is_some_and(|n| now < n) {
            return Err(TokenError::Expired);
        }
        let rooms = match claims.get("rooms") {
            None => None,
            Some(serde_json::Value::Array(a)) => Some(
                a.iter()
                    .map(|r| r.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(TokenError::Malformed)?,
            ),
            Some(_) => return Err(TokenError::Malformed),
        };
        Ok(Claims { sub, exp, rooms })
    }

    /// A token for `sub` that expires at `exp` (Unix seconds), optionally limited to `rooms`.
    pub fn mint(&self, sub: &str, exp: u64, rooms: Option<&[String]>) -> String {
        let mut claims = serde_json::json!({ "sub": sub, "exp": exp });
        if let Some(r) = rooms {
            claims["rooms"] = serde_json::json!(r);
        }
        let mut out = String::with_capacity(160);
        out.push_str(&URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#));
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let tag = hmac::sign(&self.0, out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        out
    }
}

fn decode_json(part: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let raw = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice(&raw) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed),
    }
}

/// Compares two secrets in time that depends only on their lengths' maximum, not on where
/// they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The token of `Authorization: Bearer TOKEN`, if that is the header's form.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_then_verify() {
        let k = TokenKey::new(b"s3cret");
        let t = k.mint("alice", 2_000, Some(&["r1".to_string()]));
        let c = k.verify(&t, 1_000).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.exp, Some(2_000));
        assert!(c.may_join("r1") && !c.may_join("r2"));
        assert_eq!(k.verify(&t, 2_000), Err(TokenError::Expired));
        assert_eq!(
            TokenKey::new(b"other").verify(&t, 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_alg_none_and_garbage() {
        let k = TokenKey::new(b"s3cret");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"alice"}"#)
        );
        assert_eq!(k.verify(&none, 0), Err(TokenError::Malformed));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(k.verify(bad, 0), Err(TokenError::Malformed), "{bad}");
        }
        // A tampered payload fails the signature.
        let t = k.mint("alice", 2_000, None);
        let mut parts: Vec<&str> = t.split('.').collect();
        let bob = URL_SAFE_NO_PAD.encode(br#"{"sub":"bob","exp":2000}"#);
        parts[1] = &bob;
        assert_eq!(k.verify(&parts.join("."), 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        assert_eq!(bearer("Bearer  xyz "), Some("xyz"));
        assert_eq!(bearer("Basic xyz"), None);
    }
}
