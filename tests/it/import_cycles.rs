//! No two source files of a crate import each other in a loop, directly or through others.
//! An import is a path into the crate from another file: `use crate::a::B`, `super::…`, or a
//! `crate::a::b` path in code. A module's use of its own children (a `mod` line, `pub use
//! child::X`, a call of `child::f`) is containment and not counted; a child's use of its
//! parent is, so a loop through a parent and its siblings is found. A loop means
//! the files cannot be read, tested or moved apart; the fix is to move what both sides need
//! into a module that imports neither.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules: module path (`a::b`; `` for the root) to its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            // A binary's main.rs is a crate of its own; it cannot be in a loop with the library.
            if relative == Path::new("main") {
                continue;
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The full paths a `use` tree names: `a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|rest| match (prefix.is_empty(), rest.as_str()) {
            (true, _) => rest,
            (false, "self") => prefix.to_owned(),
            (false, _) => format!("{prefix}::{rest}"),
        })
        .collect()
}

/// The paths `text` (the file of module `module`) names, made absolute within the crate.
/// Inside an inline module (`mod tests { … }`, after the file's own items) `super` is the
/// file's module itself.
fn named_paths(module: &str, children: &[String], text: &str) -> Vec<Vec<String>> {
    let mut paths: Vec<(usize, String)> = Vec::new();
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let inline_from = code
        .match_indices("mod ")
        .find(|(at, _)| {
            let line_start = code[..*at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = code[*at..].find('\n').map_or(code.len(), |i| at + i);
            let line = &code[line_start..line_end];
            let before = code[line_start..*at].trim();
            (before.is_empty() || before.starts_with("pub")) && line.trim_end().ends_with('{')
        })
        .map_or(usize::MAX, |(at, _)| at);
    // `use` statements (a line that starts one, maybe `pub`), whose trees may group paths.
    for (at, _) in code.match_indices("use ") {
        let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
        let before = code[line_start..at].trim();
        if !(before.is_empty() || before.starts_with("pub")) {
            continue;
        }
        let statement = &code[at + 4..];
        let Some(end) = statement.find(';') else {
            continue;
        };
        let tree = statement[..end].trim();
        let first = tree.split("::").next().unwrap_or_default();
        if ["crate", "super", "self"].contains(&first) {
            paths.extend(expand(tree).into_iter().map(|path| (at, path)));
        } else if children.iter().any(|child| child == first) {
            // `use child::Item` from the child's parent.
            paths.extend(
                expand(tree)
                    .into_iter()
                    .map(|path| (at, format!("self::{path}"))),
            );
        }
    }
    // Paths in code: `crate::a::b`, `super::a`, and `child::f` from the child's parent.
    let relative: Vec<String> = children.iter().map(|child| format!("{child}::")).collect();
    let anchors = ["crate::".to_owned(), "super::".to_owned()]
        .into_iter()
        .chain(relative);
    for anchor in anchors {
        let anchor = anchor.as_str();
        for (at, _) in code.match_indices(anchor) {
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            // `crate::{…}` is a `use` tree, read above.
            if path == anchor.trim_end_matches(':') {
                continue;
            }
            if anchor.starts_with("crate") || anchor.starts_with("super") {
                paths.push((at, path.to_owned()));
            } else {
                paths.push((at, format!("self::{path}")));
            }
        }
    }
    let here: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    paths
        .into_iter()
        .filter_map(|(at, path)| {
            let mut segments = path.split("::").map(str::to_owned);
            let first = segments.next()?;
            let mut absolute = match first.as_str() {
                "crate" => Vec::new(),
                "self" => here.clone(),
                "super" if at >= inline_from => here.clone(),
                "super" => {
                    // The parent of module `a::b` (in a/b.rs or a/b/mod.rs) is `a`.
                    let mut parent = here.clone();
                    parent.pop();
                    parent
                }
                _ => return None,
            };
            for segment in segments {
                if segment == "super" {
                    absolute.pop();
                } else {
                    absolute.push(segment);
                }
            }
            Some(absolute)
        })
        .collect()
}

/// What the crate root re-exports (`pub use a::B;` makes `crate::B` mean `crate::a::B`):
/// name to its absolute path.
fn root_reexports(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, Vec<String>> {
    let Some(root) = modules.get("") else {
        return BTreeMap::new();
    };
    let text = std::fs::read_to_string(root).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some(tree) = line
            .strip_prefix("pub use ")
            .and_then(|l| l.strip_suffix(';'))
        else {
            continue;
        };
        for path in expand(tree) {
            let path = path
                .trim_start_matches("crate::")
                .trim_start_matches("self::");
            let segments: Vec<String> = path.split("::").map(str::to_owned).collect();
            if segments.len() > 1 && modules.contains_key(&segments[0]) {
                map.insert(segments.last().unwrap().clone(), segments);
            }
        }
    }
    map
}

/// `path` with a leading root re-export replaced by where the item lives.
fn through_reexports(path: &[String], reexports: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    match path.first().and_then(|first| reexports.get(first)) {
        Some(real) => real.iter().chain(&path[1..]).cloned().collect(),
        None => path.to_vec(),
    }
}

/// The file-to-file import graph of the crate at `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let reexports = root_reexports(&modules);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let prefix = if module.is_empty() {
            String::new()
        } else {
            format!("{module}::")
        };
        let children: Vec<String> = modules
            .keys()
            .filter_map(|other| other.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains("::"))
            .map(str::to_owned)
            .collect();
        for path in named_paths(module, &children, &text) {
            let path = through_reexports(&path, &reexports);
            // The longest prefix of the path that is a module is the file it reaches.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|prefix| modules.contains_key(prefix));
            // A module's use of its own children (declaring, re-exporting, calling them) is
            // containment, not an import between rooms: `lib.rs` and `mod.rs` hold their
            // children. Every other edge counts, a child's use of its parent too.
            if let Some(target) = target {
                let contains =
                    target.starts_with(&prefix) || (module.is_empty() && !target.is_empty());
                if target != *module && !contains {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    edges
}

/// One loop of `edges`, if there is one (as the list of modules around it).
fn a_loop(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Every crate's `src`, and xtask's.
fn crate_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    sources.push(root.join("xtask/src"));
    sources.sort();
    sources
}

#[test]
fn no_crate_has_an_import_loop() {
    let mut loops = Vec::new();
    for src in crate_sources() {
        if let Some(cycle) = a_loop(&graph(&src)) {
            let name = src.parent().unwrap().file_name().unwrap().to_string_lossy();
            let shown: Vec<String> = cycle
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        "lib".into()
                    } else {
                        m.clone()
                    }
                })
                .collect();
            loops.push(format!("{name}: {}", shown.join(" -> ")));
        }
    }
    assert!(
        loops.is_empty(),
        "import loops (move what both sides need into a module that imports neither):\n{}",
        loops.join("\n")
    );
}

/// The checker itself: a tree of paths expands, and a loop through `super` is found.
#[test]
fn the_checker_expands_use_trees_and_finds_loops() {
    assert_eq!(
        expand("crate::{a::B, c::{d, e as f}, self}"),
        ["crate::a::B", "crate::c::d", "crate::c::e", "crate"]
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(a_loop(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        a_loop(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let paths = named_paths(
        "x::y",
        &[],
        "use super::z::Thing;\nfn f() { crate::w::g(); }\nmod tests {\n    use super::*;\n}",
    );
    assert!(paths.contains(&vec!["x".to_owned(), "z".into(), "Thing".into()]));
    assert!(paths.contains(&vec!["w".to_owned(), "g".into()]));
    // In the inline test module, `super` is the file's own module.
    assert!(paths.contains(&vec!["x".to_owned(), "y".into(), "*".into()]));
}
