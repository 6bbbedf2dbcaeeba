//! The answer of `agent-server chat`'s conversation as a terminal shows it: markdown turned
//! into ANSI styles (bold, italic, code, headings, bullets, quotes, links), line by line as the
//! stream completes each line. Used only when stdout is a terminal that takes colours.
//!
//! A line is rendered once it is complete (or when the answer ends), so a marker split between
//! two chunks (`*` then `*bold**`) is never shown raw. Each line is parsed on its own by
//! pulldown-cmark; only fenced code blocks span lines, and that state is kept here, so emphasis
//! that spans two lines shows as typed. Agent text is untrusted: its control characters are
//! shown escaped, so the only escape codes that reach the terminal are this module's own.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::terminal::escape_controls;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const UNDERLINE: &str = "\x1b[4m";
const STRIKE: &str = "\x1b[9m";
const CODE: &str = "\x1b[36m";
/// What a thematic break (`---`) is drawn as.
const RULE: &str = "────────────────────────────────";

/// Renders a streamed markdown answer one complete line at a time.
#[derive(Debug, Default)]
pub(crate) struct MarkdownLines {
    /// The streamed text after the last complete line.
    pending: String,
    /// While inside a fenced code block: its fence character and length.
    fence: Option<(char, usize)>,
}

impl MarkdownLines {
    /// Adds streamed text; returns the lines it completed, rendered, each ending in `\n`.
    pub(crate) fn push(&mut self, delta: &str) -> String {
        self.pending.push_str(delta);
        let mut out = String::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            out.push_str(&self.line(line.trim_end_matches(['\n', '\r'])));
            out.push('\n');
        }
        out
    }

    /// Ends the answer: renders what is left of its last line (if anything) and forgets any
    /// open code block.
    pub(crate) fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        let out = if rest.is_empty() {
            String::new()
        } else {
            self.line(&rest) + "\n"
        };
        self.fence = None;
        out
    }

    /// One complete line, rendered (without its newline).
    fn line(&mut self, line: &str) -> String {
        let trimmed = line.trim_start();
        let fence = fence_of(trimmed);
        match (self.fence, fence) {
            (Some((c, n)), Some((d, m, info))) if c == d && m >= n && info.is_empty() => {
                self.fence = None;
                String::new()
            }
            (Some(_), _) => format!("    {CODE}{}{RESET}", escape_controls(line)),
            (None, Some((c, n, _))) => {
                self.fence = Some((c, n));
                String::new()
            }
            (None, None) => inline(line),
        }
    }
}

/// The fence a line opens or closes a code block with (``` or ~~~, at least three), with the
/// info string after it.
fn fence_of(trimmed: &str) -> Option<(char, usize, &str)> {
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = trimmed.chars().take_while(|d| *d == c).count();
    (n >= 3).then(|| (c, n, trimmed[n..].trim()))
}

/// A line outside code blocks, parsed as markdown on its own. Its indentation is kept as is
/// (pulldown-cmark would read four spaces as code, but in an answer they are mostly a nested
/// list item).
fn inline(line: &str) -> String {
    let body = line.trim_start();
    let indent: String = line[..line.len() - body.len()]
        .chars()
        .map(|c| if c == '\t' { "    " } else { " " })
        .collect();
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut styled = Styled {
        out: indent,
        ..Styled::default()
    };
    for event in Parser::new_ext(body, options) {
        styled.event(event);
    }
    if styled.out.contains('\x1b') {
        styled.out.push_str(RESET);
    }
    styled.out
}

/// The text of one line being styled: the styles open at this point, and the lists and links
/// the parser is inside of.
#[derive(Debug, Default)]
struct Styled {
    out: String,
    styles: Vec<&'static str>,
    /// The next number of each ordered list (`None` for a bullet list), innermost last.
    lists: Vec<Option<u64>>,
    /// The links being written, innermost last: each one's destination, and where its text
    /// starts in `out`.
    links: Vec<(String, usize)>,
}

impl Styled {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) | Event::Html(text) | Event::InlineHtml(text) => {
                self.out.push_str(&escape_controls(&text));
            }
            Event::Code(code) => {
                self.push(CODE);
                self.out.push_str(&escape_controls(&code));
                self.pop();
            }
            Event::SoftBreak | Event::HardBreak => self.out.push(' '),
            Event::Rule => {
                self.push(DIM);
                self.out.push_str(RULE);
                self.pop();
            }
            Event::TaskListMarker(done) => self.out.push_str(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(name) => {
                self.out.push_str(&format!("[^{}]", escape_controls(&name)));
            }
            Event::InlineMath(text) | Event::DisplayMath(text) => {
                self.out.push_str(&escape_controls(&text));
            }
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading {
                level: HeadingLevel::H1,
                ..
            } => self.push("\x1b[1;4m"),
            Tag::Heading { .. } | Tag::Strong => self.push(BOLD),
            Tag::Emphasis => self.push(ITALIC),
            Tag::Strikethrough => self.push(STRIKE),
            Tag::CodeBlock(_) => self.push(CODE),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.push(UNDERLINE);
                self.links.push((dest_url.into_string(), self.out.len()));
            }
            Tag::BlockQuote(_) => {
                self.push(DIM);
                self.out.push_str("│ ");
                self.pop();
            }
            Tag::List(start) => self.lists.push(start),
            Tag::Item => self.item(),
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_)
            | TagEnd::Strong
            | TagEnd::Emphasis
            | TagEnd::Strikethrough
            | TagEnd::CodeBlock => self.pop(),
            TagEnd::Link | TagEnd::Image => {
                let (url, start) = self.links.pop().unwrap_or_default();
                // An autolink (`<https://…>`) already shows its address.
                let shown = self.out.get(start..) == Some(url.as_str());
                self.pop();
                if !url.is_empty() && !shown {
                    self.push(DIM);
                    self.out.push_str(&format!(" ({})", escape_controls(&url)));
                    self.pop();
                }
            }
            TagEnd::List(_) => {
                self.lists.pop();
            }
            _ => {}
        }
    }

    /// The marker of a list item: a bullet, or the item's number.
    fn item(&mut self) {
        let nesting = self.lists.len().saturating_sub(1);
        self.out.push_str(&"  ".repeat(nesting));
        match self.lists.last_mut() {
            Some(Some(number)) => {
                self.out.push_str(&format!("{number}. "));
                *number += 1;
            }
            _ => self.out.push_str("• "),
        }
    }

    fn push(&mut self, style: &'static str) {
        self.styles.push(style);
        self.out.push_str(style);
    }

    /// Ends the innermost style: everything is reset and the outer styles set again, since
    /// terminals have no "end bold" that keeps an outer bold.
    fn pop(&mut self) {
        self.styles.pop();
        self.out.push_str(RESET);
        for style in &self.styles {
            self.out.push_str(style);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output with its escape codes as readable tags.
    fn tagged(text: &str) -> String {
        [
            ("\x1b[1;4m", "<h1>"),
            (BOLD, "<b>"),
            (DIM, "<dim>"),
            (ITALIC, "<i>"),
            (UNDERLINE, "<u>"),
            (STRIKE, "<s>"),
            (CODE, "<code>"),
            (RESET, "</>"),
        ]
        .iter()
        .fold(text.to_owned(), |t, (code, tag)| t.replace(code, tag))
    }

    /// Streams `chunks`, then ends the answer; compares the whole output.
    fn check(chunks: &[&str], expected: &str) {
        let mut lines = MarkdownLines::default();
        let mut got = String::new();
        for chunk in chunks {
            got.push_str(&lines.push(chunk));
        }
        got.push_str(&lines.finish());
        assert_eq!(tagged(&got), expected, "{chunks:?}");
    }

    #[test]
    fn markdown_lines_render_as_terminal_styles() {
        let table: &[(&str, &str)] = &[
            ("2 + 2 = 4", "2 + 2 = 4\n"),
            ("**bold** and *it*", "<b>bold</> and <i>it</></>\n"),
            ("`12*7` = 84.", "<code>12*7</> = 84.</>\n"),
            ("# Title", "<h1>Title</></>\n"),
            ("### Part", "<b>Part</></>\n"),
            ("- one\n- two", "• one\n• two\n"),
            ("  - nested", "  • nested\n"),
            ("1. first\n2. second", "1. first\n2. second\n"),
            ("> quoted", "<dim>│ </>quoted</>\n"),
            ("~~gone~~", "<s>gone</></>\n"),
            (
                "[docs](https://x.test/d)",
                "<u>docs</><dim> (https://x.test/d)</></>\n",
            ),
            ("<https://x.test>", "<u>https://x.test</></>\n"),
            ("---", "<dim>────────────────────────────────</></>\n"),
            ("- [x] done", "• [x] done\n"),
            (
                "**bold `code` bold**",
                "<b>bold <code>code</><b> bold</></>\n",
            ),
            ("a <em>tag</em>", "a <em>tag</em>\n"),
            ("\u{1b}[2Jwiped", "\\u{1b}[2Jwiped\n"),
            ("line\n\nafter", "line\n\nafter\n"),
        ];
        for (text, expected) in table {
            check(&[text], expected);
        }
    }

    #[test]
    fn code_fences_span_lines_and_are_not_parsed() {
        check(
            &["Run:\n```sh\ncargo **test**\n", "```\ndone"],
            "Run:\n\n    <code>cargo **test**</>\n\ndone\n",
        );
        // A fence still open when the answer ends is forgotten.
        let mut lines = MarkdownLines::default();
        lines.push("```\nx\n");
        lines.finish();
        assert_eq!(lines.push("*a*\n"), format!("{ITALIC}a{RESET}{RESET}\n"));
    }

    #[test]
    fn a_line_is_shown_only_once_complete() {
        let mut lines = MarkdownLines::default();
        assert_eq!(lines.push("*"), "");
        assert_eq!(lines.push("*bo"), "");
        assert_eq!(tagged(&lines.push("ld** x\nnext")), "<b>bold</> x</>\n");
        assert_eq!(lines.finish(), "next\n");
        assert_eq!(lines.finish(), "");
    }
}
