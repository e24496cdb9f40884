//! The one rule for names of services, groups, hosts and users, and for
//! passwords, whatever brings them in: a file (through `check`), a command
//! from the web APIs, the console or an embedding application (through the
//! controller), a password to hash (through `admin::hash_password`).
//!
//! Names end up in XML attributes, `running.txt` lines, log lines, HTTP
//! headers and terminals: a control character, a line break or an escape
//! sequence in one forges lines there, and a noncharacter makes the saved XML
//! unreadable to other parsers. So a name is printable text of at most
//! [`MAX_NAME_LEN`] characters, without control, format (invisible, bidi) or
//! noncharacter code points, without line or paragraph separators, with no
//! space at either end; a user name also has no `:` (Basic authentication
//! splits there) and no space at all.

/// The longest name accepted, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// The longest password accepted, in bytes: hashing time grows with it.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// What a name names: the rule differs only for users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A service.
    Service,
    /// A group of a service.
    Group,
    /// A host of a group.
    Host,
    /// An admin user (a login name).
    User,
}

impl NameKind {
    /// The word used in messages: `service`, `group`, `host`, `user`.
    pub fn word(self) -> &'static str {
        match self {
            NameKind::Service => "service",
            NameKind::Group => "group",
            NameKind::Host => "host",
            NameKind::User => "user",
        }
    }
}

/// Checks a name of `kind` against the rule (see the module docs). The `Err` is
/// the reason, to follow the name in a message: `bad host name "a\u{1b}":
/// contains U+001B (a control character)`.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_string());
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(format!(
            "{len} characters long (expected at most {MAX_NAME_LEN})"
        ));
    }
    if let Some(c) = name.chars().find(|&c| forbidden(c).is_some()) {
        let what = forbidden(c).unwrap_or_default();
        return Err(format!("contains U+{:04X} ({what})", u32::from(c)));
    }
    if kind == NameKind::User {
        if name.contains(':') {
            return Err(
                "contains ':' (it separates the name from the password when logging in)"
                    .to_string(),
            );
        }
        if name.contains(' ') {
            return Err("contains a space (not allowed in user names)".to_string());
        }
    } else if name.starts_with(' ') || name.ends_with(' ') {
        return Err("starts or ends with a space".to_string());
    }
    Ok(())
}

/// Checks a password before it is hashed: not empty or only spaces, no control
/// characters, at most [`MAX_PASSWORD_LEN`] bytes.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.trim().is_empty() {
        return Err("empty or only spaces".to_string());
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "{} bytes long (expected at most {MAX_PASSWORD_LEN})",
            password.len()
        ));
    }
    if let Some(c) = password.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains U+{:04X} (a control character)",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Why `c` may not be in a name, if it may not.
fn forbidden(c: char) -> Option<&'static str> {
    let n = u32::from(c);
    if c.is_control() {
        Some("a control character")
    } else if is_format(n) {
        Some("an invisible formatting character")
    } else if (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE {
        Some("a noncharacter")
    } else if c.is_whitespace() && c != ' ' {
        // Line and paragraph separators, tabs' cousins, no-break spaces.
        Some("a space other than U+0020")
    } else {
        None
    }
}

/// Whether code point `n` is a format character (Unicode general category Cf,
/// Unicode 15.1): soft hyphen, zero-width and bidirectional controls, the byte
/// order mark, tags.
fn is_format(n: u32) -> bool {
    const CF: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    CF.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_pass() {
        for kind in [
            NameKind::Service,
            NameKind::Group,
            NameKind::Host,
            NameKind::User,
        ] {
            for ok in ["web", "h1", "a.b-c_d", "Zoë", "日本", "x@10.0.0.1"] {
                assert_eq!(check_name(kind, ok), Ok(()), "{ok}");
            }
        }
        assert_eq!(check_name(NameKind::Service, "my web"), Ok(()));
        assert_eq!(
            check_name(NameKind::Host, &"h".repeat(MAX_NAME_LEN)),
            Ok(())
        );
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        let bad = |kind, name: &str| check_name(kind, name).unwrap_err();
        for name in [
            "a\0b",
            "a\rb",
            "a\nb",
            "a\x1b[31m",
            "a\x7f",
            "a\u{85}",
            "a\u{fffe}",
            "a\u{ffff}",
            "a\u{fdd0}",
            "a\u{1fffe}",
            "a\u{200b}",
            "a\u{202e}",
            "a\u{feff}",
            "a\u{2028}",
            "a\u{a0}",
            "a\tb",
            "",
        ] {
            for kind in [NameKind::Service, NameKind::Host, NameKind::User] {
                assert!(check_name(kind, name).is_err(), "{name:?}");
            }
        }
        assert_eq!(
            bad(NameKind::Host, "a\x1b"),
            "contains U+001B (a control character)"
        );
        assert!(bad(NameKind::Group, &"g".repeat(300)).starts_with("300 characters long"));
        assert!(bad(NameKind::User, "a:b").contains("':'"));
        assert!(bad(NameKind::User, "a b").contains("space"));
        assert!(bad(NameKind::Service, " web").contains("starts or ends"));
        assert!(bad(NameKind::Service, "web ").contains("starts or ends"));
    }

    #[test]
    fn passwords() {
        assert_eq!(check_password("correct horse"), Ok(()));
        for bad in ["", " ", "   \t ", "a\0b", "a\nb"] {
            assert!(check_password(bad).is_err(), "{bad:?}");
        }
        assert!(check_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }
}
