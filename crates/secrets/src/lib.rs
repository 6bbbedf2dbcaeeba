//! The process's secrets, and the [`Scrubber`] that removes them from everything that leaves
//! the process.
//!
//! The server knows its secrets (the JWT secret, the model's API key, MCP tokens and the
//! variables given to MCP servers, passwords inside broker and store URLs, variables the
//! operator marks as secret). A tool, a model or a bug can still put one of them into text
//! that goes out: a tool result, an answer, an error message, a log line. So every such text
//! passes a [`Scrubber`] on its way out, which replaces each secret's exact value, and the
//! forms it commonly travels in, by [`MARKER`]:
//! - as it is, and as it appears inside a JSON string (quotes and backslashes escaped);
//! - base64 (standard and URL-safe alphabets) at each of the three alignments it can have
//!   inside a longer encoded blob (`FOO=secret` encoded as a whole still matches);
//! - hex (lower and upper case);
//! - percent-encoded (URL components, as `encodeURIComponent` and RFC 3986 encode them, and
//!   with every byte but letters and digits encoded), with upper or lower case hex digits.
//!
//! Every replacement is counted per [`Site`] (where the text was going), for the server's
//! `agent_server_secrets_scrubbed_total` metric. All patterns are found in one pass over the
//! text (Aho-Corasick); a text with no secret in it is returned as it is, without a copy.
//!
//! Text that leaves in pieces (a model's answer streamed as chunks) is scrubbed with a
//! [`StreamScrub`], which holds back the end of a piece while it could be the start of a
//! secret, so a secret split across two chunks is still found.
//!
//! The [`url`] module checks the URLs the server is configured with and owns which of their
//! parts are secret, both for showing them redacted and for handing them to the scrubber.
//!
//! **Invariant:** a secret shorter than [`MIN_LEN`] bytes is refused by [`Secrets::add`]
//! (replacing every occurrence of, say, `pw` would mangle ordinary text while protecting
//! nothing); the caller says so to the operator.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

pub mod url;

/// What a secret is replaced with.
pub const MARKER: &str = "[secret removed]";

/// The shortest secret that is scrubbed, in bytes.
pub const MIN_LEN: usize = 8;

/// Where scrubbed text was going; each has its own count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Events of a run: to the user's stream (live, replay, AG-UI) and the history.
    Events,
    /// A request to a model.
    Model,
    /// A log line.
    Logs,
    /// An HTTP response body.
    Http,
    /// A WebSocket frame that is not an event (errors, replies).
    Socket,
    /// Spans exported to a telemetry collector.
    Telemetry,
}

impl Site {
    /// Every site, in the order of the variants.
    pub const ALL: [Site; 6] = [
        Site::Events,
        Site::Model,
        Site::Logs,
        Site::Http,
        Site::Socket,
        Site::Telemetry,
    ];

    /// The site's name, as the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Events => "events",
            Site::Model => "model",
            Site::Logs => "logs",
            Site::Http => "http",
            Site::Socket => "socket",
            Site::Telemetry => "telemetry",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A secret too short to scrub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooShort {
    /// Where the secret comes from (a setting's or a variable's name), never its value.
    pub source: String,
    /// Its length in bytes.
    pub len: usize,
}

impl fmt::Display for TooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the secret in {} is {} bytes, too short to be removed from output safely (at least {MIN_LEN}); use a longer one",
            self.source, self.len
        )
    }
}

impl std::error::Error for TooShort {}

/// The process's secrets: each value with where it comes from. `Debug` shows the sources
/// only.
#[derive(Clone, Default)]
pub struct Secrets {
    entries: Vec<(String, String)>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.sources()).finish()
    }
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value`, which comes from `source` (named in errors and listings). An empty
    /// value is ignored; one shorter than [`MIN_LEN`] is refused; a value already known is
    /// kept once.
    pub fn add(&mut self, source: &str, value: &str) -> Result<(), TooShort> {
        if value.is_empty() {
            return Ok(());
        }
        if value.len() < MIN_LEN {
            return Err(TooShort {
                source: source.to_owned(),
                len: value.len(),
            });
        }
        if !self.entries.iter().any(|(_, known)| known == value) {
            self.entries.push((source.to_owned(), value.to_owned()));
        }
        Ok(())
    }

    /// Where the secrets come from, in the order they were added.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(source, _)| source.as_str())
    }

    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Finds the process's secrets in text and replaces them by [`MARKER`]. Shared by every
/// place that sends text out; counts what it replaced per [`Site`].
pub struct Scrubber {
    /// `None` when there are no secrets: every scrub is then a no-op.
    matcher: Option<AhoCorasick>,
    /// The patterns, for [`StreamScrub`]'s hold-back.
    patterns: Vec<Vec<u8>>,
    counts: [AtomicU64; Site::ALL.len()],
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new(&Secrets::default())
    }
}

/// What `encodeURIComponent` leaves as it is: letters, digits and `-_.!~*'()`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// What RFC 3986 calls unreserved: letters, digits and `-._~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The forms of `value` to look for: itself and its encodings, each at least [`MIN_LEN`]
/// bytes long (a shorter pattern would match ordinary text).
fn forms(value: &str) -> Vec<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut forms = vec![bytes.to_vec()];
    let json = serde_json::to_string(value).unwrap_or_default();
    forms.push(json.trim_matches('"').as_bytes().to_vec());
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            forms.push(base64_core(engine, bytes, offset));
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    forms.push(hex.to_ascii_uppercase().into_bytes());
    forms.push(hex.into_bytes());
    for set in [URI_COMPONENT, UNRESERVED, NON_ALPHANUMERIC] {
        let encoded = percent_encoding::utf8_percent_encode(value, set).to_string();
        forms.push(encoded.to_ascii_lowercase().into_bytes());
        forms.push(encoded.into_bytes());
    }
    forms.retain(|form| form.len() >= MIN_LEN);
    forms.sort();
    forms.dedup();
    forms
}

/// The base64 characters that encode `bytes` and nothing else when they start `offset`
/// bytes (0 to 2) into a longer encoded text: the characters that share bits with the
/// bytes before or after are left out, so the pattern matches wherever the secret sits.
fn base64_core(engine: &impl base64::Engine, bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let encoded = engine.encode(&padded).into_bytes();
    // Characters before: the `offset` zero bytes take whole characters (4 per 3 bytes)
    // plus the one that mixes their bits with the secret's.
    let skip = match offset {
        0 => 0,
        1 => 2,
        _ => 3,
    };
    // Characters after: an unfinished last group's final character holds the secret's
    // last bits and zero padding, which a following byte would change.
    let cut = usize::from(!padded.len().is_multiple_of(3));
    let end = encoded.len().saturating_sub(cut);
    encoded
        .get(skip..end)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

impl Scrubber {
    /// A scrubber for `secrets`.
    pub fn new(secrets: &Secrets) -> Self {
        let mut patterns: Vec<Vec<u8>> = secrets
            .entries
            .iter()
            .flat_map(|(_, value)| forms(value))
            .collect();
        patterns.sort();
        patterns.dedup();
        let matcher = (!patterns.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        Self {
            matcher,
            patterns,
            counts: Default::default(),
        }
    }

    /// Whether there is anything to scrub.
    pub fn is_active(&self) -> bool {
        self.matcher.is_some()
    }

    /// Secrets replaced so far in text going to `site`.
    pub fn scrubbed(&self, site: Site) -> u64 {
        self.counts[site.index()].load(Ordering::Relaxed)
    }

    fn count(&self, site: Site, found: usize) {
        if found > 0 {
            self.counts[site.index()].fetch_add(found as u64, Ordering::Relaxed);
        }
    }

    /// `text` with every secret replaced by [`MARKER`]; borrowed when there is none.
    pub fn scrub<'a>(&self, site: Site, text: &'a str) -> Cow<'a, str> {
        match self.scrub_bytes(site, text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Patterns are whole UTF-8 strings or ASCII, and the marker is ASCII, so cutting
            // them out of UTF-8 leaves UTF-8; the lossy conversion never replaces anything.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// `bytes` with every secret replaced by [`MARKER`]; borrowed when there is none.
    pub fn scrub_bytes<'a>(&self, site: Site, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(bytes);
        };
        let mut matches = matcher.find_iter(bytes).peekable();
        if matches.peek().is_none() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut last = 0;
        let mut found = 0;
        for found_at in matches {
            out.extend_from_slice(&bytes[last..found_at.start()]);
            out.extend_from_slice(MARKER.as_bytes());
            last = found_at.end();
            found += 1;
        }
        out.extend_from_slice(&bytes[last..]);
        self.count(site, found);
        Cow::Owned(out)
    }

    /// Scrubs `text` in place; says whether anything was replaced.
    pub fn scrub_string(&self, site: Site, text: &mut String) -> bool {
        match self.scrub(site, text) {
            Cow::Borrowed(_) => false,
            Cow::Owned(clean) => {
                *text = clean;
                true
            }
        }
    }

    /// Scrubs every string in `value` in place, object keys included; says whether
    /// anything was replaced.
    pub fn scrub_json(&self, site: Site, value: &mut Value) -> bool {
        if !self.is_active() {
            return false;
        }
        match value {
            Value::String(text) => self.scrub_string(site, text),
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |any, item| self.scrub_json(site, item) | any),
            Value::Object(map) => {
                let mut any = false;
                let renamed: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|key| match self.scrub(site, key) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(clean) => Some((key.clone(), clean)),
                    })
                    .collect();
                for (key, clean) in renamed {
                    if let Some(item) = map.remove(&key) {
                        map.insert(clean, item);
                        any = true;
                    }
                }
                for item in map.values_mut() {
                    any |= self.scrub_json(site, item);
                }
                any
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// How many bytes at the end of `text` could be the start of a secret (0 when none).
    fn open_tail(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let mut hold = 0;
        for pattern in &self.patterns {
            let longest = pattern.len().saturating_sub(1).min(bytes.len());
            for len in (hold + 1..=longest).rev() {
                if bytes.ends_with(&pattern[..len]) {
                    hold = len;
                    break;
                }
            }
        }
        // The tail starts where a pattern starts, at a character boundary; step back to
        // one if a pattern's first byte were ever a continuation byte.
        let mut start = bytes.len() - hold;
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        bytes.len() - start
    }
}

/// Scrubs text that leaves in pieces (a streamed answer): the end of a piece that could be
/// the start of a secret is held back until the next piece shows whether it is one. Call
/// [`finish`](Self::finish) for what is held when the text ends.
#[derive(Debug, Default)]
pub struct StreamScrub {
    held: String,
}

impl StreamScrub {
    /// A stream with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The part of `held + piece` that can go out now, scrubbed.
    pub fn push(&mut self, scrubber: &Scrubber, site: Site, piece: &str) -> String {
        if !scrubber.is_active() {
            return piece.to_owned();
        }
        self.held.push_str(piece);
        let mut text = std::mem::take(&mut self.held);
        scrubber.scrub_string(site, &mut text);
        let tail = scrubber.open_tail(&text);
        self.held = text.split_off(text.len() - tail);
        text
    }

    /// What is held back, scrubbed: the text ended.
    pub fn finish(&mut self, scrubber: &Scrubber, site: Site) -> String {
        let mut text = std::mem::take(&mut self.held);
        scrubber.scrub_string(site, &mut text);
        text
    }

    /// Whether text is held back.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests;
