//! Dotenv (`.env`, `env_file:`) parsing that matches Docker Compose (compose-go v2.9.1 `dotenv`).
//!
//! The format, as Compose reads it:
//!
//! * Statements are `KEY=value`, `KEY: value` or `export KEY=value`; blanks around `=`/`:` are
//!   ignored. Lines whose first non-blank character is `#` are comments. A UTF-8 BOM is skipped.
//! * Key characters are Unicode letters and numbers plus `_ . - [ ]`; blanks inside a key are
//!   skipped while scanning, but a key containing a plain space is an error (other blanks, e.g. a
//!   tab, stay in the key). Keys may start with a digit.
//! * A bare `KEY` on a line takes its value from `lookup` (then from earlier in the file) and is left
//!   out when neither has it. A bare last line *without* a trailing newline instead becomes a value
//!   for the empty key (`FOO` at EOF gives `"" = "FOO"`), as in Compose.
//! * Unquoted values run to the end of the line, are cut at the first ` #` (space, hash) and have
//!   trailing whitespace trimmed; they are interpolated.
//! * `'…'` values are literal except that `\'` is a quote; `"…"` values understand `\a \b \f \n \r
//!   \t \v \" \\ \$` and `\0NNN` octal escapes, then are interpolated. Both may span lines. Text after
//!   the closing quote on the same line is parsed as a further statement (so `A="x" B=y` sets both).
//! * Interpolation resolves names from `lookup` first, then from keys set earlier in the file, with
//!   the full `${VAR:-default}` syntax of [`super::interpolate`].

use indexmap::IndexMap;

use super::interpolate::interpolate;

/// One problem in a dotenv file, at a 1-based line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    /// The 1-based line Compose reports (for an unterminated quote, the line where the file ended).
    pub line: usize,
    /// What is wrong, lower-case, worded as Compose words it.
    pub message: String,
}

/// Parses dotenv text the way Docker Compose does. `lookup` resolves variables referenced in values
/// that are not defined earlier in the same file (Compose uses the OS environment for that).
///
/// Compose consults `lookup` *before* the file's own earlier keys (an OS variable wins over a value
/// set earlier in the file), and so does this function.
pub fn parse(src: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<IndexMap<String, String>, DotenvError> {
    let mut p = Parser {
        line: 1,
        out: IndexMap::new(),
        lookup,
    };
    p.run(src.strip_prefix('\u{FEFF}').unwrap_or(src))?;
    Ok(p.out)
}

/// Parser state: the current line and the values read so far.
struct Parser<'l> {
    line: usize,
    out: IndexMap<String, String>,
    lookup: &'l dyn Fn(&str) -> Option<String>,
}

/// A key as located at the start of a statement.
struct Key<'a> {
    name: &'a str,
    rest: &'a str,
    inherited: bool,
}

impl Parser<'_> {
    fn run(&mut self, src: &str) -> Result<(), DotenvError> {
        let mut cut = src;
        loop {
            cut = self.statement_start(cut);
            if cut.is_empty() {
                return Ok(());
            }
            let line = self.line;
            let key = self.locate_key(cut)?;
            if key.name.contains(' ') {
                return Err(self.error("key cannot contain a space"));
            }
            if key.inherited {
                if let Some(v) = self.resolve(key.name) {
                    self.out.insert(key.name.to_string(), v);
                }
                cut = key.rest;
                continue;
            }
            let (value, rest) = self.value(key.rest, line)?;
            self.out.insert(key.name.to_string(), value);
            cut = rest;
        }
    }

    fn error(&self, message: impl Into<String>) -> DotenvError {
        DotenvError {
            line: self.line,
            message: message.into(),
        }
    }

    /// Looks a name up the way Compose does while parsing: `lookup` first, then the file so far.
    fn resolve(&self, name: &str) -> Option<String> {
        (self.lookup)(name).or_else(|| self.out.get(name).cloned())
    }

    /// Skips blank space and comment lines, counting newlines; empty when the input is used up.
    fn statement_start<'a>(&mut self, mut src: &'a str) -> &'a str {
        loop {
            let mut found = None;
            for (i, c) in src.char_indices() {
                if c == '\n' {
                    self.line += 1;
                }
                if !c.is_whitespace() {
                    found = Some(i);
                    break;
                }
            }
            let Some(start) = found else { return "" };
            src = &src[start..];
            if !src.starts_with('#') {
                return src;
            }
            match src.find('\n') {
                Some(nl) => src = &src[nl..],
                None => return "",
            }
        }
    }

    /// Reads the key of the statement at the start of `src`.
    fn locate_key<'a>(&mut self, mut src: &'a str) -> Result<Key<'a>, DotenvError> {
        // Go's `^export\s+`, where `\s` is `[\t\n\f\r ]` (no vertical tab).
        if let Some(after) = src.strip_prefix("export")
            && after.starts_with(['\t', '\n', '\x0C', '\r', ' '])
        {
            src = after.trim_start_matches(is_blank);
        }
        if src.is_empty() {
            // Only `export` followed by blanks at the very end of the file gets here.
            return Err(self.error("zero length string"));
        }
        // Without a terminator (a last line with no `=`, `:` or newline) the key is empty and the
        // whole text becomes the value, as in Compose.
        let mut key = "";
        let mut offset = 0;
        let mut inherited = false;
        for (i, c) in src.char_indices() {
            if is_blank(c) {
                continue;
            }
            match c {
                '=' | ':' | '\n' => {
                    key = &src[..i];
                    offset = i + 1;
                    inherited = c == '\n';
                    break;
                }
                '_' | '.' | '-' | '[' | ']' => {}
                _ if is_letter(c) || c.is_numeric() => {}
                _ => {
                    let first_line = src.split('\n').next().unwrap_or("");
                    return Err(self.error(format!(
                        "unexpected character {} in variable name {}",
                        go_quote(c.encode_utf8(&mut [0; 4])),
                        go_quote(first_line)
                    )));
                }
            }
        }
        if inherited && !key.contains(' ') {
            self.line += 1;
        }
        Ok(Key {
            name: key.trim_end_matches(char::is_whitespace),
            rest: src.get(offset..).unwrap_or("").trim_start_matches(is_blank),
            inherited,
        })
    }

    /// Reads the value at the start of `src`, returning it and the text after it.
    fn value<'a>(&mut self, src: &'a str, key_line: usize) -> Result<(String, &'a str), DotenvError> {
        let quote = match src.as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => char::from(q),
            _ => {
                let (value, rest) = src.split_once('\n').unwrap_or((src, ""));
                self.line += 1;
                let value = value.split(" #").next().unwrap_or("");
                let value = value.trim_end_matches(char::is_whitespace);
                return Ok((self.expand(value, key_line)?, rest));
            }
        };
        let mut chars = String::new();
        let mut escaped = false;
        for (i, c) in src.char_indices().skip(1) {
            if c == '\n' {
                self.line += 1;
            }
            if c != quote {
                if !escaped && c == '\\' {
                    escaped = true;
                    continue;
                }
                if escaped {
                    escaped = false;
                    chars.push('\\');
                }
                chars.push(c);
                continue;
            }
            if escaped {
                // `\"` inside "…", `\'` inside '…': the quote, without its backslash.
                escaped = false;
                chars.push(c);
                continue;
            }
            let value = if quote == '"' {
                self.expand(&expand_escapes(&chars), key_line)?
            } else {
                chars
            };
            return Ok((value, &src[i + 1..]));
        }
        let first_line = src.split('\n').next().unwrap_or("");
        Err(self.error(format!("unterminated quoted value {first_line}")))
    }

    /// Interpolates a value, reporting errors at the statement's first line.
    fn expand(&self, value: &str, line: usize) -> Result<String, DotenvError> {
        interpolate(value, &|name| self.resolve(name)).map_err(|e| DotenvError {
            line,
            message: e.to_string(),
        })
    }
}

/// compose-go's `isSpace`: blank characters other than line breaks.
fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\x0B' | '\x0C' | '\r' | ' ' | '\u{85}' | '\u{A0}')
}

/// Approximates Go's `unicode.IsLetter` (general category L).
///
/// Rust's `is_alphabetic` also accepts combining marks and a few symbols with the
/// `Other_Alphabetic` property; the non-spacing marks and the circled/squared Latin letters are
/// excluded here (spacing marks, category Mc, are still accepted, unlike Go).
fn is_letter(c: char) -> bool {
    if matches!(c, '\u{FF9E}' | '\u{FF9F}') {
        // Halfwidth katakana sound marks: letters (Lm) that are also grapheme extenders.
        return true;
    }
    let symbol_letter = matches!(c as u32, 0x24B6..=0x24E9 | 0x1F130..=0x1F149 | 0x1F150..=0x1F169 | 0x1F170..=0x1F189);
    // `escape_debug` escapes a lone grapheme extender (a combining mark); letters print as is.
    c.is_alphabetic() && !symbol_letter && c.escape_debug().len() == 1
}

/// Expands the backslash escapes Compose recognises in double-quoted values.
///
/// `\a \b \f \n \r \t \v \" \\` are the usual characters; `\$` becomes `$$` so interpolation
/// keeps a literal `$`; `\0` followed by three octal digits is that byte value as a character.
/// Anything else, including `\c`, short octal forms and values over 255, is left alone except
/// that `\0` loses its `0` (`\012` → `\12`, `\0` → `\`), as in compose-go.
fn expand_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let Some(c) = after.chars().next() else {
            out.push('\\');
            rest = after;
            break;
        };
        let simple = match c {
            'a' => Some("\x07"),
            'b' => Some("\x08"),
            'c' => Some("\\c"),
            'f' => Some("\x0C"),
            'n' => Some("\n"),
            'r' => Some("\r"),
            't' => Some("\t"),
            'v' => Some("\x0B"),
            '$' => Some("$$"),
            '"' => Some("\""),
            '\\' => Some("\\"),
            _ => None,
        };
        if let Some(rep) = simple {
            out.push_str(rep);
            rest = &after[1..];
            continue;
        }
        if c != '0' {
            out.push('\\');
            rest = after;
            continue;
        }
        let digits_len = after[1..].bytes().take(3).take_while(u8::is_ascii_digit).count();
        let digits = &after[1..1 + digits_len];
        rest = &after[1 + digits_len..];
        match octal(digits) {
            Some(ch) => out.push(ch),
            None => {
                out.push('\\');
                out.push_str(digits);
            }
        }
    }
    out.push_str(rest);
    out
}

/// Go's `UnquoteChar` on `\` + `digits`: exactly three octal digits worth at most 255.
fn octal(digits: &str) -> Option<char> {
    if digits.len() != 3 {
        return None;
    }
    let v = u32::from_str_radix(digits, 8).ok()?;
    if v > 255 {
        return None;
    }
    char::from_u32(v)
}

/// Quotes a string the way Go's `%q` does, for error messages.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0C' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0B' => out.push_str("\\v"),
            c if is_printable(c) => out.push(c),
            c if c < ' ' || c == '\x7F' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn is_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    // After another character, `escape_debug` escapes exactly the non-printable characters
    // (controls, format characters, separators, unassigned code points) and `\`, `"`, `'`.
    let mut buf = [0u8; 8];
    buf[0] = b'a';
    let n = 1 + c.encode_utf8(&mut buf[1..]).len();
    let pair = std::str::from_utf8(&buf[..n]).unwrap_or("");
    c == '\'' || pair.escape_debug().eq(pair.chars())
}
