use super::*;

const NOW: i64 = 1_765_000_000;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn multijob(value: &str) -> Headers {
    headers(&[(MULTIJOB_HEADER, value)])
}

fn check(scheme: Scheme, h: &Headers, body: &[u8], secret: &str) -> Result<(), Rejection> {
    verify(scheme, h, body, "", secret, NOW)
}

// ---------------------------------------------------------------- multijob

#[test]
fn multijob_round_trip() {
    let h = multijob(&multijob_header("s3cret", NOW, b"{\"id\":1}"));
    assert_eq!(check(Scheme::Multijob, &h, b"{\"id\":1}", "s3cret"), Ok(()));
}

#[test]
fn multijob_matches_an_openssl_signature() {
    // printf '%s.%s' "$T" "$BODY" | openssl dgst -sha256 -hmac "$SECRET"
    let body = br#"{"order_id":"A-17","amount":42}"#;
    let expected =
        "t=1700000000,v1=694671ab2fa48bdcfc7e879d03618a87b631590a231dd389e99c2d404f7abb43";
    assert_eq!(multijob_header("whsec-demo", 1_700_000_000, body), expected);
    let h = multijob(expected);
    let at = |now| verify(Scheme::Multijob, &h, body, "", "whsec-demo", now);
    assert_eq!(at(1_700_000_100), Ok(()));
}

#[test]
fn multijob_header_is_t_then_v1_hex() {
    let value = multijob_header("k", 1_700_000_000, b"x");
    let (t, v1) = value.split_once(',').unwrap();
    assert_eq!(t, "t=1700000000");
    let hex = v1.strip_prefix("v1=").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[test]
fn multijob_wrong_secret_or_tampered_body_is_bad_signature() {
    let h = multijob(&multijob_header("s3cret", NOW, b"body"));
    assert_eq!(
        check(Scheme::Multijob, &h, b"body", "other"),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        check(Scheme::Multijob, &h, b"bodY", "s3cret"),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn multijob_timestamp_is_signed_so_moving_it_breaks_the_signature() {
    let signed = multijob_header("s3cret", NOW - 3600, b"body");
    let v1 = signed.split_once(',').unwrap().1;
    let h = multijob(&format!("t={NOW},{v1}"));
    assert_eq!(
        check(Scheme::Multijob, &h, b"body", "s3cret"),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn multijob_replay_window_holds_in_both_directions() {
    for (offset, expected) in [
        (-REPLAY_WINDOW_SECS, Ok(())),
        (REPLAY_WINDOW_SECS, Ok(())),
        (-REPLAY_WINDOW_SECS - 1, Err(Rejection::StaleTimestamp)),
        // A sender's clock far ahead is refused too: its request would
        // otherwise stay replayable for longer than the window.
        (REPLAY_WINDOW_SECS + 1, Err(Rejection::StaleTimestamp)),
    ] {
        let h = multijob(&multijob_header("s3cret", NOW + offset, b"b"));
        assert_eq!(
            check(Scheme::Multijob, &h, b"b", "s3cret"),
            expected,
            "offset {offset}"
        );
    }
}

#[test]
fn multijob_custom_window() {
    let h = multijob(&multijob_header("s", NOW - 30, b"b"));
    let within = |w| verify_within(Scheme::Multijob, &h, b"b", "", "s", NOW, w);
    assert_eq!(within(10), Err(Rejection::StaleTimestamp));
    assert_eq!(within(60), Ok(()));
}

#[test]
fn multijob_accepts_any_of_several_v1_during_rotation() {
    let old = multijob_header("old-secret", NOW, b"b");
    let new = multijob_header("new-secret", NOW, b"b");
    let new_v1 = new.split_once(',').unwrap().1;
    let h = multijob(&format!("{old},{new_v1}"));
    assert_eq!(check(Scheme::Multijob, &h, b"b", "old-secret"), Ok(()));
    assert_eq!(check(Scheme::Multijob, &h, b"b", "new-secret"), Ok(()));
    assert_eq!(
        check(Scheme::Multijob, &h, b"b", "third"),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn multijob_ignores_unknown_versions_and_spaces() {
    let value = multijob_header("s", NOW, b"b").replace(',', ", v0=zz, ");
    assert_eq!(
        check(Scheme::Multijob, &multijob(&value), b"b", "s"),
        Ok(())
    );
}

#[test]
fn multijob_missing_and_malformed_headers() {
    let missing = Rejection::MissingHeader {
        header: MULTIJOB_HEADER,
    };
    let malformed = Rejection::Malformed {
        header: MULTIJOB_HEADER,
    };
    assert_eq!(
        check(Scheme::Multijob, &Headers::new(), b"b", "s"),
        Err(missing)
    );
    let good_v1 = multijob_header("s", NOW, b"b")
        .split_once(',')
        .unwrap()
        .1
        .to_string();
    for value in [
        "".to_string(),
        "garbage".to_string(),
        // The old outbound form (body only) is refused, not mistaken.
        format!("sha256={}", &good_v1[3..]),
        good_v1.clone(),
        format!("t=,{good_v1}"),
        format!("t=12x,{good_v1}"),
        format!("t={NOW}"),
        format!("t={NOW},v1=abc"),
        format!("t={NOW},v1=zz"),
        format!("t={NOW},t={NOW},{good_v1}"),
    ] {
        assert_eq!(
            check(Scheme::Multijob, &multijob(&value), b"b", "s"),
            Err(malformed),
            "{value:?}"
        );
    }
}

#[test]
fn a_rejection_names_no_body_and_no_secret() {
    let h = multijob(&multijob_header("topsecret", NOW - 9999, b"PAYLOAD"));
    for rejection in [
        check(Scheme::Multijob, &h, b"PAYLOAD", "topsecret").unwrap_err(),
        check(Scheme::Multijob, &h, b"PAYLOAD", "wrong").unwrap_err(),
        check(Scheme::Multijob, &Headers::new(), b"PAYLOAD", "topsecret").unwrap_err(),
    ] {
        let text = format!("{rejection} {rejection:?}");
        assert!(
            !text.contains("PAYLOAD") && !text.contains("topsecret"),
            "{text}"
        );
    }
    assert_eq!(Rejection::StaleTimestamp.reason(), "stale_timestamp");
    assert_eq!(
        Rejection::MissingHeader { header: "x-a" }.to_string(),
        "missing_header (x-a)"
    );
}

// ------------------------------------------------------------------ github

#[test]
fn github_documented_example_verifies() {
    // docs.github.com, "Validating webhook deliveries" (checked with openssl).
    let h = headers(&[(
        GITHUB_HEADER,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )]);
    let secret = "It's a Secret to Everybody";
    assert_eq!(check(Scheme::Github, &h, b"Hello, World!", secret), Ok(()));
    assert_eq!(
        check(Scheme::Github, &h, b"Hello, World?", secret),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        check(Scheme::Github, &h, b"Hello, World!", "other"),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn github_missing_and_malformed() {
    assert_eq!(
        check(Scheme::Github, &Headers::new(), b"", "s"),
        Err(Rejection::MissingHeader {
            header: GITHUB_HEADER
        })
    );
    for value in ["757107ea", "sha1=757107ea", "sha256=xyz"] {
        assert_eq!(
            check(
                Scheme::Github,
                &headers(&[(GITHUB_HEADER, value)]),
                b"",
                "s"
            ),
            Err(Rejection::Malformed {
                header: GITHUB_HEADER
            })
        );
    }
}

// ------------------------------------------------------------------- slack

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: i64 = 1_531_420_618;
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

fn slack(sig: &str, ts: &str) -> Headers {
    headers(&[(SLACK_HEADER, sig), (SLACK_TIMESTAMP_HEADER, ts)])
}

#[test]
fn slack_documented_example_verifies() {
    // "Verifying requests from Slack": its signing secret, timestamp, slash
    // command body and expected signature (also checked with openssl).
    let h = slack(SLACK_SIG, &SLACK_TS.to_string());
    let at = |now| {
        verify(
            Scheme::Slack,
            &h,
            SLACK_BODY.as_bytes(),
            "",
            SLACK_SECRET,
            now,
        )
    };
    assert_eq!(at(SLACK_TS + 60), Ok(()));
    assert_eq!(at(SLACK_TS - 60), Ok(()));
    assert_eq!(
        at(SLACK_TS + REPLAY_WINDOW_SECS + 1),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        at(SLACK_TS - REPLAY_WINDOW_SECS - 1),
        Err(Rejection::StaleTimestamp)
    );
}

#[test]
fn slack_tampered_body_timestamp_or_secret_is_bad_signature() {
    let body = SLACK_BODY.as_bytes();
    let at =
        |h: &Headers, body: &[u8], secret| verify(Scheme::Slack, h, body, "", secret, SLACK_TS);
    let good = slack(SLACK_SIG, &SLACK_TS.to_string());
    assert_eq!(
        at(&good, b"token=x", SLACK_SECRET),
        Err(Rejection::BadSignature)
    );
    assert_eq!(at(&good, body, "other"), Err(Rejection::BadSignature));
    let moved = slack(SLACK_SIG, &(SLACK_TS + 1).to_string());
    assert_eq!(at(&moved, body, SLACK_SECRET), Err(Rejection::BadSignature));
}

#[test]
fn slack_missing_and_malformed() {
    let ts = SLACK_TS.to_string();
    let only_sig = headers(&[(SLACK_HEADER, SLACK_SIG)]);
    let only_ts = headers(&[(SLACK_TIMESTAMP_HEADER, &ts)]);
    assert_eq!(
        check(Scheme::Slack, &only_sig, b"", "s"),
        Err(Rejection::MissingHeader {
            header: SLACK_TIMESTAMP_HEADER
        })
    );
    assert_eq!(
        check(Scheme::Slack, &only_ts, b"", "s"),
        Err(Rejection::MissingHeader {
            header: SLACK_HEADER
        })
    );
    assert_eq!(
        check(Scheme::Slack, &slack(SLACK_SIG, "soon"), b"", "s"),
        Err(Rejection::Malformed {
            header: SLACK_TIMESTAMP_HEADER
        })
    );
    assert_eq!(
        check(Scheme::Slack, &slack(&SLACK_SIG[3..], &ts), b"", "s"),
        Err(Rejection::Malformed {
            header: SLACK_HEADER
        })
    );
}

// ---------------------------------------------------------------- telegram

#[test]
fn telegram_secret_token_must_match_exactly() {
    let h = |v: &str| headers(&[(TELEGRAM_HEADER, v)]);
    assert_eq!(
        check(Scheme::Telegram, &h("tg_Secret-1"), b"{}", "tg_Secret-1"),
        Ok(())
    );
    for wrong in ["tg_secret-1", "tg_Secret-", "tg_Secret-12", ""] {
        assert_eq!(
            check(Scheme::Telegram, &h(wrong), b"{}", "tg_Secret-1"),
            Err(Rejection::BadSignature),
            "{wrong:?}"
        );
    }
    assert_eq!(
        check(Scheme::Telegram, &Headers::new(), b"{}", "tg_Secret-1"),
        Err(Rejection::MissingHeader {
            header: TELEGRAM_HEADER
        })
    );
}

// ------------------------------------------------------------------ twilio

const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
/// Twilio's "Validating Signatures from Twilio" example fields, posted out
/// of order on purpose (the signature sorts them) and percent-encoded as a
/// real form body is.
const TWILIO_BODY: &[u8] =
    b"To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1234&From=%2B12349013030&Caller=%2B12349013030";

#[test]
fn twilio_documented_example_verifies() {
    // Auth token 12345; expected signature from the same page (also
    // checked with openssl over the concatenated string).
    let h = headers(&[(TWILIO_HEADER, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")]);
    let run =
        |body: &[u8], url: &str, token: &str| verify(Scheme::Twilio, &h, body, url, token, NOW);
    assert_eq!(run(TWILIO_BODY, TWILIO_URL, "12345"), Ok(()));
    assert_eq!(
        twilio::sign("12345", TWILIO_URL, TWILIO_BODY),
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    );
    let bad = Err(Rejection::BadSignature);
    assert_eq!(run(TWILIO_BODY, TWILIO_URL, "54321"), bad);
    assert_eq!(
        run(
            TWILIO_BODY,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            "12345"
        ),
        bad
    );
    let tampered = String::from_utf8_lossy(TWILIO_BODY).replace("1234&", "9999&");
    assert_eq!(run(tampered.as_bytes(), TWILIO_URL, "12345"), bad);
}

#[test]
fn twilio_missing_and_malformed() {
    assert_eq!(
        verify(
            Scheme::Twilio,
            &Headers::new(),
            TWILIO_BODY,
            TWILIO_URL,
            "12345",
            NOW
        ),
        Err(Rejection::MissingHeader {
            header: TWILIO_HEADER
        })
    );
    let h = headers(&[(TWILIO_HEADER, "not base64!")]);
    assert_eq!(
        verify(Scheme::Twilio, &h, TWILIO_BODY, TWILIO_URL, "12345", NOW),
        Err(Rejection::Malformed {
            header: TWILIO_HEADER
        })
    );
    // Valid base64 of the wrong length is just a wrong signature.
    let h = headers(&[(TWILIO_HEADER, "AAAA")]);
    assert_eq!(
        verify(Scheme::Twilio, &h, TWILIO_BODY, TWILIO_URL, "12345", NOW),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn hmac_sha1_matches_rfc_2202() {
    let hex = |b: [u8; 20]| super::hex::encode(&b);
    assert_eq!(
        hex(twilio::hmac_sha1(&[0x0b; 20], b"Hi There")),
        "b617318655057264e28bc0b6fb378c8ef146be00"
    );
    assert_eq!(
        hex(twilio::hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    // A key longer than the block is hashed first.
    assert_eq!(
        hex(twilio::hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}

#[test]
fn hex_round_trip_and_refusals() {
    assert_eq!(super::hex::encode(&[0, 0xab, 0xff]), "00abff");
    assert_eq!(super::hex::decode("00ABff"), Some(vec![0, 0xab, 0xff]));
    assert_eq!(super::hex::decode("abc"), None);
    assert_eq!(super::hex::decode("zz"), None);
}
