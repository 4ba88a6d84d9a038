//! Every form a secret takes on the wire, written out by hand (or produced
//! by the real encoders: `url`, serde_json), and the short-secret rule.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn redactor(values: &[&str]) -> Redactor {
    Redactor::of(values).expect("a redactor builds")
}

#[track_caller]
fn masked(r: &Redactor, text: &str, expected: &str) {
    assert_eq!(r.redact(text), expected, "redacting {text:?}");
}

/// Percent-decodes `text`, `+` as a space when `plus` (the test's own
/// oracle: what a reader of the output could recover).
fn decode(text: &str, plus: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) if plus => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn raw_values_are_masked_longest_and_overlapping_as_one() {
    let r = redactor(&["token-123", "token-1234567", "567-and-more"]);
    masked(&r, "a token-123 b", "a *** b");
    // Two secrets that overlap in the text are masked as one run.
    masked(&r, "x token-1234567-and-more y", "x *** y");
}

#[test]
fn percent_encoded_forms_in_paths_queries_and_forms() {
    let r = redactor(&["SECRET PART/+x"]);
    // In a URL path (Telegram's bot token), as url encodes it: `/` and `+` stay.
    masked(
        &r,
        "error sending request for url (http://h/botSECRET%20PART/+x/sendMessage)",
        "error sending request for url (http://h/bot***/sendMessage)",
    );
    // Form-encoded (a query pair, a form body): `+` for the space.
    masked(&r, "?token=SECRET+PART%2F%2Bx&a=1", "?token=***&a=1");
    // Every reserved byte encoded, upper- and lower-case hex.
    masked(&r, "t=SECRET%20PART%2F%2Bx", "t=***");
    masked(&r, "t=SECRET%20PART%2f%2bx", "t=***");
    masked(&r, "t=SECRET+PART%2f%2bx;", "t=***;");
}

#[test]
fn forms_match_what_the_url_crate_writes() {
    let token = "123:tok en\"<x>?y";
    let r = redactor(&[token]);
    let url = Url::parse(&format!("http://127.0.0.1:9/bot{token}/sendMessage")).unwrap();
    let shown = r.redact(url.as_str());
    assert_eq!(shown, "http://127.0.0.1:9/bot***/sendMessage");
    let mut url = Url::parse("http://h/x").unwrap();
    url.query_pairs_mut().append_pair("token", token);
    assert_eq!(r.redact(url.as_str()), "http://h/x?token=***");
    let mut url = Url::parse("http://h/x").unwrap();
    url.set_username("bot").unwrap();
    url.set_password(Some(token)).unwrap();
    assert_eq!(r.redact(url.as_str()), "http://bot:***@h/x");
}

#[test]
fn a_value_a_url_splits_into_path_and_fragment_is_masked() {
    // Found by `no_encoded_form_survives`: `#` ends the path, and the path
    // and the fragment percent-encode different characters.
    let token = "{ab#%%ag\"\"";
    let r = redactor(&[token]);
    let url = Url::parse(&format!("http://h/bot{token}/send")).unwrap();
    assert_eq!(url.as_str(), "http://h/bot%7Bab#%%ag%22%22/send");
    assert_eq!(r.redact(url.as_str()), "http://h/bot***/send");
}

#[test]
fn a_url_secret_is_masked_as_written_and_normalised() {
    let hook = "HTTP://127.0.0.1:80/services/T000/B000/XXXXsecret?a=b c";
    let r = redactor(&[hook]);
    masked(&r, &format!("bad url `{hook}`"), "bad url `***`");
    // reqwest's errors show the URL as `url` serialises it.
    masked(
        &r,
        "error sending request for url (http://127.0.0.1/services/T000/B000/XXXXsecret?a=b%20c)",
        "error sending request for url (***)",
    );
    // Without the query (the `what` of an http call) and beside the host.
    masked(
        &r,
        "POST http://127.0.0.1/services/T000/B000/XXXXsecret failed",
        "POST *** failed",
    );
    masked(
        &r,
        "host 127.0.0.1 path /services/T000/B000/XXXXsecret?a=b%20c",
        "host 127.0.0.1 path ***",
    );
    masked(
        &r,
        "host 127.0.0.1 path /services/T000/B000/XXXXsecret",
        "host 127.0.0.1 path ***",
    );
    // The whole URL as a query value.
    masked(
        &r,
        "next=http%3A%2F%2F127.0.0.1%2Fservices%2FT000%2FB000%2FXXXXsecret%3Fa%3Db%2520c",
        "next=***",
    );
}

#[test]
fn json_escaped_forms() {
    let r = redactor(&["to\"ken\\va/lue\n1", "pässwörd-1<2>"]);
    masked(&r, r#"{"echo":"to\"ken\\va/lue\n1"}"#, r#"{"echo":"***"}"#);
    masked(&r, r#"{"echo":"to\"ken\\va\/lue\n1"}"#, r#"{"echo":"***"}"#);
    // Python's ensure_ascii and Go's HTML-safe escaping.
    masked(&r, r#"{"p":"p\u00e4ssw\u00f6rd-1<2>"}"#, r#"{"p":"***"}"#);
    masked(&r, r#"{"p":"pässwörd-1\u003c2\u003e"}"#, r#"{"p":"***"}"#);
}

#[test]
fn base64_forms_of_a_value_and_of_credentials() {
    let mut b = RedactorBuilder::default();
    b.secret("alice")
        .secret("s3cr3t pass/+?>")
        .credentials("alice", "s3cr3t pass/+?>");
    let r = b.build("test").unwrap();
    // HTTP Basic, standard and URL-safe alphabets, with and without padding.
    masked(
        &r,
        "Authorization: Basic YWxpY2U6czNjcjN0IHBhc3MvKz8+",
        "Authorization: Basic ***",
    );
    masked(&r, "basic=YWxpY2U6czNjcjN0IHBhc3MvKz8-;", "basic=***;");
    // SMTP AUTH PLAIN (`\0user\0password`), with and without padding.
    masked(
        &r,
        "535 rejected AGFsaWNlAHMzY3IzdCBwYXNzLys/Pg==",
        "535 rejected ***",
    );
    masked(
        &r,
        "535 rejected AGFsaWNlAHMzY3IzdCBwYXNzLys/Pg",
        "535 rejected ***",
    );
    // SMTP AUTH LOGIN sends each alone.
    masked(&r, "334 czNjcjN0IHBhc3MvKz8+ no", "334 *** no");
}

#[test]
fn short_secrets_are_masked_only_as_whole_tokens() {
    let r = redactor(&["shop"]);
    masked(&r, "shopee", "shopee");
    masked(&r, "myshop and shopping", "myshop and shopping");
    masked(&r, "shop", "***");
    masked(&r, "key=shop&x=1", "key=***&x=1");
    masked(&r, "Bearer shop.", "Bearer ***.");
    masked(&r, "(shop)", "(***)");
    // Exact case for short ones: `Shop` is a word, not the secret.
    masked(&r, "Shop", "Shop");
    // Letters of any script count as part of a word.
    masked(&r, "éshop", "éshop");
    // Its encoded forms follow the same rule.
    masked(&r, "Basic c2hvcA== x", "Basic *** x");
    masked(&r, "xc2hvcA==", "xc2hvcA==");
}

#[test]
fn values_under_four_characters_are_not_matched_at_all() {
    let r = redactor(&["abc"]);
    masked(&r, "abc abc", "abc abc");
}

#[test]
fn long_values_ignore_ascii_case() {
    let r = redactor(&["echoed-secret-abc"]);
    masked(&r, "Bearer ECHOED-SECRET-ABC", "Bearer ***");
    masked(&r, "xEchoed-Secret-Abcx", "x***x");
}

#[test]
fn text_around_a_match_stays_valid_utf8() {
    let r = redactor(&["sécret-välue"]);
    masked(&r, "🙂sécret-välue🙂", "🙂***🙂");
    masked(&r, "é", "é");
}

#[test]
fn parsed_json_is_redacted_strings_and_keys() {
    let r = redactor(&["json-secret-value"]);
    // The text holds the secret only as `\u` escapes, so the text pass sees nothing.
    let text =
        r#"{"a":"\u006Ason-secret-value","json-secret-valu\u0065":[1,"x json-s\u0065cret-value"]}"#;
    assert_eq!(r.redact(text), text);
    let mut value: Value = serde_json::from_str(text).unwrap();
    r.redact_value(&mut value);
    assert_eq!(value, json!({"a": "***", "***": [1, "x ***"]}));
}

#[test]
fn an_empty_redactor_changes_nothing() {
    let r = Redactor::default();
    masked(&r, "anything at all", "anything at all");
    let mut v = json!({"k": "v"});
    r.redact_value(&mut v);
    assert_eq!(v, json!({"k": "v"}));
}

/// A secret with the characters URLs, forms and JSON treat specially.
fn secret() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 +/\"%é?#&=:@<>{}`|^-]{8,24}"
}

proptest! {
    /// Whatever the secret, no reader of the redacted text can decode it
    /// back out, wherever the `url` crate or serde_json put it.
    #[test]
    fn no_encoded_form_survives(s in secret(), prefix in "[a-z]{0,3}", suffix in "[a-z/]{0,3}") {
        let r = redactor(&[&s]);
        if let Ok(url) = Url::parse(&format!("http://h/bot{prefix}{s}{suffix}/send")) {
            let shown = r.redact(url.as_str());
            prop_assert!(!decode(&shown, false).contains(&s), "{} → {}", url, shown);
        }
        let mut url = Url::parse("http://h/x").unwrap();
        url.query_pairs_mut().append_pair("k", &format!("{prefix}{s}{suffix}"));
        let shown = r.redact(url.as_str());
        prop_assert!(!decode(&shown, true).contains(&s), "{} → {}", url, shown);
        let body = json!({"echo": format!("{prefix}{s}{suffix}")}).to_string();
        let shown = r.redact(&body);
        let parsed: Value = serde_json::from_str(&shown).unwrap();
        prop_assert!(!parsed.to_string().contains(&s) && !parsed["echo"].as_str().unwrap().contains(&s), "{} → {}", body, shown);
    }
}
