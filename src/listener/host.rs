//! Which `Host` a request may name: protection against DNS rebinding.
//!
//! A web page on `evil.example` can make its own name resolve to
//! 127.0.0.1 and then read, as same-origin, whatever a loopback server
//! answers; its requests still say `Host: evil.example`. So a DNS name is
//! answered only when it is known to be ours: `localhost` (and
//! `*.localhost`, which browsers never resolve through DNS) or a name the
//! operator allowed (`--allow-host`). IP literals are always answered: a
//! rebinding page needs a name. A request without a `Host` (HTTP/1.0, a
//! hand-typed probe) is answered too; browsers always send one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The DNS names the server answers to, besides IP literals and localhost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    names: Vec<String>,
    any: bool,
}

impl HostPolicy {
    /// From `--allow-host` values: host names (no scheme, no port), or `*`
    /// for any Host at all (only behind a proxy that checks it).
    pub fn new(names: &[String]) -> Result<HostPolicy, String> {
        let mut policy = HostPolicy::default();
        for raw in names {
            let name = raw.trim();
            if name == "*" {
                policy.any = true;
                continue;
            }
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return Err(format!(
                    "--allow-host {raw:?}: give a host name as browsers send it, without scheme or port (e.g. multijob.example.com), or * for any"
                ));
            }
            policy.names.push(normalize(name));
        }
        Ok(policy)
    }

    /// Whether a request naming `authority` (a Host header's value or a
    /// request URI's authority, port included) is answered.
    pub fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(host) = host_part(authority) else {
            return false;
        };
        if host.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        let name = normalize(host);
        name == "localhost" || name.ends_with(".localhost") || self.names.contains(&name)
    }
}

/// Lowercase, without the root's trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The host of `host[:port]` or `[v6]:port` (brackets kept); `None` for a
/// malformed authority.
fn host_part(authority: &str) -> Option<&str> {
    let authority = authority.trim();
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        (host, rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !host.is_empty() && !host.contains('@')).then_some(host)
}

/// Middleware: refuse a request whose Host is not allowed, with the fix.
pub async fn guard(
    State(policy): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&policy, &request) {
        Ok(()) => next.run(request).await,
        Err((status, reason)) => (status, axum::Json(json!({ "error": reason }))).into_response(),
    }
}

fn check<B>(
    policy: &HostPolicy,
    request: &axum::http::Request<B>,
) -> Result<(), (StatusCode, String)> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "more than one Host header: send exactly one".into(),
        ));
    }
    // An absolute request URI names the host itself (RFC 9112 3.2.2).
    let named = match (request.uri().authority(), first) {
        (Some(authority), _) => authority.as_str().to_string(),
        (None, Some(value)) => match value.to_str() {
            Ok(v) => v.to_string(),
            Err(_) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "the Host header is not text".into(),
                ));
            }
        },
        (None, None) => return Ok(()),
    };
    if policy.allows(&named) {
        return Ok(());
    }
    let shown: String = named.chars().take(100).collect();
    let name = host_part(&shown)
        .map(normalize)
        .unwrap_or_else(|| shown.clone());
    Err((
        StatusCode::FORBIDDEN,
        format!(
            "this server does not answer to Host {shown:?}: only IP addresses, localhost and allowed names (protection against DNS rebinding). If you reach it under this name, start it with --allow-host {name} (or MULTIJOB_ALLOW_HOSTS={name})"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(names: &[&str]) -> HostPolicy {
        HostPolicy::new(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    #[test]
    fn ip_literals_and_localhost_are_always_answered() {
        let p = policy(&[]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "10.1.2.3:80",
            "0.0.0.0:8080",
            "[::1]:8080",
            "[::1]",
            "[fe80::1]",
            "localhost",
            "LocalHost:8080",
            "localhost.:8080",
            "dash.localhost:8080",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
    }

    #[test]
    fn other_names_are_refused_unless_allowed() {
        let p = policy(&[]);
        for refused in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "evillocalhost",
            "127.1",
            "[::1",
            "[not-v6]:80",
            "",
            "user@127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:80x",
        ] {
            assert!(!p.allows(refused), "{refused:?}");
        }
        let p = policy(&["Multijob.Example.com."]);
        assert!(p.allows("multijob.example.com:8080"));
        assert!(p.allows("MULTIJOB.example.com"));
        assert!(!p.allows("other.example.com"));
        assert!(!p.allows("x.multijob.example.com"));
        assert!(policy(&["*"]).allows("anything.example"));
    }

    #[test]
    fn allowed_names_must_be_bare_host_names() {
        for bad in ["", "http://x.example", "x.example:8080", "a b", "x/y"] {
            let err = HostPolicy::new(&[bad.to_string()]).expect_err(bad);
            assert!(err.contains("--allow-host"), "{err}");
        }
    }

    fn request(uri: &str, hosts: &[&str]) -> axum::http::Request<()> {
        let mut b = axum::http::Request::builder().uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn the_check_reads_the_host_header_or_an_absolute_uri() {
        let p = policy(&[]);
        assert!(check(&p, &request("/healthz", &["127.0.0.1:8080"])).is_ok());
        assert!(check(&p, &request("/healthz", &[])).is_ok());
        let (status, reason) =
            check(&p, &request("/api/v1/jobs", &["evil.example:8080"])).expect_err("refused");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(reason.contains("--allow-host evil.example"), "{reason}");
        // The URI's authority wins over the header.
        assert!(check(&p, &request("http://evil.example/", &["127.0.0.1"])).is_err());
        assert!(check(&p, &request("http://127.0.0.1:1/", &["evil.example"])).is_ok());
        let (status, _) =
            check(&p, &request("/", &["127.0.0.1", "evil.example"])).expect_err("two");
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
