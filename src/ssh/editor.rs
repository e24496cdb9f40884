//! The console's line editor: keystrokes from the client's terminal in, echo and
//! redraws out. Pure (no I/O), so every key is unit-tested; the SSH session feeds
//! it the channel's bytes and writes what it returns.
//!
//! Keys: printable characters insert at the cursor; Backspace, Delete, Ctrl-D
//! delete; Left/Right, Ctrl-B/F, Home/End, Ctrl-A/E move; Ctrl-U/K/W kill; Up/Down
//! and Ctrl-P/N walk the history; Tab completes; Ctrl-L clears the screen; Ctrl-C
//! abandons the line; Enter (CR, LF or CR LF) ends it.

use std::collections::VecDeque;

/// Lines kept in the history, oldest forgotten first.
pub const HISTORY_LINES: usize = 500;
/// Longest line accepted, in characters; keys past it are ignored.
pub const MAX_LINE_CHARS: usize = 4096;

/// What the editor produced from the keys so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditorEvent {
    /// Enter: the finished line (the editor is ready for the next one).
    Line(String),
    /// Ctrl-C: the line was abandoned.
    Interrupt,
    /// Ctrl-D on an empty line: the user is done.
    Eof,
}

/// Candidates for the word before the cursor, from the caller's completer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    /// Character index in the line where the word being completed starts.
    pub start: usize,
    /// Whole words that may replace it.
    pub candidates: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Esc,
    /// After ESC [, with the numeric parameter so far.
    Csi(u16),
    /// After ESC O.
    Ss3,
}

/// One line being edited, and the history of earlier ones.
#[derive(Debug)]
pub struct LineEditor {
    prompt: String,
    line: Vec<char>,
    cursor: usize,
    history: VecDeque<String>,
    /// Index into `history` while walking it; `None` on the new line.
    browsing: Option<usize>,
    /// The new line as it was when history walking began.
    stash: Vec<char>,
    escape: Escape,
    /// Bytes of an incomplete UTF-8 character.
    utf8: Vec<u8>,
    /// Whether the last byte was CR (an LF right after it is the same Enter).
    after_cr: bool,
    /// Whether typed characters are shown (off for passwords).
    echo: bool,
    /// Keys not yet processed: processing stops at each event so the caller can
    /// answer it before later keys are echoed.
    pending: VecDeque<u8>,
}

impl LineEditor {
    /// An editor showing `prompt` before each line.
    pub fn new(prompt: impl Into<String>) -> Self {
        LineEditor {
            prompt: prompt.into(),
            line: Vec::new(),
            cursor: 0,
            history: VecDeque::new(),
            browsing: None,
            stash: Vec::new(),
            escape: Escape::None,
            utf8: Vec::new(),
            after_cr: false,
            echo: true,
            pending: VecDeque::new(),
        }
    }

    /// Writes the prompt (and the line so far) to start a fresh line of input.
    pub fn start(&mut self, prompt: &str, echo: bool, out: &mut Vec<u8>) {
        self.prompt = prompt.to_string();
        self.echo = echo;
        self.redraw(out);
    }

    /// The history, oldest first.
    #[cfg(test)]
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(String::as_str)
    }

    /// Queues keys from the client.
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend(data);
    }

    /// Whether keys are queued.
    #[cfg(test)]
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops queued keys (after Ctrl-C during a long command, for example).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Processes queued keys until one produces an event, writing echo and
    /// redraws to `out`. `complete` is asked for candidates on Tab with the line
    /// up to the cursor.
    pub fn next_event(
        &mut self,
        out: &mut Vec<u8>,
        complete: &mut dyn FnMut(&str) -> Completion,
    ) -> Option<EditorEvent> {
        while let Some(byte) = self.pending.pop_front() {
            if let Some(event) = self.key(byte, out, complete) {
                return Some(event);
            }
        }
        None
    }

    fn key(
        &mut self,
        b: u8,
        out: &mut Vec<u8>,
        complete: &mut dyn FnMut(&str) -> Completion,
    ) -> Option<EditorEvent> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::None => {}
            Escape::Esc => {
                self.escape = match b {
                    b'[' => Escape::Csi(0),
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                return None;
            }
            Escape::Csi(n) => {
                match b {
                    b'0'..=b'9' => {
                        let n = n.saturating_mul(10).saturating_add(u16::from(b - b'0'));
                        self.escape = Escape::Csi(n);
                        return None;
                    }
                    b';' => return None,
                    _ => {}
                }
                self.escape = Escape::None;
                match (b, n) {
                    (b'A', _) => self.history_move(true, out),
                    (b'B', _) => self.history_move(false, out),
                    (b'C', _) => self.move_to(self.cursor + 1, out),
                    (b'D', _) => self.move_to(self.cursor.saturating_sub(1), out),
                    (b'H', _) | (b'~', 1 | 7) => self.move_to(0, out),
                    (b'F', _) | (b'~', 4 | 8) => self.move_to(self.line.len(), out),
                    (b'~', 3) => self.delete_at_cursor(out),
                    _ => {}
                }
                return None;
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                match b {
                    b'A' => self.history_move(true, out),
                    b'B' => self.history_move(false, out),
                    b'C' => self.move_to(self.cursor + 1, out),
                    b'D' => self.move_to(self.cursor.saturating_sub(1), out),
                    b'H' => self.move_to(0, out),
                    b'F' => self.move_to(self.line.len(), out),
                    _ => {}
                }
                return None;
            }
        }
        if !self.utf8.is_empty() || b >= 0x80 {
            self.utf8_byte(b, out);
            return None;
        }
        match b {
            b'\r' => {
                self.after_cr = true;
                return Some(self.enter(out));
            }
            b'\n' if after_cr => {}
            b'\n' => return Some(self.enter(out)),
            0x1b => self.escape = Escape::Esc,
            0x01 => self.move_to(0, out),
            0x05 => self.move_to(self.line.len(), out),
            0x02 => self.move_to(self.cursor.saturating_sub(1), out),
            0x06 => self.move_to(self.cursor + 1, out),
            0x03 => {
                out.extend_from_slice(b"^C\r\n");
                self.reset();
                return Some(EditorEvent::Interrupt);
            }
            0x04 => {
                if self.line.is_empty() {
                    out.extend_from_slice(b"\r\n");
                    return Some(EditorEvent::Eof);
                }
                self.delete_at_cursor(out);
            }
            0x08 | 0x7f if self.cursor > 0 => {
                self.cursor -= 1;
                self.line.remove(self.cursor);
                self.redraw(out);
            }
            0x09 => self.complete(out, complete),
            0x0b => {
                self.line.truncate(self.cursor);
                self.redraw(out);
            }
            0x0c => {
                out.extend_from_slice(b"\x1b[H\x1b[2J");
                self.redraw(out);
            }
            0x0e => self.history_move(false, out),
            0x10 => self.history_move(true, out),
            0x15 => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
                self.redraw(out);
            }
            0x17 => {
                let mut start = self.cursor;
                while start > 0 && self.line[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && self.line[start - 1] != ' ' {
                    start -= 1;
                }
                self.line.drain(start..self.cursor);
                self.cursor = start;
                self.redraw(out);
            }
            0x20..=0x7e => self.insert(char::from(b), out),
            _ => {}
        }
        None
    }

    fn utf8_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.utf8.push(b);
        let want = match self.utf8[0] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => {
                self.utf8.clear();
                return;
            }
        };
        if self.utf8.len() < want {
            return;
        }
        let bytes = std::mem::take(&mut self.utf8);
        if let Ok(s) = std::str::from_utf8(&bytes)
            && let Some(c) = s.chars().next()
            && !c.is_control()
        {
            self.insert(c, out);
        }
    }

    fn insert(&mut self, c: char, out: &mut Vec<u8>) {
        if self.line.len() >= MAX_LINE_CHARS {
            return;
        }
        self.line.insert(self.cursor, c);
        self.cursor += 1;
        if self.cursor == self.line.len() {
            // Typing at the end (the usual case) echoes just the character.
            if self.echo {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        } else {
            self.redraw(out);
        }
    }

    fn delete_at_cursor(&mut self, out: &mut Vec<u8>) {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
            self.redraw(out);
        }
    }

    fn move_to(&mut self, cursor: usize, out: &mut Vec<u8>) {
        let cursor = cursor.min(self.line.len());
        if cursor != self.cursor {
            self.cursor = cursor;
            self.redraw(out);
        }
    }

    fn enter(&mut self, out: &mut Vec<u8>) -> EditorEvent {
        out.extend_from_slice(b"\r\n");
        let line: String = self.line.iter().collect();
        if self.echo && !line.trim().is_empty() && self.history.back() != Some(&line) {
            if self.history.len() >= HISTORY_LINES {
                self.history.pop_front();
            }
            self.history.push_back(line.clone());
        }
        self.reset();
        EditorEvent::Line(line)
    }

    fn reset(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        self.stash.clear();
        self.escape = Escape::None;
    }

    fn history_move(&mut self, back: bool, out: &mut Vec<u8>) {
        if !self.echo || self.history.is_empty() {
            return;
        }
        let next = match (self.browsing, back) {
            (None, true) => {
                self.stash = self.line.clone();
                Some(self.history.len() - 1)
            }
            (None, false) => return,
            (Some(0), true) => return,
            (Some(i), true) => Some(i - 1),
            (Some(i), false) if i + 1 < self.history.len() => Some(i + 1),
            (Some(_), false) => None,
        };
        self.browsing = next;
        self.line = match next {
            Some(i) => self.history[i].chars().collect(),
            None => std::mem::take(&mut self.stash),
        };
        self.cursor = self.line.len();
        self.redraw(out);
    }

    fn complete(&mut self, out: &mut Vec<u8>, complete: &mut dyn FnMut(&str) -> Completion) {
        if !self.echo {
            return;
        }
        let before: String = self.line[..self.cursor].iter().collect();
        let Completion { start, candidates } = complete(&before);
        let start = start.min(self.cursor);
        let typed: String = self.line[start..self.cursor].iter().collect();
        let candidates: Vec<&String> = candidates
            .iter()
            .filter(|c| c.starts_with(&typed))
            .collect();
        match candidates.as_slice() {
            [] => out.push(0x07),
            [only] => {
                let mut word: Vec<char> = only.chars().collect();
                if self.line.get(self.cursor) != Some(&' ') {
                    word.push(' ');
                }
                self.line.splice(start..self.cursor, word.iter().copied());
                self.cursor = start + word.len();
                self.redraw(out);
            }
            many => {
                let common = common_prefix(many);
                if common.chars().count() > typed.chars().count() {
                    let word: Vec<char> = common.chars().collect();
                    self.line.splice(start..self.cursor, word.iter().copied());
                    self.cursor = start + word.len();
                    self.redraw(out);
                } else {
                    out.extend_from_slice(b"\r\n");
                    let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                    out.extend_from_slice(names.join("  ").as_bytes());
                    out.extend_from_slice(b"\r\n");
                    self.redraw(out);
                }
            }
        }
    }

    /// Rewrites the prompt and the line, and puts the cursor back in place.
    fn redraw(&self, out: &mut Vec<u8>) {
        out.push(b'\r');
        out.extend_from_slice(self.prompt.as_bytes());
        if self.echo {
            let line: String = self.line.iter().collect();
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"\x1b[K");
        let back = self.line.len() - self.cursor;
        if self.echo && back > 0 {
            out.extend_from_slice(format!("\x1b[{back}D").as_bytes());
        }
    }
}

fn common_prefix(words: &[&String]) -> String {
    let Some(first) = words.first() else {
        return String::new();
    };
    let mut prefix: Vec<char> = first.chars().collect();
    for w in &words[1..] {
        let n = prefix
            .iter()
            .zip(w.chars())
            .take_while(|(a, b)| **a == *b)
            .count();
        prefix.truncate(n);
    }
    prefix.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Completion {
        Completion::default()
    }

    /// Feeds `keys` and returns the events and the output.
    fn feed(ed: &mut LineEditor, keys: &[u8]) -> (Vec<EditorEvent>, String) {
        ed.push(keys);
        let mut out = Vec::new();
        let mut events = Vec::new();
        while let Some(e) = ed.next_event(&mut out, &mut none) {
            events.push(e);
        }
        (events, String::from_utf8_lossy(&out).into_owned())
    }

    fn lines(ed: &mut LineEditor, keys: &[u8]) -> Vec<String> {
        feed(ed, keys)
            .0
            .into_iter()
            .filter_map(|e| match e {
                EditorEvent::Line(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn typing_echoes_and_enter_ends_the_line_whatever_the_line_ending() {
        let mut ed = LineEditor::new("> ");
        let (events, out) = feed(&mut ed, b"show stats\r");
        assert_eq!(events, vec![EditorEvent::Line("show stats".into())]);
        assert_eq!(out, "show stats\r\n");
        assert_eq!(lines(&mut ed, b"a\r\nb\nc\r"), vec!["a", "b", "c"]);
        assert_eq!(lines(&mut ed, b"\r\n\r\n"), vec!["", ""]);
    }

    #[test]
    fn processing_stops_at_each_event() {
        let mut ed = LineEditor::new("> ");
        ed.push(b"one\rtwo\r");
        let mut out = Vec::new();
        assert_eq!(
            ed.next_event(&mut out, &mut none),
            Some(EditorEvent::Line("one".into()))
        );
        assert!(ed.has_pending());
        assert_eq!(String::from_utf8_lossy(&out), "one\r\n");
        assert_eq!(
            ed.next_event(&mut out, &mut none),
            Some(EditorEvent::Line("two".into()))
        );
        assert!(!ed.has_pending());
    }

    #[test]
    fn editing_keys() {
        let mut ed = LineEditor::new("> ");
        // Backspace, left arrow + insert, home + insert, end, delete.
        assert_eq!(lines(&mut ed, b"hostx\x7f\r"), vec!["host"]);
        assert_eq!(lines(&mut ed, b"hst\x1b[D\x1b[Do\r"), vec!["host"]);
        assert_eq!(lines(&mut ed, b"ost\x01h\x05!\r"), vec!["host!"]);
        assert_eq!(lines(&mut ed, b"xhost\x1b[H\x1b[3~\r"), vec!["host"]);
        assert_eq!(lines(&mut ed, b"xhost\x1bOH\x04\r"), vec!["host"]);
        // Kill to start, to end, previous word.
        assert_eq!(
            lines(&mut ed, b"junk host\x1b[D\x1b[D\x1b[D\x1b[D\x15\r"),
            vec!["host"]
        );
        assert_eq!(
            lines(&mut ed, b"hostjunk\x02\x02\x02\x02\x0b\r"),
            vec!["host"]
        );
        assert_eq!(lines(&mut ed, b"show junk  \x17\r"), vec!["show "]);
        // UTF-8 in pieces.
        ed.push(&[b'c', 0xc3]);
        let mut out = Vec::new();
        assert_eq!(ed.next_event(&mut out, &mut none), None);
        assert_eq!(lines(&mut ed, &[0xa9, b'\r']), vec!["cé"]);
        // Unknown escape sequences are ignored.
        assert_eq!(lines(&mut ed, b"a\x1b[1;5Cb\x1b[99~\r"), vec!["ab"]);
    }

    #[test]
    fn ctrl_c_abandons_and_ctrl_d_ends_only_on_an_empty_line() {
        let mut ed = LineEditor::new("> ");
        let (events, out) = feed(&mut ed, b"half\x03");
        assert_eq!(events, vec![EditorEvent::Interrupt]);
        assert!(out.ends_with("^C\r\n"));
        assert_eq!(lines(&mut ed, b"x\r"), vec!["x"]);
        let (events, _) = feed(&mut ed, b"\x04");
        assert_eq!(events, vec![EditorEvent::Eof]);
    }

    #[test]
    fn history_walks_back_and_forth_and_keeps_the_new_line() {
        let mut ed = LineEditor::new("> ");
        lines(&mut ed, b"one\rtwo\rtwo\r");
        assert_eq!(ed.history().collect::<Vec<_>>(), vec!["one", "two"]);
        assert_eq!(lines(&mut ed, b"\x1b[A\x1b[A\r"), vec!["one"]);
        // Up past the oldest stays there; down past the newest restores the stash.
        assert_eq!(
            lines(&mut ed, b"new\x1b[A\x1b[A\x1b[A\x1b[B\x1b[B\x1b[B\r"),
            vec!["new"]
        );
        // History is now one, two, one, new.
        assert_eq!(lines(&mut ed, b"\x10\x10\x10\x0e\r"), vec!["one"]);
    }

    #[test]
    fn passwords_are_not_echoed_nor_kept() {
        let mut ed = LineEditor::new("> ");
        let mut out = Vec::new();
        ed.start("Password: ", false, &mut out);
        let (events, out) = feed(&mut ed, b"secret\r");
        assert_eq!(events, vec![EditorEvent::Line("secret".into())]);
        assert!(!out.contains("secret"), "{out}");
        assert_eq!(ed.history().count(), 0);
    }

    #[test]
    fn tab_completes_one_candidate_a_common_prefix_or_lists_them() {
        let mut ed = LineEditor::new("> ");
        let mut complete = |before: &str| Completion {
            start: before.rfind(' ').map_or(0, |i| i + 1),
            candidates: ["show", "scheduler", "service"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let mut run = |ed: &mut LineEditor, keys: &[u8]| {
            ed.push(keys);
            let mut out = Vec::new();
            let mut events = Vec::new();
            while let Some(e) = ed.next_event(&mut out, &mut complete) {
                events.push(e);
            }
            (events, String::from_utf8_lossy(&out).into_owned())
        };
        let (events, _) = run(&mut ed, b"sh\t\r");
        assert_eq!(events, vec![EditorEvent::Line("show ".into())]);
        let (events, _) = run(&mut ed, b"se\t\r");
        assert_eq!(events, vec![EditorEvent::Line("service ".into())]);
        // "s" has three candidates and no longer common prefix: they are listed.
        let (events, out) = run(&mut ed, b"s\t");
        assert!(events.is_empty());
        assert!(out.contains("show  scheduler  service"), "{out}");
        let (events, _) = run(&mut ed, b"c\t\r");
        assert_eq!(events, vec![EditorEvent::Line("scheduler ".into())]);
        let (_, out) = run(&mut ed, b"zz\t");
        assert!(out.contains('\x07'));
    }

    #[test]
    fn long_lines_are_capped() {
        let mut ed = LineEditor::new("> ");
        let keys = vec![b'a'; MAX_LINE_CHARS + 10];
        ed.push(&keys);
        let mut out = Vec::new();
        assert_eq!(ed.next_event(&mut out, &mut none), None);
        assert_eq!(lines(&mut ed, b"\r"), vec!["a".repeat(MAX_LINE_CHARS)]);
    }
}
