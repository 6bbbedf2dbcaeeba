//! The chat page speaks the protocol's vocabulary, as `agent-protocol` defines it: every frame
//! type it handles or sends and every close code it names exists there, and it handles every
//! event type there is. The page is JavaScript, so this reads its source; the browser tests
//! (`browser.rs`) check that it behaves. Its HTML holds no inline script, style or event
//! handler, which its Content Security Policy would block.

use agent_protocol::{CONTROL_TYPES, CloseCode, EVENT_TYPES, ErrorCode, parse_client_frame};
use agent_server::routes::{CHAT_PAGE, CHAT_SCRIPT};

/// The quoted words that follow `marker` in the page, e.g. `case "` gives every `case "x":`.
fn quoted_after(marker: &str) -> Vec<String> {
    CHAT_SCRIPT
        .match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &CHAT_SCRIPT[at + marker.len()..];
            rest.split('"').next().map(str::to_owned)
        })
        .collect()
}

/// The numbers that follow `marker` in the page.
fn numbers_after(marker: &str) -> Vec<u16> {
    CHAT_SCRIPT
        .match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &CHAT_SCRIPT[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn the_page_handles_every_type_it_receives_by_the_protocols_names() {
    let handled = quoted_after("case \"");
    assert!(!handled.is_empty(), "the page handles no frame type?");
    for kind in &handled {
        assert!(
            CONTROL_TYPES.contains(&kind.as_str()) || EVENT_TYPES.contains(&kind.as_str()),
            "the page handles {kind:?}, which agent-protocol does not know"
        );
    }
    for kind in EVENT_TYPES {
        assert!(
            handled.iter().any(|h| h == kind),
            "the page does not handle the event type {kind:?}"
        );
    }
}

#[test]
fn the_page_sends_only_frames_the_server_parses() {
    let sent = quoted_after("type: \"");
    assert!(sent.iter().any(|t| t == "start_agent"), "{sent:?}");
    for kind in sent {
        let frame = format!(r#"{{"type":"{kind}"}}"#);
        if let Err(e) = parse_client_frame(&frame, "assistant") {
            assert_ne!(
                e.code,
                ErrorCode::UnknownType,
                "the page sends {kind:?}: {e}"
            );
        }
    }
}

#[test]
fn the_close_codes_the_page_names_are_the_protocols() {
    let codes = numbers_after("code === ");
    assert!(!codes.is_empty());
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
