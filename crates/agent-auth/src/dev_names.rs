//! The names people type to sign in on a development server (`POST /dev/token`): "Alice
//! Smith" is the user `alice-smith`. A name becomes an id by lower-casing it, joining its
//! words with `-` and dropping what an id cannot hold; a name that leaves nothing, or a
//! placeholder such as `test`, is refused with a sentence that says which names work.

use core_context::UserId;
use core_context::id::{IdError, MAX_ID_LEN, PLACEHOLDER_VALUES, is_id_char};

/// The user id a sign-in `name` stands for, or why it cannot stand for one.
pub fn user_for_name(name: &str) -> Result<UserId, String> {
    let words: Vec<String> = name
        .split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|&c| is_id_char(c))
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .filter(|word| !word.is_empty())
        .collect();
    let id = words.join("-");
    if id.is_empty() {
        return Err(format!(
            "{name:?} has no letter or digit to make a user id of; use a name such as \"alice\" or \"Alice Smith\" (ASCII letters and digits; spaces become -)"
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "that name is {} characters long as a user id; the limit is {MAX_ID_LEN}",
            id.len()
        ));
    }
    UserId::parse(&id).map_err(|error| match error {
        IdError::Placeholder { .. } => format!(
            "{id:?} is a placeholder name, which this server never gives a user ({}, and short names starting with temp_, tmp_, mock_ and the like); any other name works, such as \"alice\" or \"Alice Smith\"",
            PLACEHOLDER_VALUES.join(", ")
        ),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_ids_and_refusals_say_what_works() {
        for (name, id) in [
            ("alice", "alice"),
            ("Alice", "alice"),
            ("Alice Smith", "alice-smith"),
            ("  Zoë  O'Brien ", "zo-obrien"),
            ("bob@example.com", "bob@example.com"),
        ] {
            assert_eq!(user_for_name(name).unwrap().as_str(), id, "{name}");
        }
        let test = user_for_name("Test").unwrap_err();
        assert!(
            test.contains("placeholder") && test.contains("such as \"alice\""),
            "{test}"
        );
        let empty = user_for_name("  ?! ").unwrap_err();
        assert!(empty.contains("no letter or digit"), "{empty}");
        let long = user_for_name(&"a".repeat(MAX_ID_LEN + 1)).unwrap_err();
        assert!(long.contains("the limit is 128"), "{long}");
    }
}
