//! The planner: a pure function of (desired project, observed state, options) that yields the
//! operations converging one on the other, each with its resource, its cause and the operations it
//! waits for. It does no I/O; its text form is what `up --dry-run` prints and what tests assert.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::observed::{Observed, Status};

/// What one service should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    /// Service name.
    pub name: String,
    /// Replicas wanted.
    pub replicas: u32,
    /// A fixed `container_name` (then there is one replica).
    pub container_name: Option<String>,
    /// The configuration hash (see `hash.rs`).
    pub hash: String,
    /// The id of its image when the store has it: containers made from another image are
    /// recreated, as Compose does after a build or a pull.
    pub image_id: Option<String>,
    /// Services it needs started first.
    pub dependencies: Vec<String>,
    /// Dependencies whose recreation restarts it (`depends_on.<x>.restart: true`).
    pub restart_with: Vec<String>,
    /// Full names of the networks it joins.
    pub networks: Vec<String>,
    /// Full names of the named volumes it mounts.
    pub volumes: Vec<String>,
}

/// What the project should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The project name.
    pub project: String,
    /// Services, in dependency order or file order (the planner keeps the given order).
    pub services: Vec<DesiredService>,
    /// Full names of networks the project creates (external ones are left out).
    pub networks: Vec<String>,
    /// Full names of volumes the project creates (external ones are left out).
    pub volumes: Vec<String>,
}

/// `up`'s choices that change the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Recreate every container, changed or not.
    pub force_recreate: bool,
    /// Never recreate; changed containers are kept (and started).
    pub no_recreate: bool,
    /// Remove containers of services the project no longer has.
    pub remove_orphans: bool,
    /// Replica counts that override the file (`--scale svc=N`).
    pub scale: BTreeMap<String, u32>,
    /// Create without starting (`--no-start`).
    pub no_start: bool,
}

/// The kind of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Create a network.
    CreateNetwork,
    /// Create a volume.
    CreateVolume,
    /// Create a container.
    Create,
    /// Start a container.
    Start,
    /// Stop, remove, create and start a container again.
    Recreate,
    /// Stop and remove a container.
    Remove,
    /// Stop and start a container again (the same container).
    Restart,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::CreateNetwork => "create network",
            Kind::CreateVolume => "create volume",
            Kind::Create => "create container",
            Kind::Start => "start container",
            Kind::Recreate => "recreate container",
            Kind::Remove => "remove container",
            Kind::Restart => "restart container",
        })
    }
}

/// One operation of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// What to do.
    pub kind: Kind,
    /// The network, volume or container it is done to.
    pub resource: String,
    /// The service, for container operations.
    pub service: Option<String>,
    /// The replica number, for container operations (0 otherwise).
    pub number: u32,
    /// Why.
    pub cause: String,
    /// Indices of the operations that must finish first.
    pub after: Vec<usize>,
}

/// A plan: operations in an order that respects their `after` edges, and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The operations.
    pub ops: Vec<Op>,
    /// Things the user should know that need no operation (orphans kept).
    pub warnings: Vec<String>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.ops.is_empty() {
            return writeln!(f, "nothing to do: the project is up to date");
        }
        for (i, op) in self.ops.iter().enumerate() {
            write!(f, "{}. {} {} ({})", i + 1, op.kind, op.resource, op.cause)?;
            if !op.after.is_empty() {
                let after: Vec<String> = op.after.iter().map(|a| (a + 1).to_string()).collect();
                write!(f, " after {}", after.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The container name of replica `n` of a service.
pub fn container_name(project: &str, service: &DesiredService, n: u32) -> String {
    match &service.container_name {
        Some(name) => name.clone(),
        None => format!("{project}-{}-{n}", service.name),
    }
}

/// Plans the convergence of `observed` on `desired`.
pub fn plan(desired: &Desired, observed: &Observed, opts: &Options) -> Plan {
    let mut plan = Plan::default();
    let mut resource_op: BTreeMap<String, usize> = BTreeMap::new();
    for n in &desired.networks {
        if !observed.networks.contains(n) {
            resource_op.insert(format!("network {n}"), plan.ops.len());
            plan.ops.push(Op {
                kind: Kind::CreateNetwork,
                resource: n.clone(),
                service: None,
                number: 0,
                cause: "missing".into(),
                after: Vec::new(),
            });
        }
    }
    for v in &desired.volumes {
        if !observed.volumes.contains(v) {
            resource_op.insert(format!("volume {v}"), plan.ops.len());
            plan.ops.push(Op {
                kind: Kind::CreateVolume,
                resource: v.clone(),
                service: None,
                number: 0,
                cause: "missing".into(),
                after: Vec::new(),
            });
        }
    }
    // The last operation that brings each service up, which dependants wait for.
    let mut service_ready: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut recreated: BTreeSet<&str> = BTreeSet::new();
    let wanted: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
    for s in &desired.services {
        let replicas = opts.scale.get(&s.name).copied().unwrap_or(s.replicas);
        let mut base: Vec<usize> = s
            .networks
            .iter()
            .filter_map(|n| resource_op.get(&format!("network {n}")).copied())
            .chain(
                s.volumes
                    .iter()
                    .filter_map(|v| resource_op.get(&format!("volume {v}")).copied()),
            )
            .collect();
        for d in &s.dependencies {
            base.extend(service_ready.get(d.as_str()).into_iter().flatten().copied());
        }
        base.sort_unstable();
        base.dedup();
        let mut existing: Vec<_> = observed
            .containers
            .iter()
            .filter(|c| c.service == s.name && !c.one_off)
            .collect();
        existing.sort_by_key(|c| c.number);
        let mut ready = Vec::new();
        let push =
            |plan: &mut Plan, kind: Kind, (resource, number): (String, u32), cause: String, after: Vec<usize>| {
                plan.ops.push(Op {
                    kind,
                    resource,
                    service: Some(s.name.clone()),
                    number,
                    cause,
                    after,
                });
                plan.ops.len() - 1
            };
        for c in &existing {
            if c.number > replicas {
                let i = push(
                    &mut plan,
                    Kind::Remove,
                    (c.name.clone(), c.number),
                    format!("scaled down to {replicas}"),
                    Vec::new(),
                );
                ready.push(i);
            }
        }
        for n in 1..=replicas {
            let name = container_name(&desired.project, s, n);
            match existing.iter().find(|c| c.number == n) {
                None => {
                    let created = push(
                        &mut plan,
                        Kind::Create,
                        (name.clone(), n),
                        "missing".into(),
                        base.clone(),
                    );
                    if opts.no_start {
                        ready.push(created);
                    } else {
                        ready.push(push(&mut plan, Kind::Start, (name, n), "created".into(), vec![created]));
                    }
                }
                Some(c) => {
                    let changed = c.hash != s.hash;
                    let new_image = s
                        .image_id
                        .as_ref()
                        .is_some_and(|id| !c.image_id.is_empty() && *id != c.image_id);
                    if !opts.no_recreate && (opts.force_recreate || changed || new_image) {
                        let cause = if changed {
                            "configuration changed"
                        } else if new_image {
                            "image changed"
                        } else {
                            "--force-recreate"
                        };
                        ready.push(push(
                            &mut plan,
                            Kind::Recreate,
                            (c.name.clone(), n),
                            cause.into(),
                            base.clone(),
                        ));
                        recreated.insert(&s.name);
                    } else if c.status != Status::Running && !opts.no_start {
                        let cause = format!("{}", c.status);
                        ready.push(push(&mut plan, Kind::Start, (c.name.clone(), n), cause, base.clone()));
                    } else if let Some(d) = s.restart_with.iter().find(|d| recreated.contains(d.as_str())) {
                        // Compose's `restart: true`: a running dependant follows its recreated dependency.
                        let cause = format!("dependency {d} was recreated");
                        ready.push(push(&mut plan, Kind::Restart, (c.name.clone(), n), cause, base.clone()));
                    }
                }
            }
        }
        service_ready.insert(&s.name, ready);
    }
    let orphans: Vec<_> = observed
        .containers
        .iter()
        .filter(|c| !c.one_off && !wanted.contains(c.service.as_str()))
        .collect();
    for c in orphans {
        if opts.remove_orphans {
            plan.ops.push(Op {
                kind: Kind::Remove,
                resource: c.name.clone(),
                service: Some(c.service.clone()),
                number: c.number,
                cause: "orphan".into(),
                after: Vec::new(),
            });
        } else {
            plan.warnings.push(format!(
                "found orphan container {} (service {}); run with --remove-orphans to remove it",
                c.name, c.service
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observed::ObservedContainer;

    fn svc(name: &str, deps: &[&str]) -> DesiredService {
        DesiredService {
            name: name.into(),
            replicas: 1,
            container_name: None,
            hash: format!("h-{name}"),
            image_id: None,
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            restart_with: Vec::new(),
            networks: vec!["p_default".into()],
            volumes: Vec::new(),
        }
    }

    fn desired() -> Desired {
        let mut db = svc("db", &[]);
        db.volumes.push("p_data".into());
        Desired {
            project: "p".into(),
            services: vec![db, svc("web", &["db"])],
            networks: vec!["p_default".into()],
            volumes: vec!["p_data".into()],
        }
    }

    fn running(service: &str, n: u32, hash: &str) -> ObservedContainer {
        ObservedContainer {
            name: format!("p-{service}-{n}"),
            service: service.into(),
            number: n,
            hash: hash.into(),
            image_id: String::new(),
            status: Status::Running,
            one_off: false,
        }
    }

    #[test]
    fn a_fresh_project_is_created_in_dependency_order() {
        let text = plan(&desired(), &Observed::default(), &Options::default()).to_string();
        assert_eq!(
            text,
            "1. create network p_default (missing)\n\
             2. create volume p_data (missing)\n\
             3. create container p-db-1 (missing) after 1, 2\n\
             4. start container p-db-1 (created) after 3\n\
             5. create container p-web-1 (missing) after 1, 4\n\
             6. start container p-web-1 (created) after 5\n"
        );
    }

    #[test]
    fn a_container_of_another_image_is_recreated() {
        let mut observed = Observed::default();
        observed.networks.insert("p_default".into());
        observed.volumes.insert("p_data".into());
        let mut db = running("db", 1, "h-db");
        db.image_id = "sha256:old".into();
        observed.containers.push(db);
        observed.containers.push(running("web", 1, "h-web"));
        let mut want = desired();
        want.services[0].image_id = Some("sha256:new".into());
        // db's image was rebuilt; web's container names no image id, so it is not compared.
        want.services[1].image_id = Some("sha256:any".into());
        assert_eq!(
            plan(&want, &observed, &Options::default()).to_string(),
            "1. recreate container p-db-1 (image changed)\n"
        );
        want.services[0].image_id = Some("sha256:old".into());
        assert_eq!(
            plan(&want, &observed, &Options::default()).to_string(),
            "nothing to do: the project is up to date\n"
        );
    }

    #[test]
    fn only_changed_containers_are_recreated_and_stopped_ones_started() {
        let mut observed = Observed::default();
        observed.networks.insert("p_default".into());
        observed.volumes.insert("p_data".into());
        observed.containers.push(running("db", 1, "h-db"));
        let mut web = running("web", 1, "old");
        web.status = Status::Exited;
        observed.containers.push(web.clone());
        let text = plan(&desired(), &observed, &Options::default()).to_string();
        assert_eq!(text, "1. recreate container p-web-1 (configuration changed)\n");
        web.hash = "h-web".into();
        observed.containers[1] = web;
        let text = plan(&desired(), &observed, &Options::default()).to_string();
        assert_eq!(text, "1. start container p-web-1 (exited)\n");
        let no = Options {
            no_recreate: true,
            ..Options::default()
        };
        observed.containers[1].hash = "old".into();
        assert_eq!(
            plan(&desired(), &observed, &no).to_string(),
            "1. start container p-web-1 (exited)\n"
        );
        observed.containers[1].status = Status::Running;
        assert_eq!(
            plan(&desired(), &observed, &no).to_string(),
            "nothing to do: the project is up to date\n"
        );
        let force = Options {
            force_recreate: true,
            ..Options::default()
        };
        assert_eq!(
            plan(&desired(), &observed, &force).to_string(),
            "1. recreate container p-db-1 (--force-recreate)\n\
             2. recreate container p-web-1 (configuration changed) after 1\n"
        );
    }

    #[test]
    fn scaling_adds_and_removes_the_highest_numbers() {
        let mut observed = Observed::default();
        observed.networks.insert("p_default".into());
        observed.volumes.insert("p_data".into());
        observed.containers.push(running("db", 1, "h-db"));
        observed.containers.push(running("web", 1, "h-web"));
        let up = Options {
            scale: [("web".to_string(), 3)].into(),
            ..Options::default()
        };
        assert_eq!(
            plan(&desired(), &observed, &up).to_string(),
            "1. create container p-web-2 (missing)\n\
             2. start container p-web-2 (created) after 1\n\
             3. create container p-web-3 (missing)\n\
             4. start container p-web-3 (created) after 3\n"
        );
        observed.containers.push(running("web", 2, "h-web"));
        observed.containers.push(running("web", 3, "h-web"));
        let down = Options {
            scale: [("web".to_string(), 1)].into(),
            ..Options::default()
        };
        assert_eq!(
            plan(&desired(), &observed, &down).to_string(),
            "1. remove container p-web-2 (scaled down to 1)\n\
             2. remove container p-web-3 (scaled down to 1)\n"
        );
    }

    #[test]
    fn orphans_are_warned_about_or_removed() {
        let mut observed = Observed::default();
        observed.networks.insert("p_default".into());
        observed.volumes.insert("p_data".into());
        observed.containers.push(running("db", 1, "h-db"));
        observed.containers.push(running("web", 1, "h-web"));
        observed.containers.push(running("cache", 1, "h"));
        let mut oneoff = running("gone", 1, "h");
        oneoff.one_off = true;
        observed.containers.push(oneoff);
        assert_eq!(
            plan(&desired(), &observed, &Options::default()).to_string(),
            "warning: found orphan container p-cache-1 (service cache); run with --remove-orphans to remove it\n\
             nothing to do: the project is up to date\n"
        );
        let rm = Options {
            remove_orphans: true,
            ..Options::default()
        };
        assert_eq!(
            plan(&desired(), &observed, &rm).to_string(),
            "1. remove container p-cache-1 (orphan)\n"
        );
    }

    #[test]
    fn a_failed_dependency_is_started_again_and_dependants_wait_for_it() {
        let mut observed = Observed::default();
        observed.networks.insert("p_default".into());
        observed.volumes.insert("p_data".into());
        let mut db = running("db", 1, "h-db");
        db.status = Status::Exited;
        observed.containers.push(db);
        let mut web = running("web", 1, "h-web");
        web.status = Status::Created;
        observed.containers.push(web);
        assert_eq!(
            plan(&desired(), &observed, &Options::default()).to_string(),
            "1. start container p-db-1 (exited)\n\
             2. start container p-web-1 (created) after 1\n"
        );
    }

    #[test]
    fn a_recreated_dependency_restarts_dependants_that_ask_for_it() {
        let mut d = desired();
        d.services[1].restart_with.push("db".into());
        let mut observed = Observed::default();
        observed.networks.insert("p_default".into());
        observed.volumes.insert("p_data".into());
        observed.containers.push(running("db", 1, "old"));
        observed.containers.push(running("web", 1, "h-web"));
        assert_eq!(
            plan(&d, &observed, &Options::default()).to_string(),
            "1. recreate container p-db-1 (configuration changed)\n\
             2. restart container p-web-1 (dependency db was recreated) after 1\n"
        );
        // Without `restart: true` web is left alone.
        assert_eq!(
            plan(&desired(), &observed, &Options::default()).to_string(),
            "1. recreate container p-db-1 (configuration changed)\n"
        );
    }

    #[test]
    fn no_start_creates_only() {
        let opts = Options {
            no_start: true,
            ..Options::default()
        };
        let text = plan(&desired(), &Observed::default(), &opts).to_string();
        assert!(!text.contains("start container"), "{text}");
        assert!(
            text.contains("4. create container p-web-1 (missing) after 1, 3"),
            "{text}"
        );
    }
}
