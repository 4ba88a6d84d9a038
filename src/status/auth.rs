//! Bearer-token auth of the status API (`MULTIJOB_API_TOKEN`).
//!
//! With a token configured, every path but the probes and the dashboard's
//! static files needs it. The page holds no data; it asks for the token on
//! its first 401 and sends it with every API call.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use crate::status::state::Shared;

/// The one path that also takes the token as `?access_token=`.
pub const EVENTS_PATH: &str = "/api/v1/events";

pub async fn auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(token) = shared.api_token.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" || super::dashboard::is_public(path) {
        return next.run(request).await;
    }
    // A browser's EventSource cannot send headers, so the event stream (and
    // only it) also takes the token as `?access_token=` (RFC 6750 section
    // 2.3). Everywhere else a token in a URL would be an invitation to leak
    // it through logs and history; the dashboard uses the header there.
    let from_query = if path == EVENTS_PATH {
        match query_token(request.uri()) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let presented = bearer(request.headers()).or(from_query).unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        next.run(request).await
    } else {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <MULTIJOB_API_TOKEN>)",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    }
}

/// The `access_token` query parameter, refused when given more than once:
/// with "the last one wins", a proxy or log filter that checks the first
/// would not see the token actually used.
fn query_token(uri: &axum::http::Uri) -> Result<Option<String>, ApiError> {
    let pairs = match Query::<Vec<(String, String)>>::try_from_uri(uri) {
        Ok(Query(pairs)) => pairs,
        // Not a query this API reads: no token in it.
        Err(_) => return Ok(None),
    };
    let mut tokens = pairs.into_iter().filter(|(k, _)| k == "access_token");
    let first = tokens.next().map(|(_, v)| v);
    let more = tokens.count();
    if more > 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "access_token is given {} times; give it once (or send Authorization: Bearer <token>)",
                more + 1
            ),
        ));
    }
    Ok(first)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Compare without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    fn token(query: &str) -> Result<Option<String>, u16> {
        let uri: axum::http::Uri = format!("/api/v1/events{query}").parse().expect("uri");
        query_token(&uri).map_err(|e| e.into_response().status().as_u16())
    }

    #[test]
    fn the_query_token_is_taken_once_or_refused() {
        assert_eq!(token(""), Ok(None));
        assert_eq!(token("?after=3"), Ok(None));
        assert_eq!(token("?access_token=a%2Fb&after=3"), Ok(Some("a/b".into())));
        assert_eq!(token("?access_token=a&access_token=b"), Err(400));
        assert_eq!(token("?access_token=a&after=1&access_token=a"), Err(400));
        // An encoded name is the same name.
        assert_eq!(token("?access_token=a&access%5Ftoken=b"), Err(400));
    }
}
