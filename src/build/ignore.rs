//! `.dockerignore` files, with the semantics of Docker's pattern matcher (moby/patternmatcher).
//!
//! # The file
//!
//! One pattern a line. A line whose first character is `#` is a comment; other lines are trimmed of surrounding
//! whitespace and skipped when blank. A leading `!` makes the pattern an exception (it re-includes what it
//! matches). Patterns are cleaned like Go's `filepath.Clean` (`./a` → `a`, `a//b` → `a/b`, `a/../b` → `b`,
//! trailing `/` removed) and a leading `/` is dropped: every pattern is relative to the context root.
//!
//! # Matching
//!
//! Unlike `.gitignore`, a pattern is matched against the whole context-relative path, never against a base
//! name: `*.md` excludes `README.md` but not `docs/x.md`. A path is excluded when the last pattern that matches
//! it, or one of its parent directories, is not an exception: `docs` excludes `docs/a/b`, and a later
//! `!docs/keep.md` re-includes that one file.
//!
//! Pattern syntax (Go's `filepath.Match`, extended with `**`):
//!
//! - `*` matches any run of characters except `/`; `?` any one character except `/`;
//! - `[a-z]` a character class, negated with `[^a-z]` or `[!a-z]` (a negated class never matches `/`);
//! - `\` makes the next character literal;
//! - `**/` matches any number of directories, none included (`**/x` matches `x` and `a/b/x`);
//! - `**` elsewhere matches any run of characters, `/` included (`foo/**` matches everything under `foo`).
//!
//! An unclosed or malformed class, or a trailing `\`, is an error, as Docker reports it.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A character matching itself.
    Literal(char),
    /// `?`: any one character but `/`.
    One,
    /// `*`: any run of characters but `/`.
    Star,
    /// `**` not followed by `/`: any run of characters.
    AnyPath,
    /// The start of `**/`, reading nothing: either skips the next token (no directories) or enters it.
    DirsStart,
    /// The rest of `**/`: any run of characters ending with `/`.
    DirsBody,
    /// `[...]`: one character in (or, negated, not in and not `/`) the inclusive ranges.
    Class {
        /// Whether the class was written `[^...]` or `[!...]`.
        negated: bool,
        /// The inclusive ranges; a single character is a range of one.
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern: a sequence of tokens matched against a whole path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    /// The tokens, in order.
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles a pattern; `Err` when it is malformed.
    fn compile(pattern: &str) -> Result<Glob, ()> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            i += 1;
            let token = match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                        tokens.push(Token::DirsStart);
                        Token::DirsBody
                    } else {
                        Token::AnyPath
                    }
                }
                '*' => Token::Star,
                '?' => Token::One,
                '\\' => {
                    let &next = chars.get(i).ok_or(())?;
                    i += 1;
                    Token::Literal(next)
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i)?;
                    i = next;
                    token
                }
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Ok(Glob { tokens })
    }

    /// The pattern positions reached from `states` without reading a character.
    fn close(&self, states: &mut [bool]) {
        // Epsilon moves only go forward, so one pass in order reaches everything.
        for (i, token) in self.tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match token {
                Token::Star | Token::AnyPath => states[i + 1] = true,
                Token::DirsStart => {
                    states[i + 1] = true;
                    states[i + 2] = true;
                }
                _ => {}
            }
        }
    }

    /// The positions reached from `states` by reading `c`, written to `next`.
    fn step(&self, states: &[bool], c: char, next: &mut [bool]) {
        next.iter_mut().for_each(|s| *s = false);
        for (i, token) in self.tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match token {
                Token::Literal(l) => next[i + 1] |= *l == c,
                Token::One => next[i + 1] |= c != '/',
                Token::Star => next[i] |= c != '/',
                Token::AnyPath => next[i] = true,
                Token::DirsStart => {}
                Token::DirsBody => {
                    next[i] = true;
                    next[i + 1] |= c == '/';
                }
                Token::Class { negated, ranges } => {
                    let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    next[i + 1] |= if *negated { !inside && c != '/' } else { inside };
                }
            }
        }
        self.close(next);
    }

    /// The positions reached after reading all of `text`; all false when no prefix of the pattern matches it.
    fn run(&self, text: &str) -> Vec<bool> {
        let mut states = vec![false; self.tokens.len() + 1];
        states[0] = true;
        self.close(&mut states);
        let mut next = states.clone();
        for c in text.chars() {
            self.step(&states, c, &mut next);
            std::mem::swap(&mut states, &mut next);
            if !states.iter().any(|&s| s) {
                break;
            }
        }
        states
    }

    /// Whether the pattern matches all of `text`.
    fn matches(&self, text: &str) -> bool {
        self.run(text).last().copied().unwrap_or(false)
    }

    /// Whether some text starting with `prefix` could still match.
    fn may_match_after(&self, prefix: &str) -> bool {
        self.run(prefix).iter().any(|&s| s)
    }
}

/// Parses a character class, `start` being the index just after `[`; returns the class and the index after
/// its `]`. The rules are Go's `filepath.Match`: at least one item, no `-` or `]` where a character is
/// expected, `\` escapes, and the class must be closed.
fn parse_class(chars: &[char], start: usize) -> Result<(Token, usize), ()> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let lo = class_char(chars, &mut i)?;
        let hi = if chars.get(i) == Some(&'-') {
            i += 1;
            class_char(chars, &mut i)?
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
}

/// Reads one character of a class at `*i` (escaped with `\` or not); `Err` where a character cannot be, or
/// when the class ends unclosed right after it.
fn class_char(chars: &[char], i: &mut usize) -> Result<char, ()> {
    let mut c = *chars.get(*i).ok_or(())?;
    if c == '-' || c == ']' {
        return Err(());
    }
    if c == '\\' {
        *i += 1;
        c = *chars.get(*i).ok_or(())?;
    }
    *i += 1;
    if *i >= chars.len() {
        return Err(());
    }
    Ok(c)
}

/// Cleans a slash-separated path like Go's `filepath.Clean`: repeated `/` and `.` elements removed, `..`
/// applied where it can be, no trailing `/`; the empty path becomes `.`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `..` at the root is the root.
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// One line of a `.dockerignore` file, compiled.
#[derive(Debug, Clone)]
struct Pattern {
    /// Whether the line started with `!`.
    exception: bool,
    /// The compiled pattern.
    glob: Glob,
}

impl Pattern {
    /// Whether the pattern matches `path` or one of its parent directories.
    fn matches_or_parent(&self, path: &str) -> bool {
        self.glob.matches(path)
            || path
                .char_indices()
                .any(|(i, c)| c == '/' && i > 0 && self.glob.matches(&path[..i]))
    }
}

/// The patterns of a `.dockerignore` file, compiled.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// The patterns, in file order.
    patterns: Vec<Pattern>,
}

impl Ignore {
    /// Parses a .dockerignore file's text. Lines: `#` comments (only when `#` is the first char), blank lines
    /// skipped, surrounding whitespace trimmed, a leading `!` makes an exception, patterns are cleaned like Go's
    /// filepath.Clean (a leading `/` and `./` removed, `a//b` → `a/b`, trailing `/` removed). An invalid pattern
    /// (e.g. unclosed `[`) is an error naming the line number: Err(String) like "line 3: bad pattern \"[a\"".
    /// A UTF-8 byte order mark at the start of the text is ignored.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let number = index + 1;
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if rest.is_empty() {
                return Err(format!("line {number}: illegal exclusion pattern \"!\""));
            }
            let mut text = clean(rest);
            if text.len() > 1 && text.starts_with('/') {
                text.remove(0);
            }
            let glob = Glob::compile(&text).map_err(|()| format!("line {number}: bad pattern {line:?}"))?;
            patterns.push(Pattern { exception, glob });
        }
        Ok(Ignore { patterns })
    }

    /// Whether the context-relative path (slash-separated, no leading `/`, e.g. "src/app/main.rs") is excluded:
    /// the last pattern that matches the path OR ONE OF ITS PARENT DIRECTORIES decides (exception → included).
    /// This is Docker's moby/patternmatcher semantics (`MatchesOrParentMatches`). The path is cleaned first.
    pub fn excludes(&self, path: &str) -> bool {
        let path = normalize(path);
        let mut excluded = false;
        for pattern in &self.patterns {
            // A pattern can only change the outcome when it would flip it.
            if pattern.exception != excluded {
                continue;
            }
            if pattern.matches_or_parent(&path) {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether walking into excluded directory `dir` is still needed because some exception pattern could match
    /// something below it (Docker's walk does this: `node_modules` excluded but `!node_modules/keep`
    /// re-included). Only exceptions after the last pattern excluding `dir` count, and an exception counts when
    /// some path below `dir` could match it (`!**/keep` counts for every directory). Errs on the side of `true`;
    /// it is `true` too when `dir` is not excluded at all.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir = normalize(dir);
        let Some(last) = self.patterns.iter().rposition(|p| p.matches_or_parent(&dir)) else {
            return true;
        };
        if self.patterns[last].exception {
            return true;
        }
        let below = format!("{dir}/");
        self.patterns[last + 1..]
            .iter()
            .any(|p| p.exception && p.glob.may_match_after(&below))
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// A context-relative path as patterns see it: cleaned, without a leading `/`.
fn normalize(path: &str) -> String {
    let path = clean(path);
    match path.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => path,
    }
}

/// Matches one path against one Go `filepath.Match`-style pattern (`*` any run of non-`/` chars, `?` one
/// non-`/` char, `[a-z]`/`[^a-z]`/`[!a-z]` classes, `\` escapes) extended with Docker's `**` (any number of
/// directories, including none). The whole path must match; neither side is cleaned. `Err` names a malformed
/// pattern: "bad pattern \"[a\"".
pub fn glob_match(pattern: &str, path: &str) -> Result<bool, String> {
    let glob = Glob::compile(pattern).map_err(|()| format!("bad pattern {pattern:?}"))?;
    Ok(glob.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses, expecting success.
    fn ignore(text: &str) -> Ignore {
        match Ignore::parse(text) {
            Ok(ignore) => ignore,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    /// Matches, expecting a valid pattern.
    fn glob(pattern: &str, path: &str) -> bool {
        match glob_match(pattern, path) {
            Ok(matched) => matched,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn star_matches_within_one_component() {
        assert!(glob("*.md", "README.md"));
        assert!(!glob("*.md", "docs/x.md"));
        assert!(glob("docs/*.md", "docs/x.md"));
        assert!(!glob("docs/*.md", "docs/a/x.md"));
        assert!(glob("*", "anything"));
        assert!(!glob("*", "a/b"));
        assert!(glob("a*b", "ab"));
    }

    #[test]
    fn question_mark() {
        assert!(glob("temp?", "temp1"));
        assert!(!glob("temp?", "temp"));
        assert!(!glob("temp?", "temp12"));
        assert!(!glob("a?b", "a/b"));
    }

    #[test]
    fn character_classes() {
        assert!(glob("[a-c]x", "bx"));
        assert!(!glob("[a-c]x", "dx"));
        assert!(glob("[^a-c]x", "dx"));
        assert!(!glob("[^a-c]x", "ax"));
        assert!(glob("[!a-c]x", "dx"));
        assert!(!glob("[!a-c]x", "bx"));
        assert!(!glob("a[^x]b", "a/b"));
        assert!(glob("[abc0-9]", "7"));
        assert!(glob("[\\]]", "]"));
        assert!(glob("[\\-]", "-"));
    }

    #[test]
    fn escapes() {
        assert!(glob("\\*", "*"));
        assert!(!glob("\\*", "x"));
        assert!(glob("a\\?", "a?"));
        assert!(glob("\\[a", "[a"));
    }

    #[test]
    fn double_star() {
        assert!(glob("**/*.md", "x.md"));
        assert!(glob("**/*.md", "a/b/x.md"));
        assert!(glob("**/node_modules", "node_modules"));
        assert!(glob("**/node_modules", "a/b/node_modules"));
        assert!(!glob("**/node_modules", "a/xnode_modules"));
        assert!(glob("foo/**", "foo/a"));
        assert!(glob("foo/**", "foo/a/b/c"));
        assert!(!glob("foo/**", "foo"));
        assert!(!glob("foo/**", "foobar/a"));
        assert!(glob("a/**/b", "a/b"));
        assert!(glob("a/**/b", "a/x/y/b"));
        assert!(!glob("a/**/b", "a/xb"));
        assert!(glob("**", "a/b/c"));
        assert!(glob("**.log", "a/b.log"));
    }

    #[test]
    fn malformed_patterns() {
        for bad in ["[a", "[", "[]", "[]a]", "[-a]", "[a-]", "a\\", "[a-z", "[\\", "[^]"] {
            assert_eq!(glob_match(bad, "a"), Err(format!("bad pattern {bad:?}")), "{bad}");
        }
        assert_eq!(glob_match("]", "]"), Ok(true));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("a//b/"), "a/b");
        assert_eq!(clean("./a"), "a");
        assert_eq!(clean("/a/../../b"), "/b");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("a/b/../../.."), "..");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn root_only_patterns() {
        let ig = ignore("*.md\n");
        assert!(ig.excludes("README.md"));
        assert!(!ig.excludes("docs/x.md"));
        let ig = ignore("**/*.md\n");
        assert!(ig.excludes("README.md"));
        assert!(ig.excludes("docs/x.md"));
    }

    #[test]
    fn directory_excludes_everything_below() {
        let ig = ignore("docs\n");
        assert!(ig.excludes("docs"));
        assert!(ig.excludes("docs/a/b"));
        assert!(!ig.excludes("docs2"));
        assert!(!ig.excludes("src/docs"));
    }

    #[test]
    fn exception_reincludes_a_file_in_an_excluded_dir() {
        let ig = ignore("docs\n!docs/keep.md\n");
        assert!(ig.excludes("docs"));
        assert!(ig.excludes("docs/other.md"));
        assert!(!ig.excludes("docs/keep.md"));
        assert!(ig.may_include_below("docs"));
    }

    #[test]
    fn exception_then_later_exclusion() {
        let ig = ignore("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(ig.excludes("CHANGES.md"));
        assert!(!ig.excludes("README.md"));
        assert!(ig.excludes("README-secret.md"));
        let ig = ignore("docs\n!docs/keep\ndocs/keep/private\n");
        assert!(!ig.excludes("docs/keep/a"));
        assert!(ig.excludes("docs/keep/private/a"));
    }

    #[test]
    fn last_match_wins() {
        let ig = ignore("!a.txt\n*.txt\n");
        assert!(ig.excludes("a.txt"));
        let ig = ignore("*.txt\n!a.txt\n");
        assert!(!ig.excludes("a.txt"));
        assert!(ig.excludes("b.txt"));
    }

    #[test]
    fn node_modules_anywhere() {
        let ig = ignore("**/node_modules\n");
        assert!(ig.excludes("node_modules"));
        assert!(ig.excludes("node_modules/x/index.js"));
        assert!(ig.excludes("web/app/node_modules/react/index.js"));
        assert!(!ig.excludes("web/app/src/index.js"));
    }

    #[test]
    fn one_level_wildcard_dirs() {
        let ig = ignore("*/temp*\n");
        assert!(ig.excludes("somedir/temporary.txt"));
        assert!(ig.excludes("somedir/temp"));
        assert!(ig.excludes("somedir/temp/x"));
        assert!(!ig.excludes("temp"));
        assert!(!ig.excludes("a/b/temp"));
        let ig = ignore("*/*/temp*\n");
        assert!(ig.excludes("a/b/temp.txt"));
        assert!(!ig.excludes("a/temp.txt"));
    }

    #[test]
    fn single_character_wildcard() {
        let ig = ignore("temp?\n");
        assert!(ig.excludes("tempa"));
        assert!(ig.excludes("tempb/inside"));
        assert!(!ig.excludes("temp"));
        assert!(!ig.excludes("tempab"));
    }

    #[test]
    fn leading_slash_and_dot_slash_are_removed() {
        let ig = ignore("/build\n./dist/\n/a//b/\n");
        assert!(ig.excludes("build"));
        assert!(ig.excludes("build/out.o"));
        assert!(ig.excludes("dist/app.js"));
        assert!(ig.excludes("a/b/c"));
        assert!(!ig.excludes("src/build"));
        let ig = ignore("!/keep\n");
        assert!(!ig.excludes("keep"));
    }

    #[test]
    fn comments_blanks_and_whitespace() {
        let ig = ignore("# a comment\n\n   \n  target  \r\n#*.rs\n \t# not a comment\n");
        assert!(ig.excludes("target/debug"));
        assert!(!ig.excludes("main.rs"));
        assert!(ig.excludes("# not a comment"));
        assert!(!ig.excludes("a comment"));
        assert!(ignore("").is_empty());
        assert!(ignore("# only\n\n").is_empty());
        assert!(!ig.is_empty());
        assert!(Ignore::default().is_empty());
        assert!(!Ignore::default().excludes("anything"));
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let ig = ignore("\u{feff}secret\n");
        assert!(ig.excludes("secret"));
    }

    #[test]
    fn invalid_pattern_names_its_line() {
        assert_eq!(
            Ignore::parse("a\n# c\n[a\n").err(),
            Some("line 3: bad pattern \"[a\"".to_string())
        );
        assert_eq!(
            Ignore::parse("ok\n  !  \n").err(),
            Some("line 2: illegal exclusion pattern \"!\"".to_string())
        );
        assert!(Ignore::parse("x\\").is_err());
    }

    #[test]
    fn may_include_below_follows_exceptions() {
        let ig = ignore("node_modules\n!node_modules/keep\n");
        assert!(ig.may_include_below("node_modules"));
        assert!(!ig.excludes("node_modules/keep"));
        assert!(!ig.excludes("node_modules/keep/file"));
        assert!(ig.excludes("node_modules/other"));

        let ig = ignore("node_modules\n");
        assert!(!ig.may_include_below("node_modules"));

        let ig = ignore("node_modules\n!src/keep\n");
        assert!(!ig.may_include_below("node_modules"));

        // The exception is overridden by a later exclusion of the directory.
        let ig = ignore("!node_modules/keep\nnode_modules\n");
        assert!(!ig.may_include_below("node_modules"));
        assert!(ig.excludes("node_modules/keep"));

        // Wildcard exceptions.
        let ig = ignore("vendor\n!**/LICENSE\n");
        assert!(ig.may_include_below("vendor"));
        assert!(ig.may_include_below("vendor/a/b"));
        assert!(!ig.excludes("vendor/a/LICENSE"));
        let ig = ignore("*\n!*/keep\n");
        assert!(ig.may_include_below("a"));
        assert!(!ig.may_include_below("a/b"));
        assert!(!ig.excludes("a/keep"));
        assert!(ig.excludes("a/other"));

        // Deeper directories of the exception path.
        let ig = ignore("a\n!a/b/c/keep\n");
        assert!(ig.may_include_below("a/b"));
        assert!(!ig.may_include_below("a/x"));
    }

    #[test]
    fn may_include_below_when_not_excluded() {
        let ig = ignore("docs\n");
        assert!(ig.may_include_below("src"));
        let ig = ignore("docs\n!docs\n");
        assert!(ig.may_include_below("docs"));
    }

    #[test]
    fn paths_are_normalized() {
        let ig = ignore("a/b\n");
        assert!(ig.excludes("./a/b"));
        assert!(ig.excludes("/a/b/c"));
        assert!(ig.excludes("a//b/"));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: Vec<char> = "*?[]^!-\\/a.b \n#".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..20_000 {
            let mut random = |max: u64| -> String {
                let len = next() % max;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let pattern = random(16);
            let path = random(16);
            let _ = glob_match(&pattern, &path);
            if let Ok(ig) = Ignore::parse(&pattern) {
                let _ = ig.excludes(&path);
                let _ = ig.may_include_below(&path);
            }
        }
    }

    #[test]
    fn dot_dot_patterns_never_match_inside_the_context() {
        let ig = ignore("../x\nsub/../y\n");
        assert!(!ig.excludes("x"));
        assert!(ig.excludes("y"));
    }
}
