use super::*;

fn section(document: &str, heading: &str) -> &'static Section {
    sections()
        .iter()
        .find(|s| s.document == document && s.heading == heading)
        .unwrap_or_else(|| panic!("no section {heading:?} in {document}"))
}

/// Anchors are GitHub's, numbered when a heading repeats.
#[test]
fn anchors_are_githubs() {
    let mut taken = Vec::new();
    let table = [
        ("Resume", "resume"),
        (
            "`start_agent` → `run_accepted` or `error`",
            "start_agent--run_accepted-or-error",
        ),
        ("GET /health, GET /healthz", "get-health-get-healthz"),
        ("Error codes", "error-codes"),
        ("Resume", "resume-1"),
        ("Resume", "resume-2"),
    ];
    for (heading, expected) in table {
        assert_eq!(anchor(heading, &mut taken), expected, "{heading}");
    }
}

/// A section's prose is its paragraphs and list items: no code block, table or JSON, and
/// nothing of the next section.
#[test]
fn prose_is_paragraphs_and_lists_only() {
    let resume = section("docs/protocol.md", "Resume");
    assert_eq!(resume.anchor, "resume");
    assert_eq!(resume.link(), "/docs/protocol.md#resume");
    assert!(
        resume
            .prose
            .starts_with("Connections drop: networks change, laptops sleep"),
        "{}",
        resume.prose
    );
    assert!(
        resume.prose.contains("\n\n1. Remember the `epoch`"),
        "{}",
        resume.prose
    );
    assert!(
        resume.prose.contains("\n\n2. Reconnect with both"),
        "{}",
        resume.prose
    );
    for absent in ["```", "| `resume` |", "{\"status\"", "## ", "Budgets"] {
        assert!(
            !resume.prose.contains(absent),
            "{absent:?} in {}",
            resume.prose
        );
    }
    // Every section's prose is clean in the same way.
    for s in sections() {
        assert!(
            !s.prose.contains("```"),
            "{} {}: {}",
            s.document,
            s.heading,
            s.prose
        );
        assert!(
            !s.prose.lines().any(|l| l.trim_start().starts_with('|')),
            "a table row in {} {}",
            s.document,
            s.heading
        );
        assert!(!s.heading.is_empty() && !s.anchor.is_empty(), "{s:?}");
    }
}

/// The section named after what is asked comes first, whatever words a question wraps it in.
#[test]
fn search_ranks_the_section_named_after_the_question_first() {
    let table = [
        ("How does resume work?", "docs/protocol.md", "Resume"),
        ("resume after_seq epoch", "docs/protocol.md", "Resume"),
        (
            "What are the close codes?",
            "docs/protocol.md",
            "Close codes",
        ),
        ("create_from_legacy migration", "docs/migration.md", ""),
    ];
    for (query, document, heading) in table {
        let hits = search(query, 3);
        let (best, _) = hits.first().unwrap_or_else(|| panic!("{query}: nothing"));
        assert_eq!(best.document, document, "{query}: {hits:?}");
        if !heading.is_empty() {
            assert_eq!(best.heading, heading, "{query}");
        }
    }
    assert!(search("xyzzyplugh", 3).is_empty());
    assert_eq!(search("resume", 2).len(), 2);
}

#[test]
fn terms_drop_plurals_and_short_words() {
    assert_eq!(terms("Events of a run's tools"), ["event", "run", "tool"]);
    assert_eq!(terms("process after_seq"), ["process", "after_seq"]);
}

/// A document's page carries its headings' anchors and leads links between the documents to
/// their pages; any other name is not a page.
#[test]
fn pages_carry_the_anchors_links_lead_to() {
    let protocol = page("protocol.md").unwrap();
    assert!(
        protocol.contains("<h2 id=\"resume\">Resume</h2>"),
        "resume heading"
    );
    assert!(protocol.contains("<title>Wire protocol v1 · agent-server</title>"));
    assert!(
        protocol.contains("<table tabindex=\"0\">") && protocol.contains("<pre tabindex=\"0\">"),
        "tables and code are rendered, and reachable by keyboard to scroll"
    );
    let readme = page("README.md").unwrap();
    assert!(
        readme.contains("href=\"/docs/operations.md#browsers-origins-and-proxies\""),
        "README's link to the operations guide"
    );
    for name in ["nope.md", "../Cargo.toml", "", "docs/protocol.md"] {
        assert!(page(name).is_none(), "{name}");
    }
    assert_eq!(
        local_link("docs/protocol.md#resume"),
        "/docs/protocol.md#resume"
    );
    assert_eq!(local_link("../README.md"), "/docs/README.md");
    assert_eq!(
        local_link("https://example.com/x.md"),
        "https://example.com/x.md"
    );
    assert_eq!(local_link("CHANGELOG.md"), "CHANGELOG.md");
}
