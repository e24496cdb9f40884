//! The nesting limit of configuration files, checked before anything recursive
//! sees the text.
//!
//! A file of a few hundred thousand nested elements or brackets would otherwise
//! overflow the stack of whatever walks or drops the tree (an abort, not an
//! error: a reload would end the process). A real configuration nests four or
//! five levels deep; [`MAX_DEPTH`] leaves room for `<note>`s holding markup.
//! The XML reader counts open elements as it goes (`xml::parse_tree`); TOML is
//! scanned here, before the `toml` crate parses it, so the limit does not depend
//! on that crate's own (which a feature of another dependency could turn off,
//! and which reports dotted keys without a position).

use super::error::{ConfigError, Source};

/// The deepest nesting a configuration file may have: XML elements inside each
/// other (`<note>` contents included), or TOML tables, arrays, inline tables and
/// dotted-key levels inside each other.
pub const MAX_DEPTH: usize = 64;

/// The error for something opened at `at` that makes the nesting too deep.
pub(crate) fn too_deep(src: &Source<'_>, at: usize, what: &str) -> ConfigError {
    src.error(
        at,
        format!("{what} nested too deeply (expected at most {MAX_DEPTH} levels)"),
    )
}

/// Refuses a TOML text whose tables, arrays, inline tables and dotted keys nest
/// deeper than [`MAX_DEPTH`], pointing at the first character too deep. Only
/// delimiters are looked at (strings and comments skipped); anything else that
/// is wrong is left to the parser. Linear in the text, no allocation.
pub(crate) fn check_toml(src: &Source<'_>) -> Result<(), ConfigError> {
    const WHAT: &str = "tables, arrays or dotted keys";
    let bytes = src.text().as_bytes();
    // Open arrays and inline tables: (is an inline table, its depth). Never longer
    // than MAX_DEPTH: the scan stops at the first level past it.
    let mut open: Vec<(bool, usize)> = Vec::new();
    // Depth of the current `[table]` / `[[array]]` header's table.
    let mut table_depth = 0;
    // Whether a key is being read (before `=`), and its dots so far.
    let mut in_key = true;
    let mut key_dots = 0;
    // Whether the current line has had anything but blanks (for `[header]`).
    let mut line_used = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // The depth values of the innermost container hold.
        let base = match open.last() {
            Some(&(_, depth)) => depth,
            None => table_depth,
        };
        match b {
            b'#' => {
                i = skip_line(bytes, i);
                continue;
            }
            b'"' | b'\'' => {
                line_used = true;
                i = skip_string(bytes, i);
                continue;
            }
            b'\n' => {
                line_used = false;
                if open.is_empty() {
                    in_key = true;
                    key_dots = 0;
                }
            }
            b' ' | b'\t' | b'\r' => {}
            b'[' if open.is_empty() && !line_used => {
                // A table header: `[a.b]` is two levels, `[[a.b]]` three (the
                // array, then its table).
                let (end, dots, array) = header(bytes, i);
                let depth = dots + 1 + usize::from(array);
                if depth > MAX_DEPTH {
                    return Err(too_deep(src, i, WHAT));
                }
                table_depth = depth;
                line_used = true;
                i = end;
                continue;
            }
            b'[' | b'{' => {
                let depth = match open.last() {
                    // An element of an array.
                    Some(&(false, depth)) => depth + 1,
                    // The value of a (dotted) key.
                    _ => base + key_dots + 1,
                };
                if depth > MAX_DEPTH {
                    return Err(too_deep(src, i, WHAT));
                }
                open.push((b == b'{', depth));
                in_key = b == b'{';
                key_dots = 0;
                line_used = true;
            }
            b']' | b'}' => {
                open.pop();
                // A value just ended: what follows is a comma or the line's
                // end, never key dots (`[{}, 1.5]`).
                in_key = false;
                line_used = true;
            }
            b',' => {
                // After a comma in an inline table comes a key.
                if let Some(&(true, _)) = open.last() {
                    in_key = true;
                    key_dots = 0;
                }
                line_used = true;
            }
            b'=' => {
                in_key = false;
                line_used = true;
            }
            b'.' if in_key => {
                key_dots += 1;
                if base + key_dots + 1 > MAX_DEPTH {
                    return Err(too_deep(src, i, WHAT));
                }
                line_used = true;
            }
            _ => line_used = true,
        }
        i += 1;
    }
    Ok(())
}

/// Past the end of the line `i` is on (at its `\n`, which the caller handles).
fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |n| i + n)
}

/// Past the string starting at `i` (a `"` or `'`, single or tripled). An
/// unterminated string ends the text (the parser reports it).
fn skip_string(bytes: &[u8], i: usize) -> usize {
    let quote = bytes[i];
    let basic = quote == b'"';
    let triple = bytes.get(i..i + 3) == Some(&[quote; 3][..]);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < bytes.len() {
        let b = bytes[j];
        if basic && b == b'\\' {
            if !triple && bytes.get(j + 1) == Some(&b'\n') {
                // No line continuation in a single-line string: it ends here.
                return j + 1;
            }
            j += 2;
            continue;
        }
        if b == quote {
            if !triple {
                return j + 1;
            }
            if bytes.get(j..j + 3) == Some(&[quote; 3][..]) {
                // Up to two more quotes may end the content (`""""" `).
                let mut end = j + 3;
                while end < bytes.len() && end < j + 5 && bytes[end] == quote {
                    end += 1;
                }
                return end;
            }
        }
        if b == b'\n' && !triple {
            // Single-line strings end at the line; let the parser complain.
            return j;
        }
        j += 1;
    }
    bytes.len()
}

/// A table header starting at `i` (`[`): past its end, the dots of its key
/// (outside quotes), and whether it is an array of tables (`[[…]]`).
fn header(bytes: &[u8], i: usize) -> (usize, usize, bool) {
    let array = bytes.get(i + 1) == Some(&b'[');
    let mut j = i + if array { 2 } else { 1 };
    let mut dots = 0;
    while j < bytes.len() {
        match bytes[j] {
            b'"' | b'\'' => {
                j = skip_string(bytes, j);
                continue;
            }
            b'.' => dots += 1,
            b']' => {
                let end = if array && bytes.get(j + 1) == Some(&b']') {
                    j + 2
                } else {
                    j + 1
                };
                return (end, dots, array);
            }
            b'\n' => return (j, dots, array),
            _ => {}
        }
        j += 1;
    }
    (j, dots, array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        check_toml(&Source::new("t.toml", text)).map_err(|e| e.to_string())
    }

    #[test]
    fn real_files_pass() {
        let text = r#"
# a comment with [[[[ and {{{{
[[service]]
name = "web [x]"
listen = ["0.0.0.0:80", { ip = "0.0.0.0:8080", trusted_proxies = ["10.0.0.0/8"] }]
  [[service.group]]
  name = 'g{'
  hosts = [ { name = "h1", ip = "10.0.0.1:80", weight = 5 },
            { name = """multi
[[[ line""", ip = "10.0.0.2:80" } ]
[manager]
host_check = { interval = 10.5, enable = true }
a.b.c = 1
"#;
        assert_eq!(check(text), Ok(()));
    }

    #[test]
    fn deep_brackets_braces_and_keys_are_refused_where_they_get_too_deep() {
        let n = 200_000;
        let arrays = format!("x = {}{}", "[".repeat(n), "]".repeat(n));
        // The n-th `[` is level n: the 65th, at column 4 + 65, is too deep.
        assert_eq!(
            check(&arrays),
            Err(format!(
                "t.toml:1:{}: tables, arrays or dotted keys nested too deeply (expected at most 64 levels)",
                4 + MAX_DEPTH + 1
            ))
        );
        let tables = format!("x = {}1{}", "{a = ".repeat(n), "}".repeat(n));
        assert!(check(&tables).unwrap_err().contains("too deeply"));
        let keys = format!("x{} = 1", ".a".repeat(n));
        assert!(check(&keys).unwrap_err().starts_with("t.toml:1:"));
        let header = format!("[x{}]\n", ".a".repeat(n));
        assert!(check(&header).unwrap_err().starts_with("t.toml:1:1:"));
        // Exactly the limit passes: 64 levels of key.
        let limit = format!("x{} = 1", ".a".repeat(MAX_DEPTH - 1));
        assert_eq!(check(&limit), Ok(()));
        let over = format!("x{} = 1", ".a".repeat(MAX_DEPTH));
        assert!(check(&over).is_err());
    }

    #[test]
    fn strings_and_comments_hide_brackets() {
        let n = 1000;
        let text = format!(
            "a = \"{0}\"\nb = '{0}'\nc = \"\"\"{0}\n\"\"\"\n# {0}\nd = '''\n{0}'''\ne = \"\\\"{0}\"\n",
            "[".repeat(n)
        );
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn values_after_a_closed_table_are_no_key_and_strings_end_at_their_line() {
        // Floats after an inline table in an array were counted as key dots.
        let floats = format!("x = [{{}}, {}]\n", vec!["1.5"; 100].join(", "));
        assert_eq!(check(&floats), Ok(()));
        // A backslash at the end of a single-line string does not carry it
        // over the line: the brackets after it are seen.
        let hidden = format!("y = \"a\\\nz = {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(
            check(&hidden).unwrap_err().contains("too deeply"),
            "{hidden}"
        );
    }
}
