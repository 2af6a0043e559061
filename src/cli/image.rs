//! `berth image …` (with the `images` and `rmi` shortcuts) and `berth login`/`logout`: the image store
//! and registry commands, with Docker's flags, columns and messages.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::container::{human_duration, human_size, since, write_table};
use super::{Cli, Result};
use crate::image::archive::{self, SaveTarget};
use crate::image::auth::DockerConfig;
use crate::image::import::{self, ImportOptions};
use crate::image::oci::ContainerConfig;
use crate::image::oci::Platform;
use crate::image::pull::{self, PullOptions};
use crate::image::push;
use crate::image::reference::{Digest, Reference};
use crate::image::registry::{Client, Credentials, RegistryOptions};
use crate::image::store::{Removed, Store};
use crate::image::{ImageError, Progress};
use crate::runtime::Runtime;

/// Output formats of `image ls`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    /// Docker's columns.
    Table,
    /// One JSON object per line, with Docker's field names.
    Json,
}

// `image ls` flags (also `berth images`).
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Show all images (berth keeps no intermediate images, so this changes nothing).
    #[arg(short, long)]
    all: bool,
    /// Only print ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
    /// Filter: `dangling=true|false`, `reference=PATTERN`.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Only images of this repository (and tag).
    repository: Option<String>,
}

// `image rm` flags (also `berth rmi`).
#[derive(Debug, Clone, Args)]
pub struct RmArgs {
    /// Untag an image that containers use, and remove an id with several tags.
    #[arg(short, long)]
    pub force: bool,
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `berth image` verbs.
#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked (or its help is shown): building
// every argument of every verb cost about 2 ms at each start of the CLI.
#[command(defer = true)]
pub enum ImageCommand {
    /// Build an image from a Dockerfile.
    Build(super::build::BuildArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Download an image from a registry.
    Pull {
        /// Platform to pick from a multi-platform image, `os/arch[/variant]`.
        #[arg(long)]
        platform: Option<String>,
        /// Print only the image name.
        #[arg(short, long)]
        quiet: bool,
        /// Speak plain HTTP to this registry (repeatable; loopback registries always are).
        #[arg(long, value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
        /// Image reference.
        name: String,
    },
    /// Upload an image to a registry.
    Push {
        /// Print only the digest line.
        #[arg(short, long)]
        quiet: bool,
        /// Speak plain HTTP to this registry (repeatable; loopback registries always are).
        #[arg(long, value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
        /// Image reference.
        name: String,
    },
    /// Remove images (untag them when others use or share them).
    #[command(alias = "remove", alias = "rmi")]
    Rm(RmArgs),
    /// Give an image another name.
    Tag {
        /// Image to tag.
        source: String,
        /// New name.
        target: String,
    },
    /// Show images' config and store details as JSON.
    Inspect {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the steps an image was made of.
    History {
        /// Don't truncate the commands.
        #[arg(long)]
        no_trunc: bool,
        /// Only print layer ids.
        #[arg(short, long)]
        quiet: bool,
        /// Image.
        image: String,
    },
    /// Remove images no tag names (`-a`: every image no container uses).
    Prune {
        /// Remove all unused images, not only dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Don't ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Load images from a `docker save` archive or an OCI layout (tar or directory).
    Load {
        /// Read from this file or directory (default: stdin).
        #[arg(short, long)]
        input: Option<String>,
        /// Print only the loaded names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save images to an archive loadable by berth, Docker and OCI tools.
    Save {
        /// Write to this file (default: stdout), or into this directory as an OCI layout when it exists
        /// or ends with '/'.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Make a one-layer image from a root file system tarball.
    Import {
        /// Dockerfile instruction applied to the config (repeatable): CMD, ENTRYPOINT, ENV, EXPOSE,
        /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR.
        #[arg(short, long)]
        change: Vec<String>,
        /// History comment.
        #[arg(short, long)]
        message: Option<String>,
        /// Platform recorded in the config, `os/arch[/variant]`.
        #[arg(long)]
        platform: Option<String>,
        /// Tarball, or `-` for stdin.
        file: String,
        /// Name for the image.
        reference: Option<String>,
    },
}

/// Runs an image command.
pub fn run(cli: &Cli, cmd: &ImageCommand, out: &mut dyn Write) -> Result<i32> {
    let store = Store::open(&cli.root).with_context(|| format!("state root {}", cli.root.display()))?;
    match cmd {
        ImageCommand::Build(a) => return super::build::image_build(cli, a, out),
        ImageCommand::Ls(a) => list(&store, a, out)?,
        ImageCommand::Pull {
            platform,
            quiet,
            insecure_registry,
            name,
        } => {
            let platform = platform.as_deref().map(Platform::parse).transpose()?;
            let options = PullOptions {
                platform,
                registry: RegistryOptions::from_env(insecure_registry),
                ..Default::default()
            };
            let (reference, pulled) = pull_image(&store, name, &options, *quiet, out)?;
            writeln!(
                out,
                "{}",
                reference
                    .tagged_name()
                    .unwrap_or_else(|| format!("{}@{}", reference.name(), pulled.digest))
            )?;
        }
        ImageCommand::Push {
            quiet,
            insecure_registry,
            name,
        } => {
            let reference = Reference::parse(name)?;
            let options = RegistryOptions::from_env(insecure_registry);
            let credentials = DockerConfig::default_location().credentials(&reference.registry)?;
            if !quiet {
                writeln!(out, "The push refers to repository [{}]", reference.name())?;
            }
            let progress = Display::new(*quiet);
            let pushed = push::push(&store, &reference, credentials, &options, &progress)?;
            progress.finish();
            let tag = reference.tag.as_deref().unwrap_or("latest");
            writeln!(out, "{tag}: digest: {} size: {}", pushed.digest, pushed.size)?;
        }
        ImageCommand::Rm(a) => return remove(cli, &store, &a.images, a.force, out),
        ImageCommand::Tag { source, target } => store.tag(source, &Reference::parse(target)?)?,
        ImageCommand::Inspect { images } => {
            let mut docs = Vec::new();
            for name in images {
                docs.push(inspect(&store, name)?);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
        }
        ImageCommand::History { no_trunc, quiet, image } => history(&store, image, *no_trunc, *quiet, out)?,
        ImageCommand::Prune { all, force } => {
            if !force
                && !confirm(if *all {
                    "This will remove all images without at least one container associated to them."
                } else {
                    "This will remove all dangling images."
                })?
            {
                return Ok(0);
            }
            let users = image_users(cli)?;
            let (removed, reclaimed) = store.prune(*all, &|id| users_of(&users, id))?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Images:")?;
                for id in &removed {
                    writeln!(out, "deleted: {id}")?;
                }
                writeln!(out)?;
            }
            writeln!(out, "Total reclaimed space: {}", human_size(reclaimed))?;
        }
        ImageCommand::Load { input, quiet } => {
            let progress = Display::new(*quiet);
            let loaded = archive::load(&store, input.as_deref().unwrap_or("-"), &progress)?;
            progress.finish();
            for l in loaded {
                if l.tags.is_empty() {
                    writeln!(out, "Loaded image ID: {}", l.id)?;
                }
                for t in l.tags {
                    writeln!(out, "Loaded image: {t}")?;
                }
            }
        }
        ImageCommand::Save { output, images } => {
            let target = match output {
                Some(p) if p.is_dir() || p.to_string_lossy().ends_with('/') => SaveTarget::Dir(p.clone()),
                Some(p) => {
                    let f = std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
                    SaveTarget::Tar(Box::new(std::io::BufWriter::with_capacity(1 << 18, f)))
                }
                None if std::io::stdout().is_terminal() => {
                    bail!("cowardly refusing to save to a terminal; use the -o flag or redirect")
                }
                None => SaveTarget::Tar(Box::new(std::io::BufWriter::with_capacity(1 << 18, std::io::stdout()))),
            };
            archive::save(&store, images, target)?;
        }
        ImageCommand::Import {
            change,
            message,
            platform,
            file,
            reference,
        } => {
            let tag = reference.as_deref().map(Reference::parse).transpose()?;
            let options = ImportOptions {
                changes: change.clone(),
                message: message.clone(),
                platform: platform.as_deref().map(Platform::parse).transpose()?,
                source: if file == "-" { "-".into() } else { file.clone() },
            };
            let reader: Box<dyn std::io::Read> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(file).with_context(|| format!("open {file}"))?)
            };
            let id = import::import(&store, reader, tag.as_ref(), &options)?;
            writeln!(out, "{id}")?;
        }
    }
    Ok(0)
}

/// Pulls `name`, reporting like `docker pull` on `out` and progress on stderr.
fn pull_image(
    store: &Store,
    name: &str,
    options: &PullOptions,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(Reference, pull::Pulled)> {
    let reference = Reference::parse(name)?;
    let credentials = DockerConfig::default_location().credentials(&reference.registry)?;
    if !quiet {
        let what = reference.tag.clone().unwrap_or_else(|| reference.registry_reference());
        writeln!(out, "{what}: Pulling from {}", reference.familiar_name())?;
    }
    let progress = Display::new(quiet);
    let pulled = pull::pull(store, &reference, credentials, options, &progress)?;
    progress.finish();
    if !quiet {
        writeln!(out, "Digest: {}", pulled.digest)?;
        let status = if pulled.up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        writeln!(out, "Status: {status} {reference}")?;
    }
    Ok((reference, pulled))
}

/// Where a container's root file system comes from: an image in the store, or a directory.
#[derive(Debug, Clone)]
pub struct RootfsSource {
    /// The image as the user named it, or the directory.
    pub name: String,
    /// The image id, empty for a directory.
    pub id: String,
    /// Overlay lower dirs, top-most first.
    pub layers: Vec<PathBuf>,
    /// The image's container defaults.
    pub defaults: Option<ContainerConfig>,
}

impl RootfsSource {
    /// A plain directory.
    pub fn directory(dir: PathBuf) -> RootfsSource {
        RootfsSource {
            name: dir.display().to_string(),
            id: String::new(),
            layers: vec![dir],
            defaults: None,
        }
    }

    /// An image, pulled first by `policy` (`missing`, `always`, `never`), as `docker run --pull` does.
    pub fn image(root: &std::path::Path, name: &str, policy: &str) -> Result<RootfsSource> {
        let store = Store::open(root)?;
        let found = match store.lookup(name) {
            Ok(r) => Some(r),
            Err(ImageError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let record = match (found, policy) {
            (Some(r), "missing" | "never") => r,
            (None, "never") => bail!("no such image: {name} (and --pull never)"),
            (found, _) => {
                if found.is_none() {
                    eprintln!("Unable to find image '{name}' locally");
                }
                let (_, pulled) = pull_image(&store, name, &PullOptions::default(), false, &mut std::io::stderr())?;
                store.lookup(pulled.id.as_str())?
            }
        };
        let config = store.config(&record)?;
        Ok(RootfsSource {
            name: name.to_string(),
            id: record.id.to_string(),
            layers: store.layer_dirs(&record)?,
            defaults: config.config,
        })
    }
}

fn list(store: &Store, a: &LsArgs, out: &mut dyn Write) -> Result<()> {
    let mut dangling = None;
    let mut patterns = Vec::new();
    for f in &a.filter {
        match f.split_once('=') {
            Some(("dangling", v)) => {
                dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid filter 'dangling={v}': expected true or false"),
                })
            }
            Some(("reference", v)) => patterns.push(v.to_string()),
            _ => bail!("invalid filter {f:?}: berth supports dangling=true|false and reference=PATTERN"),
        }
    }
    if let Some(r) = &a.repository {
        patterns.push(r.clone());
    }
    let mut rows = Vec::new();
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    rows.push(header.into_iter().map(str::to_string).collect::<Vec<_>>());
    let mut seen_ids = std::collections::BTreeSet::new();
    let mut images = store.images()?;
    images.reverse();
    for (record, tags) in images {
        if dangling.is_some_and(|d| d != tags.is_empty()) {
            continue;
        }
        let config = store.config(&record).ok();
        let created = config.as_ref().and_then(|c| c.created.clone()).unwrap_or_default();
        let id = if a.no_trunc {
            record.id.to_string()
        } else {
            record.id.short().to_string()
        };
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| (t.familiar_name(), t.tag.clone().unwrap_or_default()))
                .collect()
        };
        for (repo, tag) in names {
            if !patterns.is_empty() && !patterns.iter().any(|p| reference_matches(p, &repo, &tag)) {
                continue;
            }
            let digest = record
                .repo_digests
                .iter()
                .filter_map(|d| d.split_once('@'))
                .find(|(n, _)| Reference::parse(n).is_ok_and(|r| r.familiar_name() == repo))
                .map_or("<none>".to_string(), |(_, d)| d.to_string());
            if a.quiet {
                if seen_ids.insert(record.id.clone()) {
                    writeln!(out, "{id}")?;
                }
                continue;
            }
            let created_text = if created.is_empty() {
                "N/A".to_string()
            } else {
                format!("{} ago", human_duration(since(&created)))
            };
            match a.format {
                ListFormat::Json => {
                    let doc = serde_json::json!({
                        "Containers": "N/A",
                        "CreatedAt": created,
                        "CreatedSince": created_text,
                        "Digest": digest,
                        "ID": id,
                        "Repository": repo,
                        "SharedSize": "N/A",
                        "Size": human_size(record.size()),
                        "Tag": tag,
                        "UniqueSize": "N/A",
                        "VirtualSize": human_size(record.size()),
                    });
                    writeln!(out, "{doc}")?;
                }
                ListFormat::Table => {
                    let mut row = vec![repo, tag];
                    if a.digests {
                        row.push(digest);
                    }
                    row.extend([id.clone(), created_text, human_size(record.size())]);
                    rows.push(row);
                }
            }
        }
    }
    if !a.quiet && a.format == ListFormat::Table {
        write_table(out, &rows)?;
    }
    Ok(())
}

/// Docker's `reference=` filter: a pattern on `repo` or `repo:tag`, with `*` wildcards.
fn reference_matches(pattern: &str, repo: &str, tag: &str) -> bool {
    let target = if pattern.contains(':') {
        format!("{repo}:{tag}")
    } else {
        repo.to_string()
    };
    glob(pattern.as_bytes(), target.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && glob(p, &s[1..])),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Image id → names of the containers using it.
fn image_users(cli: &Cli) -> Result<Vec<(String, String)>> {
    // Without root there is no runtime state to read, and no container can use an image.
    if !cli.root.join("containers").exists() {
        return Ok(Vec::new());
    }
    let rt = Runtime::new(&cli.root)?;
    Ok(rt
        .list()?
        .into_iter()
        .filter(|c| !c.config.spec.image_id.is_empty())
        .map(|c| (c.config.spec.image_id.clone(), c.name().to_string()))
        .collect())
}

fn users_of(users: &[(String, String)], id: &Digest) -> Vec<String> {
    users
        .iter()
        .filter(|(i, _)| i == id.as_str())
        .map(|(_, n)| n.clone())
        .collect()
}

fn remove(cli: &Cli, store: &Store, images: &[String], force: bool, out: &mut dyn Write) -> Result<i32> {
    let users = image_users(cli)?;
    let mut code = 0;
    for name in images {
        match store.remove(name, force, &|id| users_of(&users, id)) {
            Ok(events) => {
                for e in events {
                    match e {
                        Removed::Untagged(t) => writeln!(out, "Untagged: {t}")?,
                        Removed::Deleted(id) => writeln!(out, "Deleted: {id}")?,
                    }
                }
            }
            Err(e) => {
                eprintln!("Error response: {e}");
                code = 1;
            }
        }
    }
    store.collect_garbage()?;
    Ok(code)
}

fn inspect(store: &Store, name: &str) -> Result<serde_json::Value> {
    let record = store.lookup(name)?;
    let config = store.config(&record)?;
    let tags: Vec<String> = store
        .images()?
        .into_iter()
        .find(|(r, _)| r.id == record.id)
        .map(|(_, t)| t.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default();
    let repo_digests: Vec<String> = record
        .repo_digests
        .iter()
        .map(|rd| match rd.split_once('@') {
            Some((n, d)) => Reference::parse(n).map_or(rd.clone(), |r| format!("{}@{d}", r.familiar_name())),
            None => rd.clone(),
        })
        .collect();
    // Where the layers are (or will be, once a container unpacks them); inspecting unpacks nothing.
    let layers: Vec<PathBuf> = config
        .rootfs
        .diff_ids
        .iter()
        .rev()
        .map(|d| store.layer_dir(d))
        .collect();
    Ok(serde_json::json!({
        "Id": record.id,
        "RepoTags": tags,
        "RepoDigests": repo_digests,
        "Created": config.created,
        "Author": config.author.clone().unwrap_or_default(),
        "Config": config.config,
        "Architecture": config.architecture,
        "Variant": config.variant,
        "Os": config.os,
        "Size": record.size(),
        "Manifest": { "Digest": record.manifest, "MediaType": record.media_type },
        "GraphDriver": { "Name": "overlay", "Data": { "LowerDirs": layers } },
        "RootFS": { "Type": "layers", "Layers": config.rootfs.diff_ids },
        "Metadata": { "Added": record.added },
    }))
}

fn history(store: &Store, name: &str, no_trunc: bool, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let record = store.lookup(name)?;
    let config = store.config(&record)?;
    let mut rows = vec![
        vec!["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
            .into_iter()
            .map(String::from)
            .collect(),
    ];
    let mut sizes = record.layer_sizes.iter();
    let steps: Vec<_> = if config.history.is_empty() {
        // No history: one line per layer.
        config.rootfs.diff_ids.iter().map(|_| Default::default()).collect()
    } else {
        config.history.clone()
    };
    let count = steps.len();
    let mut lines = Vec::new();
    for (i, h) in steps.into_iter().enumerate() {
        let size = if h.empty_layer {
            0
        } else {
            sizes.next().copied().unwrap_or(0)
        };
        let id = if i + 1 == count {
            record.id.short().to_string()
        } else {
            "<missing>".to_string()
        };
        let mut by = h.created_by.clone().unwrap_or_default();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let created = h
            .created
            .as_deref()
            .map_or("N/A".into(), |c| format!("{} ago", human_duration(since(c))));
        lines.push(vec![
            id,
            created,
            by,
            human_size(size),
            h.comment.clone().unwrap_or_default(),
        ]);
    }
    lines.reverse();
    if quiet {
        for l in lines {
            writeln!(out, "{}", l[0])?;
        }
        return Ok(());
    }
    rows.extend(lines);
    write_table(out, &rows)
}

fn confirm(what: &str) -> Result<bool> {
    eprint!("WARNING! {what}\nAre you sure you want to continue? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// `berth login`.
pub fn login(
    server: Option<&str>,
    username: Option<&str>,
    password: Option<&str>,
    password_stdin: bool,
    out: &mut dyn Write,
) -> Result<i32> {
    let registry = registry_of(server);
    let config = DockerConfig::default_location();
    let username = match username {
        Some(u) => u.to_string(),
        None => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_string()
        }
    };
    let password = match (password, password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.to_string()
        }
        (None, true) => {
            let mut p = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => read_secret("Password: ")?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are needed");
    }
    let credentials = Credentials { username, password };
    let client = Client::new(
        &registry,
        Some(credentials.clone()),
        &RegistryOptions::from_env(&[]),
        Vec::new(),
    );
    client.ping()?;
    config.store(&registry, &credentials)?;
    writeln!(out, "Login Succeeded")?;
    Ok(0)
}

/// `berth logout`.
pub fn logout(server: Option<&str>, out: &mut dyn Write) -> Result<i32> {
    let registry = registry_of(server);
    if DockerConfig::default_location().remove(&registry)? {
        writeln!(out, "Removing login credentials for {registry}")?;
    } else {
        writeln!(out, "Not logged in to {registry}")?;
    }
    Ok(0)
}

fn registry_of(server: Option<&str>) -> String {
    let s = server.unwrap_or(crate::image::reference::DOCKER_HUB);
    let s = s.trim_start_matches("https://").trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    if s == "index.docker.io" || s == "registry-1.docker.io" {
        "docker.io".into()
    } else {
        s.to_string()
    }
}

fn read_secret(prompt: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    eprint!("{prompt}");
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Renders transfer progress on stderr: one line per layer, redrawn in place on a terminal, and only
/// the status changes otherwise.
pub struct Display {
    quiet: bool,
    tty: bool,
    state: Mutex<DisplayState>,
}

#[derive(Default)]
struct DisplayState {
    layers: Vec<(String, String, u64, Option<u64>)>,
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Display {
    /// A display; `quiet` shows nothing.
    pub fn new(quiet: bool) -> Display {
        Display {
            quiet,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(DisplayState::default()),
        }
    }

    /// Draws the final state.
    pub fn finish(&self) {
        if self.quiet || !self.tty {
            return;
        }
        let mut s = self.state.lock().expect("not poisoned");
        Self::draw(&mut s);
    }

    fn draw(s: &mut DisplayState) {
        let mut err = std::io::stderr().lock();
        if s.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", s.drawn);
        }
        for (id, status, current, total) in &s.layers {
            let amount = match (status.as_str(), total) {
                ("Downloading" | "Pushing", Some(t)) if *t > 0 => {
                    let width = 40;
                    let done = ((*current as f64 / *t as f64) * width as f64).min(width as f64) as usize;
                    format!(
                        " [{}>{}] {}/{}",
                        "=".repeat(done),
                        " ".repeat(width - done),
                        human_size(*current),
                        human_size(*t)
                    )
                }
                _ => String::new(),
            };
            let _ = writeln!(err, "\x1b[2K{id}: {status}{amount}");
        }
        s.drawn = s.layers.len();
        s.last_draw = Some(Instant::now());
    }
}

impl Progress for Display {
    fn layer(&self, id: &str, status: &str, current: u64, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let mut s = self.state.lock().expect("not poisoned");
        let changed = match s.layers.iter_mut().find(|l| l.0 == id) {
            Some(l) => {
                let changed = l.1 != status;
                l.1 = status.to_string();
                l.2 = current;
                l.3 = total;
                changed
            }
            None => {
                s.layers.push((id.to_string(), status.to_string(), current, total));
                true
            }
        };
        if !self.tty {
            if changed && status != "Downloading" && status != "Pushing" {
                eprintln!("{id}: {status}");
            }
            return;
        }
        if changed || s.last_draw.is_none_or(|t| t.elapsed().as_millis() >= 100) {
            Self::draw(&mut s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter_globs() {
        assert!(reference_matches("busy*", "busybox", "latest"));
        assert!(reference_matches("busybox:lat*", "busybox", "latest"));
        assert!(!reference_matches("busybox:1", "busybox", "latest"));
        assert!(!reference_matches("*", "127.0.0.1:5000/app", "v1"));
        assert!(reference_matches("*/app", "127.0.0.1:5000/app", "v1"));
    }

    #[test]
    fn login_servers_normalise() {
        assert_eq!(registry_of(None), "docker.io");
        assert_eq!(registry_of(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(registry_of(Some("127.0.0.1:5000")), "127.0.0.1:5000");
    }
}
