//! The build itself: stages in dependency order, each step turned into a cache key, looked up, and
//! only on a miss carried out (`RUN` in a container on berth's runtime, `COPY`/`ADD`/`WORKDIR`
//! written as layer tars directly) and committed as an image state the next step starts from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::copy::{self, Content, Entry, Owner, Root};
use super::dockerfile::{self, Command, CopyStep, Dockerfile, Health, Instruction, Source, Stage, Step};
use super::error::{BuildError, Result};
use super::ignore::Ignore;
use super::{layer, shell};
use crate::image::oci::{self, ContainerConfig, Descriptor, History, ImageConfig, Manifest, Platform, RootFs};
use crate::image::pull::{self, PullOptions};
use crate::image::reference::{Digest, Reference};
use crate::image::store::{ImageRecord, Store, Unpack};
use crate::image::{ImageError, auth::DockerConfig};
use crate::runtime::{self, ContainerSpec, NetworkSpec, Runtime, StartMode};

/// The history comment of every step, as BuildKit writes `buildkit.dockerfile.v0`.
pub const HISTORY_COMMENT: &str = "berth.dockerfile.v0";

/// Label every build container carries, so leftovers can be found.
pub const BUILD_LABEL: &str = "io.berth.build";

/// Docker's default `PATH`, set in images that have none when a stage starts.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub enum DockerfileSource {
    /// A file (relative paths are relative to the context).
    Path(PathBuf),
    /// The text itself (Compose's `dockerfile_inline`).
    Inline(String),
}

/// One build, as a caller describes it.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (default `Dockerfile` in the context).
    pub dockerfile: DockerfileSource,
    /// `--build-arg` values.
    pub args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Labels added to the image.
    pub labels: BTreeMap<String, String>,
    /// Tags the result gets.
    pub tags: Vec<Reference>,
    /// Do not look up the cache (results still fill it).
    pub no_cache: bool,
    /// Pull base images even when stored.
    pub pull: bool,
    /// `RUN`'s network: `host` (default) or `none`.
    pub network: Option<String>,
}

impl BuildSpec {
    /// A build of `context` with its `Dockerfile` and nothing else set.
    pub fn new(context: impl Into<PathBuf>) -> BuildSpec {
        BuildSpec {
            context: context.into(),
            dockerfile: DockerfileSource::Path(PathBuf::from("Dockerfile")),
            args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            no_cache: false,
            pull: false,
            network: None,
        }
    }
}

/// What a build reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step starts: its number among all steps of the stages built, and its text.
    Step {
        /// 1-based.
        number: usize,
        /// Steps in all.
        total: usize,
        /// `FROM busybox`, `RUN make`, …
        text: &'a str,
    },
    /// The step's result came from the cache.
    Cached,
    /// A base image is pulled.
    Pulling(&'a str),
    /// A `RUN` step's output.
    Output(&'a [u8]),
    /// The step is done; the id of the image state it produced.
    StepDone(&'a Digest),
}

/// Receives build events.
pub trait Progress: Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// Ignores every event.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image id.
    pub id: Digest,
    /// Steps carried out (not from the cache).
    pub executed: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Warnings (unused build args).
    pub warnings: Vec<String>,
}

/// Builds an image and tags it. The build's containers live under `runtime`'s root and are
/// removed again, whatever happens; those of a build that was killed are removed by the next build.
pub fn build(store: &Store, runtime: &Runtime, spec: &BuildSpec, progress: &dyn Progress) -> Result<Built> {
    let context = spec
        .context
        .canonicalize()
        .map_err(|e| BuildError::Invalid(format!("build context {}: {e}", spec.context.display())))?;
    if !context.is_dir() {
        return Err(BuildError::Invalid(format!(
            "build context {} is not a directory",
            context.display()
        )));
    }
    let (text, file_name) = match &spec.dockerfile {
        DockerfileSource::Inline(t) => (t.clone(), "<inline>".to_string()),
        DockerfileSource::Path(p) => {
            let path = if p.is_absolute() { p.clone() } else { context.join(p) };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| BuildError::Invalid(format!("cannot read the dockerfile {}: {e}", path.display())))?;
            (text, p.display().to_string())
        }
    };
    let file = dockerfile::parse(&text, &file_name)?;
    let ignore_path = context.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(t) => Ignore::parse(&t).map_err(|e| BuildError::Invalid(format!("{}: {e}", ignore_path.display())))?,
        Err(_) => Ignore::default(),
    };
    let target = match &spec.target {
        None => file.stages.len() - 1,
        Some(t) => find_stage(&file, &t.to_ascii_lowercase(), file.stages.len())
            .ok_or_else(|| BuildError::Invalid(format!("target stage {t:?} could not be found")))?,
    };
    let needed = needed_stages(&file, target)?;
    let _writer = store.writer()?;
    sweep_abandoned(runtime);
    let work = WorkDir::new(store.root())?;
    let mut b = Builder {
        store,
        runtime,
        spec,
        progress,
        file: &file,
        ignore,
        context,
        work,
        done: BTreeMap::new(),
        total: needed.iter().map(|i| file.stages[*i].steps.len() + 1).sum(),
        number: 0,
        executed: 0,
        cached: 0,
    };
    let mut last = None;
    for index in needed {
        let state = b.stage(&file.stages[index])?;
        b.done.insert(index, state.clone());
        last = Some(state);
    }
    let mut state = last.ok_or_else(|| BuildError::Invalid("nothing to build".into()))?;
    if !spec.labels.is_empty() {
        let mut config = state.config.clone();
        let c = config.config.get_or_insert_with(Default::default);
        let labels = c.labels.get_or_insert_with(Default::default);
        for (k, v) in &spec.labels {
            labels.insert(k.clone(), v.clone());
        }
        let key = chain(&state.key, &json!(["labels", spec.labels]));
        state = b.commit(
            key,
            config,
            state.manifest.layers.clone(),
            state.record.layer_sizes.clone(),
        )?;
    }
    store.add_image(state.record.clone(), &spec.tags)?;
    let declared: BTreeSet<&str> = file
        .global_args
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(file.stages.iter().flat_map(|s| {
            s.steps.iter().flat_map(|st| match &st.kind {
                Instruction::Arg(a) => a.iter().map(|(k, _)| k.as_str()).collect(),
                _ => Vec::new(),
            })
        }))
        .collect();
    let unused: Vec<&str> = spec
        .args
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.contains(k))
        .collect();
    let warnings = if unused.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "one or more build args were not consumed: {}",
            unused.join(", ")
        )]
    };
    Ok(Built {
        id: state.record.id.clone(),
        executed: b.executed,
        cached: b.cached,
        warnings,
    })
}

/// A stage index by name or number, among the first `before` stages.
fn find_stage(file: &Dockerfile, name: &str, before: usize) -> Option<usize> {
    file.stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(name))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

/// The stages `target` needs (its base and `COPY --from` sources, transitively), in order.
fn needed_stages(file: &Dockerfile, target: usize) -> Result<Vec<usize>> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let stage = &file.stages[i];
        if let Some(j) = find_stage(file, &stage.base.to_ascii_lowercase(), i) {
            todo.push(j);
        }
        for step in &stage.steps {
            if let Instruction::Copy(CopyStep { from: Some(from), .. }) = &step.kind
                && let Some(j) = find_stage(file, &from.to_ascii_lowercase(), i)
            {
                todo.push(j);
            }
        }
    }
    Ok(needed.into_iter().collect())
}

/// A build's scratch space under the store (an empty lower dir, mount points), removed at the end.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(store_root: &Path) -> Result<WorkDir> {
        let path = store_root
            .join("ingest")
            .join(format!("build-{}", crate::fsutil::random_hex(8)));
        std::fs::create_dir_all(path.join("empty")).map_err(BuildError::io("create", &path))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An image state between steps: committed (blobs stored), with its cache key.
#[derive(Debug, Clone)]
struct State {
    record: ImageRecord,
    config: ImageConfig,
    manifest: Manifest,
    key: Digest,
}

/// The per-stage variables: declared `ARG`s with their values, in declaration order.
struct StageVars {
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
    /// The index of the stage whose own steps run (`None` while a base image's ONBUILD triggers run): a
    /// `COPY --from` name means a stage before it.
    stage: Option<usize>,
}

struct Builder<'a> {
    store: &'a Store,
    runtime: &'a Runtime,
    spec: &'a BuildSpec,
    progress: &'a dyn Progress,
    file: &'a Dockerfile,
    ignore: Ignore,
    context: PathBuf,
    work: WorkDir,
    done: BTreeMap<usize, State>,
    total: usize,
    number: usize,
    executed: usize,
    cached: usize,
}

/// The next cache key: the previous one and what the step does.
fn chain(prev: &Digest, what: &serde_json::Value) -> Digest {
    Digest::of(format!("{prev}\n{what}").as_bytes())
}

impl Builder<'_> {
    fn instruction_error(&self, step: &Step, message: impl Into<String>) -> BuildError {
        BuildError::Instruction {
            file: self.file.file.clone(),
            line: step.line,
            instruction: dockerfile::short(&step.text),
            message: message.into(),
        }
    }

    /// The global args' values (defaults overridden by build args).
    fn global_value(&self, name: &str) -> Option<String> {
        let declared = self.file.global_args.iter().rev().find(|(k, _)| k == name)?;
        self.spec.args.get(name).cloned().or_else(|| declared.1.clone())
    }

    fn stage(&mut self, stage: &Stage) -> Result<State> {
        self.number += 1;
        let from_text = format!("FROM {}", stage.base);
        self.progress.event(Event::Step {
            number: self.number,
            total: self.total,
            text: &from_text,
        });
        let globals = |k: &str| self.global_value(k);
        let base = shell::expand(&stage.base, self.file.escape, &globals).map_err(|e| BuildError::Instruction {
            file: self.file.file.clone(),
            line: stage.line,
            instruction: from_text.clone(),
            message: e.0,
        })?;
        let mut state = if let Some(i) = find_stage(self.file, &base.to_ascii_lowercase(), stage.index) {
            self.done
                .get(&i)
                .cloned()
                .ok_or_else(|| BuildError::Invalid(format!("stage {base} was not built")))?
        } else if base == "scratch" {
            let config = ImageConfig {
                created: None,
                author: None,
                architecture: Platform::host().architecture,
                os: Platform::host().os,
                variant: Platform::host().variant,
                config: Some(ContainerConfig::default()),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                history: Vec::new(),
            };
            self.commit(Digest::of(b"scratch"), config, Vec::new(), Vec::new())?
        } else {
            let record = self.base_image(&base, stage)?;
            let config = self.store.config(&record)?;
            let manifest = self.store.manifest(&record)?;
            let key = Digest::of(format!("from {}", record.id).as_bytes());
            State {
                record,
                config,
                manifest,
                key,
            }
        };
        self.progress.event(Event::StepDone(&state.record.id));
        let mut vars = StageVars {
            args: Vec::new(),
            cmd_set: false,
            stage: None,
        };
        // ONBUILD triggers of a base image run first, and are not inherited.
        let triggers = state
            .config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        if let Some(c) = state.config.config.as_mut()
            && !c.env.as_ref().is_some_and(|e| e.iter().any(|v| v.starts_with("PATH=")))
        {
            c.env.get_or_insert_with(Vec::new).insert(0, DEFAULT_PATH.to_string());
        }
        for trigger in triggers {
            let step = dockerfile::parse_trigger(&trigger, self.file.escape)?;
            state = self.step(state, &mut vars, &step)?;
        }
        vars.stage = Some(stage.index);
        for step in &stage.steps {
            self.number += 1;
            self.progress.event(Event::Step {
                number: self.number,
                total: self.total,
                text: &step.text,
            });
            state = self.step(state, &mut vars, step)?;
            self.progress.event(Event::StepDone(&state.record.id));
        }
        Ok(state)
    }

    /// The base image, pulled when missing (or always with `--pull`).
    fn base_image(&self, name: &str, stage: &Stage) -> Result<ImageRecord> {
        let found = match self.store.lookup(name) {
            Ok(r) => Some(r),
            Err(ImageError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(r) = found
            && !self.spec.pull
        {
            return Ok(r);
        }
        self.progress.event(Event::Pulling(name));
        let reference = Reference::parse(name)?;
        let credentials = DockerConfig::default_location().credentials(&reference.registry)?;
        let mut options = PullOptions::default();
        if let Some(p) = &stage.platform {
            options.platform = Some(Platform::parse(p)?);
        }
        let pulled = pull::pull(self.store, &reference, credentials, &options, &crate::image::Quiet)?;
        Ok(self.store.lookup(pulled.id.as_str())?)
    }

    /// Stores a state's config and manifest and records it under `key`.
    fn commit(&self, key: Digest, mut config: ImageConfig, layers: Vec<Descriptor>, sizes: Vec<u64>) -> Result<State> {
        if config.created.is_none() {
            config.created = config.history.last().and_then(|h| h.created.clone());
        }
        let config_bytes = oci::to_json(&config);
        let id = self.store.write_blob(&config_bytes, None)?;
        let manifest = Manifest::oci(
            Descriptor::new(oci::OCI_CONFIG, id.clone(), config_bytes.len() as u64),
            layers,
        );
        let manifest_digest = self.store.write_blob(&oci::to_json(&manifest), None)?;
        let record = ImageRecord::new(id, manifest_digest, oci::OCI_MANIFEST, sizes);
        self.store.cache_put(&key, &record)?;
        Ok(State {
            record,
            config,
            manifest,
            key,
        })
    }

    fn cached(&self, key: &Digest) -> Result<Option<State>> {
        if self.spec.no_cache {
            return Ok(None);
        }
        let Some(record) = self.store.cache_get(key)? else {
            return Ok(None);
        };
        let config = self.store.config(&record)?;
        let manifest = self.store.manifest(&record)?;
        Ok(Some(State {
            record,
            config,
            manifest,
            key: key.clone(),
        }))
    }

    /// One step: its effect and cache key first, then the cache, then the work.
    fn step(&mut self, state: State, vars: &mut StageVars, step: &Step) -> Result<State> {
        let escape = self.file.escape;
        let env: Vec<String> = state
            .config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        let args = vars.args.clone();
        let lookup = |name: &str| -> Option<String> {
            env.iter()
                .rev()
                .find_map(|e| {
                    e.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('='))
                        .map(str::to_string)
                })
                .or_else(|| args.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.clone()))
        };
        let expand = |word: &str| shell::expand(word, escape, &lookup).map_err(|e| self.instruction_error(step, e.0));
        let mut config = state.config.clone();
        let c = config.config.get_or_insert_with(Default::default);
        // (history text, whether it adds a layer) of a config-only change.
        let created_by: String;
        match &step.kind {
            Instruction::Arg(pairs) => {
                let mut shown = Vec::new();
                for (name, default) in pairs {
                    let value = match self.spec.args.get(name) {
                        Some(v) => Some(v.clone()),
                        None => match default {
                            Some(d) => Some(expand(d)?),
                            None => self.global_value(name),
                        },
                    };
                    // History shows the instruction as written, as BuildKit does.
                    shown.push(match default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    vars.args.retain(|(k, _)| k != name);
                    vars.args.push((name.clone(), value));
                }
                created_by = format!("ARG {}", shown.join(" "));
            }
            Instruction::Env(pairs) | Instruction::Label(pairs) => {
                let is_env = matches!(step.kind, Instruction::Env(_));
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    expanded.push((expand(k)?, expand(v)?));
                }
                let shown: Vec<String> = expanded.iter().map(|(k, v)| format!("{k}={v}")).collect();
                for (k, v) in expanded {
                    if is_env {
                        // Docker replaces a variable where it is, or appends it.
                        let list = c.env.get_or_insert_with(Vec::new);
                        let entry = format!("{k}={v}");
                        match list.iter_mut().find(|e| e.split('=').next() == Some(k.as_str())) {
                            Some(e) => *e = entry,
                            None => list.push(entry),
                        }
                    } else {
                        c.labels.get_or_insert_with(BTreeMap::new).insert(k, v);
                    }
                }
                created_by = format!("{} {}", if is_env { "ENV" } else { "LABEL" }, shown.join(" "));
            }
            Instruction::Maintainer(name) => {
                config.author = Some(name.clone());
                created_by = format!("MAINTAINER {name}");
            }
            Instruction::User(u) => {
                let u = expand(u)?;
                created_by = format!("USER {u}");
                c.user = Some(u);
            }
            Instruction::StopSignal(s) => {
                let s = expand(s)?;
                runtime::process::parse_signal(&s).map_err(|e| self.instruction_error(step, e))?;
                created_by = format!("STOPSIGNAL {s}");
                c.stop_signal = Some(s);
            }
            Instruction::Expose(words) => {
                let mut ports = BTreeSet::new();
                for w in words {
                    for p in shell::expand_words(w, escape, &lookup).map_err(|e| self.instruction_error(step, e.0))? {
                        let p = if p.contains('/') {
                            p.to_ascii_lowercase()
                        } else {
                            format!("{p}/tcp")
                        };
                        ports.insert(p);
                    }
                }
                let exposed = c.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in &ports {
                    exposed.insert(p.clone(), json!({}));
                }
                let shown: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
                created_by = format!("EXPOSE map[{}]", shown.join(" "));
            }
            Instruction::Volume(paths) => {
                let mut shown = Vec::new();
                for p in paths {
                    let p = expand(p)?;
                    if p.is_empty() {
                        return Err(self.instruction_error(step, "VOLUME specified can not be an empty string"));
                    }
                    c.volumes.get_or_insert_with(BTreeMap::new).insert(p.clone(), json!({}));
                    shown.push(p);
                }
                created_by = format!("VOLUME [{}]", shown.join(" "));
            }
            Instruction::Shell(words) => {
                created_by = format!("SHELL [{}]", words.join(" "));
                c.shell = Some(words.clone());
            }
            Instruction::Cmd(cmd) => {
                let argv = command_argv(c, cmd);
                created_by = format!("CMD {}", go_quoted_list(&argv));
                c.cmd = Some(argv);
                vars.cmd_set = true;
            }
            Instruction::Entrypoint(cmd) => {
                let argv = command_argv(c, cmd);
                created_by = format!("ENTRYPOINT {}", go_quoted_list(&argv));
                c.entrypoint = Some(argv);
                if !vars.cmd_set {
                    c.cmd = None;
                }
            }
            Instruction::Healthcheck(h) => {
                let (value, shown) = healthcheck(c, h).map_err(|e| self.instruction_error(step, e))?;
                created_by = format!("HEALTHCHECK {shown}");
                c.healthcheck = Some(value);
            }
            Instruction::Onbuild(trigger) => {
                c.on_build.get_or_insert_with(Vec::new).push(trigger.clone());
                // BuildKit writes no history entry for ONBUILD.
                let key = chain(&state.key, &json!(["ONBUILD", trigger]));
                return self.config_step(state, key, config, None);
            }
            Instruction::Workdir(dir) => {
                let dir = expand(dir)?;
                let base = c
                    .working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into());
                let dir = if dir.starts_with('/') {
                    copy::clean_abs(&dir)
                } else {
                    copy::clean_abs(&format!("{base}/{dir}"))
                };
                c.working_dir = Some(dir.clone());
                let created_by = format!("WORKDIR {dir}");
                return self.workdir_step(state, config, &dir, created_by);
            }
            Instruction::Run { command, network } => {
                let network = network
                    .clone()
                    .or_else(|| self.spec.network.clone())
                    .unwrap_or_else(|| "host".into());
                let argv = command_argv(c, command);
                let args_env: Vec<String> = vars
                    .args
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.clone().unwrap_or_default()))
                    .collect();
                let shown = if args_env.is_empty() {
                    format!("RUN {}", argv.join(" "))
                } else {
                    format!("RUN |{} {} {}", args_env.len(), args_env.join(" "), argv.join(" "))
                };
                let key = chain(&state.key, &json!(["RUN", argv, args_env, network]));
                if let Some(hit) = self.cached(&key)? {
                    self.hit();
                    return Ok(hit);
                }
                let run_env: Vec<String> = vars
                    .args
                    .iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                    .filter(|kv| {
                        let name = kv.split('=').next().unwrap_or_default();
                        !env.iter().any(|e| e.split('=').next() == Some(name))
                    })
                    .collect();
                return self.run_step(state, key, step, argv, run_env, &network, shown);
            }
            Instruction::Copy(cp) => return self.copy_step(state, step, cp, &lookup, vars.stage),
        }
        let key = chain(&state.key, &json!(["config", created_by, config.config, config.author]));
        self.config_step(state, key, config, Some(created_by))
    }

    fn hit(&mut self) {
        self.cached += 1;
        self.progress.event(Event::Cached);
    }

    /// A step that changes only the config: one history entry without a layer.
    fn config_step(
        &mut self,
        state: State,
        key: Digest,
        mut config: ImageConfig,
        created_by: Option<String>,
    ) -> Result<State> {
        if let Some(hit) = self.cached(&key)? {
            self.hit();
            return Ok(hit);
        }
        self.executed += 1;
        if let Some(created_by) = created_by {
            config.history.push(history(created_by, true));
        }
        config.created = None;
        self.commit(
            key,
            config,
            state.manifest.layers.clone(),
            state.record.layer_sizes.clone(),
        )
    }

    /// `WORKDIR` creates its directory when the image lacks it (a layer); otherwise it only changes
    /// the config.
    fn workdir_step(&mut self, state: State, config: ImageConfig, dir: &str, created_by: String) -> Result<State> {
        let layers = self.layer_dirs(&state)?;
        let exists = |p: &str| layer::lookup(&layers, p, true).is_some();
        if exists(dir) {
            let key = chain(&state.key, &json!(["WORKDIR", dir]));
            return self.config_step(state, key, config, Some(created_by));
        }
        let mut entries = vec![Owner::default().entry(dir.to_string(), Content::Dir, 0o755)];
        copy::add_parents(&mut entries, &exists, Owner::default());
        let key = chain(&state.key, &json!(["WORKDIR", dir, "mkdir"]));
        if let Some(hit) = self.cached(&key)? {
            self.hit();
            return Ok(hit);
        }
        self.executed += 1;
        self.add_layer(state, key, config, created_by, |out| copy::write_tar(&entries, out))
    }

    /// Ingests a layer written by `write` on top of `state` with `config` (already changed).
    fn add_layer(
        &self,
        state: State,
        key: Digest,
        mut config: ImageConfig,
        created_by: String,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send,
    ) -> Result<State> {
        let (reader, mut writer) = std::io::pipe().map_err(BuildError::io("create a pipe for", &self.work.path))?;
        let store = self.store;
        let ingested = std::thread::scope(|s| {
            let producer = s.spawn(move || {
                let r = write(&mut writer);
                drop(writer);
                r
            });
            let ingested = store.ingest_layer(
                std::io::BufReader::new(reader),
                &created_by,
                None,
                None,
                Unpack::Now,
                &|_| {},
            );
            let produced = producer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the layer writer panicked")));
            (ingested, produced)
        });
        let (ingested, produced) = ingested;
        produced.map_err(BuildError::io("write the layer of", &self.context))?;
        let layer = ingested?;
        config.rootfs.diff_ids.push(layer.diff_id.clone());
        config.history.push(history(created_by, false));
        config.created = None;
        let mut layers = state.manifest.layers.clone();
        layers.push(Descriptor::new(
            oci::layer_media_type(layer.compression),
            layer.blob,
            layer.blob_size,
        ));
        let mut sizes = state.record.layer_sizes.clone();
        sizes.push(layer.size);
        self.commit(key, config, layers, sizes)
    }

    fn layer_dirs(&self, state: &State) -> Result<Vec<PathBuf>> {
        if state.config.rootfs.diff_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.store.layer_dirs(&state.record)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        state: State,
        key: Digest,
        step: &Step,
        argv: Vec<String>,
        args_env: Vec<String>,
        network: &str,
        created_by: String,
    ) -> Result<State> {
        self.executed += 1;
        let c = state.config.config.clone().unwrap_or_default();
        let network = match network {
            "host" | "default" => NetworkSpec::Host,
            "none" => NetworkSpec::None,
            other => {
                return Err(self.instruction_error(step, format!("unknown network {other:?} (host or none)")));
            }
        };
        let mut layers = self.layer_dirs(&state)?;
        if layers.is_empty() {
            layers.push(self.work.path.join("empty"));
        }
        let mut env = c.env.clone().unwrap_or_default();
        env.extend(args_env);
        let spec = ContainerSpec {
            name: format!("berth-build-{}", crate::fsutil::random_hex(6)),
            image: format!("build step {}", dockerfile::short(&step.text)),
            rootfs: runtime::RootfsSpec {
                layers,
                read_only: false,
            },
            process: runtime::ProcessSpec {
                args: argv.clone(),
                env,
                user: c.user.clone().unwrap_or_default(),
                working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
                ..Default::default()
            },
            network,
            labels: BTreeMap::from([(
                BUILD_LABEL.to_string(),
                owner_token(std::process::id()).unwrap_or_default(),
            )]),
            ..Default::default()
        };
        let container = self.runtime.create(spec)?;
        let guard = Remove(self.runtime, &container);
        let (code, output) = self.attach(&container)?;
        if code != 0 {
            return Err(BuildError::Run {
                step: format!("{}/{}", self.number, self.total),
                command: step.text.clone(),
                code,
                output,
            });
        }
        let upper = container.dir.upper();
        let skip = |rel: &str| is_runtime_stub(&upper, rel);
        let config = state.config.clone();
        let result = self.add_layer(state, key, config, created_by, |out| {
            layer::write_diff(&upper, out, &skip, None).map(|_| ())
        });
        drop(guard);
        result
    }

    /// Starts a build container attached, streams its output as events, and returns its exit code
    /// and its last lines of output.
    fn attach(&self, container: &runtime::Container) -> Result<(i32, String)> {
        use runtime::control::{exit_payload, frame, read_frame};
        self.runtime.start(container, StartMode::AttachFirst)?;
        let container = self.runtime.refresh(container)?;
        let mut stream = std::io::BufReader::new(self.runtime.attach(&container, false)?.into_stream());
        let mut tail: Vec<u8> = Vec::new();
        let mut code = None;
        while let Ok(Some((kind, data))) = read_frame(&mut stream) {
            match kind {
                frame::STDOUT | frame::STDERR => {
                    self.progress.event(Event::Output(&data));
                    tail.extend_from_slice(&data);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
                frame::EXIT => {
                    let (c, message) = exit_payload(&data);
                    if !message.is_empty() {
                        tail.extend_from_slice(message.as_bytes());
                        tail.push(b'\n');
                    }
                    code = Some(c);
                    break;
                }
                _ => {}
            }
        }
        let code = match code {
            Some(c) => c,
            None => self.runtime.wait(&container)?,
        };
        let text = String::from_utf8_lossy(&tail);
        let lines: Vec<&str> = text.lines().collect();
        let last = lines[lines.len().saturating_sub(10)..].join("\n");
        Ok((code, last))
    }

    fn copy_step(
        &mut self,
        state: State,
        step: &Step,
        cp: &CopyStep,
        lookup: &dyn Fn(&str) -> Option<String>,
        stage: Option<usize>,
    ) -> Result<State> {
        let escape = self.file.escape;
        let expand = |w: &str| shell::expand(w, escape, lookup).map_err(|e| self.instruction_error(step, e.0));
        let verb = if cp.add { "ADD" } else { "COPY" };
        let c = state.config.config.clone().unwrap_or_default();
        let workdir = c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let raw_dest = expand(&cp.dest)?;
        let dest = if raw_dest.starts_with('/') {
            copy::clean_abs(&raw_dest)
        } else {
            copy::clean_abs(&format!("{workdir}/{raw_dest}"))
        };
        let image_layers = self.layer_dirs(&state)?;
        let owner = Owner {
            ids: match &cp.chown {
                Some(spec) => Some(
                    self.chown_ids(&image_layers, &expand(spec)?)
                        .map_err(|e| self.instruction_error(step, e))?,
                ),
                None => None,
            },
            mode: match &cp.chmod {
                Some(m) => Some(
                    u32::from_str_radix(&expand(m)?, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| self.instruction_error(step, format!("invalid --chmod {m:?} (octal bits)")))?,
                ),
                None => None,
            },
        };
        let mut sources = Vec::new();
        for s in &cp.sources {
            sources.push(match s {
                Source::Path(p) => Source::Path(expand(p)?),
                Source::Inline { content, expand: true } => Source::Inline {
                    content: shell::expand(content, escape, lookup).unwrap_or_else(|_| content.clone()),
                    expand: true,
                },
                other => other.clone(),
            });
        }
        let shown: Vec<String> = sources
            .iter()
            .map(|s| match s {
                Source::Path(p) => p.clone(),
                Source::Inline { .. } => "<<EOF".into(),
            })
            .collect();
        let created_by = format!("{verb} {} {raw_dest}", shown.join(" "));
        // The root the sources come from.
        let (from_key, from_layers) = match &cp.from {
            None => (None, Vec::new()),
            Some(from) => {
                let from = expand(from)?;
                let before = stage.unwrap_or(self.file.stages.len());
                match find_stage(self.file, &from.to_ascii_lowercase(), before) {
                    Some(i) => {
                        let s = self
                            .done
                            .get(&i)
                            .cloned()
                            .ok_or_else(|| self.instruction_error(step, format!("stage {from} was not built")))?;
                        (Some(s.key.to_string()), self.layer_dirs(&s)?)
                    }
                    None => {
                        let record =
                            self.base_image(&from, &self.file.stages[before.min(self.file.stages.len() - 1)])?;
                        let layers = self.store.layer_dirs(&record)?;
                        (Some(format!("image {}", record.id)), layers)
                    }
                }
            }
        };
        let dest_is_dir_hint = raw_dest.ends_with('/')
            || sources.len() > 1
            || layer::lookup(&image_layers, &dest, true).is_some_and(|f| f.metadata.is_dir());
        let exists = |p: &str| layer::lookup(&image_layers, p, true).is_some();
        let context = self.context.clone();
        let ignore = self.ignore.clone();
        let add = cp.add;
        let work = self.work.path.clone();
        // Resolves the sources into entries (in whatever root they live) and hashes them.
        let collect = |root_dir: &Path, ignore: &Ignore| -> std::result::Result<(Vec<Entry>, String), String> {
            let root = Root { dir: root_dir, ignore };
            let mut entries: Vec<Entry> = Vec::new();
            let mut matched_many = false;
            let mut resolved = Vec::new();
            for s in &sources {
                match s {
                    Source::Path(p) if add && (p.starts_with("http://") || p.starts_with("https://")) => {
                        resolved.push(Resolved::Url(p.clone(), download(p, &work)?));
                    }
                    Source::Path(p) => {
                        let m = copy::resolve(&root, p)?;
                        matched_many |= m.len() > 1 || copy::has_wildcards(p);
                        resolved.extend(m.into_iter().map(Resolved::Local));
                    }
                    Source::Inline { content, .. } => resolved.push(Resolved::Inline(content.clone())),
                }
            }
            let into_dir = dest_is_dir_hint || matched_many;
            for r in resolved {
                match r {
                    Resolved::Local(m) => {
                        let is_dir = m.meta.is_dir();
                        let name = Path::new(&m.rel).file_name().map(|n| n.to_string_lossy().into_owned());
                        let target = match (is_dir, into_dir, name) {
                            (true, _, _) => dest.clone(),
                            (false, true, Some(n)) => format!("{}/{n}", dest.trim_end_matches('/')),
                            _ => dest.clone(),
                        };
                        if add && m.meta.is_file() && copy::is_archive(&m.host) {
                            if !exists(&dest) && !entries.iter().any(|e| e.path == dest) {
                                entries.push(owner.entry(dest.clone(), Content::Dir, 0o755));
                            }
                            entries.push(owner.entry(dest.clone(), Content::Archive(m.host.clone()), 0o755));
                            continue;
                        }
                        copy::entries_for(&root, &m, &target, owner, &mut entries)
                            .map_err(|e| format!("{}: {e}", m.rel))?;
                    }
                    Resolved::Url(url, path) => {
                        let name = url
                            .rsplit('/')
                            .next()
                            .filter(|n| !n.is_empty())
                            .unwrap_or("download")
                            .to_string();
                        let target = if into_dir {
                            format!("{}/{name}", dest.trim_end_matches('/'))
                        } else {
                            dest.clone()
                        };
                        entries.push(owner.entry(target, Content::File(path), owner.mode.unwrap_or(0o600)));
                    }
                    Resolved::Inline(content) => {
                        let target = if into_dir {
                            format!("{}/EOF", dest.trim_end_matches('/'))
                        } else {
                            dest.clone()
                        };
                        let bytes = Content::Bytes(content.into_bytes());
                        entries.push(owner.entry(target, bytes, owner.mode.unwrap_or(0o644)));
                    }
                }
            }
            // An entry at the destination that the image has as a directory only merges into it.
            entries.retain(|e| {
                !(matches!(e.content, Content::Dir) && e.path == dest && exists(&dest) && owner.ids.is_none())
            });
            copy::add_parents(&mut entries, &exists, owner);
            let hash = copy::hash(&entries).map_err(|e| format!("reading the sources: {e}"))?;
            Ok((entries, hash))
        };
        let what = json!([verb, cp.from, cp.chown, cp.chmod, dest, shown]);
        let key_of = |hash: &str| chain(&state.key, &json!([what, from_key, hash]));
        let config = state.config.clone();
        match (&cp.from, from_layers.len()) {
            (None, _) => {
                let (entries, hash) = collect(&context, &ignore).map_err(|e| self.instruction_error(step, e))?;
                self.copy_commit(state.clone(), key_of(&hash), config, created_by, entries)
            }
            (Some(_), 0) => {
                let empty = self.work.path.join("empty");
                let (entries, hash) =
                    collect(&empty, &Ignore::default()).map_err(|e| self.instruction_error(step, e))?;
                self.copy_commit(state.clone(), key_of(&hash), config, created_by, entries)
            }
            (Some(_), _) => {
                // The source's file system exists only as layers: mount them in a private mount
                // namespace on a thread of its own, resolve and write there.
                let mount_point = self.work.path.join(format!("from-{}", crate::fsutil::random_hex(4)));
                std::fs::create_dir_all(&mount_point).map_err(BuildError::io("create", &mount_point))?;
                let none = Ignore::default();
                let this = &*self;
                let (result, hit) = with_layers(&from_layers, &mount_point, |root| -> Result<(State, bool)> {
                    let (entries, hash) = collect(root, &none).map_err(|e| this.instruction_error(step, e))?;
                    let key = key_of(&hash);
                    if let Some(hit) = this.cached(&key)? {
                        return Ok((hit, true));
                    }
                    let layer = this.add_layer(state.clone(), key, config, created_by, |out| {
                        copy::write_tar(&entries, out)
                    })?;
                    Ok((layer, false))
                })
                .map_err(|e| self.instruction_error(step, format!("cannot mount the source's layers: {e}")))??;
                if hit {
                    self.hit();
                } else {
                    self.executed += 1;
                }
                Ok(result)
            }
        }
    }

    fn copy_commit(
        &mut self,
        state: State,
        key: Digest,
        config: ImageConfig,
        created_by: String,
        entries: Vec<Entry>,
    ) -> Result<State> {
        if let Some(hit) = self.cached(&key)? {
            self.hit();
            return Ok(hit);
        }
        self.executed += 1;
        self.add_layer(state, key, config, created_by, |out| copy::write_tar(&entries, out))
    }

    /// `--chown` as numeric ids, names looked up in the image's /etc/passwd and /etc/group.
    fn chown_ids(&self, layers: &[PathBuf], spec: &str) -> std::result::Result<(u64, u64), String> {
        let passwd = layer::read_file(layers, "/etc/passwd").map(|b| String::from_utf8_lossy(&b).into_owned());
        let group = layer::read_file(layers, "/etc/group").map(|b| String::from_utf8_lossy(&b).into_owned());
        // `user[:group]` as the runtime resolves a container's user: the group, when named, replaces the user's.
        let resolved = runtime::process::resolve_user(spec, &[], passwd.as_deref(), group.as_deref())
            .map_err(|e| format!("--chown={spec}: {e}"))?;
        Ok((resolved.uid as u64, resolved.gid as u64))
    }
}

enum Resolved {
    Local(copy::Matched),
    Url(String, PathBuf),
    Inline(String),
}

/// Removes a build container when dropped.
struct Remove<'a>(&'a Runtime, &'a runtime::Container);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        if let Ok(c) = self.0.refresh(self.1) {
            let _ = self.0.delete(&c, true);
        }
    }
}

/// Who owns a build container, as its `BUILD_LABEL` says: the building process's pid and start time (in clock
/// ticks after boot), so that a pid the kernel has given to another process since does not pass for the owner.
fn owner_token(pid: u32) -> Option<String> {
    Some(format!("{pid}:{}", crate::runtime::process::start_ticks(pid)?))
}

/// Removes the containers of builds whose process is gone: killed, or interrupted before it could remove
/// its step's container (which may still be running the step's command).
fn sweep_abandoned(runtime: &Runtime) {
    let Ok(all) = runtime.list() else { return };
    for c in all {
        let Some(owner) = c.config.spec.labels.get(BUILD_LABEL) else {
            continue;
        };
        let pid = owner.split_once(':').and_then(|(pid, _)| pid.parse::<u32>().ok());
        if pid.and_then(owner_token).as_ref() != Some(owner) {
            let _ = runtime.delete(&c, true);
        }
    }
}

/// Mount points the runtime adds to a container's root (left out of layers): the generated /etc
/// files, and the /proc, /sys, /dev directories when they are empty.
fn is_runtime_stub(upper: &Path, rel: &str) -> bool {
    match rel {
        "etc/hosts" | "etc/hostname" | "etc/resolv.conf" => true,
        "proc" | "sys" | "dev" => std::fs::read_dir(upper.join(rel))
            .map(|mut d| d.next().is_none())
            .unwrap_or(false),
        _ => false,
    }
}

/// Runs `f` with `layers` (top-most first) visible as one read-only tree: the only layer itself,
/// or an overlay mounted on `mount_point` in a mount namespace private to a new thread (so the
/// mount disappears with it and nobody else sees it).
fn with_layers<T: Send>(
    layers: &[PathBuf],
    mount_point: &Path,
    f: impl FnOnce(&Path) -> T + Send,
) -> std::io::Result<T> {
    if layers.len() == 1 {
        return Ok(f(&layers[0]));
    }
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<T> {
            use nix::mount::{MsFlags, mount};
            use nix::sched::{CloneFlags, unshare};
            unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(std::io::Error::from)?;
            let lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
            let options = format!("lowerdir={}", lower.join(":"));
            mount(
                Some("overlay"),
                mount_point,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )
            .map_err(std::io::Error::from)?;
            Ok(f(mount_point))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the layer reader panicked")))
    })
}

/// Fetches an `ADD` URL into the build's scratch space.
fn download(url: &str, work: &Path) -> std::result::Result<PathBuf, String> {
    let agent = crate::image::registry::http_agent(ureq::config::Config::default());
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| format!("cannot fetch {url}: {e} (ADD of a URL needs network access to it)"))?;
    let path = work.join(format!("download-{}", crate::fsutil::random_hex(6)));
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::copy(&mut response.body_mut().as_reader(), &mut file).map_err(|e| format!("cannot fetch {url}: {e}"))?;
    Ok(path)
}

fn history(created_by: String, empty_layer: bool) -> History {
    History {
        created: Some(jiff::Timestamp::now().to_string()),
        created_by: Some(created_by),
        author: None,
        comment: Some(HISTORY_COMMENT.into()),
        empty_layer,
    }
}

/// A command's argv: exec form as is, shell form through the stage's `SHELL`.
fn command_argv(c: &ContainerConfig, cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut argv = c.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            argv.push(s.clone());
            argv
        }
    }
}

/// Go's `%q` of a string list, as Docker prints CMD and ENTRYPOINT in history.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config's healthcheck for `HEALTHCHECK`, and its history text (Go's printout of Docker's
/// struct: test, interval, timeout, start period, retries as a rune).
fn healthcheck(c: &ContainerConfig, h: &Health) -> std::result::Result<(serde_json::Value, String), String> {
    let (test, options) = match h {
        Health::None => (vec!["NONE".to_string()], &Vec::new()),
        Health::Check { options, command } => {
            let test = match command {
                Command::Exec(v) => std::iter::once("CMD".to_string()).chain(v.iter().cloned()).collect(),
                Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            (test, options)
        }
    };
    let _ = c;
    let mut value = json!({ "Test": test });
    let mut times = [0i128; 4];
    let mut retries = 0u32;
    for (name, v) in options {
        let slot = match name.as_str() {
            "interval" => 0,
            "timeout" => 1,
            "start-period" => 2,
            "start-interval" => 3,
            "retries" => {
                retries = v.parse().map_err(|_| format!("invalid --retries {v:?}"))?;
                continue;
            }
            _ => continue,
        };
        let ns = crate::compose::units::parse_duration(v).map_err(|e| format!("invalid --{name} {v:?}: {e}"))?;
        if ns < 0 {
            return Err(format!("--{name} cannot be negative"));
        }
        times[slot] = ns;
    }
    for (i, key) in ["Interval", "Timeout", "StartPeriod", "StartInterval"]
        .iter()
        .enumerate()
    {
        if times[i] > 0 {
            value[*key] = json!(times[i] as u64);
        }
    }
    if retries > 0 {
        value["Retries"] = json!(retries);
    }
    let d = |ns: i128| go_quote(&crate::compose::units::format_duration(ns));
    let rune = if (0x20..0x7f).contains(&retries) {
        format!("'{}'", char::from_u32(retries).unwrap_or('?'))
    } else {
        format!("'\\x{retries:02x}'")
    };
    let test_quoted: Vec<String> = test.iter().map(|s| go_quote(s)).collect();
    let shown = format!(
        "&{{[{}] {} {} {} {rune}}}",
        test_quoted.join(" "),
        d(times[0]),
        d(times[1]),
        d(times[2])
    );
    Ok((value, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_texts_follow_docker() {
        assert_eq!(
            go_quoted_list(&["/bin/sh".into(), "-c".into(), "echo \"$a\"".into()]),
            r#"["/bin/sh" "-c" "echo \"$a\""]"#
        );
        let c = ContainerConfig::default();
        let (v, shown) = healthcheck(
            &c,
            &Health::Check {
                options: vec![
                    ("interval".into(), "30s".into()),
                    ("timeout".into(), "5s".into()),
                    ("retries".into(), "3".into()),
                    ("start-period".into(), "10s".into()),
                ],
                command: Command::Exec(vec!["/bin/true".into()]),
            },
        )
        .unwrap();
        assert_eq!(shown, r#"&{["CMD" "/bin/true"] "30s" "5s" "10s" '\x03'}"#);
        assert_eq!(v["Interval"], json!(30_000_000_000u64));
        let (_, shown) = healthcheck(&c, &Health::None).unwrap();
        assert_eq!(shown, r#"&{["NONE"] "0s" "0s" "0s" '\x00'}"#);
    }

    #[test]
    fn needed_stages_follow_bases_and_copies() {
        let f = dockerfile::parse(
            "FROM a AS one\nFROM b AS two\nFROM one AS three\nCOPY --from=two /x /x\nFROM c\n",
            "Dockerfile",
        )
        .unwrap();
        assert_eq!(needed_stages(&f, 2).unwrap(), vec![0, 1, 2]);
        assert_eq!(needed_stages(&f, 3).unwrap(), vec![3]);
    }
}
