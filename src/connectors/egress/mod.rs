//! Egress policy: where a request may go.
//!
//! Two checks. The origin check ([`origin`]) is on the parsed URL: a
//! connector's credentials go only to its base_url's origin (scheme, host,
//! port), and its `allowed_hosts` widen where its http steps may go, without
//! credentials. The address check ([`address`]) is after resolving the name:
//! whatever the lists say, unspecified, link-local and cloud metadata
//! addresses, in any IPv4 or IPv6 spelling, are refused, so a DNS name
//! pointing at 169.254.169.254 is refused too. The client's own resolver
//! ([`GuardedResolver`]) applies the same rule when it connects, so a name
//! that changes its answer between the check and the connect (DNS
//! rebinding) is still refused.
//!
//! Part of `connectors`: it uses `run` (a refusal is a permanent run
//! error) and the resolver, nothing above.

pub mod address;
pub mod origin;

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;

use crate::run::RunError;
pub use address::{Refusal, forbidden};
pub use origin::{AllowEntry, Origin, Policy, Reach};

/// Names that reach a metadata endpoint whatever the resolver says.
const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata"];

pub fn parse_url(url: &str) -> Result<Url, RunError> {
    let parsed =
        Url::parse(url).map_err(|e| RunError::Permanent(format!("invalid URL `{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RunError::Permanent(format!(
            "URL `{url}` is not http or https"
        )));
    }
    if parsed.host_str().is_none() {
        return Err(RunError::Permanent(format!("URL `{url}` has no host")));
    }
    Ok(parsed)
}

/// The host as written in the URL, lower case, without IPv6 brackets.
fn host_of(url: &Url) -> String {
    url.host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Resolves the URL's host and refuses it when any address it resolves to is
/// [`forbidden`].
pub async fn check_resolved(url: &str) -> Result<(), RunError> {
    let parsed = parse_url(url)?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    check_host(&host_of(&parsed), port).await
}

/// [`check_resolved`] for a host and port (SMTP servers too).
pub async fn check_host(host: &str, port: u16) -> Result<(), RunError> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if METADATA_HOSTS.contains(&host.trim_end_matches('.')) {
        return Err(refused(&host, "a cloud metadata endpoint"));
    }
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| RunError::retryable(format!("cannot resolve host `{host}`: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in addrs {
        if let Some(why) = forbidden(ip) {
            return Err(refused(&host, &why.to_string()));
        }
    }
    Ok(())
}

/// The HTTP client's resolver: drops forbidden addresses from every answer.
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = keep_reachable(addrs);
            if kept.is_empty() {
                let msg = format!(
                    "egress to host `{host}` refused: it resolves only to unspecified, link-local \
                     or cloud metadata addresses"
                );
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg).into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn keep_reachable(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs
        .into_iter()
        .filter(|a| forbidden(a.ip()).is_none())
        .collect()
}

fn refused(host: &str, why: &str) -> RunError {
    RunError::Permanent(format!(
        "egress to host `{host}` refused: it is {why}, which is never reachable from jobs"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_drops_forbidden_addresses() {
        let addrs: Vec<SocketAddr> = [
            "169.254.169.254:80",
            "10.0.0.1:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::]:80",
            "100.100.100.200:80",
            "[::a9fe:a9fe]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[::1]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let kept: Vec<SocketAddr> = ["10.0.0.1:80", "[::1]:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(keep_reachable(addrs), kept);
    }

    /// Regression (issue #19, defect 8): these reached the network.
    #[tokio::test]
    async fn every_literal_form_is_refused_without_resolving() {
        for (url, why) in [
            ("http://0.0.0.0:18101/", "unspecified"),
            ("http://0:18101/", "unspecified"),
            ("http://[::]:18101/", "unspecified"),
            ("http://[::ffff:0.0.0.0]:18101/", "unspecified"),
            ("http://100.100.100.200/latest/meta-data/", "metadata"),
            ("http://1684301000/", "metadata"),
            ("http://[::a9fe:a9fe]/", "metadata"),
            ("http://[::ffff:a9fe:a9fe]/", "metadata"),
            ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),
            ("http://[64:ff9b:1::a9fe:a9fe]/", "metadata"),
            ("http://[fd00:ec2::254]/", "metadata"),
            ("http://0xa9fea9fe/", "metadata"),
            ("http://169.254.169.254/", "metadata"),
            ("http://[fe80::1]/", "link-local"),
            ("http://metadata.google.internal./", "metadata"),
        ] {
            let err = check_resolved(url).await.unwrap_err();
            assert!(!err.is_retryable(), "{url}: {err}");
            assert!(
                err.message().contains("refused") && err.message().contains(why),
                "{url}: {err}"
            );
        }
        check_resolved("http://127.0.0.1:18101/").await.unwrap();
        check_resolved("http://[::1]:18101/").await.unwrap();
    }
}
