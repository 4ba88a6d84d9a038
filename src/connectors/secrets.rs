//! Secrets by reference: `${env:NAME}` and `${file:PATH}` are resolved at the
//! moment of use and dropped with the call; nothing here caches a value.
//! Every string this layer hands back goes through a [`Redactor`] built from
//! the values resolved for that call.

use std::collections::BTreeMap;

use crate::spec::model::Connector;

/// Shorter values are not scrubbed: replacing every `a` or `42` would mangle
/// output without protecting anything worth protecting.
const MIN_REDACTED_LEN: usize = 4;
const MASK: &str = "***";

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
        Some(("file", path)) => match std::fs::read_to_string(path) {
            // Files written by `echo` end with a newline that is not part of the secret.
            Ok(text) => Ok(text.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => Err(SecretError(format!(
                "connector `{connector}`: secret `{name}` refers to {reference}, which cannot be \
                 read ({}); check the path and its permissions",
                e.kind()
            ))),
        },
        _ => Err(SecretError(format!(
            "connector `{connector}`: secret `{name}` is not a reference; use ${{env:NAME}} or \
             ${{file:PATH}}"
        ))),
    }
}

/// The secrets of one connector, resolved for one call.
#[derive(Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    redactor: Redactor,
}

impl Secrets {
    /// Resolves every secret the connector declares; the first failure wins.
    pub fn resolve_all(connector: &Connector) -> Result<Secrets, SecretError> {
        let mut secrets = Secrets::default();
        for (name, reference) in &connector.secrets {
            let value = resolve(&connector.id, name, reference)?;
            secrets.redactor.add(&value);
            secrets.values.insert(name.clone(), value);
        }
        Ok(secrets)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

/// Scrubs known secret values from strings.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    pub fn add(&mut self, value: &str) {
        if value.len() >= MIN_REDACTED_LEN && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
            // Longest first, so a secret containing another is masked whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_first_and_skips_short_values() {
        let mut r = Redactor::default();
        r.add("abc");
        r.add("token");
        r.add("token-123");
        assert_eq!(r.redact("abc token-123 token"), "abc *** ***");
    }

    #[test]
    fn bad_reference_error_does_not_echo_it_as_value() {
        let err = resolve("c1", "k", "${env:MULTIJOB_TEST_UNSET_SECRET_XYZ}").unwrap_err();
        assert!(err.0.contains("c1"), "{err}");
        assert!(err.0.contains("MULTIJOB_TEST_UNSET_SECRET_XYZ"), "{err}");
        let err = resolve("c1", "k", "plain").unwrap_err();
        assert!(!err.0.contains("plain"), "{err}");
    }
}
