//! Finding the workspace root: the directory whose `Cargo.toml` has a `[workspace]` table.
//!
//! Every xtask command works on the whole workspace whatever directory it is started from,
//! so the root is found, not assumed to be the current directory.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// Returns the workspace root.
///
/// It tries, in order: the parent of `CARGO_MANIFEST_DIR` as cargo sets it for `cargo run`
/// (this package lives at `<root>/xtask`), the same directory as it was when this binary was
/// built, and then every directory from the current one upwards.
pub fn root() -> Result<PathBuf, Error> {
    let from_manifest_dirs = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for manifest_dir in from_manifest_dirs.into_iter().flatten() {
        if let Some(parent) = manifest_dir.parent()
            && is_root(parent)
        {
            return Ok(parent.to_path_buf());
        }
    }
    let start = std::env::current_dir().map_err(|source| Error::Io {
        path: PathBuf::from("."),
        source,
    })?;
    match start.ancestors().find(|dir| is_root(dir)) {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Err(Error::NoWorkspaceRoot { start }),
    }
}

/// Whether `dir` holds a `Cargo.toml` with a `[workspace]` table.
///
/// A manifest that cannot be read or parsed does not make a root; the search goes on upwards.
pub fn is_root(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    text.parse::<toml::Table>()
        .map(|manifest| manifest.get("workspace").is_some_and(toml::Value::is_table))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_workspace() {
        let expected = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in a subdirectory of the workspace root");
        let found = root().expect("the workspace root is found");
        assert_eq!(found, expected);
        assert!(!is_root(Path::new(env!("CARGO_MANIFEST_DIR"))));
    }
}
