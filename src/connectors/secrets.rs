//! Secrets by reference: `${env:NAME}` and `${file:PATH}` are resolved at the
//! moment of use and dropped with the call; nothing here caches a value.
//! Every string this layer hands back goes through a [`Redactor`] built from
//! the values resolved for that call (every form of them: see [`super::redact`]).

use std::collections::BTreeMap;

pub use super::redact::Redactor;
use super::redact::{RedactorBuilder, SHORTEST};
use crate::spec::model::Connector;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

/// Resolves one reference. The error names the connector, the secret and the
/// reference, never a value.
pub fn resolve(connector: &str, name: &str, reference: &str) -> Result<String, SecretError> {
    let inner = reference
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'));
    match inner.and_then(|i| i.split_once(':')) {
        Some(("env", var)) => std::env::var(var).map_err(|_| {
            SecretError(format!(
                "connector `{connector}`: secret `{name}` refers to {reference}, but {var} is not \
                 set (or not UTF-8) in the daemon's environment; export it and retry"
            ))
        }),
        Some(("file", path)) => match read_secret_file(std::path::Path::new(path)) {
            // Files written by `echo` end with a newline that is not part of the secret.
            Ok(text) => Ok(text.trim_end_matches(['\n', '\r']).to_string()),
            Err(why) => Err(SecretError(format!(
                "connector `{connector}`: secret `{name}` refers to {reference}, which cannot be \
                 read ({why}); check the path and its permissions"
            ))),
        },
        _ => Err(SecretError(format!(
            "connector `{connector}`: secret `{name}` is not a reference; use ${{env:NAME}} or \
             ${{file:PATH}}"
        ))),
    }
}

/// The variable that names the daemon's own API.
pub const OWN_API_URL: &str = "MULTIJOB_API_URL";

/// This process's API address once it listens (see [`set_own_api`]).
static OWN_API: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// The daemon listens at `listen`: `${env:MULTIJOB_API_URL}` reads it
/// (a wildcard address through loopback), whatever the port, unless the
/// environment sets that variable. Kept in the process rather than in its
/// environment: setting a variable while threads run is not safe.
pub fn set_own_api(listen: std::net::SocketAddr) {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let url = format!("http://{}", SocketAddr::new(ip, listen.port()));
    if let Ok(mut own) = OWN_API.write() {
        *own = Some(url);
    }
}

/// `NAME` from the environment; `MULTIJOB_API_URL`, when unset there,
/// from this daemon's listener.
fn env_or_own(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if name == OWN_API_URL => OWN_API.read().ok().and_then(|own| own.clone()),
        _ => None,
    }
}

/// A connector's `base_url`: as written, or with a leading `${env:NAME}`
/// replaced by that variable of the daemon's environment (the rest is
/// appended), so one config reaches a different host per deployment, or
/// the daemon's own API (`${env:MULTIJOB_API_URL}`, see [`set_own_api`]).
/// An address is no secret; only `env` is read here.
pub fn resolve_base_url(connector: &str, url: &str) -> Result<String, SecretError> {
    let Some((name, rest)) = url.strip_prefix("${env:").and_then(|r| r.split_once('}')) else {
        return Ok(url.to_string());
    };
    match env_or_own(name) {
        Some(value) => Ok(format!("{}{rest}", value.trim_end_matches('/'))),
        None => Err(SecretError(format!(
            "connector `{connector}`: base_url refers to ${{env:{name}}}, but {name} is not set \
             (or empty) in the daemon's environment; export it and retry"
        ))),
    }
}

/// A `${file:}` secret is at most this long: a credential, not a document.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A secret file's text. Only a regular file is read (a FIFO would block
/// the call's thread, `/dev/zero` would read forever), and only so much.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let (file, _) =
        crate::regular_file::open(path, crate::regular_file::Mode::Read { follow: true }).map_err(
            |e| match e {
                crate::regular_file::OpenError::Io(e) => e.kind().to_string(),
                not_regular => not_regular.to_string(),
            },
        )?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "it is over {} KiB, too long for a secret",
            MAX_SECRET_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_string())
}

/// The secrets of one connector, resolved for one call.
#[derive(Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    redactor: Redactor,
}

impl Secrets {
    /// Resolves every secret the connector declares; the first failure wins.
    /// A value under [`SHORTEST`] characters is refused: it could not be
    /// kept out of outputs. When the connector has both `username` and
    /// `password`, their joined base64 forms (HTTP Basic, SMTP AUTH PLAIN)
    /// are redacted too.
    pub fn resolve_all(connector: &Connector) -> Result<Secrets, SecretError> {
        let mut values = BTreeMap::new();
        let mut forms = RedactorBuilder::default();
        for (name, reference) in &connector.secrets {
            let value = resolve(&connector.id, name, reference)?;
            let n = value.chars().count();
            if n < SHORTEST {
                return Err(SecretError(format!(
                    "connector `{}`: secret `{name}` ({reference}) resolves to {n} character(s); \
                     a secret under {SHORTEST} characters cannot be kept out of outputs, so it is \
                     not used: set the real credential",
                    connector.id
                )));
            }
            forms.secret(&value);
            values.insert(name.clone(), value);
        }
        if let (Some(user), Some(password)) = (values.get("username"), values.get("password")) {
            forms.credentials(user, password);
        }
        let redactor = forms
            .build(&format!("connector `{}`'s secrets", connector.id))
            .map_err(|e| SecretError(e.to_string()))?;
        Ok(Secrets { values, redactor })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_reference_error_does_not_echo_it_as_value() {
        let err = resolve("c1", "k", "${env:MULTIJOB_TEST_UNSET_SECRET_XYZ}").unwrap_err();
        assert!(err.0.contains("c1"), "{err}");
        assert!(err.0.contains("MULTIJOB_TEST_UNSET_SECRET_XYZ"), "{err}");
        let err = resolve("c1", "k", "plain").unwrap_err();
        assert!(!err.0.contains("plain"), "{err}");
    }

    /// A connector whose secrets are files holding `values`.
    fn connector_with(dir: &std::path::Path, values: &[(&str, &str)]) -> Connector {
        let mut secrets = BTreeMap::new();
        for (name, value) in values {
            let path = dir.join(name);
            std::fs::write(&path, value).unwrap();
            secrets.insert(name.to_string(), format!("${{file:{}}}", path.display()));
        }
        Connector {
            id: "c1".into(),
            provider: crate::spec::model::Provider::Http,
            base_url: None,
            secrets,
            config: Default::default(),
            rate_limit: None,
            allowed_hosts: Vec::new(),
            description: None,
            bridge: None,
            mcp: Default::default(),
        }
    }

    #[test]
    fn a_secret_under_four_characters_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = connector_with(dir.path(), &[("ok", "long-enough-value"), ("pin", "xq7")]);
        let err = Secrets::resolve_all(&c).err().expect("refused");
        assert!(err.0.contains("`pin`") && err.0.contains("c1"), "{err}");
        assert!(err.0.contains("3 character"), "{err}");
        assert!(!err.0.contains("xq7"), "{err}");
        let c = connector_with(dir.path(), &[("empty", "")]);
        assert!(Secrets::resolve_all(&c).is_err());
        let c = connector_with(dir.path(), &[("four", "shop")]);
        let secrets = Secrets::resolve_all(&c).expect("four characters are enough");
        assert_eq!(secrets.get("four"), Some("shop"));
        assert_eq!(secrets.redactor().redact("shop shopee"), "*** shopee");
    }

    #[test]
    fn username_and_password_are_redacted_in_their_basic_auth_form() {
        let dir = tempfile::tempdir().unwrap();
        let c = connector_with(
            dir.path(),
            &[("username", "alice"), ("password", "pa ss>>~~?")],
        );
        let secrets = Secrets::resolve_all(&c).unwrap();
        let r = secrets.redactor();
        // base64("alice:pa ss>>~~?"), standard and URL-safe.
        assert_eq!(r.redact("Basic YWxpY2U6cGEgc3M+Pn5+Pw=="), "Basic ***");
        assert_eq!(r.redact("Basic YWxpY2U6cGEgc3M-Pn5-Pw"), "Basic ***");
    }

    #[test]
    fn a_secret_file_that_is_a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("token");
        crate::regular_file::test_support::mkfifo(&fifo);
        let reference = format!("${{file:{}}}", fifo.display());
        for (reference, what) in [
            (reference, "FIFO"),
            ("${file:/dev/zero}".to_string(), "character device"),
        ] {
            let err = crate::regular_file::test_support::within_5s(move || {
                resolve("c1", "token", &reference)
            })
            .expect_err("refused");
            assert!(err.0.contains(what), "{err}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 70 * 1024]).unwrap();
        let err = resolve("c1", "token", &format!("${{file:{}}}", big.display())).unwrap_err();
        assert!(err.0.contains("too long for a secret"), "{err}");
    }
}
