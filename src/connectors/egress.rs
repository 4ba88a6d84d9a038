//! Egress policy: which hosts a request may reach.
//!
//! Two checks. The host must be on the call's allow list (the connector's
//! base_url host and `allowed_hosts`). And whatever the list says, link-local
//! and cloud metadata addresses are refused after resolving the name, so a
//! DNS name pointing at 169.254.169.254 is refused too. The client's own
//! resolver ([`GuardedResolver`]) applies the same rule when it connects, so
//! a name that changes its answer between the check and the connect (DNS
//! rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

use super::ConnectorError;

const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata"];

pub fn parse_url(url: &str) -> Result<Url, ConnectorError> {
    let parsed = Url::parse(url)
        .map_err(|e| ConnectorError::Permanent(format!("invalid URL `{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectorError::Permanent(format!(
            "URL `{url}` is not http or https"
        )));
    }
    if parsed.host_str().is_none() {
        return Err(ConnectorError::Permanent(format!(
            "URL `{url}` has no host"
        )));
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

/// Refuses a host not on `allowed`. Entries are host names or `host:port`.
pub fn check_allowed(url: &Url, allowed: &[String], whose: &str) -> Result<(), ConnectorError> {
    let host = host_of(url);
    let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
    let ok = allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        entry == host || Some(&entry) == with_port.as_ref()
    });
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::Permanent(format!(
            "egress to host `{host}` refused: not in {whose}; add it to `allowed_hosts` if this \
             request is intended"
        )))
    }
}

/// Resolves the URL's host and refuses link-local and metadata addresses.
pub async fn check_resolved(url: &str) -> Result<(), ConnectorError> {
    let parsed = parse_url(url)?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    check_host(&host_of(&parsed), port).await
}

/// [`check_resolved`] for a host and port (SMTP servers too).
pub async fn check_host(host: &str, port: u16) -> Result<(), ConnectorError> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if METADATA_HOSTS.contains(&host.as_str()) {
        return Err(refused(&host, "a cloud metadata endpoint"));
    }
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ConnectorError::Retryable(format!("cannot resolve host `{host}`: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in addrs {
        if let Some(why) = forbidden(ip) {
            return Err(refused(&host, why));
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
                    "egress to host `{host}` refused: it resolves only to link-local or metadata addresses"
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

fn refused(host: &str, why: &str) -> ConnectorError {
    ConnectorError::Permanent(format!(
        "egress to host `{host}` refused: it is {why}, which is never reachable from jobs"
    ))
}

fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            // fd00:ec2::254 is AWS's IPv6 instance metadata endpoint.
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                return Some("a cloud metadata endpoint");
            }
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                return Some("a link-local address");
            }
            None
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("a cloud metadata endpoint")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_are_forbidden() {
        assert!(forbidden("169.254.169.254".parse().unwrap()).is_some());
        assert!(forbidden("169.254.1.2".parse().unwrap()).is_some());
        assert!(forbidden("fe80::1".parse().unwrap()).is_some());
        assert!(forbidden("febf::1".parse().unwrap()).is_some());
        assert!(forbidden("::ffff:169.254.169.254".parse().unwrap()).is_some());
        assert!(forbidden("127.0.0.1".parse().unwrap()).is_none());
        assert!(forbidden("fec0::1".parse().unwrap()).is_none());
    }

    #[test]
    fn resolver_drops_forbidden_addresses() {
        let addrs = vec![
            "169.254.169.254:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
            "[fe80::1]:80".parse().unwrap(),
        ];
        assert_eq!(
            keep_reachable(addrs),
            vec!["10.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn allow_list_matches_host_or_host_and_port() {
        let url = Url::parse("http://Example.com:8080/x").unwrap();
        assert!(check_allowed(&url, &["example.com".into()], "x").is_ok());
        assert!(check_allowed(&url, &["example.com:8080".into()], "x").is_ok());
        assert!(check_allowed(&url, &["example.com:9090".into()], "x").is_err());
        assert!(check_allowed(&url, &["other.com".into()], "x").is_err());
    }

    #[tokio::test]
    async fn metadata_host_names_are_refused_before_resolving() {
        let err = check_resolved("http://metadata.google.internal/computeMetadata/v1/")
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("metadata"), "{err}");
    }
}
