//! A user's tag in log lines: what the run service and the server's connection loop log in
//! place of the user id.

use core_context::UserId;

/// A short tag for `user` in log lines: the same for one user within a process, and not the
/// user id itself (a keyed hash with a key made at start), so logs correlate a user's lines
/// without naming them.
pub fn user_tag(user: &UserId) -> String {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let hash = KEY.get_or_init(Default::default).hash_one(user.as_str());
    format!("u{:012x}", hash & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_tags_correlate_without_naming_the_user() {
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let tag = user_tag(&alice);
        assert_eq!(tag, user_tag(&alice));
        assert_ne!(tag, user_tag(&bob));
        assert!(!tag.contains("alice"), "{tag}");
        assert_eq!(tag.len(), 13, "{tag}");
    }
}
