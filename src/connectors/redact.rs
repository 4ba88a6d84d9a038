//! Redaction: resolved secret values scrubbed from whatever leaves a
//! connector call, in every form a value takes on the wire.
//!
//! What comes back from a peer, reqwest or lettre rarely holds a secret as
//! written: a Telegram token with a space is `%20`-encoded in the URL an
//! error quotes; a webhook URL comes back normalised (`HTTP://h:80/x` is
//! `http://h/x`); a token is JSON-escaped in an echoed body; HTTP Basic and
//! SMTP credentials travel as base64. [`forms`] lists those forms for one
//! value (pure); a [`Redactor`] matches all of them in one pass
//! (aho-corasick) and masks the union of what matched.
//!
//! Short values: a value or form under [`ANYWHERE_MIN`] characters is masked
//! only as a whole token (no letter or digit right before or after it), so a
//! shop token `shop` is masked in `shop` and `key=shop&` but `shopee` is left
//! alone. Longer ones are masked wherever they occur, ignoring ASCII case
//! (`%2f` and `%2F`, an upper-cased echo). Values under [`SHORTEST`]
//! characters are refused where secrets are resolved: nothing that short can
//! be kept out of outputs.

use std::collections::BTreeSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use reqwest::Url;
use serde_json::Value;

pub const MASK: &str = "***";
/// Values and forms this long (in characters) are masked wherever they occur.
pub const ANYWHERE_MIN: usize = 8;
/// The shortest secret value a connector may use.
pub const SHORTEST: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build the redaction of {what}: {reason}")]
pub struct RedactError {
    what: String,
    reason: String,
}

/// Collects the forms of a call's secrets; [`RedactorBuilder::build`] turns
/// them into a [`Redactor`] once per resolution.
#[derive(Debug, Default)]
pub struct RedactorBuilder {
    anywhere: BTreeSet<String>,
    tokens: BTreeSet<String>,
}

impl RedactorBuilder {
    /// One secret value, in all its [`forms`]. Values under [`SHORTEST`]
    /// characters are the caller's to refuse; here they are skipped.
    pub fn secret(&mut self, value: &str) -> &mut Self {
        let short = value.chars().count() < ANYWHERE_MIN;
        for form in forms(value) {
            self.form(form, short);
        }
        self
    }

    /// A user name and password sent together: the base64 forms of HTTP
    /// Basic (`user:password`) and SMTP AUTH PLAIN (`\0user\0password`).
    pub fn credentials(&mut self, user: &str, password: &str) -> &mut Self {
        let short = user.chars().count() + password.chars().count() < ANYWHERE_MIN;
        for joined in [
            format!("{user}:{password}"),
            format!("\0{user}\0{password}"),
        ] {
            for form in base64_forms(joined.as_bytes()) {
                self.form(form, short);
            }
        }
        self
    }

    fn form(&mut self, form: String, short_value: bool) {
        let n = form.chars().count();
        if n < SHORTEST {
            return;
        }
        if short_value || n < ANYWHERE_MIN {
            self.tokens.insert(form);
        } else {
            self.anywhere.insert(form);
        }
    }

    /// `what` names the secrets' owner in the error (a connector).
    pub fn build(self, what: &str) -> Result<Redactor, RedactError> {
        let err = |e: aho_corasick::BuildError| RedactError {
            what: what.to_string(),
            reason: e.to_string(),
        };
        let anywhere = match self.anywhere.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::builder()
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .ascii_case_insensitive(true)
                    .build(&self.anywhere)
                    .map_err(err)?,
            ),
        };
        let tokens = match self.tokens.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::builder()
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(&self.tokens)
                    .map_err(err)?,
            ),
        };
        Ok(Redactor { anywhere, tokens })
    }
}

/// Scrubs the forms of known secret values from text.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Forms masked wherever they occur, ignoring ASCII case.
    anywhere: Option<AhoCorasick>,
    /// Forms of short values, masked only as whole tokens, exact case.
    tokens: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor for `values` (tests and one-off callers).
    pub fn of(values: &[&str]) -> Result<Redactor, RedactError> {
        let mut b = RedactorBuilder::default();
        for v in values {
            b.secret(v);
        }
        b.build("the given values")
    }

    pub fn redact(&self, text: &str) -> String {
        let spans = self.spans(text);
        if spans.is_empty() {
            return text.to_string();
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(MASK.as_bytes());
            at = end;
        }
        out.extend_from_slice(&bytes[at..]);
        // Matches start and end on character boundaries (patterns are UTF-8),
        // so this is valid; lossy is only a fallback that still masks.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Redacts every string in a JSON value, object keys included: a body
    /// parsed after its text was redacted may hold a secret its text spelled
    /// with `\u` escapes.
    pub fn redact_value(&self, value: &mut Value) {
        if self.anywhere.is_none() && self.tokens.is_none() {
            return;
        }
        match value {
            Value::String(s) => {
                let redacted = self.redact(s);
                if redacted != *s {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (key, mut v) in old {
                    self.redact_value(&mut v);
                    map.insert(self.redact(&key), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Sorted, merged byte ranges to mask.
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        if let Some(ac) = &self.anywhere {
            spans.extend(ac.find_overlapping_iter(text).map(|m| (m.start(), m.end())));
        }
        if let Some(ac) = &self.tokens {
            spans.extend(
                ac.find_overlapping_iter(text)
                    .filter(|m| whole_token(text, m.start(), m.end()))
                    .map(|m| (m.start(), m.end())),
            );
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// No letter or digit right before `start` or right after `end`.
fn whole_token(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let after = text.get(end..).and_then(|t| t.chars().next());
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// Every form `value` may take in what a call returns: as written; if it is
/// a URL, as a URL parser serialises it and the parts shown beside a host;
/// each of those percent-encoded as URLs and forms encode it and
/// JSON-escaped; and the value in base64. Pure.
pub fn forms(value: &str) -> BTreeSet<String> {
    let mut bases = vec![value.to_string()];
    bases.extend(url_forms(value));
    let mut out = BTreeSet::new();
    for base in &bases {
        out.insert(base.clone());
        for encoded in percent_forms(base) {
            out.insert(lower_hex(&encoded));
            if encoded.contains("%20") {
                out.insert(encoded.replace("%20", "+"));
            }
            out.insert(encoded);
        }
        out.extend(json_forms(base));
    }
    out.extend(base64_forms(value.as_bytes()));
    out
}

/// A URL secret (a Slack webhook) as `url` serialises it: scheme and host
/// lower-cased, default port dropped, dot segments resolved, characters
/// percent-encoded; without fragment, query or scheme; and its path and
/// query, which errors may show beside the host.
fn url_forms(value: &str) -> Vec<String> {
    let Ok(url) = Url::parse(value) else {
        return Vec::new();
    };
    if !url.has_host() {
        return Vec::new();
    }
    let mut out = vec![url.to_string()];
    let mut trimmed = url.clone();
    trimmed.set_fragment(None);
    out.push(trimmed.to_string());
    trimmed.set_query(None);
    out.push(trimmed.to_string());
    let full = url.as_str();
    if let Some((_, rest)) = full.split_once("://") {
        out.push(rest.to_string());
    }
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    let fragment = url.fragment().map(|f| format!("#{f}")).unwrap_or_default();
    let tail = format!("{}{query}{fragment}", url.path());
    if tail != "/" {
        out.push(tail);
    }
    if url.path() != "/" {
        out.push(url.path().to_string());
    }
    if let Some(q) = url.query() {
        out.push(q.to_string());
    }
    out
}

/// `text` percent-encoded the ways URLs and forms do it: as `url` encodes a
/// path, a path segment, a query, a query pair (form), a user name, a
/// password and a fragment; every byte but letters and digits; RFC 3986
/// unreserved kept; JavaScript's encodeURIComponent. Upper-case hex. A part
/// set alone is kept only if it decodes back to `text` (a path's dot
/// segments are resolved away, leaving something else).
fn percent_forms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(mut u) = Url::parse("http://h/") {
        u.set_path(text);
        out.push(u.path().to_string());
        out.push(u.path().trim_start_matches('/').to_string());
        if let Ok(mut segments) = u.path_segments_mut() {
            segments.clear().push(text);
        }
        out.push(u.path().trim_start_matches('/').to_string());
        u.set_path("/");
        u.set_query(Some(text));
        out.extend(u.query().map(str::to_string));
        u.query_pairs_mut().clear().append_pair("k", text);
        out.extend(
            u.query()
                .and_then(|q| q.strip_prefix("k="))
                .map(str::to_string),
        );
        u.set_query(None);
        if u.set_username(text).is_ok() {
            out.push(u.username().to_string());
        }
        if u.set_password(Some(text)).is_ok() {
            out.extend(u.password().map(str::to_string));
        }
        u.set_fragment(Some(text));
        out.extend(u.fragment().map(str::to_string));
    }
    out.retain(|form| decodes_to(form, text));
    // Written into a URL rather than set as one part, a `?` or `#` inside
    // the value starts the query or fragment, whose bytes are encoded
    // differently, and a backslash becomes `/`: what `Url::parse` makes of it.
    for before in ["http://h/x", "http://h/?x", "http://h/#x"] {
        if let Ok(u) = Url::parse(&format!("{before}{text}"))
            && let Some(form) = u.as_str().strip_prefix(before)
        {
            out.push(form.to_string());
        }
    }
    out.push(encode(text, |_| false));
    out.push(encode(text, |b| b"-._~".contains(&b)));
    out.push(encode(text, |b| b"-_.!~*'()".contains(&b)));
    out.retain(|form| form != text);
    out
}

/// Percent-encodes every byte but ASCII letters, digits and `keep`.
fn encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether percent-decoding `form` (and `+` as a space, when `text` has
/// no `+`) gives `text` back.
fn decodes_to(form: &str, text: &str) -> bool {
    let bytes = form.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) if !text.contains('+') => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out == text.as_bytes()
}

/// `%2F` → `%2f`: some encoders write lower-case hex.
fn lower_hex(form: &str) -> String {
    let mut out = String::with_capacity(form.len());
    let mut left = 0;
    for c in form.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` inside a JSON string, as encoders escape it: serde's (quotes,
/// backslashes, control characters); with `\/`; ASCII-only (`\u00e9`, as
/// Python writes it); HTML-safe (`\u003c`, as Go writes it).
fn json_forms(text: &str) -> Vec<String> {
    let Ok(quoted) = serde_json::to_string(text) else {
        return Vec::new();
    };
    let Some(plain) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else {
        return Vec::new();
    };
    let plain = plain.to_string();
    let mut ascii = String::with_capacity(plain.len());
    let mut html = String::with_capacity(plain.len());
    for c in plain.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                html.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            _ => html.push(c),
        }
    }
    let slashed = plain.replace('/', "\\/");
    vec![plain, slashed, ascii, html]
}

/// base64 of `bytes`: standard and URL-safe, with and without padding.
fn base64_forms(bytes: &[u8]) -> Vec<String> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .map(|engine| engine.encode(bytes))
        .collect()
}

#[cfg(test)]
mod tests;
