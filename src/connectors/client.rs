//! The one HTTP client every connector call shares, and what happens when
//! the host cannot give it what it needs.
//!
//! Building the client loads the system's CA certificates. On a host with
//! none (an image without ca-certificates, an empty `SSL_CERT_FILE`) or with
//! no free file descriptors, that fails. A failure must not take the daemon
//! with it: plain-HTTP calls go on with a client that trusts no
//! certificate, every HTTPS call fails with the cause and the fix, and
//! `/readyz` says the same. The full build is tried again at most every
//! [`REBUILD_EVERY`], so a host that is fixed recovers without a restart.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::egress;

/// How often a failed build is tried again.
pub const REBUILD_EVERY: Duration = Duration::from_secs(30);

/// The client to send with, and why HTTPS cannot be used, if it cannot.
#[derive(Clone)]
pub struct SharedClient {
    pub client: reqwest::Client,
    /// Set when the system's CA certificates could not be loaded: `client`
    /// then trusts no certificate and HTTPS calls are refused up front.
    pub tls_unavailable: Option<Arc<str>>,
}

/// Why no client could be built at all (not even one for plain HTTP).
pub type BuildError = Arc<str>;

/// The process's client, and the last failed build of it.
struct ClientCell {
    full: OnceLock<reqwest::Client>,
    /// The last failed full build: when, and the client (or error) used since.
    degraded: Mutex<Option<(Instant, Result<SharedClient, BuildError>)>>,
}

static CLIENT: ClientCell = ClientCell::new();

/// The shared client: the full one once it has built, else the degraded
/// one, rebuilding the full one when the last try is old enough.
pub fn shared() -> Result<SharedClient, BuildError> {
    CLIENT.get(Instant::now(), build_full)
}

/// `Ok` when HTTPS calls can be made, else the reason (for `/readyz`).
pub fn health() -> Result<(), String> {
    match shared() {
        Ok(SharedClient {
            tls_unavailable: None,
            ..
        }) => Ok(()),
        Ok(SharedClient {
            tls_unavailable: Some(why),
            ..
        }) => Err(format!("HTTP client: {why}")),
        Err(why) => Err(format!("HTTP client: {why}")),
    }
}

impl ClientCell {
    const fn new() -> Self {
        ClientCell {
            full: OnceLock::new(),
            degraded: Mutex::new(None),
        }
    }

    fn get(
        &self,
        now: Instant,
        build: impl FnOnce() -> Result<reqwest::Client, reqwest::Error>,
    ) -> Result<SharedClient, BuildError> {
        if let Some(client) = self.full.get() {
            return Ok(healthy(client.clone()));
        }
        let mut degraded = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, last)) = degraded.as_ref()
            && now.duration_since(*at) < REBUILD_EVERY
        {
            return last.clone();
        }
        match build() {
            Ok(client) => {
                *degraded = None;
                Ok(healthy(self.full.get_or_init(|| client).clone()))
            }
            Err(e) => {
                let outcome = degrade(&e);
                match &outcome {
                    Ok(_) => tracing::error!(
                        error = %error_chain(&e),
                        "the HTTP client could not be built with the system's CA certificates: \
                         HTTPS calls fail until it can (retried every {} s); plain HTTP goes on",
                        REBUILD_EVERY.as_secs()
                    ),
                    Err(why) => tracing::error!(%why, "no HTTP client could be built"),
                }
                *degraded = Some((now, outcome.clone()));
                outcome
            }
        }
    }
}

fn healthy(client: reqwest::Client) -> SharedClient {
    SharedClient {
        client,
        tls_unavailable: None,
    }
}

/// The settings every connector call needs: no redirects (one could lead
/// past the egress policy) and the egress-checking resolver.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(egress::GuardedResolver)
        .user_agent(concat!("multijob/", env!("CARGO_PKG_VERSION")))
}

fn build_full() -> Result<reqwest::Client, reqwest::Error> {
    builder().build()
}

/// A client that trusts no certificate, for plain HTTP while the system's
/// roots cannot be loaded.
fn degrade(full_error: &reqwest::Error) -> Result<SharedClient, BuildError> {
    let why: Arc<str> = format!(
        "TLS is unavailable: {}; install the ca-certificates package or point SSL_CERT_FILE \
         at a CA bundle (retried every {} s)",
        error_chain(full_error),
        REBUILD_EVERY.as_secs()
    )
    .into();
    builder()
        .tls_certs_only(Vec::new())
        .build()
        .map(|client| SharedClient {
            client,
            tls_unavailable: Some(why),
        })
        .map_err(|e| {
            format!(
                "no HTTP client could be built: {} (and without CA certificates: {})",
                error_chain(full_error),
                error_chain(&e)
            )
            .into()
        })
}

/// An error with its sources, which is where reqwest puts the cause.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder error, as missing CA certificates give: reqwest refuses a
    /// header value with a newline when it builds.
    fn failing() -> Result<reqwest::Client, reqwest::Error> {
        builder().user_agent("bad\nagent").build()
    }

    #[test]
    fn a_failed_build_degrades_then_recovers() {
        let cell = ClientCell::new();
        let t0 = Instant::now();
        let first = cell.get(t0, failing).expect("a degraded client");
        let why = first.tls_unavailable.expect("TLS marked unavailable");
        assert!(why.contains("ca-certificates"), "{why}");

        let mut tried = false;
        let again = cell
            .get(t0 + Duration::from_secs(1), || {
                tried = true;
                build_full()
            })
            .expect("still degraded");
        assert!(!tried, "rebuilt before REBUILD_EVERY");
        assert!(again.tls_unavailable.is_some());

        let later = cell.get(t0 + REBUILD_EVERY, build_full).expect("rebuilt");
        assert!(later.tls_unavailable.is_none());
        let mut tried = false;
        cell.get(t0 + REBUILD_EVERY, || {
            tried = true;
            failing()
        })
        .expect("kept");
        assert!(!tried, "a built client is kept");
    }
}
