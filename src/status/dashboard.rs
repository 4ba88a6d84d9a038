//! The live dashboard: one static page (HTML, JS, CSS in `dashboard/`)
//! compiled into the binary, so a deployment is still one file. No
//! framework, no CDN, no build step: the page reads the same read-only API
//! as everyone else and follows `/api/v1/events` to update itself.
//!
//! The page itself is public (it holds no data); its API calls carry the
//! bearer token, which it asks for on the first 401 (see `auth` in api.rs).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Where the page lives; the auth middleware lets these through.
pub fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/assets/")
}

/// The three files and the content hash that versions them. A new binary
/// with new assets changes the hash, so the `?v=` in the page's links and
/// the ETag both change: a browser never runs yesterday's JS against
/// today's API.
struct Assets {
    version: String,
    index: String,
    etag: HeaderValue,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for part in [INDEX_HTML, APP_JS, STYLE_CSS] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let version: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let index = INDEX_HTML.replace("__VERSION__", &version);
    let etag = HeaderValue::from_str(&format!("\"{version}\"")).expect("hex is a valid header");
    Assets {
        version,
        index,
        etag,
    }
});

/// The content hash of the embedded assets.
pub fn version() -> &'static str {
    &ASSETS.version
}

/// `GET /` and `GET /assets/*`, merged into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&headers, "text/html; charset=utf-8", ASSETS.index.clone())
}

async fn app_js(headers: HeaderMap) -> Response {
    serve(&headers, "text/javascript; charset=utf-8", APP_JS)
}

async fn style_css(headers: HeaderMap) -> Response {
    serve(&headers, "text/css; charset=utf-8", STYLE_CSS)
}

/// The page builds every element with `createElement`/`textContent`, so it
/// needs no inline script or style: the CSP forbids both, and any other
/// origin, as a second line against injected markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn serve(
    request: &HeaderMap,
    content_type: &'static str,
    body: impl Into<axum::body::Body>,
) -> Response {
    let etag = &ASSETS.etag;
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body.into()).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate every time (a 304 when unchanged): small files, and never stale.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, etag.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_versioned_assets() {
        let v = version();
        assert_eq!(v.len(), 16);
        assert!(ASSETS.index.contains(&format!("/assets/app.js?v={v}")));
        assert!(ASSETS.index.contains(&format!("/assets/style.css?v={v}")));
        assert!(!ASSETS.index.contains("__VERSION__"));
    }

    /// API strings reach the DOM only as text: no HTML parsing sinks.
    #[test]
    fn the_script_never_parses_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
        assert!(!INDEX_HTML.contains("style="), "no inline style");
    }

    #[test]
    fn public_paths() {
        assert!(is_public("/"));
        assert!(is_public("/assets/app.js"));
        assert!(!is_public("/api/v1/jobs"));
        assert!(!is_public("/metrics"));
    }
}
