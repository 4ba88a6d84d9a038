//! What a leaked secret looks like on the wire, computed with the real
//! encoders (`url`, serde_json, base64) independently of the daemon's own
//! redaction, and searches for those forms in text and in files.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use reqwest::Url;

/// Every form of `value` a reader could recognise: as written; percent-encoded
/// (every byte but letters and digits, upper- and lower-case hex, `+` for a
/// space; and as `url` writes it into a path and a query pair); JSON-escaped;
/// base64 (standard and URL-safe, padded or not); and for a URL, as `url`
/// normalises it and its path and query. Forms under 8 characters are left
/// out: they would be found in unrelated text.
pub fn wire_forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    let encode = |lower: bool| -> String {
        value
            .bytes()
            .map(|b| match (b.is_ascii_alphanumeric(), lower) {
                (true, _) => char::from(b).to_string(),
                (false, false) => format!("%{b:02X}"),
                (false, true) => format!("%{b:02x}"),
            })
            .collect()
    };
    for encoded in [encode(false), encode(true)] {
        out.push(encoded.replace("%20", "+"));
        out.push(encoded);
    }
    if let Ok(url) = Url::parse(&format!("http://h/p/{value}/x")) {
        let tail = url.as_str().trim_start_matches("http://h/p/");
        out.push(tail.trim_end_matches("/x").to_string());
    }
    let mut url = Url::parse("http://h/").expect("a static URL");
    url.query_pairs_mut().append_pair("k", value);
    out.extend(
        url.query()
            .and_then(|q| q.strip_prefix("k="))
            .map(str::to_string),
    );
    let json = serde_json::to_string(value).expect("a string serialises");
    out.push(json.trim_matches('"').to_string());
    out.extend(base64_forms(value.as_bytes()));
    if let Ok(url) = Url::parse(value)
        && url.has_host()
    {
        out.push(url.to_string());
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        out.push(format!("{}{query}", url.path()));
    }
    out.retain(|f| f.len() >= 8);
    out.sort();
    out.dedup();
    out
}

/// base64 of `user:password` (HTTP Basic) and `\0user\0password` (SMTP
/// AUTH PLAIN), as [`wire_forms`] writes base64.
pub fn credential_forms(user: &str, password: &str) -> Vec<String> {
    let mut out = base64_forms(format!("{user}:{password}").as_bytes());
    out.extend(base64_forms(format!("\0{user}\0{password}").as_bytes()));
    out
}

fn base64_forms(bytes: &[u8]) -> Vec<String> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .map(|e| e.encode(bytes))
        .collect()
}

/// The forms found in `text`.
pub fn found_in<'a>(text: &str, forms: &'a [String]) -> Vec<&'a str> {
    forms
        .iter()
        .filter(|f| text.contains(f.as_str()))
        .map(String::as_str)
        .collect()
}

/// Every file under `dir` (recursively) with the forms its bytes contain.
pub fn found_in_files(dir: &Path, forms: &[String]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for file in files_under(dir) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for form in forms {
            let needle = form.as_bytes();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                out.push((file.clone(), form.clone()));
            }
        }
    }
    out
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Each character as a JSON `\u` escape: the text shows no secret, the
/// parsed string does.
fn unicode_escaped(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// A peer that echoes what it received, the way careless servers do: the
/// path in a 500 (`/json`, `/encoded`, `/plain` and `/deny` aside); the
/// Authorization header JSON-escaped and `\u`-escaped in a JSON body (as a
/// value and as a key) and in a header; in all its [`wire_forms`] in a 500;
/// between two words and as a header name (`/plain`); as received in a 401
/// (`/deny`).
pub fn echo_peer() -> String {
    super::serve(Router::new().fallback(echo))
}

async fn echo(uri: Uri, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let credential = auth.split_once(' ').map(|(_, c)| c).unwrap_or_default();
    match uri.path() {
        "/json" => {
            let body = format!(
                r#"{{"auth": {}, "escaped": {}, "{}": 1}}"#,
                serde_json::to_string(&auth).unwrap_or_default(),
                unicode_escaped(credential),
                unicode_escaped(credential).trim_matches('"'),
            );
            let mut resp = (StatusCode::OK, body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            if let Ok(v) = auth.parse() {
                h.insert("x-echo", v);
            }
            resp
        }
        "/encoded" => {
            let forms = wire_forms(credential).join(" | ");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rejected: {forms}"),
            )
                .into_response()
        }
        "/plain" => {
            let mut resp =
                (StatusCode::OK, format!("shopee {credential} shopping")).into_response();
            if let Ok(name) = header::HeaderName::try_from(credential) {
                resp.headers_mut()
                    .insert(name, header::HeaderValue::from_static("1"));
            }
            resp
        }
        "/deny" => (StatusCode::UNAUTHORIZED, format!("denied: {auth}")).into_response(),
        path => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no bot at {path}"),
        )
            .into_response(),
    }
}
