//! Compose's `build:` sections as builds: a service's canonical `build` turned into the builder's
//! `BuildSpec`, and the builds of several services run at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::ReconcileError;
use crate::build::{self, BuildSpec, DockerfileSource, Progress};
use crate::compose::Project;
use crate::image::ImageError;
use crate::image::reference::{Digest, Reference};
use crate::image::store::Store;
use crate::runtime::Runtime;

/// What the command line adds to every service's build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--build-arg`, over the file's `args`.
    pub args: BTreeMap<String, String>,
}

/// The build of `service`, or `None` when it has no `build` section.
pub fn build_spec(project: &Project, service: &str, opts: &BuildOptions) -> Result<Option<BuildSpec>, ReconcileError> {
    let b = &project.canonical["services"][service]["build"];
    if b.is_null() {
        return Ok(None);
    }
    let invalid = |key: &str, message: String| ReconcileError::Invalid {
        key: format!("services.{service}.build.{key}"),
        message,
    };
    let context = b["context"]
        .as_str()
        .ok_or_else(|| invalid("context", "a build needs a context".into()))?;
    if context.contains("://") || context.starts_with("git@") {
        return Err(invalid(
            "context",
            format!("remote build contexts are not supported: {context}"),
        ));
    }
    let mut spec = BuildSpec::new(context);
    if let Some(inline) = b["dockerfile_inline"].as_str() {
        spec.dockerfile = DockerfileSource::Inline(inline.to_string());
    } else if let Some(f) = b["dockerfile"].as_str() {
        spec.dockerfile = DockerfileSource::Path(PathBuf::from(f));
    }
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some((k.clone(), s.clone())),
                        Value::Null => None,
                        other => Some((k.clone(), other.to_string())),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    spec.args = strings(&b["args"]);
    spec.args.extend(opts.args.clone());
    spec.labels = strings(&b["labels"]);
    spec.target = b["target"].as_str().map(str::to_string);
    spec.no_cache = opts.no_cache || b["no_cache"].as_bool().unwrap_or(false);
    spec.pull = opts.pull || b["pull"].as_bool().unwrap_or(false);
    spec.network = b["network"].as_str().map(str::to_string);
    let mut names = vec![project.image_of(service)];
    if let Some(tags) = b["tags"].as_array() {
        names.extend(tags.iter().filter_map(Value::as_str).map(str::to_string));
    }
    for name in names {
        spec.tags
            .push(Reference::parse(&name).map_err(|e| invalid("tags", e.to_string()))?);
    }
    Ok(Some(spec))
}

/// Whether `service` needs a build: it has a `build` section and, unless `always`, its image is
/// not stored.
pub fn needs_build(store: &Store, project: &Project, service: &str, always: bool) -> Result<bool, ReconcileError> {
    if project.canonical["services"][service]["build"].is_null() {
        return Ok(false);
    }
    if always {
        return Ok(true);
    }
    match store.lookup(&project.image_of(service)) {
        Ok(_) => Ok(false),
        Err(ImageError::NotFound(_)) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Builds `services` (each with a `build` section) at once, one thread each; `progress` gives
/// each service's display. Returns each service's image id; the first failure is returned after
/// every build has ended, the others are named in it.
pub fn build_services(
    store: &Store,
    runtime: &Runtime,
    project: &Project,
    services: &[String],
    opts: &BuildOptions,
    progress: &(dyn Fn(&str) -> Box<dyn Progress + Send> + Sync),
) -> Result<BTreeMap<String, Digest>, ReconcileError> {
    let mut specs = Vec::new();
    for s in services {
        if let Some(spec) = build_spec(project, s, opts)? {
            specs.push((s.clone(), spec));
        }
    }
    let results: Vec<(String, Result<Digest, build::BuildError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|(name, spec)| {
                let display = progress(name);
                let handle = scope.spawn(move || build::build(store, runtime, spec, display.as_ref()).map(|b| b.id));
                (name.clone(), handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(build::BuildError::Invalid("the build thread panicked".into())));
                (name, r)
            })
            .collect()
    });
    let mut built = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, r) in results {
        match r {
            Ok(id) => {
                built.insert(name, id);
            }
            Err(e) => failures.push(format!("service {name:?} failed to build: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(built)
    } else {
        Err(ReconcileError::Build(failures.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::LoadOptions;

    #[test]
    fn long_form_becomes_a_spec() {
        let dir = std::env::temp_dir().join(format!("berth-build-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("compose.yaml"),
            "services:\n  web:\n    build:\n      context: .\n      dockerfile: web.Dockerfile\n      args: {A: '1'}\n      target: prod\n      labels: [x=1]\n      tags: ['extra:1']\n      no_cache: true\n  db:\n    image: mydb\n    build: ./db\n  plain:\n    image: busybox\n",
        )
        .unwrap();
        let project = crate::compose::load(&LoadOptions {
            working_dir: dir.clone(),
            project_name: Some("p".into()),
            interpolate: true,
            ..Default::default()
        })
        .unwrap();
        let opts = BuildOptions {
            args: BTreeMap::from([("B".into(), "2".into())]),
            ..Default::default()
        };
        let web = build_spec(&project, "web", &opts).unwrap().unwrap();
        assert_eq!(web.context, dir);
        assert!(matches!(&web.dockerfile, DockerfileSource::Path(p) if p == &PathBuf::from("web.Dockerfile")));
        assert_eq!(web.args.get("A").map(String::as_str), Some("1"));
        assert_eq!(web.args.get("B").map(String::as_str), Some("2"));
        assert_eq!(web.target.as_deref(), Some("prod"));
        assert!(web.no_cache);
        let tags: Vec<String> = web.tags.iter().map(|t| t.to_string()).collect();
        assert!(tags[0].ends_with("p-web:latest"), "{tags:?}");
        assert!(tags[1].ends_with("extra:1"), "{tags:?}");
        let db = build_spec(&project, "db", &opts).unwrap().unwrap();
        assert!(db.tags[0].to_string().ends_with("mydb:latest"));
        assert!(build_spec(&project, "plain", &opts).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
