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

#[cfg(test)]
mod tests {
    //! Unless noted otherwise, every expectation here was checked against the reference
    //! `docker-compose` v2.40.3 (compose-go v2.9.1), reading the text as a service `env_file` (and
    //! for many also as the project `.env`, via `config --environment`) with OSV=os, FOO=osfoo,
    //! A=a, B=b and E="" in the OS environment. The module was also compared with it on ~3,000
    //! generated files.
    use super::*;

    fn os_env(name: &str) -> Option<String> {
        match name {
            "OSV" => Some("os".into()),
            "FOO" => Some("osfoo".into()),
            "A" => Some("a".into()),
            "B" => Some("b".into()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parsed(src: &str) -> Vec<(String, String)> {
        match parse(src, &os_env) {
            Ok(m) => m.into_iter().collect(),
            Err(e) => panic!("{src:?}: unexpected error {e}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn one(src: &str, key: &str) -> String {
        match parse(src, &no_env) {
            Ok(m) => match m.get(key) {
                Some(v) => v.clone(),
                None => panic!("{src:?}: no {key} in {m:?}"),
            },
            Err(e) => panic!("{src:?}: unexpected error {e}"),
        }
    }

    fn failed(src: &str) -> DotenvError {
        match parse(src, &os_env) {
            Ok(m) => panic!("{src:?}: expected an error, got {m:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn key_value_forms() {
        assert_eq!(parsed("K=1\n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("K = 1 \n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("K=  spaced  value  \n"), pairs(&[("K", "spaced  value")]));
        assert_eq!(parsed("K\t=\tv\n"), pairs(&[("K", "v")]));
        assert_eq!(parsed("K=1"), pairs(&[("K", "1")]));
        assert_eq!(parsed("K=x\r\nL=y\r\n"), pairs(&[("K", "x"), ("L", "y")]));
        // The value may contain `=` and quotes that do not start it.
        assert_eq!(parsed("K=a=b\n"), pairs(&[("K", "a=b")]));
        assert_eq!(parsed("K=a'b\"c\n"), pairs(&[("K", "a'b\"c")]));
        assert_eq!(parsed("K=é\"x\"\n"), pairs(&[("K", "é\"x\"")]));
    }

    #[test]
    fn yaml_style_colon() {
        assert_eq!(parsed("K: 1\n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("K:1\n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("K : 1\n"), pairs(&[("K", "1")]));
        // Whichever of `=` and `:` comes first ends the key.
        assert_eq!(parsed("K:a=b\n"), pairs(&[("K", "a=b")]));
        assert_eq!(parsed("K=a:b\n"), pairs(&[("K", "a:b")]));
    }

    #[test]
    fn export_prefix() {
        assert_eq!(parsed("export K=1\n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("export  K=1"), pairs(&[("K", "1")]));
        assert_eq!(parsed("export\tK=1"), pairs(&[("K", "1")]));
        assert_eq!(parsed("  export   K=1  \n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("export\nK=1\n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("export \n K=1\n"), pairs(&[("K", "1")]));
        // Not a prefix unless followed by a blank: these are keys named export….
        assert_eq!(parsed("export=1\n"), pairs(&[("export", "1")]));
        assert_eq!(parsed("exportK=1\n"), pairs(&[("exportK", "1")]));
        // Go's `\s` has no vertical tab; the \v is skipped inside the key instead.
        assert_eq!(parsed("export\x0BK=1\n"), pairs(&[("export\x0BK", "1")]));
        // `export` plus blanks at the very end.
        assert_eq!(
            failed("export "),
            DotenvError {
                line: 1,
                message: "zero length string".into()
            }
        );
        assert_eq!(
            failed("\texport\t"),
            DotenvError {
                line: 1,
                message: "zero length string".into()
            }
        );
    }

    #[test]
    fn comments() {
        assert_eq!(parsed("#c\nK=1\n  # c2\n"), pairs(&[("K", "1")]));
        assert_eq!(parsed("K=a #c\n"), pairs(&[("K", "a")]));
        assert_eq!(parsed("K=x #\n"), pairs(&[("K", "x")]));
        assert_eq!(parsed("K=x # c\n#L=2\n"), pairs(&[("K", "x")]));
        // Only space-hash starts an inline comment.
        assert_eq!(parsed("K=a#c\n"), pairs(&[("K", "a#c")]));
        assert_eq!(parsed("K=a\t#c\n"), pairs(&[("K", "a\t#c")]));
        // Blanks after `=` are skipped first, so this value starts with `#`.
        assert_eq!(parsed("K= #c\n"), pairs(&[("K", "#c")]));
        assert_eq!(parsed("K=#c\n"), pairs(&[("K", "#c")]));
        // After a closing quote the rest of the line is skipped when it is a comment.
        assert_eq!(parsed("K=\"q\" # comment\nL=2"), pairs(&[("K", "q"), ("L", "2")]));
        assert_eq!(parsed("K=\"a\"#b\n"), pairs(&[("K", "a")]));
        assert_eq!(parsed("\n\n  \t\nK='a'  # c \n"), pairs(&[("K", "a")]));
    }

    #[test]
    fn empty_values() {
        assert_eq!(parsed("K=\n"), pairs(&[("K", "")]));
        assert_eq!(parsed("K=''\n"), pairs(&[("K", "")]));
        assert_eq!(parsed("K=\"\"\n"), pairs(&[("K", "")]));
        assert_eq!(parsed("K="), pairs(&[("K", "")]));
        assert_eq!(parsed("K=\nL=x\n"), pairs(&[("K", ""), ("L", "x")]));
        assert_eq!(parsed(""), pairs(&[]));
        assert_eq!(parsed("\n \n# only comments\n"), pairs(&[]));
    }

    #[test]
    fn bare_keys_inherit() {
        assert_eq!(parsed("FOO\n"), pairs(&[("FOO", "osfoo")]));
        assert_eq!(parsed("OSV\nX=1"), pairs(&[("OSV", "os"), ("X", "1")]));
        assert_eq!(parsed("NOPE\nX=1"), pairs(&[("X", "1")]));
        assert_eq!(parsed("K\n"), pairs(&[]));
        // An earlier value in the file is kept when the environment has none.
        assert_eq!(one("K=1\nK\n", "K"), "1");
    }

    #[test]
    fn bare_last_line_without_newline_sets_the_empty_key() {
        assert_eq!(parsed("FOO"), pairs(&[("", "FOO")]));
        assert_eq!(parsed("OSV"), pairs(&[("", "OSV")]));
        assert_eq!(parsed("export"), pairs(&[("", "export")]));
        assert_eq!(parsed("FOO BAR"), pairs(&[("", "FOO BAR")]));
        assert_eq!(parsed("=x\n"), pairs(&[("", "x")]));
        assert_eq!(parsed(" =x\n"), pairs(&[("", "x")]));
        assert_eq!(parsed(":x\n"), pairs(&[("", "x")]));
    }

    #[test]
    fn key_characters() {
        assert_eq!(parsed("1A=x\n"), pairs(&[("1A", "x")]));
        assert_eq!(parsed("A.B-C[0]=x\n"), pairs(&[("A.B-C[0]", "x")]));
        assert_eq!(parsed("É=x\n"), pairs(&[("É", "x")]));
        assert_eq!(parsed("٣=x\n"), pairs(&[("٣", "x")]));
        assert_eq!(parsed("Ⅻ=x\n"), pairs(&[("Ⅻ", "x")]));
        // Blanks other than a plain space stay inside the key (trailing ones are trimmed).
        assert_eq!(parsed("A\tB=x\n"), pairs(&[("A\tB", "x")]));
        assert_eq!(parsed("A\u{A0}B=x\n"), pairs(&[("A\u{A0}B", "x")]));
        assert_eq!(parsed("A\u{85}=1\n"), pairs(&[("A", "1")]));
    }

    #[test]
    fn bad_keys() {
        let e = failed("A$=x\n");
        assert_eq!(
            e,
            DotenvError {
                line: 1,
                message: "unexpected character \"$\" in variable name \"A$=x\"".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "line 1: unexpected character \"$\" in variable name \"A$=x\""
        );
        assert_eq!(
            failed("A/B=x\n").message,
            "unexpected character \"/\" in variable name \"A/B=x\""
        );
        assert_eq!(
            failed("A B=x\n"),
            DotenvError {
                line: 1,
                message: "key cannot contain a space".into()
            }
        );
        assert_eq!(failed("K=1\n\n\nB C=2\n").line, 4);
        assert_eq!(failed("K=1\n\n# x\nB$=2\n").line, 4);
        assert_eq!(failed("K='x\ny'\nB$=1\n").line, 3);
        // A comment after a bare key is not a comment.
        assert_eq!(
            failed("FOO #x\n").message,
            "unexpected character \"#\" in variable name \"FOO #x\""
        );
        // Go's %q quoting of the offending character and line.
        assert_eq!(
            failed("A\u{3000}=x\n").message,
            "unexpected character \"\\u3000\" in variable name \"A\\u3000=x\""
        );
        assert_eq!(
            failed("a\u{301}=x\n").message,
            "unexpected character \"\u{301}\" in variable name \"a\u{301}=x\""
        );
        assert_eq!(
            failed("Ⓐ=x\n").message,
            "unexpected character \"Ⓐ\" in variable name \"Ⓐ=x\""
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_another_statement() {
        assert_eq!(parsed("K=\"q\" L=2\n"), pairs(&[("K", "q"), ("L", "2")]));
        assert_eq!(parsed("K='q'L=2\n"), pairs(&[("K", "q"), ("L", "2")]));
        // …here a bare key inherited from the environment (absent, so nothing).
        assert_eq!(parsed("K=\"q\"trail\n"), pairs(&[("K", "q")]));
        assert_eq!(
            failed("K=\"x\" junk$\n").message,
            "unexpected character \"$\" in variable name \"junk$\""
        );
        assert_eq!(
            failed("K=\"a\"\"b\"\n").message,
            "unexpected character \"\\\"\" in variable name \"\\\"b\\\"\""
        );
        assert_eq!(
            failed("K='x' junk #c\n").message,
            "unexpected character \"#\" in variable name \"junk #c\""
        );
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(parsed("K='x\\ny $OSV \\' z'\n"), pairs(&[("K", "x\\ny $OSV ' z")]));
        assert_eq!(parsed("K='${OSV}'\n"), pairs(&[("K", "${OSV}")]));
        assert_eq!(parsed("K='\\\\'\n"), pairs(&[("K", "\\\\")]));
        assert_eq!(parsed("K='\\\"'\n"), pairs(&[("K", "\\\"")]));
        assert_eq!(parsed("K= 'q'\n"), pairs(&[("K", "q")]));
        assert_eq!(
            parsed("K='multi\nline'\nL=2\n"),
            pairs(&[("K", "multi\nline"), ("L", "2")])
        );
    }

    #[test]
    fn double_quotes_escape_and_expand() {
        assert_eq!(
            parsed("K=\"x\\ny\\t$OSV \\\" \\\\ \\$OSV $$OSV\"\n"),
            pairs(&[("K", "x\ny\tos \" \\ $OSV $OSV")])
        );
        assert_eq!(parsed("K=\"${OSV}\"\n"), pairs(&[("K", "os")]));
        assert_eq!(
            parsed("K=\"multi\nline\"\nL=2\n"),
            pairs(&[("K", "multi\nline"), ("L", "2")])
        );
        assert_eq!(parsed("K=\"é\\té\"\n"), pairs(&[("K", "é\té")]));
        assert_eq!(parsed("K=\"\\\\$OSV\"\n"), pairs(&[("K", "\\os")]));
        assert_eq!(parsed("K=\"\\'\"\n"), pairs(&[("K", "\\'")]));
        // A backslash before a newline stays.
        assert_eq!(parsed("K=\"x\\\ny\"\n"), pairs(&[("K", "x\\\ny")]));
        // Go's other escapes (\x, \u) are not supported.
        assert_eq!(parsed("K=\"\\x41\\u0041\"\n"), pairs(&[("K", "\\x41\\u0041")]));
    }

    #[test]
    fn octal_and_odd_escapes() {
        assert_eq!(
            parsed("K=\"\\a\\b\\c\\f\\v\\0101\\0\\01\\012\\0777\"\n"),
            pairs(&[("K", "\x07\x08\\c\x0C\x0BA\\\\1\\12\\777")])
        );
        assert_eq!(one("K=\"\\101\"\n", "K"), "\\101");
        assert_eq!(one("K=\"\\0\"\n", "K"), "\\");
        assert_eq!(one("K=\"\\00\"\n", "K"), "\\0");
        assert_eq!(one("K=\"\\000\"\n", "K"), "\\00");
        assert_eq!(one("K=\"\\0089\"\n", "K"), "\\089");
        assert_eq!(one("K=\"\\0400\"\n", "K"), "\\400");
        assert_eq!(one("K=\"\\0377\"\n", "K"), "\u{FF}");
        // NUL, and a digit after the three octal digits.
        assert_eq!(one("K=\"\\0000\"\n", "K"), "\0");
        assert_eq!(one("K=\"\\01014\"\n", "K"), "A4");
        // An octal `$` is interpolated afterwards.
        assert_eq!(parsed("K=\"\\0044OSV\"\n"), pairs(&[("K", "os")]));
    }

    #[test]
    fn unquoted_values_have_no_escapes() {
        assert_eq!(parsed("K=\\$OSV\n"), pairs(&[("K", "\\os")]));
        assert_eq!(parsed("K=$$OSV\n"), pairs(&[("K", "$OSV")]));
        assert_eq!(parsed("K=x\\\nL=y\n"), pairs(&[("K", "x\\"), ("L", "y")]));
    }

    #[test]
    fn whitespace_trimming() {
        // Leading: only compose-go's blanks; trailing: all Unicode whitespace.
        assert_eq!(parsed("K=x\u{3000}\n"), pairs(&[("K", "x")]));
        assert_eq!(parsed("K=\u{3000}x\n"), pairs(&[("K", "\u{3000}x")]));
        assert_eq!(parsed("K=x\u{85}\n"), pairs(&[("K", "x")]));
    }

    #[test]
    fn unterminated_quotes_report_the_last_line() {
        assert_eq!(
            failed("K=\"unterminated\nB=1\n"),
            DotenvError {
                line: 3,
                message: "unterminated quoted value \"unterminated".into()
            }
        );
        assert_eq!(
            failed("K='un\nB=1\nC=2\n"),
            DotenvError {
                line: 4,
                message: "unterminated quoted value 'un".into()
            }
        );
        assert_eq!(
            failed("K=\"x\"\n\nB='\n"),
            DotenvError {
                line: 4,
                message: "unterminated quoted value '".into()
            }
        );
        assert_eq!(failed("K=\"$OSV\n").line, 2);
    }

    #[test]
    fn expansion_uses_lookup_before_earlier_keys() {
        // Compose resolves from the OS environment first: FOO is osfoo here, not file.
        assert_eq!(
            parsed("FOO=file\nBAR=$FOO\n"),
            pairs(&[("FOO", "file"), ("BAR", "osfoo")])
        );
        assert_eq!(
            parsed("K1=v1\nK2=${K1}\nK3=\"${K2}-x\"\n"),
            pairs(&[("K1", "v1"), ("K2", "v1"), ("K3", "v1-x")])
        );
        // Only keys defined *earlier* are seen, with their value at that point.
        assert_eq!(
            parsed("K=v1\nL=${K:-d}\nK=v2\nM=$K\n"),
            pairs(&[("K", "v2"), ("L", "v1"), ("M", "v2")])
        );
        assert_eq!(one("L=$K\nK=1\n", "L"), "");
        assert_eq!(parsed("K=${OSV:-d} ${NONE:-d2}\n"), pairs(&[("K", "os d2")]));
        assert_eq!(parsed("K=\"${NONE:-$OSV}\"\n"), pairs(&[("K", "os")]));
    }

    #[test]
    fn interpolation_errors() {
        let e = failed("K=${NONE:?must}\n");
        assert_eq!(e.message, "required variable NONE is missing a value: must");
        assert_eq!(
            failed("K=${NONE:?}\n").message,
            "required variable NONE is missing a value"
        );
        // Compose prints `Invalid template: "${"`; the line is the statement's first line.
        let e = failed("A=1\nK=\"x\n${\"\n");
        assert_eq!(e.line, 2);
        assert!(
            e.message.starts_with("invalid interpolation format for \"x\\n${\""),
            "{e}"
        );
    }

    #[test]
    fn duplicates_overwrite_in_place() {
        assert_eq!(parsed("K=1\nK=2\n"), pairs(&[("K", "2")]));
        // Not a Compose behaviour (its map is unordered): first position is kept.
        assert_eq!(parsed("B=1\nA=2\nB=3\n"), pairs(&[("B", "3"), ("A", "2")]));
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert_eq!(parsed("\u{FEFF}K=1\n"), pairs(&[("K", "1")]));
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        let alphabet: Vec<char> = "AK=: \t\n#'\"\\$${}0xé\rexport日\u{85}".chars().collect();
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = (seed >> 58) as usize;
            let mut s = String::new();
            let mut x = seed;
            for _ in 0..len {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            let _ = parse(&s, &os_env);
        }
    }
}
