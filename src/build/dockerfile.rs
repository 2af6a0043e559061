//! Dockerfiles as the builder sees them: stages of steps, each with its line and its arguments
//! still unexpanded (expansion needs the build's variables, which only the executor has).
//!
//! Parsing itself (directives, continuations, comments, heredocs, JSON and shell forms) is done by
//! the `parse-dockerfile` crate; this module turns its syntax tree into owned steps and checks what
//! it leaves to the consumer (flags, ARG/ENV/LABEL pairs, stage references).

use parse_dockerfile as pd;

use super::error::{BuildError, Result};
use super::shell;

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The file name shown in errors (`Dockerfile`, `<inline>`).
    pub file: String,
    /// The escape character (`\`, or `` ` `` with `# escape=`` ` ``).
    pub escape: char,
    /// `ARG`s before the first `FROM`: they can be used in `FROM` lines only (and re-declared in stages).
    pub global_args: Vec<(String, Option<String>)>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the steps after it.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position among the stages.
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The base as written (`debian:12`, `$BASE`, `scratch`, or an earlier stage's name).
    pub base: String,
    /// `--platform`, as written.
    pub platform: Option<String>,
    /// 1-based line of the `FROM`.
    pub line: usize,
    /// The steps.
    pub steps: Vec<Step>,
}

/// One instruction.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line of the keyword.
    pub line: usize,
    /// The instruction as written on one line, continuations joined (for progress and errors).
    pub text: String,
    /// What it does.
    pub kind: Instruction,
}

/// A command: exec form (JSON array) or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `["executable", "arg"]`.
    Exec(Vec<String>),
    /// `command line`, run through the stage's `SHELL`.
    Shell(String),
}

/// A `COPY`/`ADD` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path or glob in the context (or in `--from`), or a URL for `ADD`.
    Path(String),
    /// A heredoc: the file's content; `expand` when its delimiter was not quoted.
    Inline {
        /// The text.
        content: String,
        /// Whether build variables are expanded in it.
        expand: bool,
    },
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// `ADD` (archives are extracted, URLs fetched).
    pub add: bool,
    /// `--from=stage|image`.
    pub from: Option<String>,
    /// `--chown=user:group`.
    pub chown: Option<String>,
    /// `--chmod=0644`.
    pub chmod: Option<String>,
    /// The sources, unexpanded.
    pub sources: Vec<Source>,
    /// The destination, unexpanded.
    pub dest: String,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [options] CMD …`.
    Check {
        /// `--interval`, `--timeout`, `--start-period`, `--start-interval`, `--retries` as written.
        options: Vec<(String, String)>,
        /// The probe.
        command: Command,
    },
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `ARG NAME[=default] …` (defaults raw).
    Arg(Vec<(String, Option<String>)>),
    /// `ENV` pairs (raw).
    Env(Vec<(String, String)>),
    /// `LABEL` pairs (raw).
    Label(Vec<(String, String)>),
    /// `WORKDIR path` (raw).
    Workdir(String),
    /// `USER user[:group]` (raw).
    User(String),
    /// `EXPOSE` ports (raw words).
    Expose(Vec<String>),
    /// `VOLUME` paths (raw).
    Volume(Vec<String>),
    /// `STOPSIGNAL` (raw).
    StopSignal(String),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `SHELL ["executable", "parameters"]`.
    Shell(Vec<String>),
    /// `RUN`, with its `--network` option if any.
    Run {
        /// What to run; heredoc forms are already turned into a shell script.
        command: Command,
        /// `--network=host|none|default`.
        network: Option<String>,
    },
    /// `COPY`/`ADD`.
    Copy(CopyStep),
    /// `HEALTHCHECK`.
    Healthcheck(Health),
    /// `ONBUILD` with its trigger as written.
    Onbuild(String),
    /// `MAINTAINER name` (raw).
    Maintainer(String),
}

/// Parses a Dockerfile's text. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile> {
    let parsed = pd::parse(text).map_err(|e| {
        let line = e.line().max(1);
        BuildError::Syntax {
            file: file.to_string(),
            line,
            message: format!("{e:#}"),
            text: text.lines().nth(line - 1).unwrap_or_default().trim().to_string(),
        }
    })?;
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map(|d| d.value.value)
        .unwrap_or('\\');
    let cx = Cx { text, file, escape };
    let starts: Vec<usize> = parsed.instructions.iter().map(keyword_start).collect();
    let mut out = Dockerfile {
        file: file.to_string(),
        escape,
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for (i, instruction) in parsed.instructions.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let raw = &text[starts[i]..end];
        let step = cx.step(instruction, raw)?;
        if let pd::Instruction::From(from) = instruction {
            let stage = cx.stage(from, out.stages.len(), step.line)?;
            if let Some(name) = &stage.name
                && out.stages.iter().any(|s| s.name.as_deref() == Some(name))
            {
                return Err(cx.invalid(&step, format!("duplicate stage name {name:?}")));
            }
            out.stages.push(stage);
            continue;
        }
        match (&step.kind, out.stages.last_mut()) {
            (Instruction::Arg(args), None) => out.global_args.extend(args.iter().cloned()),
            (_, None) => return Err(cx.invalid(&step, "only ARG can come before the first FROM".into())),
            (_, Some(stage)) => stage.steps.push(step),
        }
    }
    if out.stages.is_empty() {
        return Err(BuildError::Syntax {
            file: file.to_string(),
            line: 1,
            message: "the dockerfile has no FROM instruction".into(),
            text: String::new(),
        });
    }
    Ok(out)
}

/// Parses one `ONBUILD` trigger (`RUN echo hi`) of a base image as a step.
pub fn parse_trigger(trigger: &str, escape: char) -> Result<Step> {
    let escape_line = if escape == '\\' {
        String::new()
    } else {
        format!("# escape={escape}\n")
    };
    let text = format!("{escape_line}FROM scratch\n{trigger}\n");
    let file = parse(&text, "<onbuild>")?;
    let step = file.stages.into_iter().next().and_then(|s| s.steps.into_iter().next());
    step.ok_or_else(|| BuildError::Invalid(format!("onbuild trigger {trigger:?} is not an instruction")))
}

/// Joins a shell-form command's continuation lines (escape char + newline) as Docker does: the two
/// characters go, and comment lines inside the continuation are dropped.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut lines = raw.split('\n').peekable();
    let mut continued = false;
    while let Some(line) = lines.next() {
        if continued && line.trim_start().starts_with('#') {
            continue;
        }
        let trimmed = line.trim_end_matches([' ', '\t', '\r']);
        match trimmed.strip_suffix(escape) {
            Some(body) if lines.peek().is_some() => {
                out.push_str(body);
                continued = true;
            }
            _ => {
                out.push_str(if lines.peek().is_some() { line } else { trimmed });
                if lines.peek().is_some() {
                    out.push('\n');
                }
                continued = false;
            }
        }
    }
    out
}

fn keyword_start(i: &pd::Instruction<'_>) -> usize {
    use pd::Instruction as I;
    match i {
        I::Add(x) => x.add.span.start,
        I::Arg(x) => x.arg.span.start,
        I::Cmd(x) => x.cmd.span.start,
        I::Copy(x) => x.copy.span.start,
        I::Entrypoint(x) => x.entrypoint.span.start,
        I::Env(x) => x.env.span.start,
        I::Expose(x) => x.expose.span.start,
        I::From(x) => x.from.span.start,
        I::Healthcheck(x) => x.healthcheck.span.start,
        I::Label(x) => x.label.span.start,
        I::Maintainer(x) => x.maintainer.span.start,
        I::Onbuild(x) => x.onbuild.span.start,
        I::Run(x) => x.run.span.start,
        I::Shell(x) => x.shell.span.start,
        I::Stopsignal(x) => x.stopsignal.span.start,
        I::User(x) => x.user.span.start,
        I::Volume(x) => x.volume.span.start,
        I::Workdir(x) => x.workdir.span.start,
        _ => 0,
    }
}

/// What converting needs: the source text and how to name it.
struct Cx<'t> {
    text: &'t str,
    file: &'t str,
    escape: char,
}

impl Cx<'_> {
    fn line_of(&self, pos: usize) -> usize {
        self.text[..pos.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn invalid(&self, step: &Step, message: String) -> BuildError {
        BuildError::Instruction {
            file: self.file.to_string(),
            line: step.line,
            instruction: short(&step.text),
            message,
        }
    }

    fn shell_error(&self, line: usize, text: &str) -> impl Fn(shell::ShellError) -> BuildError + '_ {
        let text = short(text);
        move |e| BuildError::Instruction {
            file: self.file.to_string(),
            line,
            instruction: text.clone(),
            message: e.0,
        }
    }

    /// The instruction's text without trailing comments and blank lines, continuations joined.
    fn display_text(&self, raw: &str) -> String {
        let mut lines: Vec<&str> = raw.lines().collect();
        while lines
            .last()
            .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            lines.pop();
        }
        join_continuations(&lines.join("\n"), self.escape).trim().to_string()
    }

    fn stage(&self, from: &pd::FromInstruction<'_>, index: usize, line: usize) -> Result<Stage> {
        let mut platform = None;
        for flag in &from.options {
            match (flag.name.value.as_ref(), &flag.value) {
                ("platform", Some(v)) => platform = Some(v.value.to_string()),
                (name, _) => {
                    return Err(BuildError::Instruction {
                        file: self.file.to_string(),
                        line,
                        instruction: format!("FROM {}", from.image.value),
                        message: format!("unknown flag --{name}"),
                    });
                }
            }
        }
        Ok(Stage {
            index,
            name: from.as_.as_ref().map(|(_, n)| n.value.to_ascii_lowercase()),
            base: from.image.value.to_string(),
            platform,
            line,
            steps: Vec::new(),
        })
    }

    fn step(&self, instruction: &pd::Instruction<'_>, raw: &str) -> Result<Step> {
        use pd::Instruction as I;
        let line = self.line_of(keyword_start(instruction));
        let text = self.display_text(raw);
        let mut step = Step {
            line,
            text: text.clone(),
            kind: Instruction::Maintainer(String::new()),
        };
        let err = self.shell_error(line, &text);
        step.kind = match instruction {
            I::From(_) => Instruction::Maintainer(String::new()), // replaced by a stage by the caller
            I::Arg(x) => Instruction::Arg(shell::arg_pairs(&x.arguments.value, self.escape).map_err(&err)?),
            I::Env(x) => Instruction::Env(shell::key_values(&x.arguments.value, self.escape).map_err(&err)?),
            I::Label(x) => Instruction::Label(shell::key_values(&x.arguments.value, self.escape).map_err(&err)?),
            I::Workdir(x) => Instruction::Workdir(x.arguments.value.to_string()),
            I::User(x) => Instruction::User(x.arguments.value.to_string()),
            I::Stopsignal(x) => Instruction::StopSignal(x.arguments.value.to_string()),
            I::Maintainer(x) => Instruction::Maintainer(x.name.value.to_string()),
            I::Expose(x) => Instruction::Expose(x.arguments.iter().map(|a| a.value.to_string()).collect()),
            I::Volume(x) => Instruction::Volume(match &x.arguments {
                pd::JsonOrStringArray::Json(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
                pd::JsonOrStringArray::String(a) => a.iter().map(|s| s.value.to_string()).collect(),
            }),
            I::Cmd(x) => Instruction::Cmd(self.command(&x.arguments)),
            I::Entrypoint(x) => Instruction::Entrypoint(self.command(&x.arguments)),
            I::Shell(x) => Instruction::Shell(x.arguments.iter().map(|s| s.value.to_string()).collect()),
            I::Run(x) => {
                let mut network = None;
                for flag in &x.options {
                    match (flag.name.value.as_ref(), &flag.value) {
                        ("network", Some(v)) => network = Some(v.value.to_string()),
                        (name, _) => {
                            return Err(self.invalid(&step, format!("the --{name} option of RUN is not supported")));
                        }
                    }
                }
                let command = if x.here_docs.is_empty() {
                    self.command(&x.arguments)
                } else {
                    self.heredoc_run(x)
                };
                Instruction::Run { command, network }
            }
            I::Copy(x) => Instruction::Copy(self.copy(&step, false, &x.options, &x.src, &x.dest)?),
            I::Add(x) => Instruction::Copy(self.copy(&step, true, &x.options, &x.src, &x.dest)?),
            I::Healthcheck(x) => Instruction::Healthcheck(match &x.arguments {
                pd::HealthcheckArguments::Cmd { arguments, .. } => {
                    let mut options = Vec::new();
                    for flag in &x.options {
                        let name = flag.name.value.to_string();
                        if !["interval", "timeout", "start-period", "start-interval", "retries"]
                            .contains(&name.as_str())
                        {
                            return Err(self.invalid(&step, format!("unknown flag --{name}")));
                        }
                        let value = flag.value.as_ref().map(|v| v.value.to_string()).unwrap_or_default();
                        options.push((name, value));
                    }
                    Health::Check {
                        options,
                        command: self.command(arguments),
                    }
                }
                _ => Health::None,
            }),
            I::Onbuild(x) => {
                let inner = raw.trim_start();
                let trigger = inner.get("ONBUILD".len()..).unwrap_or_default();
                let trigger = self.display_text(trigger);
                if matches!(*x.instruction, I::From(_) | I::Maintainer(_) | I::Onbuild(_)) {
                    return Err(self.invalid(&step, "ONBUILD cannot trigger FROM, MAINTAINER or ONBUILD".into()));
                }
                Instruction::Onbuild(trigger)
            }
            _ => return Err(self.invalid(&step, "unsupported instruction".into())),
        };
        Ok(step)
    }

    fn command(&self, c: &pd::Command<'_>) -> Command {
        match c {
            pd::Command::Exec(a) => Command::Exec(a.value.iter().map(|s| s.value.to_string()).collect()),
            pd::Command::Shell(s) => Command::Shell(join_continuations(s.value, self.escape).trim().to_string()),
            _ => Command::Shell(String::new()),
        }
    }

    /// `RUN <<EOF` alone runs the heredoc as the script; a command with heredocs runs the whole
    /// instruction text (command line, bodies and delimiters) through the shell, which knows heredocs.
    fn heredoc_run(&self, x: &pd::RunInstruction<'_>) -> Command {
        let after_options = x.options.last().map(|f| f.span().end).unwrap_or(x.run.span.end);
        let only_heredoc = matches!(&x.arguments, pd::Command::Shell(s) if s.value.trim().is_empty());
        if only_heredoc && x.here_docs.len() == 1 {
            return Command::Shell(x.here_docs[0].value.to_string());
        }
        let last = x.here_docs.last().map(|h| h.span.end).unwrap_or(after_options);
        // The closing delimiter's line follows the last body.
        let end = self.text[last..]
            .find('\n')
            .map(|n| last + n)
            .unwrap_or(self.text.len());
        Command::Shell(self.text[after_options..end].trim().to_string())
    }

    fn copy(
        &self,
        step: &Step,
        add: bool,
        options: &[pd::Flag<'_>],
        src: &[pd::Source<'_>],
        dest: &pd::UnescapedString<'_>,
    ) -> Result<CopyStep> {
        let mut out = CopyStep {
            add,
            from: None,
            chown: None,
            chmod: None,
            sources: Vec::new(),
            dest: dest.value.to_string(),
        };
        for flag in options {
            let value = flag.value.as_ref().map(|v| v.value.to_string());
            match (flag.name.value.as_ref(), value) {
                ("from", Some(v)) if !add => out.from = Some(v),
                ("chown", Some(v)) => out.chown = Some(v),
                ("chmod", Some(v)) => out.chmod = Some(v),
                // Both only change how BuildKit stores the result; the files are the same.
                ("link", _) | ("parents", _) => {}
                (name, _) => {
                    let verb = if add { "ADD" } else { "COPY" };
                    return Err(self.invalid(step, format!("the --{name} option of {verb} is not supported")));
                }
            }
        }
        for s in src {
            out.sources.push(match s {
                pd::Source::Path(p) => Source::Path(p.value.to_string()),
                pd::Source::HereDoc(h) => Source::Inline {
                    content: h.value.to_string(),
                    expand: h.expand,
                },
                _ => return Err(self.invalid(step, "unsupported source".into())),
            });
        }
        Ok(out)
    }
}

/// An instruction's text cut to one readable line.
pub fn short(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let mut s: String = first.chars().take(100).collect();
    if s.len() < text.len() {
        s.push_str(" …");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Instruction> {
        parse(text, "Dockerfile")
            .unwrap()
            .stages
            .remove(0)
            .steps
            .into_iter()
            .map(|s| s.kind)
            .collect()
    }

    #[test]
    fn stages_names_and_global_args() {
        let f = parse(
            "ARG BASE=busybox\nFROM $BASE AS Build\nRUN make\nFROM --platform=linux/amd64 scratch\nCOPY --from=build /out /\n",
            "Dockerfile",
        )
        .unwrap();
        assert_eq!(f.global_args, vec![("BASE".into(), Some("busybox".into()))]);
        assert_eq!(f.stages.len(), 2);
        assert_eq!(f.stages[0].name.as_deref(), Some("build"));
        assert_eq!(f.stages[0].base, "$BASE");
        assert_eq!(f.stages[0].line, 2);
        assert_eq!(f.stages[1].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(f.stages[1].steps[0].line, 5);
        let Instruction::Copy(c) = &f.stages[1].steps[0].kind else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("build"));
    }

    #[test]
    fn continuations_and_comments_join() {
        let k = kinds("FROM x\nRUN echo a \\\n# a comment\n  && echo b\n");
        assert_eq!(
            k,
            vec![Instruction::Run {
                command: Command::Shell("echo a   && echo b".into()),
                network: None
            }]
        );
        let k = kinds("# escape=`\nFROM x\nRUN echo a `\n  b\n");
        assert_eq!(
            k,
            vec![Instruction::Run {
                command: Command::Shell("echo a   b".into()),
                network: None
            }]
        );
    }

    #[test]
    fn heredocs() {
        let k = kinds(
            "FROM x\nRUN <<EOF\nset -e\necho hi\nEOF\nRUN <<EOF cat > /x\nhello $HOME\nEOF\nCOPY <<'EOT' /g\n$a\nEOT\n",
        );
        assert_eq!(
            k[0],
            Instruction::Run {
                command: Command::Shell("set -e\necho hi\n".into()),
                network: None
            }
        );
        assert_eq!(
            k[1],
            Instruction::Run {
                command: Command::Shell("<<EOF cat > /x\nhello $HOME\nEOF".into()),
                network: None
            }
        );
        let Instruction::Copy(c) = &k[2] else { panic!() };
        assert_eq!(
            c.sources,
            vec![Source::Inline {
                content: "$a\n".into(),
                expand: false
            }]
        );
    }

    #[test]
    fn forms_and_flags() {
        let k = kinds(
            "FROM x\nCMD [\"a\", \"b\"]\nENTRYPOINT run me\nENV A=1 B=\"2 3\"\nCOPY --chown=1:2 --chmod=640 a b /d/\nHEALTHCHECK --interval=5s CMD true\nHEALTHCHECK NONE\nONBUILD RUN echo x\nRUN --network=none true\n",
        );
        assert_eq!(k[0], Instruction::Cmd(Command::Exec(vec!["a".into(), "b".into()])));
        assert_eq!(k[1], Instruction::Entrypoint(Command::Shell("run me".into())));
        assert_eq!(
            k[2],
            Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "\"2 3\"".into())])
        );
        let Instruction::Copy(c) = &k[3] else { panic!() };
        assert_eq!(
            (c.chown.as_deref(), c.chmod.as_deref(), c.dest.as_str()),
            (Some("1:2"), Some("640"), "/d/")
        );
        assert_eq!(c.sources.len(), 2);
        assert_eq!(
            k[4],
            Instruction::Healthcheck(Health::Check {
                options: vec![("interval".into(), "5s".into())],
                command: Command::Shell("true".into())
            })
        );
        assert_eq!(k[5], Instruction::Healthcheck(Health::None));
        assert_eq!(k[6], Instruction::Onbuild("RUN echo x".into()));
        assert_eq!(
            k[7],
            Instruction::Run {
                command: Command::Shell("true".into()),
                network: Some("none".into())
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("FROM x\nRUN true\nFOO bar\n", "Dockerfile")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Dockerfile:3:"), "{e}");
        assert!(e.contains("FOO bar"), "{e}");
        let e = parse("RUN true\n", "Dockerfile").unwrap_err().to_string();
        assert!(e.contains("Dockerfile:1"), "{e}");
        let e = parse("# nothing\n", "Dockerfile").unwrap_err().to_string();
        assert!(e.contains("FROM"), "{e}");
        let e = parse("FROM x\nCOPY --bogus a b\n", "Dockerfile")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Dockerfile:2") && e.contains("--bogus"), "{e}");
        let e = parse("FROM a AS x\nFROM b AS X\n", "Dockerfile")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn onbuild_triggers_parse() {
        let s = parse_trigger("RUN echo hi", '\\').unwrap();
        assert!(matches!(s.kind, Instruction::Run { .. }));
        assert!(parse_trigger("NOPE x", '\\').is_err());
    }
}
