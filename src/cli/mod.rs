//! Command-line parsing in two stages: raw clap structs, then resolved options the library uses.
//! Nothing below this module sees clap. Like Docker Compose, the project flags (-f, -p, …) go before the
//! subcommand, so subcommands are free to reuse their letters (`container run -p`, `logs -f`).

mod build;
mod container;
pub mod image;
pub mod network;
mod project;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::compose::{self, LoadOptions, Project};

/// berth: run Compose projects as real containers, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    /// Compose configuration files (repeatable; default: discovery, or COMPOSE_FILE).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name (default: COMPOSE_PROJECT_NAME, top-level `name:`, or the folder name).
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    pub project_name: Option<String>,
    /// Alternate working directory (default: the directory of the first compose file).
    #[arg(long = "project-directory", value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    /// Alternate environment files, replacing the project's .env (repeatable).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Profiles to enable (repeatable; default: COMPOSE_PROFILES).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// State directory.
    #[arg(
        long,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth",
        global = true,
        value_name = "DIR"
    )]
    pub root: PathBuf,
    /// More log output (once: info, twice: debug, three times: trace); RUST_LOG overrides.
    #[arg(long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked (or its help is shown): building
// every argument of every verb cost about 2 ms at each start of the CLI.
#[command(defer = true)]
pub enum Command {
    /// Parse, resolve and render the compose file in canonical format.
    Config(ConfigArgs),
    /// Manage single containers, like the `docker` CLI.
    #[command(subcommand)]
    Container(Box<container::ContainerCommand>),
    /// Manage images.
    #[command(subcommand)]
    Image(Box<image::ImageCommand>),
    /// List images (`image ls`).
    Images(image::LsArgs),
    /// Remove images (`image rm`).
    Rmi(image::RmArgs),
    /// Build the services' images.
    Build(project::BuildArgs),
    /// Create and start the project's containers.
    Up(project::UpArgs),
    /// Stop and remove the project's containers and networks.
    Down(project::DownArgs),
    /// List the project's containers.
    Ps(project::PsArgs),
    /// Show the project's logs.
    Logs(project::LogsArgs),
    /// Create the services' containers without starting them.
    Create(project::CreateArgs),
    /// Pull the services' images.
    Pull {
        /// Only the image names.
        #[arg(short, long)]
        quiet: bool,
        /// Go on past images that cannot be pulled.
        #[arg(long)]
        ignore_pull_failures: bool,
        /// Services; default all.
        services: Vec<String>,
    },
    /// Push the services' images.
    Push {
        /// Only the digest lines.
        #[arg(short, long)]
        quiet: bool,
        /// Services; default all.
        services: Vec<String>,
    },
    /// Copy files between a service container and the host.
    Cp {
        /// Which replica.
        #[arg(long, default_value_t = 1)]
        index: u32,
        /// `SERVICE:PATH` or a host path (`-`: a tar on stdin).
        src: String,
        /// A host path (`-`: a tar on stdout) or `SERVICE:PATH`.
        dest: String,
    },
    /// Stream the project's container events.
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Services; default all.
        services: Vec<String>,
    },
    /// Run a command in a running service container.
    Exec(project::ExecArgs),
    /// Run a one-off command in a new container of a service.
    Run(project::RunArgs),
    /// Stop services (dependants first).
    Stop(project::ServiceArgs),
    /// Start existing containers of services (dependencies first).
    Start(project::ServiceArgs),
    /// Restart services.
    Restart(project::ServiceArgs),
    /// Pause services.
    Pause(project::ServiceArgs),
    /// Unpause services.
    Unpause(project::ServiceArgs),
    /// Send a signal to services' containers.
    Kill {
        /// Signal (name or number).
        #[arg(short, long, default_value = "SIGKILL")]
        signal: String,
        /// Services; default all.
        services: Vec<String>,
    },
    /// Remove stopped service containers.
    Rm {
        /// Don't ask (berth never asks; accepted for Compose's sake).
        #[arg(short, long)]
        force: bool,
        /// Stop the containers first.
        #[arg(short, long)]
        stop: bool,
        /// Remove their anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        /// Services; default all.
        services: Vec<String>,
    },
    /// Show the processes of services' containers.
    Top {
        /// Services; default all.
        services: Vec<String>,
    },
    /// Block until services' containers stop; print their exit codes.
    Wait {
        /// Services.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// List projects.
    Ls {
        /// Show stopped projects too.
        #[arg(short, long)]
        all: bool,
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(Box<network::NetworkCommand>),
    /// The host address of a service's published port (`port SERVICE PORT`), or a container's
    /// published ports (`port CONTAINER [PORT[/PROTO]]`, as `docker port`).
    Port {
        /// The service (with a port), or the container.
        target: String,
        /// The container port.
        port: Option<String>,
        /// `tcp` or `udp`, for a service.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// Which replica, for a service.
        #[arg(long, default_value_t = 1)]
        index: u32,
    },
    /// Log in to a registry (credentials go to ~/.docker/config.json).
    Login {
        /// User name.
        #[arg(short, long)]
        username: Option<String>,
        /// Password (prefer --password-stdin).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Registry (default: Docker Hub).
        server: Option<String>,
    },
    /// Log out from a registry.
    Logout {
        /// Registry (default: Docker Hub).
        server: Option<String>,
    },
    /// Show the berth version.
    Version {
        /// Print only the version number.
        #[arg(long)]
        short: bool,
    },
}

/// Output formats of `config`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

// `berth config` flags.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: Format,
    /// Print the service names, one per line.
    #[arg(long = "services")]
    pub list_services: bool,
    /// Print the volume names, one per line.
    #[arg(long = "volumes")]
    pub list_volumes: bool,
    /// Print the profile names, one per line.
    #[arg(long = "profiles")]
    pub list_profiles: bool,
    /// Print the image names, one per line.
    #[arg(long = "images")]
    pub list_images: bool,
    /// Only validate the configuration, don't print anything.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't interpolate environment variables.
    #[arg(long = "no-interpolate")]
    pub no_interpolate: bool,
    /// Save to file (default: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Services to include (enables their profiles).
    pub service_names: Vec<String>,
}

/// Errors the CLI reports at the binary edge.
pub type Result<T> = anyhow::Result<T>;

impl Cli {
    /// Resolves the loader options from the flags and the given environment.
    pub fn load_options(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
        services: &[String],
        interpolate: bool,
    ) -> Result<LoadOptions> {
        let environment: indexmap::IndexMap<String, String> = env.into_iter().collect();
        let home = environment.get("HOME").map(PathBuf::from);
        Ok(LoadOptions {
            working_dir: std::env::current_dir()?,
            files: self.files.clone(),
            project_name: self.project_name.clone(),
            project_directory: self.project_directory.clone(),
            env_files: self.env_files.clone(),
            profiles: self
                .profiles
                .iter()
                .flat_map(|p| p.split(','))
                .map(str::to_string)
                .collect(),
            services: services.to_vec(),
            environment,
            interpolate,
            home,
        })
    }
}

/// Runs the parsed command, writing to `out`; returns the process exit code.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<i32> {
    match &cli.command {
        Command::Container(c) => container::run(cli, c, out),
        Command::Image(c) => image::run(cli, c, out),
        Command::Build(args) => project::build(cli, args, out),
        Command::Up(args) => project::up(cli, args, out),
        Command::Down(args) => project::down(cli, args, out),
        Command::Create(a) => project::up(
            cli,
            &project::UpArgs::create(a.force_recreate, a.no_recreate, a.pull.clone(), a.services.clone()),
            out,
        ),
        Command::Pull {
            quiet,
            ignore_pull_failures,
            services,
        } => project::pull(cli, *quiet, *ignore_pull_failures, services, out),
        Command::Push { quiet, services } => project::push(cli, *quiet, services, out),
        Command::Ps(args) => project::ps(cli, args, out),
        Command::Logs(args) => project::logs(cli, args, out),
        Command::Exec(a) => project::exec(cli, a),
        Command::Cp { index, src, dest } => project::cp(cli, *index, src, dest),
        Command::Events { json, services } => project::events(cli, *json, services, out),
        Command::Run(a) => project::run(cli, a, out),
        Command::Stop(a) => project::lifecycle(cli, project::Verb::Stop, a),
        Command::Start(a) => project::lifecycle(cli, project::Verb::Start, a),
        Command::Restart(a) => project::lifecycle(cli, project::Verb::Restart, a),
        Command::Pause(a) => project::lifecycle(cli, project::Verb::Pause, a),
        Command::Unpause(a) => project::lifecycle(cli, project::Verb::Unpause, a),
        Command::Kill { signal, services } => project::kill(cli, signal, services),
        Command::Rm {
            force: _,
            stop,
            volumes,
            services,
        } => project::rm(cli, *stop, *volumes, services),
        Command::Top { services } => project::top(cli, services, out),
        Command::Wait { services } => project::wait(cli, services, out),
        Command::Ls { all, quiet, format } => project::ls(cli, *all, *quiet, format == "json", out),
        Command::Network(c) => network::run(cli, c, out),
        Command::Port {
            target,
            port,
            protocol,
            index,
        } => match port.as_deref().map(str::parse::<u16>) {
            // A bare number after a name that is a service of the project: Compose's form.
            Some(Ok(p)) if project::is_service(cli, target) => project::port(cli, target, p, protocol, *index, out),
            _ => container::port(cli, target, port.as_deref(), out),
        },
        Command::Images(a) => image::run(cli, &image::ImageCommand::Ls(a.clone()), out),
        Command::Rmi(a) => image::run(cli, &image::ImageCommand::Rm(a.clone()), out),
        Command::Login {
            username,
            password,
            password_stdin,
            server,
        } => image::login(
            server.as_deref(),
            username.as_deref(),
            password.as_deref(),
            *password_stdin,
            out,
        ),
        Command::Logout { server } => image::logout(server.as_deref(), out),
        Command::Version { short } => {
            if *short {
                writeln!(out, "{}", env!("CARGO_PKG_VERSION"))?;
            } else {
                writeln!(out, "berth version {}", env!("CARGO_PKG_VERSION"))?;
            }
            Ok(0)
        }
        Command::Config(args) => {
            let opts = cli.load_options(std::env::vars(), &args.service_names, !args.no_interpolate)?;
            let project = compose::load(&opts)?;
            if args.quiet {
                return Ok(0);
            }
            let text = render_config(&project, args)?;
            match &args.output {
                Some(path) => std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                None => out.write_all(text.as_bytes())?,
            }
            Ok(0)
        }
    }
}

/// Renders `berth config` output for the chosen flags.
pub fn render_config(project: &Project, args: &ConfigArgs) -> Result<String> {
    let lines = |items: Vec<String>| items.into_iter().map(|s| s + "\n").collect::<String>();
    if args.list_services {
        // Like Compose, in start order: dependencies first.
        let graph = crate::graph::ServiceGraph::new(project)?;
        return Ok(lines(graph.start_levels().into_iter().flatten().collect()));
    }
    if args.list_volumes {
        let vols = project
            .canonical
            .get("volumes")
            .and_then(|v| v.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        return Ok(lines(vols));
    }
    if args.list_profiles {
        return Ok(lines(project.all_profiles.clone()));
    }
    if args.list_images {
        let images = project
            .services
            .iter()
            .map(|(name, _)| project.image_of(name))
            .collect();
        return Ok(lines(images));
    }
    // Like Compose, literal `$` is written back escaped, so the output loads to the same project.
    let doc = if args.no_interpolate {
        project.canonical.clone()
    } else {
        escape_dollars(&project.canonical)
    };
    Ok(match args.format {
        Format::Json => serde_json::to_string_pretty(&doc)? + "\n",
        Format::Yaml => crate::compose::yaml::to_yaml_string(&doc),
    })
}

/// Doubles every `$` in keys and string values.
fn escape_dollars(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    let esc = |s: &str| s.replace('$', "$$");
    match v {
        J::String(s) => J::String(esc(s)),
        J::Array(a) => J::Array(a.iter().map(escape_dollars).collect()),
        J::Object(o) => J::Object(o.iter().map(|(k, v)| (esc(k), escape_dollars(v))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
