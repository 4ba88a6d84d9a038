//! Talking to a daemon's read-only API from the CLI (`status`,
//! `plan --server`): the address as an operator types it, and an error
//! response read as the server's own message (a 401 says which token to
//! set; a 403 which host to allow).

use anyhow::Context;
use serde_json::Value;

/// The API's base URL from `--server`: `http://host:port` or
/// `https://...` as given, `host:port` (or `:port`) as `http://`; no
/// trailing slash.
pub fn server_url(server: &str) -> anyhow::Result<String> {
    let given = server.trim();
    let (scheme, rest) = given.split_once("://").unwrap_or(("http", given));
    if !matches!(scheme, "http" | "https") {
        anyhow::bail!(
            "--server {server:?}: use http:// or https://, not {scheme}:// (or just host:port)"
        );
    }
    let rest = rest.trim_end_matches('/');
    let with_scheme = match rest {
        "" => anyhow::bail!("--server {server:?} has no host: use host:port or http://host:port"),
        port if port.starts_with(':') => format!("{scheme}://127.0.0.1{port}"),
        _ => format!("{scheme}://{rest}"),
    };
    let url = reqwest::Url::parse(&with_scheme).with_context(|| {
        format!("--server {server:?} is not an address: use host:port or http://host:port")
    })?;
    if url.host().is_none() {
        anyhow::bail!("--server {server:?} has no host: use host:port or http://host:port");
    }
    Ok(with_scheme)
}

/// `GET {base}{path}` of a daemon's API (with `MULTIJOB_API_TOKEN` when
/// set), its JSON body; an error names the URL and the server's message.
pub async fn get_json(base: &str, path: &str) -> anyhow::Result<Value> {
    let url = format!("{base}{path}");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut request = client.get(&url);
    if let Ok(token) = std::env::var("MULTIJOB_API_TOKEN")
        && !token.is_empty()
    {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("is the daemon running? GET {url}"))?;
    json_of(response).await
}

/// The JSON body of a successful response; for an error status, the
/// server's message (`{"error": ...}` of the API, or the body's first
/// line when it is not JSON), after the method, URL and status.
pub async fn json_of(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let url = response.url().clone();
    let text = response
        .text()
        .await
        .with_context(|| format!("GET {url}: {status}: reading the body"))?;
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let message = match body.as_ref().and_then(|b| b["error"].as_str()) {
            Some(error) => error.to_string(),
            None => match text.lines().next().map(str::trim) {
                Some(line) if !line.is_empty() => line.chars().take(200).collect(),
                _ => "(no error text)".to_string(),
            },
        };
        anyhow::bail!("GET {url}: {status}: {message}");
    }
    body.with_context(|| format!("GET {url}: {status}: the body is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_get_http() {
        assert_eq!(
            server_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            server_url("ops.local:9000/").unwrap(),
            "http://ops.local:9000"
        );
        assert_eq!(server_url(":8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(
            server_url("https://ops.example.com").unwrap(),
            "https://ops.example.com"
        );
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        let e = server_url("ftp://host:21").unwrap_err().to_string();
        assert!(e.contains("not ftp://"), "{e}");
        assert!(server_url("http://").is_err());
        assert!(server_url("a b:c").is_err());
    }
}
