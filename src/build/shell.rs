//! Dockerfile word expansion, as the Dockerfile frontend's shell lexer does it for the arguments of `ENV`,
//! `LABEL`, `WORKDIR`, `USER`, `COPY`, `EXPOSE` and the other instructions that are not run by a shell.
//!
//! # Words
//!
//! [`expand`] reads one word: variables are substituted, quotes are removed and escapes applied.
//!
//! - `'single quotes'` keep everything literal, up to the next `'`.
//! - `"double quotes"` keep everything literal but `$` expansions and the escape character, which there only
//!   escapes `"`, `$` and itself (before any other character it stays as written).
//! - Outside quotes the escape character (`\`, or `` ` `` under `# escape=` `` ` ``) makes the next character
//!   literal and is removed; at the very end of the word it is dropped.
//! - `$NAME` and `${NAME}` substitute a variable, empty when it is unset. A name is a letter or `_` followed by
//!   letters, digits and `_`; as in BuildKit a run of digits (`$1`) and the special parameters `@ * # ? - $ ! 0`
//!   are names too (normally unset, so they expand to nothing). A `$` followed by anything else is kept.
//!
//! [`expand_words`] also splits the result into fields on whitespace that is neither quoted, escaped nor inside
//! a double-quoted expansion; whitespace produced by an unquoted expansion does split. Empty fields are dropped.
//!
//! # Braced forms
//!
//! | form | result |
//! |---|---|
//! | `${NAME:-word}` / `${NAME-word}` | `word` when NAME is unset or empty / unset, else the value |
//! | `${NAME:+word}` / `${NAME+word}` | `word` when NAME is set and not empty / set, else nothing |
//! | `${NAME:?message}` / `${NAME?message}` | an error `NAME: message` when unset or empty / unset |
//! | `${NAME#pattern}` / `${NAME##pattern}` | the value without its shortest / longest prefix matching |
//! | `${NAME%pattern}` / `${NAME%%pattern}` | the value without its shortest / longest suffix matching |
//! | `${NAME/pattern/replacement}` | the first (leftmost, longest) match replaced |
//! | `${NAME//pattern/replacement}` | every match replaced |
//!
//! `word`, `message`, `pattern` and `replacement` are words themselves: they may hold quotes, escapes and
//! further expansions. In a pattern `*` matches any run of characters (`/` included) and `?` any one
//! character; quoted or escaped characters match themselves, while the value of an unquoted expansion is used
//! as pattern text (so a `\*` in a variable matches a `*`). Bracket expressions are not supported, as in
//! BuildKit. As in BuildKit, escapes in a replacement are kept as written.
//!
//! # Instruction arguments
//!
//! [`key_values`] and [`arg_pairs`] split the arguments of `ENV`/`LABEL` and `ARG` into names and raw values
//! before any expansion, keeping quotes and escapes for the caller to expand.

/// How deeply `${...}` forms may nest before a word is refused.
const MAX_DEPTH: usize = 64;

/// An error in a word: a message such as "missing '}' in ${FOO" or "FOO: must be set" (the `:?` form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

/// Builds a [`ShellError`] from a message.
fn error(message: impl Into<String>) -> ShellError {
    ShellError(message.into())
}

/// Expands one word the way the Dockerfile frontend does for ENV/LABEL/WORKDIR/USER/COPY/... arguments:
/// variables are substituted, quotes are removed ('single' keeps everything literal, "double" allows $ and
/// escape of $ " and the escape char), the escape char (`\` by default, or '`' with `# escape=`` `) escapes the
/// next char. `lookup` returns a variable's value (None = unset).
pub fn expand(word: &str, escape: char, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ShellError> {
    let mut lexer = Lexer::new(word, escape, lookup);
    Ok(lexer.read_until(None, Mode::Plain)?.text)
}

/// Like [`expand`], but splits the result into words on unquoted whitespace (used for e.g. `EXPOSE 80 $PORTS`,
/// and where the Dockerfile frontend uses ProcessWords). Quoted whitespace and whitespace inside an expanded
/// variable in double quotes stay in one word; whitespace produced by an unquoted expansion splits words.
/// Empty words (such as `""`) are dropped.
pub fn expand_words(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ShellError> {
    let mut lexer = Lexer::new(text, escape, lookup);
    Ok(lexer.read_until(None, Mode::Plain)?.words)
}

/// Splits the arguments of ENV or LABEL into (key, value) pairs, BEFORE expansion (the caller expands each
/// value with [`expand`], and each key too). Two forms:
///  - `KEY=value KEY2="quoted value" KEY3=a\ b` : pairs separated by unquoted whitespace; the value keeps its
///    quotes/escapes (raw). A word is split at its first `=`.
///  - legacy `KEY value with spaces` when the first word has no `=` : one pair, the value is the rest of the
///    text (surrounding whitespace trimmed), raw.
///
/// Errors: no arguments at all, a legacy key without a value, `=value` with no key, a word without `=` after
/// the first pair.
pub fn key_values(text: &str, escape: char) -> Result<Vec<(String, String)>, ShellError> {
    let text = text.trim();
    let words = split_raw_words(text, escape);
    let Some(first) = words.first() else {
        return Err(error("expected at least one argument of the form name=value"));
    };
    if !first.contains('=') {
        // The legacy form: the first word is the key, everything after the whitespace following it the value.
        let Some(at) = text.find(char::is_whitespace) else {
            return Err(error(format!(
                "missing value for {text:?}: must be of the form: name value, or name=value"
            )));
        };
        let (key, value) = text.split_at(at);
        return Ok(vec![(key.to_string(), value.trim_start().to_string())]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(error(format!(
                "syntax error - can't find = in {word:?}. must be of the form: name=value"
            )));
        };
        if key.is_empty() {
            return Err(error(format!("names can not be blank (in {word:?})")));
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Splits ARG's arguments: `NAME` or `NAME=default` (BuildKit allows several, space separated). The default is
/// raw (caller expands it), split off at the first `=`. Returns (name, Option<default>).
///
/// Errors: no arguments at all, or a blank name (`=value`).
pub fn arg_pairs(text: &str, escape: char) -> Result<Vec<(String, Option<String>)>, ShellError> {
    let words = split_raw_words(text.trim(), escape);
    if words.is_empty() {
        return Err(error("arg requires at least one argument"));
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let (name, default) = match word.split_once('=') {
            Some((name, default)) => (name.to_string(), Some(default.to_string())),
            None => (word, None),
        };
        if name.is_empty() {
            return Err(error("arg names can not be blank"));
        }
        pairs.push((name, default));
    }
    Ok(pairs)
}

/// Splits instruction arguments into words on whitespace outside quotes, keeping every quote and escape as
/// written. An escape character at the very end of the text is dropped; an unterminated quote simply runs to
/// the end (expanding the word reports it).
fn split_raw_words(text: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether the current word held a quote, so that an empty word (`""`) still counts.
    let mut quoted = false;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match quote {
            None => {
                if c.is_whitespace() {
                    if in_word && (quoted || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    in_word = false;
                    quoted = false;
                    continue;
                }
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    quoted = true;
                    word.push(c);
                } else if c == escape {
                    // The escape and the character it escapes are kept together, even a quote or a space.
                    if let Some(&next) = chars.get(i) {
                        word.push(c);
                        word.push(next);
                        i += 1;
                    }
                } else {
                    word.push(c);
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                    word.push(c);
                } else if c == escape && q != '\'' {
                    match chars.get(i) {
                        Some(&next) => {
                            word.push(c);
                            word.push(next);
                            i += 1;
                        }
                        None => quote = None,
                    }
                } else {
                    word.push(c);
                }
            }
        }
    }
    if in_word && (quoted || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// How the escape character met outside quotes is treated while reading a word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The escape is removed and the next character taken literally.
    Plain,
    /// The word is a pattern: an escaped character is written `\c` and quoted text has its pattern
    /// characters escaped, so that both match literally.
    Pattern,
    /// The replacement of `${NAME/pattern/replacement}`: escapes are kept as written, as in BuildKit.
    Raw,
}

/// What reading a word produced: its whole text, and the text split into fields.
struct Scanned {
    /// The expanded text, whitespace included.
    text: String,
    /// The expanded text split on unquoted whitespace.
    words: Vec<String>,
}

/// Collects the fields of a word while it is read.
#[derive(Default)]
struct Fields {
    /// Fields already complete.
    done: Vec<String>,
    /// The field being built.
    current: String,
}

impl Fields {
    /// Adds a character that splits fields when it is whitespace.
    fn push_splitting(&mut self, c: char) {
        if c.is_whitespace() {
            self.end_field();
        } else {
            self.current.push(c);
        }
    }

    /// Adds text whose whitespace splits fields.
    fn push_str_splitting(&mut self, text: &str) {
        text.chars().for_each(|c| self.push_splitting(c));
    }

    /// Adds a character that never splits fields (quoted or escaped).
    fn push_literal(&mut self, c: char) {
        self.current.push(c);
    }

    /// Ends the current field, unless it is empty.
    fn end_field(&mut self) {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    /// The fields, the last one included.
    fn finish(mut self) -> Vec<String> {
        self.end_field();
        self.done
    }
}

/// A cursor over the characters of one word.
struct Lexer<'a> {
    /// The word's characters.
    chars: Vec<char>,
    /// The index of the next character to read.
    pos: usize,
    /// The escape character.
    escape: char,
    /// Variable values.
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// How many `${` forms enclose the current position.
    depth: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `word`.
    fn new(word: &str, escape: char, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            lookup,
            depth: 0,
        }
    }

    /// The next character, not consumed.
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Consumes and returns the next character.
    fn next_char(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Whether the whole word has been read.
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Reads up to the unquoted, unescaped `stop` character (consumed), or to the end of the word when `stop`
    /// is `None`; with a `stop`, reaching the end first is an error.
    fn read_until(&mut self, stop: Option<char>, mode: Mode) -> Result<Scanned, ShellError> {
        let mut text = String::new();
        let mut fields = Fields::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok(Scanned {
                    text,
                    words: fields.finish(),
                });
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    text.push_str(&value);
                    fields.push_str_splitting(&value);
                }
                '\'' | '"' => {
                    let value = if c == '\'' {
                        self.single_quoted()?
                    } else {
                        self.double_quoted()?
                    };
                    let value = if mode == Mode::Pattern {
                        escape_pattern(&value)
                    } else {
                        value
                    };
                    text.push_str(&value);
                    // Quoted text stays in one field, even when it is empty or all whitespace.
                    value.chars().for_each(|c| fields.push_literal(c));
                }
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        let Some(next) = self.next_char() else {
                            // An escape at the end of the word is dropped.
                            break;
                        };
                        match mode {
                            Mode::Plain => {}
                            Mode::Pattern => text.push('\\'),
                            Mode::Raw => text.push(c),
                        }
                        text.push(next);
                        fields.push_literal(next);
                    } else {
                        if mode == Mode::Pattern && c == '\\' {
                            // A backslash that is not the escape character is literal, so it is escaped
                            // for the pattern.
                            text.push('\\');
                        }
                        text.push(c);
                        fields.push_splitting(c);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(error(format!(
                "unexpected end of statement while looking for matching {stop}"
            ))),
            None => Ok(Scanned {
                text,
                words: fields.finish(),
            }),
        }
    }

    /// Reads a single-quoted string, the opening quote next; returns its content.
    fn single_quoted(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        let mut content = String::new();
        loop {
            match self.next_char() {
                None => {
                    return Err(error(
                        "unexpected end of statement while looking for matching single-quote",
                    ));
                }
                Some('\'') => return Ok(content),
                Some(c) => content.push(c),
            }
        }
    }

    /// Reads a double-quoted string, the opening quote next; returns its content, expanded.
    fn double_quoted(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        let mut content = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(error(
                        "unexpected end of statement while looking for matching double-quote",
                    ));
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(content);
                }
                Some('$') => content.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            // The end of the word: the missing quote is reported next round.
                            None => {}
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                content.push(next);
                            }
                            Some(_) => content.push(c),
                        }
                    } else {
                        content.push(c);
                    }
                }
            }
        }
    }

    /// The value of a variable.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Reads a variable name: a run of digits, one special parameter, or a letter or `_` followed by letters,
    /// digits and `_`. Empty when none of these follows.
    fn read_name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_numeric() => {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                self.pos += 1;
                name.push(c);
                return name;
            }
            _ => {}
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// Expands the `$` form that starts at the next character.
    fn dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.read_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(error("missing '}' in ${")),
            Some(c @ ('{' | '}' | ':')) => return Err(error(format!("bad substitution: ${{{c}"))),
            Some(_) => {}
        }
        if self.depth >= MAX_DEPTH {
            return Err(error("bad substitution: ${...} nested too deeply"));
        }
        self.depth += 1;
        let result = self.braced();
        self.depth -= 1;
        result
    }

    /// Expands a `${` form, the name next.
    fn braced(&mut self) -> Result<String, ShellError> {
        let name = self.read_name();
        let Some(op) = self.next_char() else {
            return Err(missing_brace(&name));
        };
        match op {
            '}' => Ok(self.get(&name).unwrap_or_default()),
            '/' => self.replace(&name),
            ':' => match self.next_char() {
                None => Err(missing_brace(&name)),
                Some(op @ ('-' | '+' | '?' | '#' | '%')) => self.modifier(&name, op, true),
                Some(other) => Err(error(format!(
                    "unsupported modifier (:{other}) in substitution of {name}"
                ))),
            },
            '-' | '+' | '?' | '#' | '%' => self.modifier(&name, op, false),
            other => Err(error(format!(
                "unsupported modifier ({other}) in substitution of {name}"
            ))),
        }
    }

    /// Expands `${NAME<op>word}` (`<op>` is `-`, `+`, `?`, `#` or `%`, after a `:` when `colon`), the word
    /// next.
    fn modifier(&mut self, name: &str, op: char, colon: bool) -> Result<String, ShellError> {
        let mode = if op == '#' || op == '%' {
            Mode::Pattern
        } else {
            Mode::Plain
        };
        let word = match self.read_until(Some('}'), mode) {
            Ok(scanned) => scanned.text,
            Err(_) if self.at_end() => return Err(missing_brace(name)),
            Err(e) => return Err(e),
        };
        let value = self.get(name);
        // Whether the variable counts as unset: the colon forms treat an empty value as unset.
        let unset = match &value {
            None => true,
            Some(v) => colon && v.is_empty(),
        };
        match op {
            '-' => Ok(if unset { word } else { value.unwrap_or_default() }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => match value {
                Some(v) if !unset => Ok(v),
                _ => {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                    Err(error(format!("{name}: {message}")))
                }
            },
            _ => {
                // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                let (longest, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let tokens = parse_pattern(pattern);
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(if op == '#' {
                    trim_prefix(&value, &tokens, longest)
                } else {
                    trim_suffix(&value, &tokens, longest)
                })
            }
        }
    }

    /// Expands `${NAME/pattern/replacement}` or `${NAME//pattern/replacement}`, the character after the first
    /// `/` next.
    fn replace(&mut self, name: &str) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.read_until(Some('/'), Mode::Pattern) {
            Ok(scanned) => scanned.text,
            Err(_) if self.at_end() => return Err(error(format!("missing '/' in ${{{name}/"))),
            Err(e) => return Err(e),
        };
        let replacement = match self.read_until(Some('}'), Mode::Raw) {
            Ok(scanned) => scanned.text,
            Err(_) if self.at_end() => return Err(missing_brace(name)),
            Err(e) => return Err(e),
        };
        let value: Vec<char> = self.get(name).unwrap_or_default().chars().collect();
        Ok(replace_matches(&value, &parse_pattern(&pattern), &replacement, all))
    }
}

/// The error for a `${NAME` never closed.
fn missing_brace(name: &str) -> ShellError {
    error(format!("missing '}}' in ${{{name}"))
}

/// Escapes the pattern characters of literal text, so that it matches itself.
fn escape_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One element of a `${NAME#pattern}` pattern.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Token {
    /// A character matching itself.
    Literal(char),
    /// `?`: any one character.
    One,
    /// `*`: any run of characters, possibly empty.
    Any,
}

/// Parses a pattern: `*`, `?`, and `\` making the next character literal (a trailing `\` is literal).
fn parse_pattern(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            c => Token::Literal(c),
        });
    }
    tokens
}

/// Adds to `states` the pattern positions reachable without reading a character (past `*`).
fn close(tokens: &[Token], states: &mut [bool]) {
    for i in 0..tokens.len() {
        if states[i] && tokens[i] == Token::Any {
            states[i + 1] = true;
        }
    }
}

/// The lengths `k` (ascending) for which the pattern matches `text[..k]` entirely.
fn prefix_match_lengths(tokens: &[Token], text: &[char]) -> Vec<usize> {
    let n = tokens.len();
    let mut states = vec![false; n + 1];
    states[0] = true;
    close(tokens, &mut states);
    let mut lengths = Vec::new();
    if states[n] {
        lengths.push(0);
    }
    let mut next = vec![false; n + 1];
    for (i, &c) in text.iter().enumerate() {
        next.iter_mut().for_each(|s| *s = false);
        for (j, token) in tokens.iter().enumerate() {
            if !states[j] {
                continue;
            }
            match *token {
                Token::Literal(l) if l == c => next[j + 1] = true,
                Token::Literal(_) => {}
                Token::One => next[j + 1] = true,
                Token::Any => next[j] = true,
            }
        }
        close(tokens, &mut next);
        if !next.iter().any(|&s| s) {
            break;
        }
        if next[n] {
            lengths.push(i + 1);
        }
        std::mem::swap(&mut states, &mut next);
    }
    lengths
}

/// `${NAME#pattern}` (`longest`: `##`): the value without the shortest or longest prefix matching.
fn trim_prefix(value: &[char], tokens: &[Token], longest: bool) -> String {
    let lengths = prefix_match_lengths(tokens, value);
    let cut = if longest { lengths.last() } else { lengths.first() };
    value[cut.copied().unwrap_or(0)..].iter().collect()
}

/// `${NAME%pattern}` (`longest`: `%%`): the value without the shortest or longest suffix matching.
fn trim_suffix(value: &[char], tokens: &[Token], longest: bool) -> String {
    // A suffix match is a prefix match of the reversed pattern on the reversed value.
    let reversed_tokens: Vec<Token> = tokens.iter().rev().copied().collect();
    let reversed_value: Vec<char> = value.iter().rev().copied().collect();
    let lengths = prefix_match_lengths(&reversed_tokens, &reversed_value);
    let cut = if longest { lengths.last() } else { lengths.first() };
    value[..value.len() - cut.copied().unwrap_or(0)].iter().collect()
}

/// The leftmost match at or after `from`, the longest there: `(start, end)`.
fn find_match(tokens: &[Token], value: &[char], from: usize) -> Option<(usize, usize)> {
    (from..=value.len()).find_map(|start| {
        prefix_match_lengths(tokens, &value[start..])
            .last()
            .map(|&length| (start, start + length))
    })
}

/// `${NAME/pattern/replacement}` (`all`: `//`). As with Go's regular expressions, an empty match right after
/// a previous match is not replaced.
fn replace_matches(value: &[char], tokens: &[Token], replacement: &str, all: bool) -> String {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while from <= value.len() {
        let Some((start, end)) = find_match(tokens, value, from) else {
            break;
        };
        out.extend(&value[copied..start]);
        if end > copied || start == 0 {
            out.push_str(replacement);
        }
        copied = end;
        if !all {
            break;
        }
        from = if end > start { end } else { start + 1 };
    }
    out.extend(&value[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables of most tests.
    fn vars(name: &str) -> Option<String> {
        let value = match name {
            "FOO" => "/bar",
            "EMPTY" => "",
            "SPACED" => " a  b ",
            "HOME" => "/home/user",
            "FILE" => "archive.tar.gz",
            "PATHS" => "/usr/local/bin:/usr/bin:/bin",
            "X" => "x",
            "STAR" => "\\*/",
            _ => return None,
        };
        Some(value.to_string())
    }

    /// Expands with `\` as the escape character.
    fn ex(word: &str) -> Result<String, ShellError> {
        expand(word, '\\', &vars)
    }

    /// Expands with `\` as the escape character, expecting success.
    fn ok(word: &str) -> String {
        match ex(word) {
            Ok(s) => s,
            Err(e) => panic!("{word:?} failed: {e}"),
        }
    }

    /// Splits with `\` as the escape character.
    fn words(text: &str) -> Result<Vec<String>, ShellError> {
        expand_words(text, '\\', &vars)
    }

    /// Owned strings from literals.
    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn simple_variables() {
        assert_eq!(ok("${FOO}/x"), "/bar/x");
        assert_eq!(ok("$FOO/x"), "/bar/x");
        assert_eq!(ok("a$FOO"), "a/bar");
        assert_eq!(ok("$FOO$FOO"), "/bar/bar");
        assert_eq!(ok("${UNSET}x"), "x");
        assert_eq!(ok("$UNSET"), "");
    }

    #[test]
    fn names_stop_at_non_name_characters() {
        assert_eq!(ok("$FOO-1"), "/bar-1");
        assert_eq!(ok("$FOO.txt"), "/bar.txt");
        assert_eq!(ok("$FOOBAR"), "");
        assert_eq!(ok("$X_y"), "");
    }

    #[test]
    fn lone_dollar_is_literal() {
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("a$ b"), "a$ b");
        assert_eq!(ok("$/x"), "$/x");
        assert_eq!(ok("\"$\""), "$");
        assert_eq!(ok("cost: $."), "cost: $.");
    }

    #[test]
    fn digits_and_special_parameters_are_names() {
        // As in BuildKit: `$1`, `$@` are looked up, and normally unset.
        assert_eq!(ok("a$1b"), "ab");
        assert_eq!(ok("a$12b"), "ab");
        assert_eq!(ok("a$@b"), "ab");
        let lookup = |name: &str| (name == "1").then(|| "one".to_string());
        assert_eq!(expand("$1", '\\', &lookup), Ok("one".to_string()));
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(ok("'$FOO'"), "$FOO");
        assert_eq!(ok("'a\\b'"), "a\\b");
        assert_eq!(ok("'\"'"), "\"");
        assert_eq!(ok("x'${FOO}'y"), "x${FOO}y");
    }

    #[test]
    fn double_quotes_expand() {
        assert_eq!(ok("\"$FOO\""), "/bar");
        assert_eq!(ok("\"a b\""), "a b");
        assert_eq!(ok("\"'$FOO'\""), "'/bar'");
        assert_eq!(ok("\"\""), "");
    }

    #[test]
    fn escapes_in_double_quotes() {
        assert_eq!(ok(r#""\$FOO""#), "$FOO");
        assert_eq!(ok(r#""a\"b""#), "a\"b");
        assert_eq!(ok(r#""a\\b""#), "a\\b");
        // Before any other character the escape stays.
        assert_eq!(ok(r#""a\nb""#), "a\\nb");
        assert_eq!(ok(r#""\'""#), "\\'");
    }

    #[test]
    fn escapes_outside_quotes() {
        assert_eq!(ok("\\$FOO"), "$FOO");
        assert_eq!(ok("\\${FOO}"), "${FOO}");
        assert_eq!(ok("a\\ b"), "a b");
        assert_eq!(ok("a\\nb"), "anb");
        assert_eq!(ok("\\\\"), "\\");
        assert_eq!(ok("\\'x\\'"), "'x'");
        assert_eq!(ok("\\\"x\\\""), "\"x\"");
        // A trailing escape is dropped.
        assert_eq!(ok("abc\\"), "abc");
    }

    #[test]
    fn backtick_escape() {
        let ex = |word: &str| expand(word, '`', &vars);
        assert_eq!(ex("`$FOO"), Ok("$FOO".to_string()));
        assert_eq!(ex("C:\\dir\\$FOO"), Ok("C:\\dir\\/bar".to_string()));
        assert_eq!(ex("\"a`\"b\""), Ok("a\"b".to_string()));
        // A backslash is an ordinary character then, even in double quotes.
        assert_eq!(ex("\"a\\\"b"), Ok("a\\b".to_string()));
        assert_eq!(ex("a` b"), Ok("a b".to_string()));
    }

    #[test]
    fn default_values() {
        assert_eq!(ok("${UNSET:-def}"), "def");
        assert_eq!(ok("${UNSET-def}"), "def");
        assert_eq!(ok("${FOO:-def}"), "/bar");
        assert_eq!(ok("${FOO-def}"), "/bar");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${UNSET:-}"), "");
        assert_eq!(ok("${UNSET:-a b}"), "a b");
    }

    #[test]
    fn alternative_values() {
        assert_eq!(ok("${FOO:+set}"), "set");
        assert_eq!(ok("${FOO+set}"), "set");
        assert_eq!(ok("${UNSET:+set}"), "");
        assert_eq!(ok("${UNSET+set}"), "");
        assert_eq!(ok("${EMPTY:+set}"), "");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("v${X:+-${X}}.tar"), "v-x.tar");
    }

    #[test]
    fn nested_words() {
        assert_eq!(ok("${A:-${B:-x}}"), "x");
        assert_eq!(ok("${A:-${FOO:-x}}"), "/bar");
        assert_eq!(ok("${A:-$FOO/y}"), "/bar/y");
        assert_eq!(ok("${A:-'$FOO'}"), "$FOO");
        assert_eq!(ok("${A:-\"}\"}"), "}");
        assert_eq!(ok("${A:-a\\}b}"), "a}b");
        assert_eq!(ok("\"${A:-x y}\""), "x y");
    }

    #[test]
    fn required_values() {
        assert_eq!(ok("${FOO:?must be set}"), "/bar");
        assert_eq!(ok("${FOO?must be set}"), "/bar");
        assert_eq!(ex("${UNSET:?must be set}"), Err(error("UNSET: must be set")));
        assert_eq!(ex("${UNSET?must be set}"), Err(error("UNSET: must be set")));
        assert_eq!(ex("${EMPTY:?must be set}"), Err(error("EMPTY: must be set")));
        assert_eq!(ok("${EMPTY?must be set}"), "");
        assert_eq!(ex("${UNSET?}"), Err(error("UNSET: is not allowed to be unset")));
        assert_eq!(ex("${UNSET:?}"), Err(error("UNSET: is not allowed to be unset")));
        assert_eq!(ex("${EMPTY:?}"), Err(error("EMPTY: is not allowed to be empty")));
        assert_eq!(ex("${UNSET:?need $X}"), Err(error("UNSET: need x")));
    }

    #[test]
    fn prefix_removal() {
        assert_eq!(ok("${FOO#/}"), "bar");
        assert_eq!(ok("${HOME#*/}"), "home/user");
        assert_eq!(ok("${HOME##*/}"), "user");
        assert_eq!(ok("${FILE#*.}"), "tar.gz");
        assert_eq!(ok("${FILE##*.}"), "gz");
        assert_eq!(ok("${FILE#nomatch}"), "archive.tar.gz");
        assert_eq!(ok("${FILE#}"), "archive.tar.gz");
        assert_eq!(ok("${FILE#*}"), "archive.tar.gz");
        assert_eq!(ok("${FILE##*}"), "");
        assert_eq!(ok("${FILE#?r}"), "chive.tar.gz");
        assert_eq!(ok("${UNSET#x}"), "");
    }

    #[test]
    fn suffix_removal() {
        assert_eq!(ok("${FILE%.*}"), "archive.tar");
        assert_eq!(ok("${FILE%%.*}"), "archive");
        assert_eq!(ok("${HOME%/*}"), "/home");
        assert_eq!(ok("${PATHS%%:*}"), "/usr/local/bin");
        assert_eq!(ok("${FILE%}"), "archive.tar.gz");
        assert_eq!(ok("${FILE%.g?}"), "archive.tar");
    }

    #[test]
    fn pattern_escapes_and_quotes() {
        let lookup = |name: &str| match name {
            "V" => Some("a***yy*".to_string()),
            "Q" => Some("???y".to_string()),
            "W" => Some("x*y".to_string()),
            _ => None,
        };
        let ex = |word: &str| expand(word, '\\', &lookup);
        assert_eq!(ex("${V%%\\**\\*}"), Ok("a".to_string()));
        assert_eq!(ex("${Q#?\\?}"), Ok("?y".to_string()));
        assert_eq!(ex("${W#x\"*\"}"), Ok("y".to_string()));
        assert_eq!(ex("${W#x'*'}"), Ok("y".to_string()));
        assert_eq!(ex("${W#\\x}"), Ok("*y".to_string()));
        // With a backtick escape a backslash in a pattern is literal.
        let lookup = |name: &str| (name == "P").then(|| "C:\\x".to_string());
        assert_eq!(expand("${P#C:\\}", '`', &lookup), Ok("x".to_string()));
        assert_eq!(expand("${P#C:`\\}", '`', &lookup), Ok("x".to_string()));
    }

    #[test]
    fn pattern_from_variable_is_a_pattern() {
        let lookup = |name: &str| match name {
            "FOO" => Some("xxyy".to_string()),
            "BAR" => Some("x".to_string()),
            "ANY" => Some("*".to_string()),
            _ => None,
        };
        let ex = |word: &str| expand(word, '\\', &lookup);
        assert_eq!(ex("${FOO#$BAR}"), Ok("xyy".to_string()));
        assert_eq!(ex("${FOO##$ANY}"), Ok(String::new()));
        assert_eq!(ex("${FOO##\"$ANY\"}"), Ok("xxyy".to_string()));
    }

    #[test]
    fn replacement() {
        let lookup = |name: &str| match name {
            "P" => Some("/tmp/tmp/bar.txt".to_string()),
            "U" => Some("http://example.com".to_string()),
            "G" => Some("/foo*/*/*.txt".to_string()),
            "S" => Some("\\*/".to_string()),
            "E" => Some(String::new()),
            "A" => Some("/a/foo/b/c.txt".to_string()),
            "R" => Some("/".to_string()),
            _ => None,
        };
        let ex = |word: &str| expand(word, '\\', &lookup);
        assert_eq!(ex("${P/\\/tmp/}"), Ok("/tmp/bar.txt".to_string()));
        assert_eq!(ex("${P//\\/tmp/}"), Ok("/bar.txt".to_string()));
        assert_eq!(ex("${U/http:\\/\\//https://}"), Ok("https://example.com".to_string()));
        assert_eq!(
            ex("${G/$S/.} - ${G//$S/.}"),
            Ok("/foo.*/*.txt - /foo..*.txt".to_string())
        );
        assert_eq!(ex("${A/\\/?\\//$R}"), Ok("/foo/b/c.txt".to_string()));
        // As in BuildKit, escapes in the replacement are kept.
        assert_eq!(ex("${P//\\//\\/}"), Ok("\\/tmp\\/tmp\\/bar.txt".to_string()));
        assert_eq!(ex("${P/$E/ww}"), Ok("ww/tmp/tmp/bar.txt".to_string()));
        assert_eq!(ex("${P///}"), Ok("/tmp/tmp/bar.txt".to_string()));
        assert_eq!(ex("${UNSET///}"), Ok(String::new()));
        assert_eq!(ex("${P/t*p/X}"), Ok("/X/bar.txt".to_string()));
        assert_eq!(ex("${P//[/X}"), Ok("/tmp/tmp/bar.txt".to_string()));
        assert_eq!(ex("${P//ww}"), Err(error("missing '/' in ${P/")));
        assert_eq!(ex("${P//}"), Err(error("missing '/' in ${P/")));
    }

    #[test]
    fn replace_all_with_empty_matches() {
        let lookup = |name: &str| (name == "V").then(|| "abc".to_string());
        let ex = |word: &str| expand(word, '\\', &lookup);
        assert_eq!(ex("${V//*/x}"), Ok("x".to_string()));
        assert_eq!(ex("${V//b*/x}"), Ok("ax".to_string()));
        assert_eq!(ex("${V//?/x}"), Ok("xxx".to_string()));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(ex("${FOO"), Err(error("missing '}' in ${FOO")));
        assert_eq!(ex("${FOO:-abc"), Err(error("missing '}' in ${FOO")));
        assert_eq!(ex("${FOO:-\"abc}"), Err(error("missing '}' in ${FOO")));
        assert_eq!(ex("${"), Err(error("missing '}' in ${")));
        assert_eq!(ex("${}"), Err(error("bad substitution: ${}")));
        assert_eq!(ex("${:-x}"), Err(error("bad substitution: ${:")));
        assert_eq!(ex("${{FOO}}"), Err(error("bad substitution: ${{")));
        assert!(ex("${FOO=x}").is_err());
        assert!(ex("${FOO:x}").is_err());
        assert!(ex("${FOO:}").is_err());
        assert!(ex("${FOO bar}").is_err());
        assert_eq!(
            ex("'abc"),
            Err(error(
                "unexpected end of statement while looking for matching single-quote"
            ))
        );
        assert_eq!(
            ex("\"abc"),
            Err(error(
                "unexpected end of statement while looking for matching double-quote"
            ))
        );
        assert_eq!(
            ex("\"abc\\"),
            Err(error(
                "unexpected end of statement while looking for matching double-quote"
            ))
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = "${A:-".repeat(10_000) + &"}".repeat(10_000);
        assert!(ex(&deep).is_err());
        let fine = "${A:-".repeat(20) + "x" + &"}".repeat(20);
        assert_eq!(ok(&fine), "x");
    }

    #[test]
    fn unicode_is_kept() {
        assert_eq!(ok("héllo-$FOO-ü"), "héllo-/bar-ü");
        let lookup = |name: &str| (name == "K").then(|| "한국어".to_string());
        assert_eq!(expand("${K#한}", '\\', &lookup), Ok("국어".to_string()));
        assert_eq!(expand("${K%?}", '\\', &lookup), Ok("한국".to_string()));
    }

    #[test]
    fn expand_keeps_whitespace() {
        assert_eq!(ok("a  b"), "a  b");
        assert_eq!(ok("$SPACED"), " a  b ");
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        assert_eq!(words("80 $UNSET 443/tcp"), Ok(strings(&["80", "443/tcp"])));
        assert_eq!(words("  a   b  "), Ok(strings(&["a", "b"])));
        assert_eq!(words("'a b' \"c d\" e\\ f"), Ok(strings(&["a b", "c d", "e f"])));
        assert_eq!(words("x$SPACED"), Ok(strings(&["x", "a", "b"])));
        assert_eq!(words("\"$SPACED\""), Ok(strings(&[" a  b "])));
        assert_eq!(words("x\"$SPACED\"y"), Ok(strings(&["x a  b y"])));
        assert_eq!(words("${UNSET:-p q}"), Ok(strings(&["p", "q"])));
        assert_eq!(words("a\"\"b"), Ok(strings(&["ab"])));
        assert_eq!(words(""), Ok(Vec::new()));
        assert_eq!(words("\"\""), Ok(Vec::new()));
        assert!(words("'x").is_err());
    }

    #[test]
    fn key_values_pairs() {
        let pairs = key_values(r#"a=b c="d e" f=g\ h"#, '\\');
        let expected = vec![
            ("a".to_string(), "b".to_string()),
            ("c".to_string(), "\"d e\"".to_string()),
            ("f".to_string(), "g\\ h".to_string()),
        ];
        assert_eq!(pairs, Ok(expected));
        let value = match key_values(r#"c="d e""#, '\\') {
            Ok(pairs) => pairs[0].1.clone(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(expand(&value, '\\', &vars), Ok("d e".to_string()));
        assert_eq!(
            key_values("  x='a b'   y=\"it's\" z= ", '\\'),
            Ok(vec![
                ("x".to_string(), "'a b'".to_string()),
                ("y".to_string(), "\"it's\"".to_string()),
                ("z".to_string(), String::new()),
            ])
        );
        assert_eq!(
            key_values("a=b=c", '\\'),
            Ok(vec![("a".to_string(), "b=c".to_string())])
        );
        assert_eq!(
            key_values("a=x`  b=y", '`'),
            Ok(vec![
                ("a".to_string(), "x` ".to_string()),
                ("b".to_string(), "y".to_string())
            ])
        );
    }

    #[test]
    fn key_values_legacy_form() {
        assert_eq!(
            key_values("KEY some value  here ", '\\'),
            Ok(vec![("KEY".to_string(), "some value  here".to_string())])
        );
        assert_eq!(
            key_values("KEY\t\"quoted  value\"", '\\'),
            Ok(vec![("KEY".to_string(), "\"quoted  value\"".to_string())])
        );
        assert_eq!(
            key_values("KEY a=b", '\\'),
            Ok(vec![("KEY".to_string(), "a=b".to_string())])
        );
        assert!(key_values("KEY", '\\').is_err());
    }

    #[test]
    fn key_values_errors() {
        assert!(key_values("", '\\').is_err());
        assert!(key_values("   ", '\\').is_err());
        assert_eq!(
            key_values("=value", '\\'),
            Err(error("names can not be blank (in \"=value\")"))
        );
        assert_eq!(
            key_values("a=b word", '\\'),
            Err(error(
                "syntax error - can't find = in \"word\". must be of the form: name=value"
            ))
        );
    }

    #[test]
    fn arg_pairs_forms() {
        assert_eq!(
            arg_pairs(r#"A B=1 C="x y""#, '\\'),
            Ok(vec![
                ("A".to_string(), None),
                ("B".to_string(), Some("1".to_string())),
                ("C".to_string(), Some("\"x y\"".to_string())),
            ])
        );
        assert_eq!(arg_pairs("V=", '\\'), Ok(vec![("V".to_string(), Some(String::new()))]));
        assert_eq!(
            arg_pairs("V=${X:-a b}", '\\'),
            Ok(vec![
                ("V".to_string(), Some("${X:-a".to_string())),
                ("b}".to_string(), None)
            ])
        );
        assert!(arg_pairs("=1", '\\').is_err());
        assert!(arg_pairs("", '\\').is_err());
    }

    /// A small deterministic generator of strings over `alphabet`.
    fn random_strings(alphabet: &[char], count: usize, max_len: u64) -> Vec<String> {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        (0..count)
            .map(|_| {
                let len = next() % max_len;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: Vec<char> = "\\${}:-+?#%/*'\"` =aFOX1@ é".chars().collect();
        for word in random_strings(&alphabet, 20_000, 24) {
            for escape in ['\\', '`'] {
                let _ = expand(&word, escape, &vars);
                let _ = expand_words(&word, escape, &vars);
                let _ = key_values(&word, escape);
                let _ = arg_pairs(&word, escape);
            }
        }
    }

    #[test]
    fn raw_word_splitting() {
        assert_eq!(
            split_raw_words(r#"a "b c" 'd e' f\ g"#, '\\'),
            strings(&["a", "\"b c\"", "'d e'", "f\\ g"])
        );
        assert_eq!(split_raw_words(r#""a\" b" c"#, '\\'), strings(&["\"a\\\" b\"", "c"]));
        assert_eq!(split_raw_words(r#"'a\' b"#, '\\'), strings(&["'a\\'", "b"]));
        assert_eq!(split_raw_words("\"\" x", '\\'), strings(&["\"\"", "x"]));
        assert_eq!(
            split_raw_words("\"unterminated x", '\\'),
            strings(&["\"unterminated x"])
        );
        assert_eq!(split_raw_words("x\\", '\\'), strings(&["x"]));
    }
}
