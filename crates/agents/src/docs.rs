//! The project's documents, bundled into the binary: read into sections, searched, and served
//! as pages.
//!
//! Each heading starts a [`Section`], which keeps two readings of what follows it: every word
//! (code and tables included: a search for `after_seq` finds the section whose example holds
//! it) and its **prose**, the paragraphs and list items only, as markdown without code blocks,
//! tables or HTML: what an answer quotes. Both come from `pulldown-cmark`'s reading of the
//! markdown, not from lines, so a `#` in a code block is not a heading and a table row is not a
//! sentence. A section's anchor is the one GitHub gives its heading, and [`page`] renders a
//! document with those ids, so [`Section::link`] leads to the section on the server
//! (`GET /docs/{file}`).

use std::sync::OnceLock;

use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// The project's documents, bundled at build time: the path in the repository and the text.
pub const DOCS: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../README.md")),
    (
        "docs/ARCHITECTURE.md",
        include_str!("../../../docs/ARCHITECTURE.md"),
    ),
    (
        "docs/protocol.md",
        include_str!("../../../docs/protocol.md"),
    ),
    (
        "docs/migration.md",
        include_str!("../../../docs/migration.md"),
    ),
    (
        "docs/operations.md",
        include_str!("../../../docs/operations.md"),
    ),
    ("docs/agui.md", include_str!("../../../docs/agui.md")),
    (
        "docs/security.md",
        include_str!("../../../docs/security.md"),
    ),
];

/// Where the server serves the documents: `/docs/` and a document's file name.
pub const DOCS_PATH: &str = "/docs/";

/// The markdown extensions the documents use.
fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// One heading of a document and what follows it up to the next heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The document's path in the repository (`docs/protocol.md`).
    pub document: &'static str,
    /// The heading's text, without its markup.
    pub heading: String,
    /// The heading's id on the document's page: GitHub's, so the same link works there.
    pub anchor: String,
    /// The paragraphs and list items under the heading, as markdown, one block per paragraph
    /// or item, blocks separated by a blank line; empty when the section holds only code or
    /// tables.
    pub prose: String,
    /// Every word under the heading, for search (lowercase, see [`terms`]).
    words: Vec<String>,
    /// The heading's words.
    heading_words: Vec<String>,
}

impl Section {
    /// The section on the server's page of its document: `/docs/protocol.md#resume`.
    pub fn link(&self) -> String {
        format!("{DOCS_PATH}{}#{}", file_name(self.document), self.anchor)
    }
}

/// The file names of the bundled documents, which name their pages under [`DOCS_PATH`].
pub fn files() -> Vec<&'static str> {
    DOCS.iter().map(|(doc, _)| file_name(doc)).collect()
}

/// A document's file name, which names it under [`DOCS_PATH`].
fn file_name(document: &str) -> &str {
    document.rsplit('/').next().unwrap_or(document)
}

/// GitHub's id for a heading: lowercase, letters, digits, `-` and `_` kept, spaces made `-`,
/// everything else dropped; `taken` counts earlier uses, which get `-1`, `-2`, ….
pub fn anchor(heading: &str, taken: &mut Vec<String>) -> String {
    let base: String = heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect();
    let uses = taken.iter().filter(|t| **t == base).count();
    taken.push(base.clone());
    match uses {
        0 => base,
        n => format!("{base}-{n}"),
    }
}

/// Common words a question is made of that say nothing about what it asks.
const COMMON: &[&str] = &[
    "how", "does", "what", "the", "and", "for", "with", "work", "can", "you", "are", "why", "when",
    "which", "where", "explain", "describe", "tell", "about", "please", "this", "that", "there",
    "from", "into", "its", "not", "get", "use", "doe",
];

/// The words of `text` a search compares: lowercase, of 3 or more letters (`_` kept inside a
/// word), a plural's `s` dropped so "events" finds "event".
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| w.chars().count() >= 3)
        .map(|w| {
            let w = w.to_lowercase();
            match w.strip_suffix('s') {
                Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_owned(),
                _ => w,
            }
        })
        .collect()
}

/// Reads one document into its sections (text before the first heading is not one).
fn read(document: &'static str, text: &str) -> Vec<Section> {
    let mut reader = Reader {
        document,
        sections: Vec::new(),
        taken: Vec::new(),
        current: None,
        heading: None,
        block: String::new(),
        skip: 0,
        lists: Vec::new(),
    };
    for event in Parser::new_ext(text, options()) {
        reader.event(event);
    }
    reader.end_block();
    reader.end_section();
    reader.sections
}

/// The state of [`read`] between the parser's events.
struct Reader {
    document: &'static str,
    sections: Vec<Section>,
    /// The anchors given so far.
    taken: Vec<String>,
    /// The section being read: its heading, its prose so far, and all its text so far.
    current: Option<(String, String, String)>,
    /// The heading being read, while inside one.
    heading: Option<String>,
    /// The paragraph or list item being read.
    block: String,
    /// How deep inside code blocks, tables and HTML the reader is: left out of the prose.
    skip: usize,
    /// The open lists, with an ordered one's next number.
    lists: Vec<Option<u64>>,
}

impl Reader {
    fn event(&mut self, event: Event<'_>) {
        if let Some(heading) = self.heading.as_mut() {
            match event {
                Event::Text(t) | Event::Code(t) => heading.push_str(&t),
                Event::End(TagEnd::Heading(_)) => {
                    self.end_section();
                    let heading = self.heading.take().unwrap_or_default();
                    self.current = Some((heading, String::new(), String::new()));
                }
                _ => {}
            }
            return;
        }
        if let (Event::Text(t) | Event::Code(t), Some((_, _, all))) =
            (&event, self.current.as_mut())
        {
            all.push(' ');
            all.push_str(t);
        }
        match event {
            Event::Start(Tag::Heading { .. }) => {
                self.end_block();
                self.heading = Some(String::new());
            }
            Event::Start(Tag::CodeBlock(_) | Tag::Table(_) | Tag::HtmlBlock) => {
                // What introduced the left-out example or table ends as a sentence.
                if let Some((_, prose, _)) = self.current.as_mut()
                    && prose.ends_with(":\n\n")
                {
                    prose.truncate(prose.len() - 3);
                    prose.push_str(".\n\n");
                }
                self.skip += 1;
            }
            Event::End(TagEnd::CodeBlock | TagEnd::Table | TagEnd::HtmlBlock) => {
                self.skip = self.skip.saturating_sub(1);
            }
            _ if self.skip > 0 => {}
            Event::Start(Tag::List(first)) => self.lists.push(first),
            Event::End(TagEnd::List(_)) => {
                self.lists.pop();
            }
            Event::Start(Tag::Item) => {
                self.end_block();
                let depth = self.lists.len().saturating_sub(1);
                self.block.push_str(&"  ".repeat(depth));
                match self.lists.last_mut() {
                    Some(Some(n)) => {
                        self.block.push_str(&format!("{n}. "));
                        *n += 1;
                    }
                    _ => self.block.push_str("- "),
                }
            }
            Event::End(TagEnd::Item) => self.end_block(),
            Event::Start(Tag::Paragraph) | Event::End(TagEnd::Paragraph)
                if self.lists.is_empty() =>
            {
                self.end_block();
            }
            Event::Text(t) => self.block.push_str(&t),
            Event::Code(t) => {
                self.block.push('`');
                self.block.push_str(&t);
                self.block.push('`');
            }
            Event::SoftBreak | Event::HardBreak => self.block.push(' '),
            _ => {}
        }
    }

    /// Adds the paragraph or item read to the section's prose, its spaces made single (its
    /// indentation kept).
    fn end_block(&mut self) {
        let block = std::mem::take(&mut self.block);
        let indent = block.len() - block.trim_start().len();
        let text = block.split_whitespace().collect::<Vec<_>>().join(" ");
        if let (false, Some((_, prose, _))) = (text.is_empty(), self.current.as_mut()) {
            prose.push_str(&block[..indent]);
            prose.push_str(&text);
            prose.push_str("\n\n");
        }
    }

    /// Keeps the section read, if any.
    fn end_section(&mut self) {
        if let Some((heading, prose, all)) = self.current.take() {
            self.sections.push(Section {
                document: self.document,
                anchor: anchor(&heading, &mut self.taken),
                heading_words: terms(&heading),
                words: terms(&all),
                heading,
                prose: prose.trim().to_owned(),
            });
        }
    }
}

/// Every section of every bundled document, read once.
pub fn sections() -> &'static [Section] {
    static SECTIONS: OnceLock<Vec<Section>> = OnceLock::new();
    SECTIONS.get_or_init(|| {
        DOCS.iter()
            .flat_map(|(doc, text)| read(doc, text))
            .collect()
    })
}

/// The sections that best match `query`, best first, with their scores: BM25 over the
/// sections' words (a term's uses count less and less, and less in a long section), plus 3 for
/// each use in the heading, so a section named after what is asked comes before a long one
/// that mentions it often; each term weighted by how rare it is among the sections. Common
/// question words ("how", "does") are left out when the query has others.
pub fn search(query: &str, limit: usize) -> Vec<(&'static Section, f64)> {
    let all = terms(query);
    let specific: Vec<&String> = all
        .iter()
        .filter(|t| !COMMON.contains(&t.as_str()))
        .collect();
    let wanted = if specific.is_empty() {
        all.iter().collect()
    } else {
        specific
    };
    let sections = sections();
    let rarity = |term: &String| {
        let holding = sections
            .iter()
            .filter(|s| s.words.contains(term) || s.heading_words.contains(term))
            .count();
        (1.0 + sections.len() as f64 / holding.max(1) as f64).ln()
    };
    let weights: Vec<(&String, f64)> = wanted.iter().map(|t| (*t, rarity(t))).collect();
    let average =
        sections.iter().map(|s| s.words.len()).sum::<usize>() as f64 / sections.len().max(1) as f64;
    let (k1, b) = (1.2, 0.75);
    let mut hits: Vec<(&Section, f64)> = sections
        .iter()
        .map(|section| {
            let length = section.words.len() as f64 / average.max(1.0);
            let score: f64 = weights
                .iter()
                .map(|(t, weight)| {
                    let uses = section.words.iter().filter(|w| w == t).count() as f64;
                    let in_heading = section.heading_words.iter().filter(|w| w == t).count();
                    let body = uses * (k1 + 1.0) / (uses + k1 * (1.0 - b + b * length));
                    weight * (body + 3.0 * in_heading as f64)
                })
                .sum();
            (section, score)
        })
        .filter(|(_, score)| *score > 0.0)
        .collect();
    // Stable: among equal scores, the documents' order.
    hits.sort_by(|a, b| b.1.total_cmp(&a.1));
    hits.truncate(limit);
    hits
}

/// The bundled document whose file name is `file` (`protocol.md`) as an HTML page: its
/// headings carry their anchors, and links between the documents lead to their pages. `None`
/// for any other name. The pages are rendered once, on the first request.
pub fn page(file: &str) -> Option<&'static str> {
    static PAGES: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    PAGES
        .get_or_init(|| {
            DOCS.iter()
                .map(|(document, text)| (file_name(document), render(document, text)))
                .collect()
        })
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, page)| page.as_str())
}

/// `document`'s `text` as its page.
fn render(document: &str, text: &str) -> String {
    let mut events: Vec<Event<'_>> = Parser::new_ext(text, options()).collect();
    let mut taken = Vec::new();
    let mut title = None;
    for i in 0..events.len() {
        let Event::Start(Tag::Heading { level, .. }) = &events[i] else {
            if let Event::Start(Tag::Link { dest_url, .. }) = &mut events[i] {
                *dest_url = CowStr::from(local_link(dest_url));
            }
            continue;
        };
        let level = *level;
        let text: String = events[i + 1..]
            .iter()
            .take_while(|e| !matches!(e, Event::End(TagEnd::Heading(_))))
            .filter_map(|e| match e {
                Event::Text(t) | Event::Code(t) => Some(t.as_ref()),
                _ => None,
            })
            .collect();
        if level == HeadingLevel::H1 && title.is_none() {
            title = Some(text.clone());
        }
        events[i] = Event::Start(Tag::Heading {
            level,
            id: Some(CowStr::from(anchor(&text, &mut taken))),
            classes: Vec::new(),
            attrs: Vec::new(),
        });
    }
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events.into_iter());
    // Code and tables scroll sideways on a narrow screen: they take keyboard focus so that
    // they can be scrolled without a mouse.
    let body = body
        .replace("<pre>", "<pre tabindex=\"0\">")
        .replace("<table>", "<table tabindex=\"0\">");
    let title = escape(&title.unwrap_or_else(|| document.to_owned()));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · agent-server</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
         </head><body class=\"doc-page\"><nav><a href=\"/\">Chat</a> · {document}</nav>\
         <main>{body}</main></body></html>\n"
    )
}

/// A link inside a document, as its page should have it: a link to another bundled document
/// (`docs/protocol.md#resume`, `protocol.md`, `../README.md`) leads to that document's page.
fn local_link(dest: &str) -> String {
    let (path, fragment) = dest.split_once('#').unwrap_or((dest, ""));
    let served = !path.contains("://")
        && DOCS
            .iter()
            .any(|(doc, _)| !path.is_empty() && file_name(doc) == file_name(path));
    match (served, fragment) {
        (false, _) => dest.to_owned(),
        (true, "") => format!("{DOCS_PATH}{}", file_name(path)),
        (true, fragment) => format!("{DOCS_PATH}{}#{fragment}", file_name(path)),
    }
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests;
