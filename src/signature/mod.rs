//! Inbound request signatures: is this request from who it says, and is it
//! fresh? Pure (no IO, `now` passed in); a leaf that uses nothing of the
//! crate, so the outbound webhook connector signs with the same code the
//! inbound listener verifies with.
//!
//! One scheme per source a `Trigger` may name:
//! - [`Scheme::Multijob`]: `X-Multijob-Signature: t=<unix>,v1=<hex>`, the
//!   HMAC-SHA256 of `"{t}.{body}"`. Binding the timestamp stops a replay
//!   outside the window; several `v1=` are accepted so a sender can sign
//!   with the old and the new secret while they rotate.
//! - [`Scheme::Github`]: `X-Hub-Signature-256: sha256=<hex>` of the body.
//! - [`Scheme::Slack`]: `X-Slack-Signature: v0=<hex>` of
//!   `"v0:{X-Slack-Request-Timestamp}:{body}"`.
//! - [`Scheme::Telegram`]: `X-Telegram-Bot-Api-Secret-Token` equals the
//!   secret.
//! - [`Scheme::Twilio`]: `X-Twilio-Signature`, base64 of the HMAC-SHA1 of
//!   the URL followed by the sorted form fields ([`twilio`]).
//!
//! Every comparison is constant-time. A [`Rejection`] names the reason and
//! at most a header's name: never the body, a signature or the secret, so
//! it can go into an `inbound.rejected` event as it is.

mod hex;
#[cfg(test)]
mod tests;
pub mod twilio;

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a signed timestamp may be from `now`, either direction (a
/// sender's clock may run ahead of ours).
pub const REPLAY_WINDOW_SECS: i64 = 5 * 60;

pub const MULTIJOB_HEADER: &str = "x-multijob-signature";
pub const GITHUB_HEADER: &str = "x-hub-signature-256";
pub const SLACK_HEADER: &str = "x-slack-signature";
pub const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const TELEGRAM_HEADER: &str = "x-telegram-bot-api-secret-token";
pub const TWILIO_HEADER: &str = "x-twilio-signature";

/// Request headers by lower-cased name.
pub type Headers = HashMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Multijob,
    Github,
    Slack,
    Telegram,
    Twilio,
}

/// Why a request was refused. `header` is the lower-cased name of the
/// header at fault; nothing else about the request is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingHeader { header: &'static str },
    Malformed { header: &'static str },
    BadSignature,
    StaleTimestamp,
}

impl Rejection {
    /// The short reason for events and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingHeader { .. } => "missing_header",
            Rejection::Malformed { .. } => "malformed",
            Rejection::BadSignature => "bad_signature",
            Rejection::StaleTimestamp => "stale_timestamp",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::MissingHeader { header } | Rejection::Malformed { header } => {
                write!(f, "{} ({header})", self.reason())
            }
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for Rejection {}

/// Checks `body` (the exact bytes received) against `scheme` with the
/// default replay window. `url` is the full URL the sender signed (Twilio
/// only); `now_unix` is seconds since the epoch.
pub fn verify(
    scheme: Scheme,
    headers: &Headers,
    body: &[u8],
    url: &str,
    secret: &str,
    now_unix: i64,
) -> Result<(), Rejection> {
    verify_within(
        scheme,
        headers,
        body,
        url,
        secret,
        now_unix,
        REPLAY_WINDOW_SECS,
    )
}

/// [`verify`] with another replay window (seconds, either direction).
pub fn verify_within(
    scheme: Scheme,
    headers: &Headers,
    body: &[u8],
    url: &str,
    secret: &str,
    now_unix: i64,
    window_secs: i64,
) -> Result<(), Rejection> {
    match scheme {
        Scheme::Multijob => verify_multijob(headers, body, secret, now_unix, window_secs),
        Scheme::Github => verify_github(headers, body, secret),
        Scheme::Slack => verify_slack(headers, body, secret, now_unix, window_secs),
        Scheme::Telegram => verify_telegram(headers, secret),
        Scheme::Twilio => twilio::verify(header(headers, TWILIO_HEADER)?, body, url, secret),
    }
}

/// The `X-Multijob-Signature` value for `body` sent at `t_unix`.
pub fn multijob_header(secret: &str, t_unix: i64, body: &[u8]) -> String {
    let digest = multijob_mac(secret, t_unix, body).finalize().into_bytes();
    format!("t={t_unix},v1={}", hex::encode(&digest))
}

fn multijob_mac(secret: &str, t_unix: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = hmac_sha256(secret);
    mac.update(t_unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hmac_sha256(secret: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length")
}

fn header<'h>(headers: &'h Headers, name: &'static str) -> Result<&'h str, Rejection> {
    headers
        .get(name)
        .map(|v| v.trim())
        .ok_or(Rejection::MissingHeader { header: name })
}

fn verify_multijob(
    headers: &Headers,
    body: &[u8],
    secret: &str,
    now: i64,
    window: i64,
) -> Result<(), Rejection> {
    let value = header(headers, MULTIJOB_HEADER)?;
    let malformed = Rejection::Malformed {
        header: MULTIJOB_HEADER,
    };
    let mut t = None;
    let mut candidates = Vec::new();
    for part in value.split(',') {
        let (key, val) = part.trim().split_once('=').ok_or(malformed)?;
        match key {
            "t" if t.is_none() => t = Some(val.parse::<i64>().map_err(|_| malformed)?),
            "t" => return Err(malformed),
            "v1" => candidates.push(hex::decode(val).ok_or(malformed)?),
            // Other versions are for other verifiers (a later scheme).
            _ => {}
        }
    }
    let t = t.ok_or(malformed)?;
    if candidates.is_empty() {
        return Err(malformed);
    }
    // The signature first: a forged request is `bad_signature` whatever its
    // timestamp, and `stale_timestamp` means a genuine request came late
    // (a replay, or a clock off by more than the window).
    let mac = multijob_mac(secret, t, body);
    if !candidates
        .iter()
        .any(|c| mac.clone().verify_slice(c).is_ok())
    {
        return Err(Rejection::BadSignature);
    }
    fresh(t, now, window)
}

fn verify_github(headers: &Headers, body: &[u8], secret: &str) -> Result<(), Rejection> {
    let value = header(headers, GITHUB_HEADER)?;
    let malformed = Rejection::Malformed {
        header: GITHUB_HEADER,
    };
    let given = value
        .strip_prefix("sha256=")
        .and_then(hex::decode)
        .ok_or(malformed)?;
    let mut mac = hmac_sha256(secret);
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| Rejection::BadSignature)
}

fn verify_slack(
    headers: &Headers,
    body: &[u8],
    secret: &str,
    now: i64,
    window: i64,
) -> Result<(), Rejection> {
    let value = header(headers, SLACK_HEADER)?;
    let timestamp = header(headers, SLACK_TIMESTAMP_HEADER)?;
    let t = timestamp.parse::<i64>().map_err(|_| Rejection::Malformed {
        header: SLACK_TIMESTAMP_HEADER,
    })?;
    let given = value
        .strip_prefix("v0=")
        .and_then(hex::decode)
        .ok_or(Rejection::Malformed {
            header: SLACK_HEADER,
        })?;
    let mut mac = hmac_sha256(secret);
    // The timestamp as sent, not re-formatted: the signature covers its text.
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| Rejection::BadSignature)?;
    fresh(t, now, window)
}

fn verify_telegram(headers: &Headers, secret: &str) -> Result<(), Rejection> {
    let given = header(headers, TELEGRAM_HEADER)?;
    // Length is not secret (Telegram allows 1-256 characters); the content is.
    if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

fn fresh(t: i64, now: i64, window: i64) -> Result<(), Rejection> {
    if now.abs_diff(t) <= window.unsigned_abs() {
        Ok(())
    } else {
        Err(Rejection::StaleTimestamp)
    }
}
