//! The rules applied to one file: a [`syn`] visitor ([`Scanner`]) that finds engine-like
//! definitions and renames of the engine, and says what each [`Finding`] is and how to fix
//! it; the engine crate's definitions of the engine type are collected so the tree walk can
//! count them.

use std::fmt;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::visit::{self, Visit};

use super::config::{Config, TABLE};

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// A `struct` with an engine name outside the engine crate.
    Struct,
    /// An `enum` with an engine name outside the engine crate.
    Enum,
    /// A `union` with an engine name outside the engine crate.
    Union,
    /// A `trait` with an engine name outside the engine crate.
    Trait,
    /// A trait alias with an engine name outside the engine crate.
    TraitAlias,
    /// A `type` alias with an engine name (of something other than the engine) outside the
    /// engine crate.
    Type,
    /// A `type X = ...::UserExecutionEngine` outside the crates allowed to alias the engine.
    TypeRename,
    /// A `use ... as X` renaming the engine, or giving something an engine name, outside the
    /// crates allowed to alias the engine.
    UseRename,
    /// A file that does not parse.
    ParseError,
    /// The engine crate does not define the engine type.
    MissingEngine,
    /// The engine crate defines the engine type more than once.
    DuplicateEngine,
}

impl FindingKind {
    /// A short name for the kind, the Rust keyword where there is one.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Struct => "struct",
            FindingKind::Enum => "enum",
            FindingKind::Union => "union",
            FindingKind::Trait => "trait",
            FindingKind::TraitAlias => "trait alias",
            FindingKind::Type => "type",
            FindingKind::TypeRename => "type rename",
            FindingKind::UseRename => "use rename",
            FindingKind::ParseError => "parse error",
            FindingKind::MissingEngine => "missing engine",
            FindingKind::DuplicateEngine => "duplicate engine",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One breach of the rules, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file (or, for [`FindingKind::MissingEngine`], the crate directory), relative to
    /// the workspace root, with `/` separators.
    pub path: String,
    /// The 1-based line, or 0 when the finding is about the whole path.
    pub line: usize,
    /// The 1-based column (in characters), or 0 when the finding is about the whole path.
    pub column: usize,
    /// What was found.
    pub kind: FindingKind,
    /// The offending identifier (empty for a parse error).
    pub name: String,
    /// What was found, as a sentence fragment for humans.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path, self.line, self.column, self.message
            )?;
        }
        write!(f, "\n  fix: {}", self.fix)
    }
}

/// Where the engine crate defines the engine type.
#[derive(Debug, Clone)]
pub(super) struct EngineDefinition {
    path: String,
    line: usize,
    column: usize,
    kind: FindingKind,
}

/// What one file holds: its findings, and where it defines the engine type (counted over the
/// whole tree by [`engine_count_findings`]).
pub(super) struct Scan {
    pub(super) findings: Vec<Finding>,
    pub(super) engine_definitions: Vec<EngineDefinition>,
}

/// Applies the rules to one file's source as if it were at `path` in crate `crate_name`.
pub(super) fn scan_source(crate_name: &str, path: &str, source: &str, cfg: &Config) -> Scan {
    let mut scanner = Scanner {
        cfg,
        crate_name,
        path,
        in_engine_crate: crate_name == cfg.engine_crate,
        may_alias: crate_name == cfg.engine_crate
            || cfg.alias_allowed_in.iter().any(|c| c == crate_name),
        findings: Vec::new(),
        engine_definitions: Vec::new(),
    };
    match syn::parse_file(source) {
        Ok(file) => scanner.visit_file(&file),
        Err(error) => {
            let (line, column) = position(error.span());
            scanner.findings.push(Finding {
                path: path.to_owned(),
                line,
                column,
                kind: FindingKind::ParseError,
                name: String::new(),
                message: format!(
                    "the file does not parse as Rust, so the check cannot see its items: {error}"
                ),
                fix: format!(
                    "fix the syntax error; if the file is deliberately broken (a test fixture), \
                     add its directory to `exclude` in {TABLE}"
                ),
            });
        }
    }
    Scan {
        findings: scanner.findings,
        engine_definitions: scanner.engine_definitions,
    }
}

/// A span's start as a 1-based line and column for humans.
fn position(span: Span) -> (usize, usize) {
    let start = span.start();
    // A span without a location (line 0) still points into the file: say its first line.
    (start.line.max(1), start.column + 1)
}

/// The findings about the engine crate's definitions of the engine type over the whole
/// tree: none (missing), or more than one.
pub(super) fn engine_count_findings(
    definitions: &[EngineDefinition],
    cfg: &Config,
) -> Vec<Finding> {
    let Some((first, again)) = definitions.split_first() else {
        return vec![Finding {
            path: format!("crates/{}", cfg.engine_crate),
            line: 0,
            column: 0,
            kind: FindingKind::MissingEngine,
            name: cfg.engine_type.clone(),
            message: format!(
                "crate `{}` does not define `{}`, the one execution engine type",
                cfg.engine_crate, cfg.engine_type
            ),
            fix: format!(
                "define `pub struct {}` in crates/{}; if the engine moved or was renamed, update \
                 `engine-crate` and `engine-type` in {TABLE}",
                cfg.engine_type, cfg.engine_crate
            ),
        }];
    };
    again
        .iter()
        .map(|d| Finding {
            path: d.path.clone(),
            line: d.line,
            column: d.column,
            kind: FindingKind::DuplicateEngine,
            name: cfg.engine_type.clone(),
            message: format!(
                "{} `{}` defines the engine type a second time in crate `{}` (first at {}:{}:{})",
                d.kind, cfg.engine_type, cfg.engine_crate, first.path, first.line, first.column
            ),
            fix: format!(
                "keep the one definition at {}:{}:{} and delete this one or give it a name \
                 that does not match the patterns in {TABLE}",
                first.path, first.line, first.column
            ),
        })
        .collect()
}

/// The syntax-tree visitor that applies the rules to one file.
struct Scanner<'a> {
    cfg: &'a Config,
    crate_name: &'a str,
    path: &'a str,
    in_engine_crate: bool,
    may_alias: bool,
    findings: Vec<Finding>,
    engine_definitions: Vec<EngineDefinition>,
}

impl Scanner<'_> {
    /// Applies the definition rule to a type-like item named `ident`.
    fn definition(&mut self, kind: FindingKind, ident: &syn::Ident) {
        let name = ident.unraw().to_string();
        let (line, column) = position(ident.span());
        if self.in_engine_crate {
            if name == self.cfg.engine_type {
                self.engine_definitions.push(EngineDefinition {
                    path: self.path.to_owned(),
                    line,
                    column,
                    kind,
                });
            }
            return;
        }
        if !self.cfg.is_engine_name(&name) {
            return;
        }
        let message = format!(
            "{kind} `{name}` defines a second execution engine type in crate `{}`",
            self.crate_name
        );
        let fix = format!(
            "use {} (built by its factories) instead; if this is not an engine, rename it so it \
             does not match the patterns in {TABLE}",
            self.cfg.engine_path()
        );
        self.push(kind, &name, ident, message, fix);
    }

    /// The fix for a rename in a crate that may not rename the engine.
    fn rename_fix(&self) -> String {
        let mut fix = format!("refer to {} by its own name", self.cfg.engine_path());
        if let Some(facade) = self.cfg.alias_allowed_in.first() {
            fix.push_str(&format!(
                "; if callers need a legacy name, add a deprecated alias in crate `{facade}` instead"
            ));
        }
        fix
    }

    fn push(
        &mut self,
        kind: FindingKind,
        name: &str,
        ident: &syn::Ident,
        message: String,
        fix: String,
    ) {
        let (line, column) = position(ident.span());
        self.findings.push(Finding {
            path: self.path.to_owned(),
            line,
            column,
            kind,
            name: name.to_owned(),
            message,
            fix,
        });
    }

    /// Whether `ty` is a path ending in the engine type, e.g. `execution_engine::UserExecutionEngine`.
    fn names_engine(&self, ty: &syn::Type) -> bool {
        match ty {
            syn::Type::Paren(inner) => self.names_engine(&inner.elem),
            syn::Type::Group(inner) => self.names_engine(&inner.elem),
            syn::Type::Path(p) if p.qself.is_none() => p
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident.unraw() == self.cfg.engine_type),
            _ => false,
        }
    }
}

impl<'ast> Visit<'ast> for Scanner<'_> {
    fn visit_item_struct(&mut self, node: &'ast syn::ItemStruct) {
        self.definition(FindingKind::Struct, &node.ident);
        visit::visit_item_struct(self, node);
    }

    fn visit_item_enum(&mut self, node: &'ast syn::ItemEnum) {
        self.definition(FindingKind::Enum, &node.ident);
        visit::visit_item_enum(self, node);
    }

    fn visit_item_union(&mut self, node: &'ast syn::ItemUnion) {
        self.definition(FindingKind::Union, &node.ident);
        visit::visit_item_union(self, node);
    }

    fn visit_item_trait(&mut self, node: &'ast syn::ItemTrait) {
        self.definition(FindingKind::Trait, &node.ident);
        visit::visit_item_trait(self, node);
    }

    fn visit_item_trait_alias(&mut self, node: &'ast syn::ItemTraitAlias) {
        self.definition(FindingKind::TraitAlias, &node.ident);
        visit::visit_item_trait_alias(self, node);
    }

    fn visit_item_type(&mut self, node: &'ast syn::ItemType) {
        if !self.names_engine(&node.ty) {
            self.definition(FindingKind::Type, &node.ident);
        } else if !self.may_alias {
            // An alias of the engine is a rename, judged like `use ... as`.
            let name = node.ident.unraw().to_string();
            let message = format!(
                "type alias `{name}` renames `{}` in crate `{}`, but only {} may alias the engine",
                self.cfg.engine_type,
                self.crate_name,
                self.cfg.alias_crates()
            );
            let fix = self.rename_fix();
            self.push(FindingKind::TypeRename, &name, &node.ident, message, fix);
        }
        visit::visit_item_type(self, node);
    }

    fn visit_use_rename(&mut self, node: &'ast syn::UseRename) {
        let original = node.ident.unraw().to_string();
        let name = node.rename.unraw().to_string();
        // `as _` imports a trait for its methods without naming it; `as Self` is no rename.
        let no_new_name = name == "_" || name == original;
        if !self.may_alias && !no_new_name {
            if original == self.cfg.engine_type {
                let message = format!(
                    "`use ... as {name}` renames `{original}` in crate `{}`, but only {} may \
                     alias the engine",
                    self.crate_name,
                    self.cfg.alias_crates()
                );
                let fix = self.rename_fix();
                self.push(FindingKind::UseRename, &name, &node.rename, message, fix);
            } else if self.cfg.is_engine_name(&name) {
                let message = format!(
                    "`use ... as {name}` gives `{original}` an execution engine name in crate `{}`",
                    self.crate_name
                );
                let fix = format!(
                    "import `{original}` under a name that does not match the patterns in \
                     {TABLE}; the engine is {} and only {} may alias it",
                    self.cfg.engine_path(),
                    self.cfg.alias_crates()
                );
                self.push(FindingKind::UseRename, &name, &node.rename, message, fix);
            }
        }
        visit::visit_use_rename(self, node);
    }
}
