//! Twilio's `X-Twilio-Signature`: base64 of the HMAC-SHA1, keyed with the
//! auth token, of the full URL Twilio requested (scheme, host, path and
//! query, as configured in Twilio) followed by every POST form field as
//! `name` then `value`, sorted by name, no separators.
//!
//! HMAC-SHA1 is written out here over `sha1_smol` (already in the tree
//! through redis) because the `sha1` in the tree is built for a newer
//! `digest` than our `hmac` takes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use super::{Rejection, TWILIO_HEADER};

const BLOCK: usize = 64;

/// Verifies a form-encoded POST. A body that is not form-encoded fields
/// signs as no fields (Twilio's JSON callbacks use a `bodySHA256` query
/// parameter instead; not handled here).
pub fn verify(header: &str, body: &[u8], url: &str, token: &str) -> Result<(), Rejection> {
    let given = STANDARD.decode(header).map_err(|_| Rejection::Malformed {
        header: TWILIO_HEADER,
    })?;
    let expected = hmac_sha1(token.as_bytes(), &signed_text(url, body));
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

/// The header value Twilio would send for this URL and form body.
pub fn sign(token: &str, url: &str, body: &[u8]) -> String {
    STANDARD.encode(hmac_sha1(token.as_bytes(), &signed_text(url, body)))
}

fn signed_text(url: &str, body: &[u8]) -> Vec<u8> {
    let mut fields: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // By name. Twilio documents distinct names only; a repeated name's
    // values sorting by value is our assumption, untested against Twilio.
    fields.sort();
    let mut text = url.as_bytes().to_vec();
    for (name, value) in fields {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(value.as_bytes());
    }
    text
}

/// RFC 2104 over SHA-1.
pub(super) fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..20].copy_from_slice(&sha1_smol::Sha1::from(key).digest().bytes());
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha1_smol::Sha1::new();
    inner.update(&block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = sha1_smol::Sha1::new();
    outer.update(&block.map(|b| b ^ 0x5c));
    outer.update(&inner.digest().bytes());
    outer.digest().bytes()
}
