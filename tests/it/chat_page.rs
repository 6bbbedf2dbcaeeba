//! The chat page speaks the protocol's vocabulary, as `agent-protocol` defines it. Its script
//! is TypeScript (`clients/typescript/page/app.ts`, bundled into `static/app.js`) on the
//! TypeScript client, whose types are generated from `agent-protocol` (`ts_types.rs` fails
//! when they drift) and checked against the page by `tsc` (`ts_client.rs` runs it): the
//! frames it sends and the names it handles cannot be other than the protocol's. What the
//! types cannot say is checked here, on its source: it handles every event type there is,
//! and the close codes it explains are the protocol's. The browser tests (`browser.rs`)
//! check that it behaves. Its HTML holds no inline script, style or event handler, which its
//! Content Security Policy would block.

use agent_protocol::{CloseCode, EVENT_TYPES};
use agent_server::routes::{CHAT_PAGE, CHAT_SCRIPT};

/// The page's source (the bundle holds it, with the client, as JavaScript).
const PAGE_SOURCE: &str = include_str!("../../clients/typescript/page/app.ts");

#[test]
fn the_page_handles_every_event_type() {
    for kind in EVENT_TYPES {
        assert!(
            PAGE_SOURCE.contains(&format!("case \"{kind}\":")),
            "the page does not handle the event type {kind:?}"
        );
    }
    // What is embedded is the bundle of that source.
    assert!(CHAT_SCRIPT.contains("Generated from clients/typescript/page/app.ts"));
}

#[test]
fn the_close_codes_the_page_names_are_the_protocols() {
    let table = PAGE_SOURCE
        .split_once("const CLOSED_BECAUSE")
        .and_then(|(_, rest)| rest.split_once("};"))
        .map(|(table, _)| table)
        .expect("the page's table of close codes");
    let codes: Vec<u16> = table
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter_map(|(code, _)| code.parse().ok())
        .collect();
    assert!(codes.len() >= 3, "{table}");
    for code in codes {
        let close = CloseCode::from_code(code);
        assert!(
            !matches!(close, CloseCode::Other(_)),
            "the page names close code {code}, which agent-protocol does not"
        );
        assert!(close.should_resume(), "the page resumes after {code}");
    }
}

/// Every `<script>` of the page names a file, and the page has no `<style>` element, no
/// `style="…"` attribute and no `on…=` handler attribute: the policy `script-src 'self';
/// style-src 'self'` would block each of them.
#[test]
fn the_page_has_no_inline_script_style_or_handler() {
    let html = CHAT_PAGE.to_lowercase();
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert!(scripts.len() >= 3, "the page loads its scripts");
    for script in scripts {
        let (open_tag, rest) = script.split_once('>').unwrap_or_default();
        let body = rest.split("</script>").next().unwrap_or_default();
        assert!(
            open_tag.contains(" src=\"/static/"),
            "an inline script: <script{open_tag}>"
        );
        assert!(
            body.trim().is_empty(),
            "a script element with a body: {body}"
        );
    }
    for banned in ["<style", " style=", "javascript:"] {
        assert!(!html.contains(banned), "the page holds {banned:?}");
    }
    let handlers: Vec<&str> = html
        .match_indices(" on")
        .map(|(at, _)| &html[at + 1..])
        .filter(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            rest[name.len()..].starts_with('=') && name.len() > 2
        })
        .collect();
    assert!(
        handlers.is_empty(),
        "event handler attributes: {handlers:?}"
    );
}
