use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::json;

use super::*;

const JWT: &str = "jwt-secret-0123456789-abcdefghijklmnop";
const KEY: &str = "sk-live/AbC+dEf?g=h&i j\"k\\l";

fn scrubber() -> Scrubber {
    let mut secrets = Secrets::new();
    secrets.add("AGENT_SERVER_JWT_SECRET", JWT).unwrap();
    secrets.add("LLM_API_KEY", KEY).unwrap();
    Scrubber::new(&secrets)
}

/// Scrubs `text` and checks that neither secret survives in any form, that the marker is
/// there `markers` times, and that `kept` (text around the secret) is untouched.
fn check(text: &str, markers: usize, kept: &[&str]) {
    let scrubber = scrubber();
    let clean = scrubber.scrub(Site::Events, text);
    assert_eq!(clean.matches(MARKER).count(), markers, "{text} -> {clean}");
    for secret in [JWT, KEY] {
        assert!(!clean.contains(secret), "{text} -> {clean}");
    }
    for part in kept {
        assert!(clean.contains(part), "{part:?} lost: {text} -> {clean}");
    }
    assert_eq!(scrubber.scrubbed(Site::Events), markers as u64);
    assert_eq!(scrubber.scrubbed(Site::Logs), 0);
}

#[test]
fn secrets_are_found_raw_and_in_their_encodings() {
    let hex: String = JWT.bytes().map(|b| format!("{b:02x}")).collect();
    let url = format!(
        "https://example.com/cb?key={}&next=1",
        percent_encoding::utf8_percent_encode(KEY, NON_ALPHANUMERIC)
    );
    let uri_component = percent_encoding::utf8_percent_encode(KEY, URI_COMPONENT).to_string();
    let json_text = serde_json::to_string(&json!({ "key": KEY })).unwrap();
    let table: &[(String, usize, &[&str])] = &[
        (format!("the secret is {JWT}."), 1, &["the secret is ", "."]),
        (format!("{JWT}{JWT} and {KEY}"), 3, &[" and "]),
        (
            format!("PATH=/usr/bin\nJWT={JWT}\n"),
            1,
            &["PATH=/usr/bin\nJWT="],
        ),
        (STANDARD.encode(JWT), 1, &[]),
        (URL_SAFE.encode(KEY), 1, &[]),
        (hex.clone(), 1, &[]),
        (hex.to_ascii_uppercase(), 1, &[]),
        (url, 1, &["https://example.com/cb?key=", "&next=1"]),
        (uri_component.to_ascii_lowercase(), 1, &[]),
        (json_text, 1, &["{\"key\":\""]),
        (
            "nothing to see here".to_owned(),
            0,
            &["nothing to see here"],
        ),
    ];
    for (text, markers, kept) in table {
        check(text, *markers, kept);
    }
}

#[test]
fn base64_finds_a_secret_anywhere_inside_a_longer_blob() {
    let scrubber = scrubber();
    // Each prefix length puts the secret at another alignment of base64's 3-byte groups,
    // and each suffix leaves another unfinished last group.
    for prefix in ["", "A", "AB", "ABC", "HOME=/root\nJWT="] {
        for suffix in ["", "\n", "\nX=", "\nPATH=/usr/bin\n"] {
            let plain = format!("{prefix}{JWT}{suffix}");
            for encoded in [STANDARD.encode(&plain), URL_SAFE.encode(&plain)] {
                let clean = scrubber.scrub(Site::Model, &encoded);
                assert!(clean.contains(MARKER), "{plain:?} as {encoded} -> {clean}");
                // What is left decodes to no more than a few bits of the secret.
                assert!(
                    !clean.contains(&STANDARD_NO_PAD.encode(JWT)[4..]),
                    "{plain:?}: {clean}"
                );
            }
        }
    }
}

#[test]
fn text_without_secrets_is_not_copied_and_no_secrets_means_no_work() {
    let scrubber = scrubber();
    assert!(matches!(
        scrubber.scrub(Site::Http, "plain text"),
        Cow::Borrowed(_)
    ));
    let none = Scrubber::default();
    assert!(!none.is_active());
    assert!(matches!(none.scrub(Site::Http, JWT), Cow::Borrowed(_)));
}

#[test]
fn short_secrets_are_refused_and_empty_or_repeated_ones_ignored() {
    let mut secrets = Secrets::new();
    let refused = secrets.add("--store password", "pw").unwrap_err();
    assert_eq!(refused.len, 2);
    let said = refused.to_string();
    assert!(
        said.contains("--store password") && !said.contains("pw "),
        "{said}"
    );
    secrets.add("EMPTY", "").unwrap();
    secrets.add("A", JWT).unwrap();
    secrets.add("B", JWT).unwrap();
    assert_eq!(secrets.sources().collect::<Vec<_>>(), ["A"]);
    assert!(!format!("{secrets:?}").contains(JWT));
    assert!(!format!("{:?}", Scrubber::new(&secrets)).contains(JWT));
}

#[test]
fn json_values_are_scrubbed_in_strings_and_keys() {
    let scrubber = scrubber();
    let mut value = json!({
        "env": format!("A=1\nJWT={JWT}"),
        "list": [1, true, null, {"deep": KEY}],
        JWT: "a key that is a secret",
        "clean": "untouched",
    });
    assert!(scrubber.scrub_json(Site::Events, &mut value));
    let text = value.to_string();
    assert!(!text.contains(JWT) && !text.contains("sk-live"), "{text}");
    assert_eq!(value["clean"], "untouched");
    assert_eq!(value["list"][3]["deep"], MARKER);
    assert_eq!(value[MARKER], "a key that is a secret");
    assert_eq!(scrubber.scrubbed(Site::Events), 3);
    let mut clean = json!({"a": ["b", 1]});
    assert!(!scrubber.scrub_json(Site::Events, &mut clean));
}

#[test]
fn a_secret_split_across_stream_pieces_is_still_removed() {
    let scrubber = scrubber();
    let text = format!("Here it is: {JWT} and {KEY}, done. Plain text after.");
    // Every way of cutting the text in two, and in pieces of every small size.
    let mut cuttings: Vec<Vec<String>> = (0..=text.len())
        .filter(|at| text.is_char_boundary(*at))
        .map(|at| vec![text[..at].to_owned(), text[at..].to_owned()])
        .collect();
    for size in 1..6 {
        let chars: Vec<char> = text.chars().collect();
        cuttings.push(chars.chunks(size).map(|c| c.iter().collect()).collect());
    }
    for pieces in cuttings {
        let mut stream = StreamScrub::new();
        let mut out = String::new();
        for piece in &pieces {
            out.push_str(&stream.push(&scrubber, Site::Events, piece));
        }
        out.push_str(&stream.finish(&scrubber, Site::Events));
        assert_eq!(
            out,
            format!("Here it is: {MARKER} and {MARKER}, done. Plain text after."),
            "{pieces:?}"
        );
        assert!(!stream.is_holding());
    }
}

#[test]
fn a_stream_holds_back_only_what_could_start_a_secret() {
    let scrubber = scrubber();
    let mut stream = StreamScrub::new();
    assert_eq!(stream.push(&scrubber, Site::Events, "hello "), "hello ");
    assert_eq!(
        stream.push(&scrubber, Site::Events, "world jwt-se"),
        "world "
    );
    assert!(stream.is_holding());
    assert_eq!(stream.push(&scrubber, Site::Events, "cond"), "jwt-second");
    assert!(!stream.is_holding());
}
