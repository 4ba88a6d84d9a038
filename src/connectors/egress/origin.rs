//! Where a request may go, decided on origins (scheme, host, port) compared
//! after canonical parsing. Pure.
//!
//! A connector's credentials go to its own origin, the one its `base_url`
//! names, and nowhere else: not to another port of the same host, not to
//! another scheme. Its `allowed_hosts` (`host` or `host:port`) widen where
//! its http steps may go, but those requests carry none of its credentials.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

use crate::run::RunError;

/// A host after parsing: the url crate has already turned `0x7f000001`,
/// `2130706433`, `0177.0.0.1` and `127.1` into 127.0.0.1 and lower-cased
/// names; an IPv4-mapped IPv6 address becomes its IPv4 address (the same
/// socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    fn of(url: &Url) -> Option<Host> {
        let raw = url.host_str()?;
        let bare = raw
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw);
        Some(match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip.to_canonical()),
            Err(_) => Host::Name(bare.to_ascii_lowercase()),
        })
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Scheme, host and port (the scheme's default when the URL has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: Host,
    pub port: u16,
}

impl Origin {
    /// The origin of an http(s) URL; `None` for other schemes.
    pub fn of(url: &Url) -> Option<Origin> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Origin {
            scheme: url.scheme().to_string(),
            host: Host::of(url)?,
            port: url.port_or_known_default()?,
        })
    }

    pub fn parse(url: &str) -> Option<Origin> {
        Origin::of(&Url::parse(url).ok()?)
    }

    /// `host:port`, as an `allowed_hosts` entry admitting this origin.
    fn entry(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// One `allowed_hosts` entry: a host, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub host: Host,
    /// `None` admits every port.
    pub port: Option<u16>,
}

impl AllowEntry {
    /// `example.com`, `example.com:8443`, `10.0.0.5`, `::1`, `[::1]:8080`;
    /// `None` for anything else (a scheme, a path, user info), which then
    /// admits nothing.
    pub fn parse(entry: &str) -> Option<AllowEntry> {
        let entry = entry.trim();
        if entry.is_empty() {
            return None;
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            // A bare IPv6 address: its colons are not a port.
            return Some(AllowEntry {
                host: Host::Ip(ip.to_canonical()),
                port: None,
            });
        }
        let url = Url::parse(&format!("http://{entry}/")).ok()?;
        let plain = url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none();
        if !plain {
            return None;
        }
        // The url crate drops a port equal to the scheme's default, so
        // whether one was written is read from the text.
        let written_port = entry
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        Some(AllowEntry {
            host: Host::of(&url)?,
            port: if written_port {
                url.port_or_known_default()
            } else {
                None
            },
        })
    }

    pub fn admits(&self, origin: &Origin) -> bool {
        self.host == origin.host && self.port.is_none_or(|p| p == origin.port)
    }
}

/// Whether a request goes to the connector's own origin, which decides
/// whether it carries the connector's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Own,
    Listed,
}

/// The egress policy of one http request.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// The connector sending it, if any.
    pub connector: Option<&'a str>,
    /// The connector's base_url origin.
    pub own: Option<Origin>,
    /// `host` or `host:port` entries reached without credentials.
    pub allowed: &'a [String],
}

impl Policy<'_> {
    /// Where `url` may go, or why not (a permanent error naming both the
    /// target and the connector's own origin).
    pub fn reach(&self, url: &Url) -> Result<Reach, RunError> {
        let target = Origin::of(url).ok_or_else(|| {
            RunError::Permanent(format!("URL `{url}` is not an http or https URL"))
        })?;
        if self.own.as_ref() == Some(&target) {
            return Ok(Reach::Own);
        }
        let listed = self
            .allowed
            .iter()
            .filter_map(|e| AllowEntry::parse(e))
            .any(|e| e.admits(&target));
        if listed {
            return Ok(Reach::Listed);
        }
        Err(self.refusal(&target))
    }

    fn refusal(&self, target: &Origin) -> RunError {
        let list = format!("[{}]", self.allowed.join(", "));
        let entry = target.entry();
        let msg = match (self.connector, &self.own) {
            (Some(id), Some(own)) => format!(
                "egress to `{target}` refused: connector `{id}` sends its credentials only to its \
                 own origin `{own}`, and its allowed_hosts {list} do not name `{entry}`; use \
                 `path` to reach its own origin, or add `{entry}` to allowed_hosts to reach it \
                 without the connector's credentials"
            ),
            (Some(id), None) => format!(
                "egress to `{target}` refused: connector `{id}` has no base_url and its \
                 allowed_hosts {list} do not name `{entry}`; add it to allowed_hosts if this \
                 request is intended"
            ),
            (None, _) => format!(
                "egress to `{target}` refused: an http step without a connector may reach only \
                 the allowed hosts {list}; send it through a connector whose base_url or \
                 allowed_hosts names `{entry}`"
            ),
        };
        RunError::Permanent(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn policy<'a>(own: &str, allowed: &'a [String]) -> Policy<'a> {
        Policy {
            connector: Some("shop"),
            own: Origin::parse(own),
            allowed,
        }
    }

    #[test]
    fn every_spelling_of_a_host_is_one_origin() {
        let own = Origin::parse("http://127.0.0.1:18101/api/").unwrap();
        for same in [
            "http://127.0.0.1:18101/x",
            "http://0x7f000001:18101/",
            "http://2130706433:18101/",
            "http://127.1:18101/",
            "http://0177.0.0.1:18101/",
            "http://127.0.0.1.:18101/",
            "http://[::ffff:127.0.0.1]:18101/",
            "HTTP://127.0.0.1:18101",
        ] {
            assert_eq!(Origin::parse(same).as_ref(), Some(&own), "{same}");
        }
        let named = Origin::parse("https://API.Example.com/v1").unwrap();
        assert_eq!(named.to_string(), "https://api.example.com:443");
        assert_eq!(
            Origin::parse("http://[::1]:8080/").unwrap().to_string(),
            "http://[::1]:8080"
        );
        assert_eq!(Origin::parse("ftp://example.com/"), None);
    }

    /// Regression (issue #19, defect 8): the host matched, the port did not
    /// count, and the bearer token went to another local service.
    #[test]
    fn another_port_scheme_or_host_is_not_the_connectors_origin() {
        let p = policy("http://127.0.0.1:18101", &[]);
        assert_eq!(p.reach(&url("http://127.0.0.1:18101/a")), Ok(Reach::Own));
        for other in [
            "http://127.0.0.1:18102/",
            "http://0x7f000001:18102/",
            "http://2130706433:18102/",
            "http://127.1:18102/",
            "http://127.0.0.1:18101@127.0.0.1:18102/",
            "http://[::ffff:127.0.0.1]:18102/",
            "https://127.0.0.1:18101/",
            "http://127.0.0.1/",
            "http://localhost:18101/",
            "http://127.0.0.2:18101/",
        ] {
            let err = p.reach(&url(other)).unwrap_err();
            assert!(!err.is_retryable(), "{other}");
            assert!(
                err.message().contains("`http://127.0.0.1:18101`")
                    && err.message().contains("egress to `")
                    && err.message().contains("connector `shop`"),
                "{other}: {err}"
            );
        }
        let err = p.reach(&url("http://0x7f000001:18102/")).unwrap_err();
        assert!(
            err.message()
                .starts_with("egress to `http://127.0.0.1:18102` refused"),
            "{err}"
        );
    }

    #[test]
    fn allowed_hosts_are_reached_without_credentials() {
        let allowed: Vec<String> = ["0x7f000001:18102", "Example.COM", "[::1]:9000", "10.1.2.3"]
            .map(String::from)
            .to_vec();
        let p = policy("http://127.0.0.1:18101", &allowed);
        for (target, want) in [
            ("http://127.0.0.1:18101/", Some(Reach::Own)),
            ("http://127.1:18102/", Some(Reach::Listed)),
            ("http://127.0.0.1:18103/", None),
            ("https://example.com/", Some(Reach::Listed)),
            ("http://example.com:8080/", Some(Reach::Listed)),
            ("http://sub.example.com/", None),
            ("http://[::1]:9000/", Some(Reach::Listed)),
            ("http://[::1]:9001/", None),
            ("http://10.1.2.3:1/", Some(Reach::Listed)),
        ] {
            assert_eq!(p.reach(&url(target)).ok(), want, "{target}");
        }
    }

    #[test]
    fn allow_entries_parse_after_canonical_host_parsing() {
        let entry = |s: &str| AllowEntry::parse(s);
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert_eq!(
            entry("2130706433:80"),
            Some(AllowEntry {
                host: ip("127.0.0.1"),
                port: Some(80)
            })
        );
        assert_eq!(entry("127.1").map(|e| e.port), Some(None));
        assert_eq!(entry("fe80::1").map(|e| e.host), Some(ip("fe80::1")));
        assert_eq!(entry("[::1]").map(|e| e.port), Some(None));
        assert_eq!(entry("[::1]:443").map(|e| e.port), Some(Some(443)));
        assert_eq!(
            entry(" API.example.com:8443 "),
            Some(AllowEntry {
                host: Host::Name("api.example.com".into()),
                port: Some(8443)
            })
        );
        for bad in [
            "",
            "http://x.com",
            "x.com/path",
            "u@x.com",
            "x.com?q",
            "a b",
        ] {
            assert_eq!(entry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_a_connector_only_the_callers_list_counts() {
        let allowed = vec!["127.0.0.1".to_string()];
        let p = Policy {
            connector: None,
            own: None,
            allowed: &allowed,
        };
        assert_eq!(p.reach(&url("http://127.1:5/")), Ok(Reach::Listed));
        let err = p.reach(&url("http://localhost:5/")).unwrap_err();
        assert!(
            err.message().contains("without a connector") && err.message().contains("localhost:5"),
            "{err}"
        );
    }
}
