//! Configuration errors, each pointing at the file, line and column it came from.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The name used in locations when the configuration was read from a string.
pub const STRING_SOURCE: &str = "<string>";

/// Where in a configuration file something is: `FILE:LINE:COL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as the user named it, or `<string>`.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in characters (not bytes) so editors agree with it.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can go wrong loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file's content is wrong: malformed syntax or an invalid value. Only the
    /// first problem found is reported.
    #[error("{location}: {message}")]
    Invalid {
        /// Where the problem is.
        location: Location,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The file could not be read.
    #[error("{}: cannot read configuration: {source}", path.display())]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// Where the problem is, for errors about the content.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { location, .. } => Some(location),
            ConfigError::Io { .. } => None,
        }
    }

    /// What was wrong, without the location prefix.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Invalid { message, .. } => message.clone(),
            ConfigError::Io { source, .. } => source.to_string(),
        }
    }
}

/// The text being parsed and its name: turns byte offsets into [`Location`]s.
///
/// Both readers report positions as byte offsets (quick-xml's buffer positions,
/// TOML spans); converting in one place keeps the two formats' locations identical.
#[derive(Debug, Clone)]
pub(crate) struct Source<'a> {
    name: Arc<str>,
    text: &'a str,
}

impl<'a> Source<'a> {
    /// A source named `name` (a path, or [`STRING_SOURCE`]).
    pub(crate) fn new(name: impl Into<Arc<str>>, text: &'a str) -> Self {
        Source {
            name: name.into(),
            text,
        }
    }

    /// The text itself.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    /// The line and column of a byte offset (clamped to the text).
    pub(crate) fn locate(&self, offset: usize) -> Location {
        let offset = self.text.floor_char_boundary(offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        Location {
            file: self.name.clone(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// An error at a byte offset.
    pub(crate) fn error(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: self.locate(offset),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = Source::new("f.xml", "ab\ncdé\nx");
        let at = |o| {
            let l = src.locate(o);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(2), (1, 3));
        assert_eq!(at(3), (2, 1));
        // "é" is two bytes but one column.
        assert_eq!(at(7), (2, 4));
        assert_eq!(at(8), (3, 1));
        assert_eq!(at(999), (3, 2));
        // An offset inside a multi-byte character does not panic.
        assert_eq!(at(6), (2, 3));
    }

    #[test]
    fn display_is_file_line_column_message() {
        let err = Source::new("config.xml", "\n\n  x").error(4, "bad thing");
        assert_eq!(err.to_string(), "config.xml:3:3: bad thing");
        assert_eq!(err.location().map(|l| l.line), Some(3));
        assert_eq!(err.message(), "bad thing");
    }
}
