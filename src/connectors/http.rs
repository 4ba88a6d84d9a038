//! The `http` action: one request, through a connector or straight to an
//! allowed host.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::egress::{Origin, Policy, Reach};
use super::secrets::{Redactor, Secrets};
use super::{Connectors, egress, value_text};
use crate::run::RunError;
use crate::spec::model::Provider;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Defaults to GET.
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub url: Option<String>,
    /// Joined to the connector's base_url.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Option<Map<String, Value>>,
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub body: Option<String>,
    /// Default 200-299; an integer, a list, "NNN" or "NNN-NNN".
    #[serde(default)]
    pub expect_status: Option<Value>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Map<String, Value>,
    /// Parsed when the reply is JSON, else the text.
    pub body: Value,
}

impl Connectors {
    /// Sends one request. Without a connector, `url` must be absolute and its
    /// host one of `allowed_hosts` (the caller's policy, e.g. the daemon's
    /// global list); with one, the target must be the connector's base_url
    /// origin (scheme, host and port), the only one its credentials go to,
    /// or in its `allowed_hosts`, reached without credentials.
    pub async fn http(
        &self,
        connector: Option<&str>,
        req: HttpRequest,
        allowed_hosts: &[String],
    ) -> Result<HttpResponse, RunError> {
        let result = self.http_inner(connector, req, allowed_hosts).await;
        let status = match &result {
            Ok(r) => r.status.to_string(),
            Err(_) => "error".to_string(),
        };
        self.count(connector.unwrap_or("-"), &status);
        result
    }

    async fn http_inner(
        &self,
        connector: Option<&str>,
        req: HttpRequest,
        allowed_hosts: &[String],
    ) -> Result<HttpResponse, RunError> {
        let expected = StatusSet::parse(req.expect_status.as_ref())?;
        let Some(id) = connector else {
            let url = req.url.as_deref().ok_or_else(|| {
                RunError::Permanent(
                    "an http step without `connector` needs a full `url`".to_string(),
                )
            })?;
            let url = egress::parse_url(url)?;
            let policy = Policy {
                connector: None,
                own: None,
                allowed: allowed_hosts,
            };
            policy.reach(&url)?;
            return self
                .http_send(url, &req, &expected, None, &Redactor::default())
                .await;
        };
        // Any provider may serve a plain `http` step: its base_url origin
        // and `allowed_hosts` bound where the request goes.
        let call = self.begin(id, None).await?;
        let redactor = call.redactor().clone();
        let result = async {
            let url = target_url(call.base_url.as_deref(), &req, id)?;
            let policy = Policy {
                connector: Some(id),
                own: call.base_url.as_deref().and_then(Origin::parse),
                allowed: &call.spec.allowed_hosts,
            };
            let reach = policy.reach(&url)?;
            // Credentials go only to the connector's own origin.
            let auth = match (call.spec.provider, reach) {
                (Provider::Http, Reach::Own) => Auth::of(&call.secrets),
                _ => None,
            };
            self.http_send(url, &req, &expected, auth, &redactor).await
        }
        .await;
        result.map_err(|e| super::error::redacted(e, &redactor))
    }

    async fn http_send(
        &self,
        url: Url,
        req: &HttpRequest,
        expected: &StatusSet,
        auth: Option<Auth<'_>>,
        redactor: &Redactor,
    ) -> Result<HttpResponse, RunError> {
        egress::check_resolved(url.as_str()).await?;
        let method_name = if req.method.is_empty() {
            "GET".to_string()
        } else {
            req.method.to_ascii_uppercase()
        };
        let method = Method::from_bytes(method_name.as_bytes())
            .map_err(|_| RunError::Permanent(format!("`{}` is not an HTTP method", req.method)))?;
        let what = format!("{method_name} {}", without_query(&url));
        let mut builder = self.http_client()?.request(method, url.clone());
        let headers = req.headers.clone().unwrap_or_default();
        let has_auth = headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization"));
        match (auth, has_auth) {
            (Some(Auth::Bearer(token)), false) => builder = builder.bearer_auth(token),
            (Some(Auth::Basic(user, password)), false) => {
                builder = builder.basic_auth(user, Some(password));
            }
            _ => {}
        }
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value_text(value));
        }
        if let Some(json) = &req.json {
            builder = builder.json(json);
        } else if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let (status, headers, text) = self.send(builder, timeout, &what, redactor).await?;
        if !expected.contains(status) {
            let err = super::error::status_error(status, &what, &text, &headers);
            let expected = expected.describe();
            return Err(err.map_message(|m| format!("{m} (expected status {expected})")));
        }
        let is_json = headers
            .get("content-type")
            .and_then(Value::as_str)
            .is_some_and(|ct| ct.contains("json"));
        let body = if is_json {
            super::parse_body(text, redactor)
        } else {
            Value::String(text)
        };
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// How an `http` connector authenticates: `bearer_token`, else `username`
/// and `password` (HTTP Basic). A step's own `Authorization` header wins.
enum Auth<'a> {
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

impl<'a> Auth<'a> {
    fn of(secrets: &'a Secrets) -> Option<Auth<'a>> {
        if let Some(token) = secrets.get("bearer_token") {
            return Some(Auth::Bearer(token));
        }
        Some(Auth::Basic(
            secrets.get("username")?,
            secrets.get("password")?,
        ))
    }
}

/// `url` as given, or `path` joined to base_url, plus `query`.
fn target_url(base: Option<&str>, req: &HttpRequest, id: &str) -> Result<Url, RunError> {
    let raw = match (&req.url, &req.path) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => {
            let base = base.ok_or_else(|| {
                RunError::Permanent(format!(
                    "connector `{id}` has no base_url to join `path` to; set base_url or use `url`"
                ))
            })?;
            join(base, path)
        }
        (None, None) => base
            .map(str::to_string)
            .ok_or_else(|| RunError::Permanent("an http step needs `url` or `path`".into()))?,
    };
    let mut url = egress::parse_url(&raw)?;
    if let Some(query) = &req.query
        && !query.is_empty()
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, &value_text(v));
        }
    }
    Ok(url)
}

pub(crate) fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// The statuses an `http` step accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    pub fn parse(spec: Option<&Value>) -> Result<StatusSet, RunError> {
        let Some(spec) = spec else {
            return Ok(StatusSet(vec![(200, 299)]));
        };
        let mut ranges = Vec::new();
        match spec {
            Value::Array(items) => {
                for item in items {
                    ranges.push(one_range(item)?);
                }
            }
            other => ranges.push(one_range(other)?),
        }
        if ranges.is_empty() {
            return Err(bad_status(spec));
        }
        Ok(StatusSet(ranges))
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        parts.join(", ")
    }
}

fn one_range(v: &Value) -> Result<(u16, u16), RunError> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let range = match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|c| (100..=599).contains(c))
            .map(|c| (c, c)),
        Value::String(s) => match s.split_once('-') {
            Some((lo, hi)) => code(lo).zip(code(hi)).filter(|(lo, hi)| lo <= hi),
            None => code(s).map(|c| (c, c)),
        },
        _ => None,
    };
    range.ok_or_else(|| bad_status(v))
}

fn bad_status(v: &Value) -> RunError {
    RunError::Permanent(format!(
        "expect_status {v} is not a status: use 200, \"200\", \"200-299\" or a list of those"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expect_status_forms() {
        let default = StatusSet::parse(None).unwrap();
        assert!(default.contains(204) && !default.contains(302));
        let one = StatusSet::parse(Some(&json!(404))).unwrap();
        assert!(one.contains(404) && !one.contains(200));
        let text = StatusSet::parse(Some(&json!("201"))).unwrap();
        assert!(text.contains(201) && !text.contains(200));
        let range = StatusSet::parse(Some(&json!("200-399"))).unwrap();
        assert!(range.contains(302) && !range.contains(404));
        let list = StatusSet::parse(Some(&json!([200, "404", "500-502"]))).unwrap();
        assert!(list.contains(404) && list.contains(501) && !list.contains(503));
        for bad in [
            json!("abc"),
            json!(99),
            json!("300-200"),
            json!([]),
            json!(true),
        ] {
            assert!(StatusSet::parse(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_joins_with_one_slash() {
        assert_eq!(join("http://h/api/", "/v1/x"), "http://h/api/v1/x");
        assert_eq!(join("http://h/api", "v1/x"), "http://h/api/v1/x");
    }
}
