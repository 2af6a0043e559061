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
fn next_match<'a>(t: &'a str, from: usize, lines: &mut LineCache) -> Option<Match<'a>> {
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
            return Some(braced(t, start, lines));
        }
        search = after;
    }
}

/// Remembers where the line being scanned ends and where its last `}` is, so that a long line of
/// `${X:-…}` expressions is not rescanned for each one.
#[derive(Debug, Default)]
struct LineCache {
    /// The cached facts hold for positions in `start..=end`.
    start: usize,
    /// Where the line ends: the index of its `\n`, or the template's length.
    end: usize,
    /// The last `}` in `start..end`.
    last_close: Option<usize>,
    /// Whether the fields above describe anything yet.
    valid: bool,
}

impl LineCache {
    /// The byte index of the last `}` at or after `at` and before the next newline.
    fn last_close(&mut self, t: &str, at: usize) -> Option<usize> {
        if !(self.valid && self.start <= at && at <= self.end) {
            let line = t.get(at..).unwrap_or("");
            let len = line.find('\n').unwrap_or(line.len());
            *self = LineCache {
                start: at,
                end: at + len,
                last_close: line[..len].rfind('}').map(|i| at + i),
                valid: true,
            };
        }
        self.last_close.filter(|&close| close >= at)
    }
}

/// Matches the part of the pattern after `${`, for a `$` at byte `start`.
fn braced<'a>(t: &'a str, start: usize, lines: &mut LineCache) -> Match<'a> {
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
        return match lines.last_close(t, arg_start) {
            Some(close) => Match {
                start,
                end: close + 1,
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
    let mut lines = LineCache::default();
    while let Some(m) = next_match(t, pos, &mut lines) {
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

#[cfg(test)]
mod tests {
    //! Unless noted otherwise, every expectation here was checked against the reference
    //! `docker-compose` v2.40.3 (compose-go v2.9.1) by putting the template in a service's
    //! `environment` and running `docker-compose config --format json` with A=a, B=b, E="" and U
    //! (and U2) unset. The module was also compared with it on ~4,000 generated templates.
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "B" => Some("b".into()),
            "E" => Some(String::new()),
            "\u{17F}" => Some("long-s".into()),
            "\u{212A}" => Some("kelvin".into()),
            _ => None,
        }
    }

    fn ok(t: &str) -> String {
        match interpolate(t, &env) {
            Ok(v) => v,
            Err(e) => panic!("{t:?}: unexpected error {e}"),
        }
    }

    fn err(t: &str) -> InterpolateError {
        match interpolate(t, &env) {
            Ok(v) => panic!("{t:?}: expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    /// The template Compose reports for a syntax error.
    fn syntax(t: &str) -> String {
        match err(t) {
            InterpolateError::Syntax { template, .. } => template,
            e => panic!("{t:?}: expected a syntax error, got {e:?}"),
        }
    }

    fn required(t: &str) -> (String, String) {
        match err(t) {
            InterpolateError::Required { name, message } => (name, message),
            e => panic!("{t:?}: expected a required error, got {e:?}"),
        }
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(ok(""), "");
        assert_eq!(ok("hello world"), "hello world");
        assert_eq!(ok("{a} }{ :-"), "{a} }{ :-");
        assert_eq!(ok("é ü 日本"), "é ü 日本");
    }

    #[test]
    fn simple_variables() {
        assert_eq!(ok("$A"), "a");
        assert_eq!(ok("${A}"), "a");
        assert_eq!(ok("x${A}y$B"), "xayb");
        assert_eq!(ok("${A}B"), "aB");
        assert_eq!(ok("$A-B"), "a-B");
        assert_eq!(ok("é$A"), "éa");
        assert_eq!(ok("$Aé"), "aé");
        // The name is as long as possible: `$AB` is AB, not A followed by "B".
        assert_eq!(ok("$AB"), "");
        assert_eq!(ok("$A_B"), "");
    }

    #[test]
    fn unset_and_empty_become_empty() {
        assert_eq!(ok("[$U]"), "[]");
        assert_eq!(ok("[${U}]"), "[]");
        assert_eq!(ok("[$E]"), "[]");
        // Lower-case names are names too (and not A).
        assert_eq!(ok("[$a${a}]"), "[]");
    }

    #[test]
    fn underscores_and_digits_in_names() {
        let lookup = |n: &str| (n == "_" || n == "__" || n == "_1" || n == "A1").then(|| format!("<{n}>"));
        assert_eq!(
            interpolate("$_ $__ ${_1} $A1 ${A1}", &lookup),
            Ok("<_> <__> <_1> <A1> <A1>".into())
        );
    }

    #[test]
    fn dollar_escapes_and_lone_dollars() {
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("$$A"), "$A");
        assert_eq!(ok("$$$A"), "$a");
        assert_eq!(ok("$${A}"), "${A}");
        assert_eq!(ok("$$$$"), "$$");
        // A `$` that starts nothing is kept as is.
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("x$"), "x$");
        assert_eq!(ok("$1"), "$1");
        assert_eq!(ok("$-"), "$-");
        assert_eq!(ok("$ A"), "$ A");
        assert_eq!(ok("$1$A"), "$1a");
        assert_eq!(ok("$é"), "$é");
        // `ﬀ` only folds to "ff" under full case folding, which Go's regexp does not use.
        assert_eq!(ok("$\u{FB00}"), "$\u{FB00}");
    }

    #[test]
    fn case_folding_quirk_of_go_regexp() {
        // Go's `(?i)[_a-z]` also matches ſ (U+017F) and the Kelvin sign (U+212A).
        assert_eq!(ok("$\u{17F}"), "long-s");
        assert_eq!(ok("${\u{212A}}"), "kelvin");
        assert_eq!(ok("${\u{17F}:-d}"), "long-s");
        assert_eq!(ok("${X\u{17F}:-d}"), "d");
    }

    #[test]
    fn default_operators() {
        assert_eq!(ok("${U:-d}"), "d");
        assert_eq!(ok("${E:-d}"), "d");
        assert_eq!(ok("${A:-d}"), "a");
        assert_eq!(ok("${U-d}"), "d");
        assert_eq!(ok("${E-d}"), "");
        assert_eq!(ok("${A-d}"), "a");
        assert_eq!(ok("${A-}"), "a");
        assert_eq!(ok("${A:-}"), "a");
        assert_eq!(ok("${U:-}"), "");
        assert_eq!(ok("${A:-é}"), "a");
        assert_eq!(ok("${U:-é}"), "é");
        assert_eq!(ok("${U:-a b  c}"), "a b  c");
    }

    #[test]
    fn alternative_operators() {
        assert_eq!(ok("${A:+alt}"), "alt");
        assert_eq!(ok("${E:+alt}"), "");
        assert_eq!(ok("${U:+alt}"), "");
        assert_eq!(ok("${A+alt}"), "alt");
        assert_eq!(ok("${E+alt}"), "alt");
        assert_eq!(ok("${U+alt}"), "");
        assert_eq!(ok("${A:+}"), "");
        assert_eq!(ok("${A:+${B}}"), "b");
    }

    #[test]
    fn required_operators() {
        assert_eq!(required("${U:?boom}"), ("U".into(), "boom".into()));
        assert_eq!(required("${E:?boom}"), ("E".into(), "boom".into()));
        assert_eq!(required("${U?boom}"), ("U".into(), "boom".into()));
        assert_eq!(ok("${E?boom}"), "");
        assert_eq!(ok("${A:?boom}"), "a");
        assert_eq!(ok("${A?boom}"), "a");
        assert_eq!(ok("${A:?}"), "a");
        assert_eq!(required("${U:?}"), ("U".into(), String::new()));
        assert_eq!(required("${U?}"), ("U".into(), String::new()));
        // The message is itself interpolated; the text after the operator is taken whole.
        assert_eq!(required("${U:?err ${B}}"), ("U".into(), "err b".into()));
        assert_eq!(required("${U:?$U2}"), ("U".into(), String::new()));
        assert_eq!(required("${U:?a:b}"), ("U".into(), "a:b".into()));
        assert_eq!(required("${U:??}"), ("U".into(), "?".into()));
        // The first error wins.
        assert_eq!(required("${U:?one}${U2:?two}"), ("U".into(), "one".into()));
    }

    #[test]
    fn required_error_messages_match_compose() {
        // Compose: "required variable U is missing a value: boom", and no ": " when empty.
        assert_eq!(
            err("${U:?boom}").to_string(),
            "required variable U is missing a value: boom"
        );
        assert_eq!(err("${U:?}").to_string(), "required variable U is missing a value");
        assert_eq!(err("${U?}").to_string(), "required variable U is missing a value");
    }

    #[test]
    fn operator_is_the_first_one_after_the_name() {
        assert_eq!(ok("${A:--x}"), "a");
        assert_eq!(ok("${U:--x}"), "-x");
        assert_eq!(ok("${A-:-x}"), "a");
        assert_eq!(ok("${U-:-x}"), ":-x");
        assert_eq!(ok("${A-B:-c}"), "a");
        assert_eq!(ok("${U-x:?y}"), "x:?y");
        assert_eq!(ok("${A:?:-}"), "a");
    }

    #[test]
    fn nested_templates() {
        assert_eq!(ok("${U:-${B:-x}}"), "b");
        assert_eq!(ok("${U:-${U2:-x}}"), "x");
        assert_eq!(ok("${U:-$B}"), "b");
        assert_eq!(ok("${U:-$$B}"), "$B");
        assert_eq!(ok("${U:-$}"), "$");
        assert_eq!(ok("${U:-$$}"), "$");
        assert_eq!(ok("${U:-$1}"), "$1");
        assert_eq!(ok("${U:-${U:-x}y}z"), "xyz");
        assert_eq!(ok("${U:-${U:-${U:-${U:-deep}}}}"), "deep");
        assert_eq!(ok("${A}${U:-x}${B}"), "axb");
        assert_eq!(ok("${U:-a}${U:-b}"), "ab");
        assert_eq!(ok("${U:-x} ${B}"), "x b");
        assert_eq!(ok("${A:-x} ${B}"), "a b");
        assert_eq!(ok("${A:-x}\n${B:-y}"), "a\nb");
    }

    #[test]
    fn braces_inside_arguments() {
        assert_eq!(ok("${U:-{x}}"), "{x}");
        assert_eq!(ok("${U:-}x}"), "x}");
        assert_eq!(ok("${A:-x}}"), "a}");
        assert_eq!(ok("${U:-a}}}}"), "a}}}");
        assert_eq!(ok("${U:-a}b}c}"), "ab}c}");
        assert_eq!(ok("${U:-{}}"), "{}");
        assert_eq!(ok("${U:-{}"), "{");
        assert_eq!(ok("${A:-{{}} ${B}"), "a b");
    }

    #[test]
    fn brace_counting_quirk() {
        // compose-go skips the character after each `{` when looking for the closing brace, so in
        // `${A:-{}} ${B}` the expression runs to the last `}` and its argument `{}} ${B` is bad.
        assert_eq!(syntax("${A:-{}} ${B}"), "{}} ${B");
        assert_eq!(syntax("${U:-{}} ${B}"), "{}} ${B");
        assert_eq!(syntax("${A:-x{}y} ${B}"), "x{}y} ${B");
    }

    #[test]
    fn arguments_are_interpolated_eagerly() {
        // compose-go v2.9.1 interpolates the argument before looking at the variable.
        assert_eq!(required("${A:-${U:?nested}}"), ("U".into(), "nested".into()));
        assert_eq!(syntax("${A:-${}"), "${");
        assert_eq!(syntax("${A+${}}"), "${}");
        assert_eq!(syntax("${U+${}}"), "${}");
    }

    #[test]
    fn syntax_errors() {
        for t in [
            "${}",
            "${ A}",
            "${A }",
            "${A B}",
            "${A",
            "${A:-x",
            "${A:x}",
            "${1A}",
            "${A.B}",
            "${Aé}",
            "${A:?x} ${",
        ] {
            assert_eq!(syntax(t), t, "{t:?}");
        }
        assert_eq!(syntax("x ${"), "x ${");
        assert_eq!(syntax("${U:-a}${"), "${U:-a}${");
        // `.*` in Compose's pattern stops at a newline, so the expression has no closing brace.
        assert_eq!(syntax("${U:-x\ny}"), "${U:-x\ny}");
        // Errors inside an argument report the argument.
        assert_eq!(syntax("${U:-${B}"), "${B");
        // Errors after an expression with an operator report the text after it.
        assert_eq!(syntax("${U:-x} ${ }"), " ${ }");
        assert_eq!(syntax("${U:-a} ${ }}"), " ${ }}");
    }

    #[test]
    fn syntax_error_display() {
        let e = err("${A B}");
        assert!(
            e.to_string()
                .starts_with("invalid interpolation format for \"${A B}\": "),
            "{e}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = |n: usize| format!("{}x{}", "${U:-".repeat(n), "}".repeat(n));
        assert_eq!(interpolate(&deep(MAX_DEPTH), &env), Ok("x".into()));
        assert!(matches!(
            interpolate(&deep(MAX_DEPTH + 2), &env),
            Err(InterpolateError::Syntax { .. })
        ));
        assert!(matches!(
            interpolate(&deep(100_000), &env),
            Err(InterpolateError::Syntax { .. })
        ));
        let unclosed = "${U:-".repeat(100_000);
        assert!(interpolate(&unclosed, &env).is_err());
    }

    #[test]
    fn many_expressions_on_one_line_do_not_recurse() {
        let line = "${U:-x}".repeat(20_000);
        assert_eq!(interpolate(&line, &env), Ok("x".repeat(20_000)));
        // …nor rescan the line for each one (this would take minutes if they did).
        let line = format!("{}{}", "${U:-x}$A".repeat(150_000), " tail".repeat(100_000));
        let want = format!("{}{}", "xa".repeat(150_000), " tail".repeat(100_000));
        assert_eq!(interpolate(&line, &env), Ok(want));
        let lines = "${U:-x} $B\n".repeat(100_000);
        assert_eq!(interpolate(&lines, &env), Ok("x b\n".repeat(100_000)));
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        let alphabet: Vec<char> = "${}:-+?AUE_1 \n\té日ſ\u{212A}".chars().collect();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = (seed >> 59) as usize;
            let mut s = String::new();
            let mut x = seed;
            for _ in 0..len {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            let _ = interpolate(&s, &env);
        }
    }
}
