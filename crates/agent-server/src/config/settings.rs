//! The settings as clap sees them: the command whose arguments they are, the TOML type each
//! takes, and whether it repeats.
//!
//! Both sides of the `--config` file use this: `file.rs` reads a file against it, `show.rs`
//! writes the settings in effect with it. It imports neither, so the reader and the writer of
//! the file share one view of the settings without knowing each other.

use clap::{Arg, Args, Command};

use super::ServeArgs;

/// The id of the argument that names the file (a file cannot name another).
pub(super) const CONFIG: &str = "config";

/// The TOML type a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A flag without a value (`--synthetic-agent`): `true` or `false`.
    Bool,
    /// A number.
    Integer,
    /// Everything else: addresses, names, URLs, durations (`"90d"`), choices (`"json"`).
    String,
}

impl Kind {
    /// The kind of `arg`, from its action and its value parser's type.
    pub(super) fn of(arg: &Arg) -> Self {
        if !arg.get_action().takes_values() {
            return Self::Bool;
        }
        let parsed = arg.get_value_parser().type_id();
        let integers = [
            std::any::TypeId::of::<u16>(),
            std::any::TypeId::of::<u32>(),
            std::any::TypeId::of::<u64>(),
            std::any::TypeId::of::<i64>(),
            std::any::TypeId::of::<usize>(),
        ];
        if integers.iter().any(|integer| parsed == *integer) {
            Self::Integer
        } else {
            Self::String
        }
    }

    /// The kind as an error message names what is allowed.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Bool => "true or false",
            Self::Integer => "an integer",
            Self::String => "a string",
        }
    }
}

/// The command whose arguments are the settings ([`ServeArgs`]).
pub(super) fn settings() -> Command {
    ServeArgs::augment_args(Command::new("settings"))
}

/// The settings' arguments in `--help` order: all of `cmd`'s but `--config`.
pub(super) fn setting_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|arg| arg.get_id() != CONFIG)
}

/// Whether `arg` takes its flag several times (`--mcp-server a=… --mcp-server b=…`): in the
/// file, an array of strings.
pub(super) fn repeats(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}
