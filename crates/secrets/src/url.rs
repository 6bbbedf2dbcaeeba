//! URLs the server is configured with (its broker, its store, its model's and its collector's
//! addresses): checked with the `url` crate, and shown with their credentials hidden.
//!
//! One module owns which parts of a URL are secret, so what the server shows
//! ([`redacted`]: `agent-server config`, logs, `/readyz`, error messages) and what it scrubs
//! from its output ([`secrets_in`], read by the server's scrubber) cannot drift apart:
//! - the user-info (`redis://:password@host`, `postgres://user:password@host`), shown as
//!   `<credentials>`;
//! - a query or fragment parameter whose name (compared without regard to case, after
//!   percent-decoding) is one of [`SECRET_PARAMS`] (`?password=pw`, as libpq reads it;
//!   `?pass=pw`, as the Redis client reads it for a Unix socket), shown as `<hidden>`.
//!
//! [`redacted`] keeps the rest of the text as the operator wrote it (no normalisation), so
//! a shown URL can be compared with the one given.
//!
//! **Invariant:** text that does not parse as a URL is still redacted, more widely: everything
//! between `://` and the last `@` is hidden, wherever that `@` sits, since a parser that
//! failed cannot say where the user-info ends, and a leak is worse than a hidden host.

use std::fmt;
use std::ops::Range;

use ::url::Url;
use ::url::form_urlencoded;

/// Names of query (and fragment) parameters whose value is a secret, in lower case; a
/// parameter matches when its name, percent-decoded, equals one of them without regard to
/// case.
pub const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    // The Redis client reads a Unix socket's password from `?pass=`.
    "pass",
    // libpq's password for an encrypted client key.
    "sslpassword",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "auth_token",
    "key",
    "apikey",
    "api_key",
    "api-key",
];

/// What user-info is replaced with.
const CREDENTIALS: &str = "<credentials>";
/// What a secret parameter's value is replaced with.
const HIDDEN: &str = "<hidden>";

/// Whether a parameter named `name` (as written, possibly percent-encoded) holds a secret.
pub fn is_secret_param(name: &str) -> bool {
    let decoded: String = form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(key, _)| key.into_owned())
        .unwrap_or_default();
    SECRET_PARAMS
        .iter()
        .any(|secret| decoded.eq_ignore_ascii_case(secret))
}

/// `url` as it may be shown: its user-info replaced by `<credentials>` and the value of each
/// secret parameter by `<hidden>`, the rest as written. Text that does not parse as a URL is
/// redacted by string rules (see the module's invariant).
pub fn redacted(url: &str) -> String {
    let mut hide: Vec<(Range<usize>, &str)> = Vec::new();
    if let Some(user_info) = user_info(url) {
        hide.push((user_info, CREDENTIALS));
    }
    let after_authority = authority(url).map_or(0, |range| range.end);
    if let Some(start) = url[after_authority..].find(['?', '#']) {
        let start = after_authority + start;
        hide.extend(
            secret_values(url, start + 1)
                .into_iter()
                .map(|range| (range, HIDDEN)),
        );
    }
    let mut shown = String::with_capacity(url.len());
    let mut at = 0;
    for (range, with) in hide {
        shown.push_str(&url[at..range.start]);
        shown.push_str(with);
        at = range.end;
    }
    shown.push_str(&url[at..]);
    shown
}

/// Whether [`redacted`] would hide anything of `url`.
pub fn has_credentials(url: &str) -> bool {
    redacted(url) != url
}

/// The secrets `url` holds (its password, and each secret parameter's value), each as a
/// parser decodes it and, when that differs, as written; for the scrubber. Text that does
/// not parse as a URL yields none: it is refused before the server uses it.
pub fn secrets_in(url: &str) -> Vec<String> {
    let Ok(parsed) = Url::parse(url) else {
        return Vec::new();
    };
    let mut found: Vec<String> = Vec::new();
    let mut add = |written: &str| {
        let decoded = percent_encoding::percent_decode_str(written)
            .decode_utf8_lossy()
            .into_owned();
        if decoded != written {
            found.push(written.to_owned());
        }
        found.push(decoded);
    };
    if let Some(password) = parsed.password() {
        add(password);
    }
    for part in [parsed.query(), parsed.fragment()].into_iter().flatten() {
        for pair in part.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_secret_param(name)
            {
                // Form encoding writes a space as `+`; a parser of either kind may read it.
                add(value);
                let spaced = value.replace('+', " ");
                if spaced != value {
                    add(&spaced);
                }
            }
        }
    }
    found.retain(|value| !value.is_empty());
    found.dedup();
    found
}

/// Where the authority of `url` sits (after `scheme://`, up to the first `/`, `?`, `#` or
/// `\`), when it has one.
fn authority(url: &str) -> Option<Range<usize>> {
    let scheme_end = url.find("://")?;
    let is_scheme = url[..scheme_end]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if scheme_end == 0 || !is_scheme {
        return None;
    }
    let start = scheme_end + 3;
    let end = url[start..]
        .find(['/', '?', '#', '\\'])
        .map_or(url.len(), |end| start + end);
    Some(start..end)
}

/// Where the user-info of `url` sits, with its `@`, when it has any. A URL the `url` crate
/// parses has user-info up to the last `@` of its authority; other text, up to its last `@`.
fn user_info(url: &str) -> Option<Range<usize>> {
    let authority = authority(url)?;
    let end = if Url::parse(url).is_ok() {
        url[authority.clone()].rfind('@')? + authority.start
    } else {
        url.rfind('@').filter(|at| *at >= authority.start)?
    };
    Some(authority.start..end)
}

/// Where the values of secret parameters sit in the `&`-separated pairs of `url` from
/// `start` (a query and, after `#`, a fragment).
fn secret_values(url: &str, start: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut at = start;
    for piece in url[start..].split_inclusive(['&', '#', ';']) {
        let pair = piece.trim_end_matches(['&', '#', ';']);
        if let Some((name, value)) = pair.split_once('=')
            && is_secret_param(name)
            && !value.is_empty()
        {
            let value_start = at + name.len() + 1;
            ranges.push(value_start..value_start + value.len());
        }
        at += piece.len();
    }
    ranges
}

/// What a URL must name besides its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// A host (`redis://cache:6379`, `https://llm.example/v1`).
    Host,
    /// Anything after the scheme: a host or a path (`sqlite:data.db`, `redis+unix:///run/redis.sock`).
    HostOrPath,
}

/// A scheme a setting accepts, with what a URL of it must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// The scheme, in lower case, without `:`.
    pub name: &'static str,
    /// What its URLs must name.
    pub needs: Needs,
}

impl Scheme {
    /// A scheme whose URLs name a host.
    pub const fn with_host(name: &'static str) -> Self {
        Self {
            name,
            needs: Needs::Host,
        }
    }

    /// A scheme whose URLs name a host or a path.
    pub const fn with_host_or_path(name: &'static str) -> Self {
        Self {
            name,
            needs: Needs::HostOrPath,
        }
    }
}

/// Why a URL was refused. The message never holds the URL (the caller shows it, redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The text is not a URL at all.
    #[error("it is not a URL ({0})")]
    Unparsable(String),
    /// The scheme is none of those accepted.
    #[error("its scheme is `{found}`, not {expected}")]
    Scheme {
        /// The scheme given.
        found: String,
        /// The schemes accepted, listed for a person.
        expected: String,
    },
    /// The URL names no host where one is needed.
    #[error("it names no host")]
    NoHost,
    /// The URL names nothing after its scheme.
    #[error("it names nothing after `{0}:`")]
    Empty(String),
    /// The port is not a number in 1..=65535.
    #[error("its port is not a number in 1..=65535")]
    BadPort,
}

/// Checks `url` against the `schemes` a setting accepts: it parses, its scheme is one of
/// them, its port (if any) is in 1..=65535, and it names what its scheme needs.
pub fn check(url: &str, schemes: &[Scheme]) -> Result<Url, UrlError> {
    let parsed = Url::parse(url).map_err(|error| match error {
        ::url::ParseError::InvalidPort => UrlError::BadPort,
        ::url::ParseError::EmptyHost => UrlError::NoHost,
        ::url::ParseError::RelativeUrlWithoutBase => UrlError::Unparsable(format!(
            "{error}: it needs a scheme, such as {}",
            Listed(schemes)
        )),
        other => UrlError::Unparsable(other.to_string()),
    })?;
    let Some(scheme) = schemes.iter().find(|scheme| scheme.name == parsed.scheme()) else {
        return Err(UrlError::Scheme {
            found: parsed.scheme().to_owned(),
            expected: Listed(schemes).to_string(),
        });
    };
    if parsed.port() == Some(0) {
        return Err(UrlError::BadPort);
    }
    let has_host = parsed.host_str().is_some_and(|host| !host.is_empty());
    match scheme.needs {
        Needs::Host if !has_host => Err(UrlError::NoHost),
        Needs::HostOrPath if !has_host && parsed.path().trim_matches('/').is_empty() => {
            Err(UrlError::Empty(scheme.name.to_owned()))
        }
        _ => Ok(parsed),
    }
}

/// Schemes listed for a person: `a://, b:// or c://`.
struct Listed<'a>(&'a [Scheme]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scheme) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == self.0.len() { " or " } else { ", " })?;
            }
            write!(f, "{}://", scheme.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
