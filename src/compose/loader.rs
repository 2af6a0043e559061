//! The loader's phases in order (see docs/loading.md): discover files, read `.env`, then per file
//! parse → schema → interpolate → canonical → extends → include, then merge, name, profiles,
//! defaults and semantic checks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use super::canonical::{self, PathCtx};
use super::error::LoadError;
use super::merge;
use super::yaml::{self, Map, Node, Value};
use super::{LoadOptions, Project, defaults, dotenv, schema, typecast, validate};

/// Base names looked for, in order of preference.
pub const CANDIDATES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
/// Override files applied automatically after a discovered file, in order of preference.
pub const OVERRIDES: &[&str] = &[
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// The file name that stands for standard input.
const STDIN: &str = "-";

/// Environment used for interpolation: `.env` values overlaid by the OS environment.
pub type Env = IndexMap<String, String>;

/// Loads a project as described by `opts`.
pub fn load(opts: &LoadOptions) -> Result<Project, LoadError> {
    let working_dir = absolute(&opts.working_dir, Path::new("/"));
    let project_directory = opts.project_directory.as_ref().map(|p| absolute(p, &working_dir));

    // COMPOSE_* variables may come from a .env next to where we start.
    let pre_env_dir = project_directory.clone().unwrap_or_else(|| working_dir.clone());
    let pre_env = read_env(opts, &working_dir, &pre_env_dir)?;
    let sep = pre_env
        .get("COMPOSE_PATH_SEPARATOR")
        .cloned()
        .unwrap_or_else(|| ":".into());

    // `-f -` reads the compose file from standard input.
    let mut files: Vec<PathBuf> = opts
        .files
        .iter()
        .map(|f| {
            if f.as_os_str() == STDIN {
                f.clone()
            } else {
                absolute(f, &working_dir)
            }
        })
        .collect();
    if files.is_empty()
        && let Some(list) = pre_env.get("COMPOSE_FILE").filter(|s| !s.is_empty())
    {
        files = list
            .split(sep.as_str())
            .filter(|s| !s.is_empty())
            .map(|f| absolute(Path::new(f), &working_dir))
            .collect();
    }
    if files.is_empty() {
        files = discover(&working_dir)?;
    }
    let project_dir = match &project_directory {
        Some(d) => d.clone(),
        None => files
            .first()
            .filter(|f| f.as_os_str() != STDIN)
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| working_dir.clone()),
    };
    let mut env = if project_dir == pre_env_dir {
        pre_env
    } else {
        read_env(opts, &working_dir, &project_dir)?
    };

    // The name is known before interpolation, so files can use ${COMPOSE_PROJECT_NAME}.
    let started = std::time::Instant::now();
    let parsed: Vec<Vec<Node>> = files.iter().map(|f| parse_file(f, opts)).collect::<Result<_, _>>()?;
    tracing::debug!(elapsed = ?started.elapsed(), "parsed and schema-checked");
    let name = project_name(opts, &env, &parsed, &project_dir)?;
    env.entry("COMPOSE_PROJECT_NAME".into()).or_insert_with(|| name.clone());

    let mut merged: Option<Node> = None;
    for (file, docs) in files.iter().zip(parsed) {
        let node = load_file(file, docs, &project_dir, &env, opts, &mut Vec::new())?;
        merged = Some(match merged {
            None => node,
            Some(base) => merge::merge_project(base, node),
        });
    }
    let mut root = merged.unwrap_or_else(Node::map);
    tracing::debug!(elapsed = ?started.elapsed(), "interpolated, canonicalised and merged");
    let profiles = active_profiles(opts, &env);
    let all_profiles = declared_profiles(&root);
    let disabled = profiles_filter(&mut root, &profiles, &opts.services);
    defaults::apply(&mut root, &name, &env)?;
    validate::check(&mut root, &disabled)?;
    defaults::finish(&mut root);
    if !opts.services.is_empty() {
        select_services(&mut root, &opts.services)?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "defaults applied and checked");
    let mut canonical = root.to_json();
    if let Some(obj) = canonical.as_object_mut() {
        obj.shift_remove("version");
        obj.insert("name".into(), serde_json::Value::String(name.clone()));
    }
    Project::from_canonical(name, project_dir, files, all_profiles, canonical)
}

/// Makes `p` absolute against `base`, cleaning `.` and `..`.
fn absolute(p: &Path, base: &Path) -> PathBuf {
    canonical::clean(&if p.is_absolute() { p.to_path_buf() } else { base.join(p) })
}

/// Finds the compose file in `dir` or its parents, plus its automatic override.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if let Some(found) = CANDIDATES.iter().map(|c| d.join(c)).find(|p| p.is_file()) {
            let mut files = vec![found];
            if let Some(o) = OVERRIDES.iter().map(|c| d.join(c)).find(|p| p.is_file()) {
                files.push(o);
            }
            return Ok(files);
        }
        cur = d.parent();
    }
    Err(LoadError::NotFound { dir: dir.to_path_buf() })
}

/// Reads the dotenv files (`--env-file`s, else `<dir>/.env`) and overlays the OS environment.
fn read_env(opts: &LoadOptions, working_dir: &Path, dir: &Path) -> Result<Env, LoadError> {
    let mut env = Env::new();
    let explicit = !opts.env_files.is_empty();
    let paths: Vec<PathBuf> = if explicit {
        opts.env_files.iter().map(|f| absolute(f, working_dir)).collect()
    } else {
        vec![dir.join(".env")]
    };
    for path in paths {
        if !explicit && !path.is_file() {
            continue;
        }
        let vars = read_dotenv(&path, &opts.environment, &env)?;
        env.extend(vars);
    }
    for (k, v) in &opts.environment {
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

/// Parses one dotenv file; variables it references resolve from `os` first, then `earlier`.
pub fn read_dotenv(path: &Path, os: &Env, earlier: &Env) -> Result<Env, LoadError> {
    let src = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    let lookup = |k: &str| os.get(k).or_else(|| earlier.get(k)).cloned();
    dotenv::parse(&src, &lookup).map_err(|error| LoadError::Dotenv {
        path: path.to_path_buf(),
        error,
    })
}

/// How a file's name appears in error messages: relative to the working directory when inside it.
fn display_name(file: &Path, opts: &LoadOptions) -> Arc<str> {
    let shown = file
        .strip_prefix(&opts.working_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| file.to_path_buf());
    Arc::from(shown.to_string_lossy().as_ref())
}

/// Parses one file and checks each of its documents against the schema.
fn parse_file(file: &Path, opts: &LoadOptions) -> Result<Vec<Node>, LoadError> {
    let src = if file.as_os_str() == STDIN {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf).map_err(|e| LoadError::io("<stdin>", e))?;
        buf
    } else {
        std::fs::read_to_string(file).map_err(|e| LoadError::io(file, e))?
    };
    let name = display_name(file, opts);
    let docs: Vec<Node> = yaml::parse(&src, &name)?.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(LoadError::invalid(
            Some(super::error::Location {
                file: name,
                line: 1,
                col: 1,
            }),
            "",
            "empty compose file",
        ));
    }
    tracing::trace!(file = %file.display(), "parsed");
    for doc in &docs {
        if doc.as_map().is_none() {
            return Err(LoadError::invalid(
                doc.loc.clone(),
                "",
                format!("top-level object must be a mapping, not {}", doc.type_name()),
            ));
        }
        schema::validate(doc)?;
    }
    Ok(docs)
}

/// Parses, validates and interpolates one file, without resolving extends or include.
fn read_tree(file: &Path, env: &Env, opts: &LoadOptions) -> Result<Node, LoadError> {
    interpolate_docs(parse_file(file, opts)?, env, opts)
}

/// Interpolates a file's documents and merges them into one tree.
fn interpolate_docs(docs: Vec<Node>, env: &Env, opts: &LoadOptions) -> Result<Node, LoadError> {
    let mut root: Option<Node> = None;
    for mut doc in docs {
        if opts.interpolate {
            let lookup = |k: &str| env.get(k).cloned();
            typecast::interpolate_tree(&mut doc, &lookup)?;
        }
        root = Some(match root {
            None => doc,
            Some(base) => merge::merge_project(base, doc),
        });
    }
    Ok(root.unwrap_or_else(Node::map))
}

/// Loads one compose file into canonical form: `base_dir` is what its relative paths resolve against.
/// `chain` holds the files being included above this one, to refuse include cycles.
fn load_file(
    file: &Path,
    docs: Vec<Node>,
    base_dir: &Path,
    env: &Env,
    opts: &LoadOptions,
    chain: &mut Vec<PathBuf>,
) -> Result<Node, LoadError> {
    let mut root = interpolate_docs(docs, env, opts)?;
    canonical::canonicalize(
        &mut root,
        &PathCtx {
            base_dir,
            home: opts.home.as_deref(),
        },
    )?;
    resolve_extends(&mut root, file, env, opts)?;
    chain.push(file.to_path_buf());
    let r = resolve_includes(&mut root, file, base_dir, env, opts, chain);
    chain.pop();
    r?;
    Ok(root)
}

fn resolve_extends(root: &mut Node, file: &Path, env: &Env, opts: &LoadOptions) -> Result<(), LoadError> {
    let names: Vec<String> = match root.get("services").and_then(Node::as_map) {
        Some(s) => s
            .iter()
            .filter(|(_, v)| v.get("extends").is_some())
            .map(|(k, _)| k.clone())
            .collect(),
        None => return Ok(()),
    };
    if names.is_empty() {
        return Ok(());
    }
    let mut extender = Extender {
        env,
        opts,
        root_file: file.to_path_buf(),
        others: HashMap::new(),
        resolved: HashMap::new(),
    };
    let mut resolved = Vec::with_capacity(names.len());
    for name in names {
        let r = extender.resolve(root, &name)?;
        resolved.push((name, r));
    }
    if let Some(services) = root
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    {
        for (name, r) in resolved {
            services.insert(name, r);
        }
    }
    Ok(())
}

/// Resolves `extends` chains, within a file and across files, without recursion: each chain is
/// followed to its base and folded back, every step is memoised, and every other file is read
/// once. Long or ping-ponging chains cost linear time and no stack.
struct Extender<'a> {
    env: &'a Env,
    opts: &'a LoadOptions,
    /// The file whose services are being resolved.
    root_file: PathBuf,
    /// Other files reached through `extends.file`, canonicalised against their own directory.
    others: HashMap<PathBuf, Node>,
    /// Resolved services by (file, name).
    resolved: HashMap<(PathBuf, String), Node>,
}

impl Extender<'_> {
    /// Service `name` of the root file (`root`) with its `extends` chain applied.
    fn resolve(&mut self, root: &Node, name: &str) -> Result<Node, LoadError> {
        let mut chain: Vec<((PathBuf, String), Node)> = Vec::new();
        let mut on_chain: HashSet<(PathBuf, String)> = HashSet::new();
        let root_file = self.root_file.clone();
        let mut at = (root_file.clone(), name.to_string());
        let mut base: Option<Node> = None;
        loop {
            if let Some(done) = self.resolved.get(&at) {
                base = Some(done.clone());
                break;
            }
            if !on_chain.insert(at.clone()) {
                let mut names: Vec<String> = chain.iter().map(|((_, n), _)| n.clone()).collect();
                names.push(at.1.clone());
                let loc = root
                    .get("services")
                    .and_then(|s| s.get(name))
                    .and_then(|s| s.get("extends"))
                    .and_then(|e| e.loc.clone());
                return Err(LoadError::invalid(
                    loc,
                    format!("services.{name}.extends"),
                    format!("circular extends: {}", names.join(" -> ")),
                ));
            }
            let tree = if at.0 == root_file { root } else { self.other(&at.0)? };
            let svc = tree
                .get("services")
                .and_then(|s| s.get(&at.1))
                .cloned()
                .ok_or_else(|| {
                    LoadError::invalid(
                        tree.loc.clone(),
                        format!("services.{}", at.1),
                        format!(
                            "cannot extend service {:?}: it is not defined in {}",
                            at.1,
                            at.0.display()
                        ),
                    )
                })?;
            let next = match svc.get("extends") {
                None => None,
                Some(ext) => Some(Self::target(&root_file, tree, ext, &at)?),
            };
            chain.push((at, svc));
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        // Fold the chain from its base upwards, remembering every step.
        for (key, svc) in chain.into_iter().rev() {
            let mut own = svc;
            if let Some(m) = own.as_map_mut() {
                m.shift_remove("extends");
            }
            let merged = match base.take() {
                Some(b) => merge::merge_service(b, own),
                None => own,
            };
            self.resolved.insert(key, merged.clone());
            base = Some(merged);
        }
        base.ok_or_else(|| LoadError::invalid(None, format!("services.{name}"), "empty extends chain"))
    }

    /// Where `extends` (found in service `at` of `tree`) points: (file, service), checked to exist.
    fn target(
        root_file: &Path,
        tree: &Node,
        ext: &Node,
        at: &(PathBuf, String),
    ) -> Result<(PathBuf, String), LoadError> {
        let path = format!("services.{}.extends", at.1);
        let dir = at.0.parent().unwrap_or(Path::new("/"));
        let (service, file) = match &ext.value {
            Value::Str(s) => (s.clone(), at.0.clone()),
            Value::Map(m) => (
                m.get("service")
                    .and_then(Node::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| LoadError::invalid(ext.loc.clone(), &path, "service is required"))?,
                m.get("file")
                    .and_then(Node::as_str)
                    .map_or_else(|| at.0.clone(), |f| absolute(Path::new(f), dir)),
            ),
            _ => {
                return Err(LoadError::invalid(
                    ext.loc.clone(),
                    &path,
                    "must be a service name or a mapping",
                ));
            }
        };
        if file != at.0 && file != root_file && !file.is_file() {
            return Err(LoadError::invalid(
                ext.loc.clone(),
                format!("{path}.file"),
                format!("cannot read {}: file not found", file.display()),
            ));
        }
        if file == at.0 && tree.get("services").and_then(|s| s.get(&service)).is_none() {
            return Err(LoadError::invalid(
                ext.loc.clone(),
                &path,
                format!(
                    "cannot extend service {service:?}: no such service in {}",
                    file.display()
                ),
            ));
        }
        Ok((file, service))
    }

    /// Another file's tree, read and canonicalised against its own directory on first use.
    /// Only its services are used: its top-level resources are not imported, so a reference to one
    /// of them fails later as undefined, as in Compose.
    fn other(&mut self, file: &Path) -> Result<&Node, LoadError> {
        if !self.others.contains_key(file) {
            let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            let mut tree = read_tree(file, self.env, self.opts)?;
            canonical::canonicalize(
                &mut tree,
                &PathCtx {
                    base_dir: &dir,
                    home: self.opts.home.as_deref(),
                },
            )?;
            self.others.insert(file.to_path_buf(), tree);
        }
        self.others
            .get(file)
            .ok_or_else(|| LoadError::invalid(None, "", format!("internal error: {} not cached", file.display())))
    }
}

fn resolve_includes(
    root: &mut Node,
    file: &Path,
    base_dir: &Path,
    env: &Env,
    opts: &LoadOptions,
    chain: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    let Some(includes) = root.as_map_mut().and_then(|m| m.shift_remove("include")) else {
        return Ok(());
    };
    let Some(items) = includes.as_seq() else { return Ok(()) };
    let file_dir = file.parent().unwrap_or(base_dir).to_path_buf();
    for (i, item) in items.iter().enumerate() {
        let key = format!("include[{i}]");
        let (paths, project_dir, env_files): (Vec<PathBuf>, Option<PathBuf>, Vec<PathBuf>) = match &item.value {
            Value::Str(s) => (vec![absolute(Path::new(s), &file_dir)], None, Vec::new()),
            Value::Map(m) => {
                let paths = match m.get("path").map(|p| &p.value) {
                    Some(Value::Str(s)) => vec![absolute(Path::new(s), &file_dir)],
                    Some(Value::Seq(ps)) => ps
                        .iter()
                        .filter_map(Node::as_str)
                        .map(|s| absolute(Path::new(s), &file_dir))
                        .collect(),
                    _ => return Err(LoadError::invalid(item.loc.clone(), &key, "path is required")),
                };
                let pd = m
                    .get("project_directory")
                    .and_then(Node::as_str)
                    .map(|d| absolute(Path::new(d), &file_dir));
                let ef = match m.get("env_file").map(|p| &p.value) {
                    Some(Value::Str(s)) => vec![absolute(Path::new(s), &file_dir)],
                    Some(Value::Seq(ps)) => ps
                        .iter()
                        .filter_map(Node::as_str)
                        .map(|s| absolute(Path::new(s), &file_dir))
                        .collect(),
                    _ => Vec::new(),
                };
                (paths, pd, ef)
            }
            _ => {
                return Err(LoadError::invalid(
                    item.loc.clone(),
                    &key,
                    "must be a path or a mapping",
                ));
            }
        };
        let Some(first) = paths.first() else { continue };
        let inc_dir = project_dir.unwrap_or_else(|| first.parent().unwrap_or(&file_dir).to_path_buf());
        // The included project sees its own .env (or env_file), overlaid by the including project's environment.
        let mut inc_env = Env::new();
        let env_paths = if env_files.is_empty() {
            vec![inc_dir.join(".env")]
        } else {
            env_files
        };
        for p in env_paths {
            if p.is_file() {
                inc_env.extend(read_dotenv(&p, &opts.environment, &inc_env)?);
            }
        }
        for (k, v) in env {
            inc_env.insert(k.clone(), v.clone());
        }
        let mut sub: Option<Node> = None;
        for p in &paths {
            if chain.contains(p) {
                return Err(LoadError::invalid(
                    item.loc.clone(),
                    &key,
                    format!("include cycle: {} includes itself", p.display()),
                ));
            }
            if !p.is_file() {
                return Err(LoadError::invalid(
                    item.loc.clone(),
                    &key,
                    format!("cannot include {}: file not found", p.display()),
                ));
            }
            let n = load_file(p, parse_file(p, opts)?, &inc_dir, &inc_env, opts, chain)?;
            sub = Some(match sub {
                None => n,
                Some(b) => merge::merge_project(b, n),
            });
        }
        if let Some(sub) = sub {
            import(root, sub, &key, item)?;
        }
    }
    Ok(())
}

/// Adds an included project's resources; a name defined on both sides with different content is an error.
fn import(root: &mut Node, sub: Node, key: &str, item: &Node) -> Result<(), LoadError> {
    let Value::Map(sub) = sub.value else { return Ok(()) };
    let Some(top) = root.as_map_mut() else { return Ok(()) };
    for kind in ["services", "networks", "volumes", "secrets", "configs", "models"] {
        let Some(Value::Map(items)) = sub.get(kind).map(|n| n.value.clone()) else {
            continue;
        };
        let target = top.entry(kind.to_string()).or_insert_with(Node::map);
        if target.is_null() {
            *target = Node::map();
        }
        let Some(dst) = target.as_map_mut() else { continue };
        for (name, def) in items {
            match dst.get(&name) {
                Some(existing) if existing.to_json() != def.to_json() => {
                    return Err(LoadError::invalid(
                        item.loc.clone(),
                        key,
                        format!("{kind}.{name} conflicts with imported resource"),
                    ));
                }
                Some(_) => {}
                None => {
                    dst.insert(name, def);
                }
            }
        }
    }
    Ok(())
}

/// Normalises a folder name into a project name as Compose does.
pub fn normalize_project_name(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    lowered.trim_start_matches(['_', '-']).to_string()
}

/// True for names Compose accepts as given.
pub fn is_valid_project_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `-p`, then `COMPOSE_PROJECT_NAME`, then the last file's `name:` (interpolated), then the folder.
/// Explicit names must be valid; the others are normalised.
fn project_name(opts: &LoadOptions, env: &Env, files: &[Vec<Node>], project_dir: &Path) -> Result<String, LoadError> {
    let explicit = opts
        .project_name
        .clone()
        .or_else(|| env.get("COMPOSE_PROJECT_NAME").filter(|s| !s.is_empty()).cloned());
    if let Some(n) = explicit {
        return if is_valid_project_name(&n) {
            Ok(n)
        } else {
            Err(LoadError::ProjectName { name: n })
        };
    }
    let field = files.iter().flatten().filter_map(|doc| doc.get("name")).next_back();
    let from_field = match field {
        Some(node) => {
            let mut node = node.clone();
            if opts.interpolate {
                let lookup = |k: &str| env.get(k).cloned();
                typecast::interpolate_tree(&mut node, &lookup)?;
            }
            node.scalar_text().filter(|s| !s.is_empty())
        }
        None => None,
    };
    let raw = from_field.unwrap_or_else(|| {
        project_dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let n = normalize_project_name(&raw);
    if n.is_empty() {
        return Err(LoadError::ProjectName { name: raw });
    }
    Ok(n)
}

fn active_profiles(opts: &LoadOptions, env: &Env) -> Vec<String> {
    if !opts.profiles.is_empty() {
        return opts.profiles.clone();
    }
    env.get("COMPOSE_PROFILES")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Every profile declared by any service, sorted and de-duplicated.
fn declared_profiles(root: &Node) -> Vec<String> {
    let mut out: Vec<String> = services(root)
        .into_iter()
        .flat_map(|s| s.values())
        .flat_map(|svc| svc.get("profiles").and_then(Node::as_seq).into_iter().flatten())
        .filter_map(Node::scalar_text)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Removes services whose profiles are not active; returns their names.
fn profiles_filter(root: &mut Node, active: &[String], named: &[String]) -> HashSet<String> {
    let mut disabled = HashSet::new();
    let Some(services) = root
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    else {
        return disabled;
    };
    let mut active: Vec<String> = active.to_vec();
    for n in named {
        if let Some(ps) = services.get(n).and_then(|s| s.get("profiles")).and_then(Node::as_seq) {
            active.extend(ps.iter().filter_map(Node::scalar_text));
        }
    }
    services.retain(|name, svc| {
        let enabled = match svc.get("profiles").and_then(Node::as_seq) {
            None => true,
            Some(ps) if ps.is_empty() => true,
            Some(ps) => {
                named.contains(name)
                    || ps
                        .iter()
                        .filter_map(Node::scalar_text)
                        .any(|p| active.iter().any(|a| a == &p || a == "*"))
            }
        };
        if !enabled {
            disabled.insert(name.clone());
        }
        enabled
    });
    disabled
}

/// Keeps only the named services and what they depend on.
fn select_services(root: &mut Node, names: &[String]) -> Result<(), LoadError> {
    let Some(services) = root
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    else {
        return Ok(());
    };
    let mut keep: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = names.to_vec();
    while let Some(n) = todo.pop() {
        let Some(svc) = services.get(&n) else {
            return Err(LoadError::invalid(None, "", format!("no such service: {n}")));
        };
        if keep.insert(n.clone())
            && let Some(deps) = svc.get("depends_on").and_then(Node::as_map)
        {
            todo.extend(deps.keys().cloned());
        }
    }
    services.retain(|k, _| keep.contains(k));
    Ok(())
}

/// Reads a `services` map out of a tree, for callers that need it.
pub fn services(root: &Node) -> Option<&Map> {
    root.get("services").and_then(Node::as_map)
}
