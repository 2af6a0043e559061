//! Variable interpolation in compose values (`$VAR`, `${VAR:-default}`, …), matching compose-go v2.9.1.
//!
//! The rules mirror Compose's `template` package, quirks included:
//!
//! * `$$` is a literal `$`; a `$` not followed by `$`, `{` or a name start is kept as is (`$1`, `$-`,
//!   a trailing `$`).
//! * Names are `[A-Za-z_][A-Za-z0-9_]*`, matched case-insensitively by a Go regexp, so the Unicode
//!   case-fold partners of `s` and `k` (`ſ` U+017F and the Kelvin sign U+212A) count as letters too.
//! * In `${NAME<op>ARG}` the argument runs greedily to the *last* `}` on the same line; the first
//!   balanced `}` (counted the way compose-go does, skipping the character after each `{`) then ends
//!   the expression and the text after it is interpolated again as a separate template.
//! * The argument of every operator is interpolated *before* the variable is checked (compose-go
//!   v2.9.1 is eager: `${SET:-${UNSET:?x}}` fails even though `SET` is set).
//! * An unset variable becomes the empty string (Compose also prints a warning; callers that need
//!   the warning can find the names with their own lookup function).

/// How deeply templates may nest inside operator arguments before we give up.
const MAX_DEPTH: usize = 200;

/// Why a template could not be interpolated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpolateError {
    /// `${VAR:?msg}` / `${VAR?msg}` with VAR missing (or empty for `:?`).
    ///
    /// Displayed exactly as Compose does: the `: msg` suffix is left off when the message is empty.
    #[error(
        "required variable {name} is missing a value{}",
        if message.is_empty() { String::new() } else { format!(": {message}") }
    )]
    Required {
        /// The variable that is missing.
        name: String,
        /// The (interpolated) text after `?`, possibly empty.
        message: String,
    },
    /// Malformed template, e.g. `${` without `}` or `${A B}`.
    #[error("invalid interpolation format for {template:?}: {reason}")]
    Syntax {
        /// The (sub-)template Compose reports for this error: the whole value, an operator's
        /// argument, or the text after a `${…}` expression, whichever contained the bad `${`.
        template: String,
        /// What is wrong, lower-case.
        reason: String,
    },
}

/// Substitutes variables in one string value as Compose does.
pub fn interpolate(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    substitute(template, lookup, 0)
}

/// The operator of a braced expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `:-`: default when unset or empty.
    DefaultUnsetOrEmpty,
    /// `-`: default when unset.
    DefaultUnset,
    /// `:+`: alternative when set and not empty.
    AltNonEmpty,
    /// `+`: alternative when set.
    AltSet,
    /// `:?`: error when unset or empty.
    RequiredNonEmpty,
    /// `?`: error when unset.
    RequiredSet,
}

/// What a `$` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    /// `$$`.
    Escaped,
    /// `$NAME`, or `${NAME}`.
    Plain(&'a str),
    /// `${NAME<op>ARG}`; `arg_start` is the byte offset (in the template) just after the operator.
    WithOp { name: &'a str, op: Op, arg_start: usize },
    /// `${` that does not start a valid expression.
    Invalid(&'static str),
}

/// One match of Compose's substitution pattern, as byte offsets into the template.
#[derive(Debug, Clone, Copy)]
struct Match<'a> {
    start: usize,
    end: usize,
    kind: Kind<'a>,
}

/// A first character of a variable name. Go's `(?i)[_a-z]` also folds to `ſ` and the Kelvin sign.
fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '\u{17F}' || c == '\u{212A}'
}

/// A later character of a variable name.
fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// Byte length of the variable name at the start of `s` (0 when there is none).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if is_name_start(c) => {}
        _ => return 0,
    }
    for (i, c) in chars {
        if !is_name_char(c) {
            return i;
        }
    }
    s.len()
}

/// Parses the operator at the start of `s`, returning it and its byte length.
fn parse_op(s: &str) -> Option<(Op, usize)> {
    let b = s.as_bytes();
    let colon = b.first() == Some(&b':');
    let at = usize::from(colon);
    let op = match (b.get(at), colon) {
        (Some(b'-'), true) => Op::DefaultUnsetOrEmpty,
        (Some(b'-'), false) => Op::DefaultUnset,
        (Some(b'+'), true) => Op::AltNonEmpty,
        (Some(b'+'), false) => Op::AltSet,
        (Some(b'?'), true) => Op::RequiredNonEmpty,
        (Some(b'?'), false) => Op::RequiredSet,
        _ => return None,
    };
    Some((op, at + 1))
}

/// Finds the next match of the substitution pattern at or after byte `from`.
///
/// This is compose-go's regexp
/// `\$(?i:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|{(?:(?P<braced>[_a-z][_a-z0-9]*(?::?[-+?](.*))?)}|(?P<invalid>)))`
/// written out by hand: leftmost-first alternation, greedy `.*` that stops at a newline.
fn next_match(t: &str, from: usize) -> Option<Match<'_>> {
    let mut search = from;
    loop {
        let start = search + t.get(search..)?.find('$')?;
        let after = start + 1;
        let rest = t.get(after..).unwrap_or("");
        if rest.starts_with('$') {
            return Some(Match {
                start,
                end: after + 1,
                kind: Kind::Escaped,
            });
        }
        let n = name_len(rest);
        if n > 0 {
            let name = &rest[..n];
            return Some(Match {
                start,
                end: after + n,
                kind: Kind::Plain(name),
            });
        }
        if rest.starts_with('{') {
            return Some(braced(t, start));
        }
        search = after;
    }
}

/// Matches the part of the pattern after `${`, for a `$` at byte `start`.
fn braced(t: &str, start: usize) -> Match<'_> {
    let invalid = |reason| Match {
        start,
        end: start + 2,
        kind: Kind::Invalid(reason),
    };
    let name_start = start + 2;
    let body = t.get(name_start..).unwrap_or("");
    let n = name_len(body);
    if n == 0 {
        return invalid("\"${\" must be followed by a variable name");
    }
    let name = &body[..n];
    let after_name = &body[n..];
    if let Some((op, op_len)) = parse_op(after_name) {
        let arg_start = name_start + n + op_len;
        let line = t.get(arg_start..).unwrap_or("");
        let line = line.split('\n').next().unwrap_or("");
        return match line.rfind('}') {
            Some(close) => Match {
                start,
                end: arg_start + close + 1,
                kind: Kind::WithOp { name, op, arg_start },
            },
            None => invalid("missing \"}\" on the same line"),
        };
    }
    if after_name.starts_with('}') {
        return Match {
            start,
            end: name_start + n + 1,
            kind: Kind::Plain(name),
        };
    }
    if after_name.is_empty() {
        invalid("missing \"}\"")
    } else {
        invalid("expected \"}\" or an operator (:-, -, :+, +, :?, ?) after the variable name")
    }
}

/// compose-go's `getFirstBraceClosingIndex`: the byte index of the `}` that closes the first `{`,
/// where the byte right after every `{` is skipped unexamined.
fn first_brace_closing_index(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut open: usize = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'}' {
            // `open` can't go below zero here: `s` starts with `${`.
            open = open.saturating_sub(1);
            if open == 0 {
                return Some(i);
            }
        }
        if b[i] == b'{' {
            open += 1;
            i += 1;
        }
        i += 1;
    }
    None
}

/// Interpolates `t`, where `depth` counts the operator arguments we are nested in.
fn substitute(t: &str, lookup: &dyn Fn(&str) -> Option<String>, depth: usize) -> Result<String, InterpolateError> {
    if depth > MAX_DEPTH {
        return Err(InterpolateError::Syntax {
            template: t.to_string(),
            reason: format!("templates nested more than {MAX_DEPTH} levels deep"),
        });
    }
    let mut out = String::with_capacity(t.len());
    let mut pos = 0;
    // compose-go interpolates the text after a `${NAME<op>…}` expression with a recursive call,
    // and reports syntax errors found there against that text alone. We iterate instead (a long
    // line of such expressions would otherwise recurse once per expression) and remember the
    // region that recursive call would have covered.
    let mut sub_template: Option<(usize, usize)> = None;
    while let Some(m) = next_match(t, pos) {
        out.push_str(&t[pos..m.start]);
        if sub_template.is_some_and(|(_, end)| m.start >= end) {
            sub_template = None;
        }
        pos = m.end;
        match m.kind {
            Kind::Escaped => out.push('$'),
            Kind::Plain(name) => out.push_str(&lookup(name).unwrap_or_default()),
            Kind::Invalid(reason) => {
                let template = sub_template.map_or(t, |(s, e)| &t[s..e]);
                return Err(InterpolateError::Syntax {
                    template: template.to_string(),
                    reason: reason.to_string(),
                });
            }
            Kind::WithOp { name, op, arg_start } => {
                let (arg_end, next) = match first_brace_closing_index(&t[m.start..m.end]) {
                    Some(close) => (m.start + close, m.start + close + 1),
                    None => (m.end - 1, m.end),
                };
                // Eager, as in compose-go v2.9.1: the argument is interpolated whether used or not.
                let arg = substitute(t.get(arg_start..arg_end).unwrap_or(""), lookup, depth + 1)?;
                let value = lookup(name);
                let set = value.is_some();
                let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
                let replacement = match op {
                    Op::DefaultUnsetOrEmpty if !non_empty => arg,
                    Op::DefaultUnset if !set => arg,
                    Op::AltNonEmpty if non_empty => arg,
                    Op::AltSet if set => arg,
                    Op::AltNonEmpty | Op::AltSet => String::new(),
                    Op::RequiredNonEmpty if !non_empty => {
                        return Err(InterpolateError::Required {
                            name: name.to_string(),
                            message: arg,
                        });
                    }
                    Op::RequiredSet if !set => {
                        return Err(InterpolateError::Required {
                            name: name.to_string(),
                            message: arg,
                        });
                    }
                    _ => value.unwrap_or_default(),
                };
                out.push_str(&replacement);
                if next < m.end {
                    sub_template = Some((next, m.end));
                }
                pos = next;
            }
        }
    }
    out.push_str(&t[pos..]);
    Ok(out)
}
