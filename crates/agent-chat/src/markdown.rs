//! The answer of `agent-server chat`'s conversation as a terminal shows it: markdown turned
//! into ANSI styles (bold, italic, code, headings, bullets, quotes, links), line by line as the
//! stream completes each line. Used only when stdout is a terminal that takes colours.
//!
//! A line is rendered once it is complete (or when the answer ends), so a marker split between
//! two chunks (`*` then `*bold**`) is never shown raw. On a terminal of known width
//! ([`MarkdownLines::live`]) the answer streams within a line too: a line longer than the
//! terminal is wrapped at a space where no marker is left open (as the terminal would wrap it,
//! so each screen line is final once written), and what has come of the current line is shown
//! as a *tail*, rendered, that the next output replaces (it starts with [`CLEAR_LINE`]; above
//! the line editor's prompt, `terminal::Output` turns that into replacing the line above). Each line is parsed on its own by
//! pulldown-cmark; only fenced code blocks span lines, and that state is kept here, so emphasis
//! that spans two lines shows as typed. Agent text is untrusted: its control characters are
//! shown escaped, so the only escape codes that reach the terminal are this module's own.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use unicode_width::UnicodeWidthStr as _;

use crate::terminal::{CLEAR_LINE, escape_controls};

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
    /// The terminal's width in columns; 0: lines are not wrapped and no tail is shown.
    width: usize,
    /// What a wrapped line's next screen lines start with (a list item's indentation, a
    /// quote's `> `), so they render as part of it.
    continuation: String,
    /// A tail is on the screen: the next output replaces it.
    tail_shown: bool,
}

impl MarkdownLines {
    /// Lines wrapped at `width` columns, and the current line shown as it streams.
    pub(crate) fn live(width: usize) -> Self {
        Self {
            width,
            ..Self::default()
        }
    }

    /// Adds streamed text; returns the lines it completed, rendered, each ending in `\n`, and
    /// on a live terminal the tail after them.
    pub(crate) fn push(&mut self, delta: &str) -> String {
        self.pending.push_str(delta);
        let mut out = self.replace_tail();
        while let Some(end) = self.pending.find('\n') {
            let mut line: String = self.pending.drain(..=end).collect();
            line.truncate(line.trim_end_matches(['\n', '\r']).len());
            while let Some(first) = self.wrap_off(&mut line) {
                out.push_str(&self.line(&first));
                out.push('\n');
            }
            out.push_str(&self.line(&line));
            out.push('\n');
            self.continuation.clear();
        }
        let mut pending = std::mem::take(&mut self.pending);
        while let Some(first) = self.wrap_off(&mut pending) {
            out.push_str(&self.line(&first));
            out.push('\n');
        }
        self.pending = pending;
        out.push_str(&self.tail());
        out
    }

    /// Ends the answer: renders what is left of its last line (if anything) and forgets any
    /// open code block.
    pub(crate) fn finish(&mut self) -> String {
        let mut out = self.replace_tail();
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            out.push_str(&self.line(&rest));
            out.push('\n');
        }
        self.fence = None;
        self.continuation.clear();
        out
    }

    /// What clears the tail on the screen, if one is shown.
    fn replace_tail(&mut self) -> String {
        if std::mem::take(&mut self.tail_shown) {
            CLEAR_LINE.to_owned()
        } else {
            String::new()
        }
    }

    /// The first screen line of `text`, taken from it, when `text` is wider than the
    /// terminal and has a space to wrap at where no marker is left open; the rest stays in
    /// `text` behind the line's continuation. Code is never wrapped.
    fn wrap_off(&mut self, text: &mut String) -> Option<String> {
        if self.width == 0 || self.fence.is_some() || text.width() < self.width {
            return None;
        }
        if fence_of(text.trim_start()).is_some() {
            return None;
        }
        let at = wrap_point(text, self.width - 1)?;
        if self.continuation.is_empty() {
            self.continuation = continuation_of(text);
        }
        let rest = text.split_off(at);
        let line = std::mem::replace(text, format!("{}{}", self.continuation, rest.trim_start()));
        Some(line.trim_end().to_owned())
    }

    /// The current line as far as it has come, rendered up to its last space where no marker
    /// is left open, when it fits on the screen; nothing when it is code's opening fence or
    /// there is no terminal width.
    fn tail(&mut self) -> String {
        if self.width == 0 || self.pending.is_empty() || self.pending.width() >= self.width {
            return String::new();
        }
        let shown = match self.fence {
            Some(_) => self.pending.as_str(),
            None if fence_of(self.pending.trim_start()).is_some() => return String::new(),
            None => match balanced(&self.pending) {
                true => self.pending.as_str(),
                false => {
                    let Some(at) = wrap_point(&self.pending, self.pending.len()) else {
                        return String::new();
                    };
                    &self.pending[..at]
                }
            },
        };
        let shown = shown.trim_end().to_owned();
        if shown.is_empty() {
            return String::new();
        }
        let fence = self.fence;
        let rendered = self.line(&shown);
        self.fence = fence;
        self.tail_shown = true;
        rendered
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

/// Where to wrap `text` so that its first part fits in `columns`: after the last space at
/// which the text before it leaves no marker open; `None` when there is no such space.
fn wrap_point(text: &str, columns: usize) -> Option<usize> {
    text.char_indices()
        .rev()
        .filter(|(at, c)| *c == ' ' && *at > 0)
        .map(|(at, _)| at)
        .filter(|at| text[..*at].width() <= columns && balanced(&text[..*at]))
        .find(|at| !text[..*at].trim().is_empty())
}

/// Whether `text` leaves no inline marker open: code spans, emphasis, strikethrough, and a
/// link's text and destination.
fn balanced(text: &str) -> bool {
    let count = |c: char| text.chars().filter(|d| *d == c).count();
    let strong = text.matches("**").count();
    count('`').is_multiple_of(2)
        && (text.contains('`')
            || (strong.is_multiple_of(2) && (count('*') - 2 * strong).is_multiple_of(2)))
        && text.matches("~~").count().is_multiple_of(2)
        && count('[') == count(']')
        && count('(') <= count(')') + usize::from(!text.contains("]("))
        && !text.ends_with('\\')
}

/// What the next screen lines of a wrapped line start with: a list item's indentation under
/// its text, a quote's marker, or the line's own indentation.
fn continuation_of(line: &str) -> String {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    if let Some(rest) = body.strip_prefix('>') {
        let quoted = rest.len() - rest.trim_start().len();
        return format!("{indent}>{}", " ".repeat(quoted.max(1)));
    }
    let marker = body
        .split_once(' ')
        .map(|(first, _)| first)
        .filter(|first| {
            matches!(*first, "-" | "*" | "+")
                || first
                    .strip_suffix(['.', ')'])
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        });
    match marker {
        Some(marker) => format!("{indent}{}", " ".repeat(marker.len() + 1)),
        None => indent.to_owned(),
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

    /// What a terminal shows after `outputs`: its lines, with a [`CLEAR_LINE`] wiping the
    /// line being written, and that line last.
    fn screen(outputs: &[String]) -> Vec<String> {
        let mut lines = vec![String::new()];
        for output in outputs {
            for (i, piece) in output.split(CLEAR_LINE).enumerate() {
                if i > 0 {
                    lines.last_mut().unwrap().clear();
                }
                for (j, part) in piece.split('\n').enumerate() {
                    if j > 0 {
                        lines.push(String::new());
                    }
                    lines.last_mut().unwrap().push_str(&tagged(part));
                }
            }
        }
        lines
    }

    /// On a live terminal the answer shows as it streams: the line so far as a tail, each
    /// screen line final once wrapped at the width, at a space, never with a marker open.
    #[test]
    fn a_live_answer_streams_within_its_line_and_wraps_at_the_width() {
        let mut lines = MarkdownLines::live(24);
        let mut outputs = Vec::new();
        let mut seen = Vec::new();
        for word in
            "The quick brown fox jumps over the **very lazy** dog, twice. ".split_inclusive(' ')
        {
            outputs.push(lines.push(word));
            seen.push(screen(&outputs).last().unwrap().clone());
        }
        assert_eq!(
            seen,
            [
                "The",
                "The quick",
                "The quick brown",
                "The quick brown fox",
                "jumps",
                "jumps over",
                "jumps over the",
                // While `**very lazy**` is open the tail stops before it.
                "jumps over the",
                "<b>very lazy</></>",
                "<b>very lazy</> dog,</>",
                "twice.",
            ],
            "{outputs:?}"
        );
        outputs.push(lines.finish());
        let shown = screen(&outputs);
        assert_eq!(
            shown,
            [
                "The quick brown fox",
                "jumps over the",
                "<b>very lazy</> dog,</>",
                "twice.",
                ""
            ],
            "{outputs:?}"
        );
        for line in &shown {
            assert!(
                line.replace("<b>", "").replace("</>", "").chars().count() < 24,
                "{line}"
            );
        }
    }

    /// A wrapped list item or quote goes on under its text; code is never wrapped, and its
    /// opening fence is not shown as a tail.
    #[test]
    fn wrapped_lines_keep_their_item_and_code_stays_whole() {
        let mut lines = MarkdownLines::live(16);
        let mut outputs = vec![lines.push("- one two three four five\n> six seven eight nine\n")];
        outputs.push(lines.push("```"));
        assert_eq!(outputs.last().unwrap(), "", "no tail for a fence");
        outputs.push(lines.push("\nlet a_very_long_line = 1;\n```\n"));
        outputs.push(lines.finish());
        assert_eq!(
            screen(&outputs),
            [
                "• one two three",
                "  four five",
                "<dim>│ </>six seven</>",
                "<dim>│ </>eight nine</>",
                "",
                "    <code>let a_very_long_line = 1;</>",
                "",
                ""
            ]
        );
    }

    #[test]
    fn continuations_and_balance() {
        let table = [
            ("- item", "  "),
            ("12. item", "    "),
            ("  > q", "  > "),
            ("text", ""),
            ("-x", ""),
        ];
        for (line, expected) in table {
            assert_eq!(continuation_of(line), expected, "{line:?}");
        }
        for (text, expected) in [
            ("**a** b", true),
            ("**a b", false),
            ("`x*", false),
            ("`*`", true),
            ("[a](b", false),
            ("[a](b)", true),
            ("(see", true),
        ] {
            assert_eq!(balanced(text), expected, "{text:?}");
        }
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
