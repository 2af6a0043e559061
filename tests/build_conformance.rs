//! Root integration tests of `berth image build` on the real kernel: the Dockerfile fixtures of
//! `tests/fixtures/build/` compared with what Docker 20.10's BuildKit made of them (config, history,
//! each layer's tar entries, and for `dockerignore` what the image sees), the names `build` prints,
//! USER/WORKDIR, and a built image running with its config. Each test has its own state root (removed
//! by the `Berth` guard, also when the test fails) with the busybox root file system imported as
//! `localhost/busybox:latest`, the base image every fixture names. `builder.rs` covers the cache,
//! errors and the other instructions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::berth::{Berth, succeeded, text};
use serde_json::Value;

/// The base image of every fixture.
const BASE: &str = "localhost/busybox:latest";
/// The base image's `PATH` (and Docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The history comment of every entry berth's builder writes.
const COMMENT: &str = "berth.dockerfile.v0";
/// The run config keys compared with BuildKit's.
const CONFIG_KEYS: [&str; 12] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

/// A history entry where berth deliberately differs from BuildKit in `empty_layer` (and so in the
/// layers): the only differences the conformance tests accept.
struct KnownDifference {
    case: &'static str,
    created_by: &'static str,
    buildkit_empty: bool,
    berth_empty: bool,
    why: &'static str,
}

const KNOWN_DIFFERENCES: &[KnownDifference] = &[KnownDifference {
    case: "config",
    created_by: "WORKDIR /tmp",
    buildkit_empty: false,
    berth_empty: true,
    why: "WORKDIR on a directory the image has changes only the config in berth (as the classic \
          builder does); BuildKit always commits a layer, here the empty tar",
}];

/// One test's berth with the busybox image imported as `localhost/busybox:latest`, with the
/// config of the fixtures' base (`Env` PATH, `Cmd ["sh"]`).
struct T {
    b: Berth,
}

impl T {
    fn new(name: &str) -> T {
        let b = Berth::new(&format!("build-{name}"));
        b.import_busybox(BASE, &[&format!("ENV {DEFAULT_PATH}"), r#"CMD ["sh"]"#]);
        T { b }
    }

    /// A build context `NAME` under the state root with `files` (path, content) in it.
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.b.root.join(format!("ctx-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        dir
    }

    /// `image build ARGS`.
    fn build(&self, args: &[&str]) -> Output {
        let mut all = vec!["image", "build"];
        all.extend_from_slice(args);
        self.b.berth(&all)
    }

    /// `image build ARGS`, which must succeed: (stdout, stderr).
    fn build_ok(&self, args: &[&str]) -> (String, String) {
        let out = self.build(args);
        assert!(
            out.status.success(),
            "berth image build {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        (text(&out.stdout), text(&out.stderr))
    }

    /// `image build -q ARGS`: the full image id it prints (and nothing else).
    fn build_q(&self, args: &[&str]) -> String {
        let mut all = vec!["-q"];
        all.extend_from_slice(args);
        let (out, err) = self.build_ok(&all);
        let id = out.trim_end_matches('\n');
        assert!(
            id.len() == 71 && id.starts_with("sha256:") && id[7..].bytes().all(|c| c.is_ascii_hexdigit()),
            "-q printed {out:?}, not one image id"
        );
        assert_eq!(out, format!("{id}\n"));
        assert!(!err.contains("Step "), "-q still shows progress: {err}");
        id.to_string()
    }

    /// `container run --rm IMAGE CMD...`, which must succeed: its stdout.
    fn run(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["container", "run", "--rm", image];
        args.extend_from_slice(cmd);
        self.b.ok(&args)
    }

    /// `image inspect IMAGE`, the first document.
    fn inspect(&self, image: &str) -> Value {
        let v: Value = serde_json::from_str(&self.b.ok(&["image", "inspect", image])).unwrap();
        v[0].clone()
    }

    /// A blob of the store, by digest.
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        std::fs::read(self.b.root.join("images/blobs/sha256").join(hex)).unwrap()
    }

    /// The image's config blob, exactly as stored (and as `image save` would write it).
    fn config_blob(&self, image: &str) -> Value {
        let id = self.inspect(image)["Id"].as_str().unwrap().to_string();
        serde_json::from_slice(&self.blob(&id)).unwrap()
    }

    /// The image's layers, base first, each as the fixture's `-layers.txt` lines (Docker's entry
    /// format: type, permission bits, uid:gid, size, path, link target).
    fn layers(&self, image: &str) -> Vec<Vec<String>> {
        let manifest_digest = self.inspect(image)["Manifest"]["Digest"].as_str().unwrap().to_string();
        let manifest: Value = serde_json::from_slice(&self.blob(&manifest_digest)).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| tar_lines(&self.blob(l["digest"].as_str().unwrap())))
            .collect()
    }
}

/// A layer blob's entries as fixture lines; the blob may be plain, gzip or zstd.
fn tar_lines(blob: &[u8]) -> Vec<String> {
    let reader: Box<dyn Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(blob).unwrap())
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    let mut lines = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "f",
            tar::EntryType::Directory => "d",
            tar::EntryType::Symlink => "l",
            tar::EntryType::Link => "h",
            tar::EntryType::Char => "c",
            tar::EntryType::Block => "b",
            tar::EntryType::Fifo => "p",
            _ => "?",
        };
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/');
        let mut line = format!(
            "{kind} {:04o} {}:{} {} {path}",
            h.mode().unwrap() & 0o7777,
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.size().unwrap()
        );
        if matches!(kind, "l" | "h") {
            line += &format!(" -> {}", entry.link_name().unwrap().unwrap().to_string_lossy());
        }
        lines.push(line);
    }
    lines
}

/// The fixture folder of a case.
fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/build")
        .join(case)
}

/// Copies a directory tree with its permission bits (as `cp -a` would, for what a checkout holds),
/// leaving out the top-level names `skip` rejects.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if skip(&name) {
            continue;
        }
        let meta = e.path().symlink_metadata().unwrap();
        let dest = to.join(&name);
        if meta.is_dir() {
            copy_tree(&e.path(), &dest, &|_| false);
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dest).unwrap();
            continue;
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777)).unwrap();
    }
}

/// The fixture case's folder copied into the state root without the recorded files, as
/// `scripts/record-build-fixtures.sh` gave it to Docker.
fn fixture_context(t: &T, case: &str) -> PathBuf {
    let dir = t.b.root.join(format!("ctx-{case}"));
    let recorded = |name: &str| {
        (name.starts_with("docker-") && (name.ends_with(".json") || name.ends_with(".txt")))
            || (name.starts_with("listing") && name.ends_with(".txt"))
    };
    copy_tree(&fixture(case), &dir, &recorded);
    dir
}

/// The directories of the busybox root file system as layer lines: what the base image has.
fn base_dirs(rootfs: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = e.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(
                    rel.clone(),
                    format!("d {:04o} {}:{} 0 {rel}", meta.mode() & 0o7777, meta.uid(), meta.gid()),
                );
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(rootfs, rootfs, &mut out);
    out
}

/// `docker-buildkit[-VARIANT]-layers.txt`: (history text, lines) of each layer after the base's.
fn recorded_layers(case: &str, variant: Option<&str>) -> Vec<(String, Vec<String>)> {
    let name = format!(
        "docker-buildkit{}-layers.txt",
        variant.map(|v| format!("-{v}")).unwrap_or_default()
    );
    let body = std::fs::read_to_string(fixture(case).join(name)).unwrap();
    assert!(
        !line_is_warning(&body),
        "{case}: the recorded layers do not match the history"
    );
    let mut layers: Vec<(String, Vec<String>)> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# layer ") {
            let (_, by) = rest.split_once(": ").unwrap();
            layers.push((by.to_string(), Vec::new()));
        } else if line.starts_with('(') {
            continue; // "(empty)", "(the base image's layer, not listed)"
        } else {
            layers.last_mut().unwrap().1.push(line.to_string());
        }
    }
    layers.remove(0);
    layers
}

fn line_is_warning(body: &str) -> bool {
    body.lines().any(|l| l.starts_with("# WARNING"))
}

/// BuildKit's history text without its ` # buildkit` suffix (of RUN, COPY and ADD).
fn strip_buildkit(created_by: &str) -> String {
    created_by.strip_suffix(" # buildkit").unwrap_or(created_by).to_string()
}

fn known(case: &str, created_by: &str) -> Option<&'static KnownDifference> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|k| k.case == case && k.created_by == created_by)
}

/// Builds fixture CASE with the flags Docker was given and compares the result with
/// `docker-buildkit[-VARIANT].json` and its layers; returns the harness, the image name and the
/// build's log. Every difference is collected and the test fails with all of them.
fn conformance(case: &str, variant: Option<&str>, flags: &[&str]) -> (T, String, String) {
    let t = T::new(&format!(
        "fx-{case}{}",
        variant.map(|v| format!("-{v}")).unwrap_or_default()
    ));
    let ctx = fixture_context(&t, case);
    let json_name = format!(
        "docker-buildkit{}.json",
        variant.map(|v| format!("-{v}")).unwrap_or_default()
    );
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(case).join(&json_name)).unwrap()).unwrap();
    let docker_flags: Vec<&str> = expected["build_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(docker_flags, flags, "{json_name}: Docker was built with other flags");
    let image = format!("localhost/berth-fixture/{case}:{}", variant.unwrap_or("buildkit"));
    let mut args = vec!["--no-cache", "-t", image.as_str()];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().unwrap());
    let (_, log) = t.build_ok(&args);

    let mut diffs: Vec<String> = Vec::new();
    let blob = t.config_blob(&image);
    let inspect = t.inspect(&image);
    if inspect["Config"] != blob["config"] {
        diffs.push(format!(
            "image inspect's Config {} is not the config blob's {}",
            inspect["Config"], blob["config"]
        ));
    }
    // The run config.
    for key in CONFIG_KEYS {
        let ours = blob["config"].get(key).cloned().unwrap_or(Value::Null);
        let theirs = &expected["config"][key];
        if &ours != theirs {
            diffs.push(format!("config {key}: berth {ours}, BuildKit {theirs}"));
        }
    }
    let author = blob.get("author").cloned().unwrap_or(Value::Null);
    if author != expected["author"] {
        diffs.push(format!("author: berth {author}, BuildKit {}", expected["author"]));
    }

    // The history after the base image's entries.
    let base = t.config_blob(BASE);
    let base_history = base["history"].as_array().unwrap().len();
    let base_layers = base["rootfs"]["diff_ids"].as_array().unwrap().len();
    let recorded = expected["history"].as_array().unwrap();
    assert_eq!(
        recorded[0]["created_by"], "berth make-images: layer 1 of 1",
        "{json_name}: the recorded base image has one history entry"
    );
    let theirs: Vec<(String, bool)> = recorded[1..]
        .iter()
        .map(|h| {
            (
                strip_buildkit(h["created_by"].as_str().unwrap()),
                h["empty_layer"].as_bool().unwrap(),
            )
        })
        .collect();
    let history = blob["history"].as_array().unwrap();
    let ours: Vec<(String, bool)> = history[base_history.min(history.len())..]
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("<none>").to_string(),
                h.get("empty_layer").and_then(Value::as_bool).unwrap_or(false),
            )
        })
        .collect();
    for h in &history[base_history.min(history.len())..] {
        if h["comment"] != COMMENT {
            diffs.push(format!("history entry {h} has comment {}, not {COMMENT}", h["comment"]));
        }
    }
    // The entries, with the known differences in empty_layer put to BuildKit's value.
    let adjusted: Vec<(String, bool)> = ours
        .iter()
        .map(|(by, empty)| match known(case, by) {
            Some(k) if *empty == k.berth_empty => (by.clone(), k.buildkit_empty),
            _ => (by.clone(), *empty),
        })
        .collect();
    // A known difference that is gone must leave the list.
    for k in KNOWN_DIFFERENCES.iter().filter(|k| k.case == case) {
        let observed = ours.iter().any(|(by, e)| by == k.created_by && *e == k.berth_empty)
            && theirs
                .iter()
                .any(|(by, e)| by == k.created_by && *e == k.buildkit_empty);
        if !observed {
            diffs.push(format!(
                "the known difference of {:?} ({}) is no longer there: remove it from KNOWN_DIFFERENCES",
                k.created_by, k.why
            ));
        }
    }
    if adjusted != theirs {
        let show = |v: &[(String, bool)]| {
            v.iter()
                .map(|(by, e)| format!("\n    {} {by}", if *e { "empty" } else { "layer" }))
                .collect::<String>()
        };
        diffs.push(format!(
            "history (after the base's entries):\n  berth:{}\n  BuildKit (without ' # buildkit'):{}",
            show(&ours),
            show(&theirs)
        ));
    }
    let history_table = t.b.ok(&["image", "history", "--no-trunc", &image]);
    for (by, _) in &ours {
        if !history_table.contains(by.as_str()) {
            diffs.push(format!("`image history --no-trunc` does not show {by:?}"));
        }
    }

    // The layers: as many as history entries with one; the contents as BuildKit's, allowing what
    // BuildKit adds without a change (the `etc` mount point directory of a RUN, parent directories
    // the image has unchanged).
    let layers = t.layers(&image);
    let diff_ids = blob["rootfs"]["diff_ids"].as_array().unwrap().len();
    let with_layer: Vec<&String> = ours.iter().filter(|(_, e)| !e).map(|(by, _)| by).collect();
    if diff_ids != base_layers + with_layer.len() || layers.len() != diff_ids {
        diffs.push(format!(
            "{diff_ids} diff_ids, {} manifest layers, {base_layers} base layers and {} history entries with a layer",
            layers.len(),
            with_layer.len()
        ));
    }
    let mut ours_by_step: BTreeMap<&str, Vec<&Vec<String>>> = BTreeMap::new();
    for (by, lines) in with_layer.iter().zip(layers.iter().skip(base_layers)) {
        ours_by_step.entry(by.as_str()).or_default().push(lines);
    }
    let mut prior = base_dirs(&t.b.rootfs);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (by, lines) in recorded_layers(case, variant) {
        let by = strip_buildkit(&by);
        let n = seen.entry(by.clone()).or_default();
        let index = *n;
        *n += 1;
        let allowed_missing = known(case, &by).is_some_and(|k| k.berth_empty && !k.buildkit_empty);
        let Some(our_lines) = ours_by_step.get(by.as_str()).and_then(|v| v.get(index)) else {
            if !allowed_missing {
                diffs.push(format!("no berth layer for {by:?}"));
            }
            continue;
        };
        let theirs: BTreeSet<&String> = lines.iter().collect();
        let mine: BTreeSet<&String> = our_lines.iter().collect();
        for line in theirs.difference(&mine) {
            let path = line.splitn(5, ' ').nth(4).unwrap_or_default();
            let mount_point = by.starts_with("RUN ") && line.as_str() == "d 0755 0:0 0 etc";
            let unchanged_parent = line.starts_with("d ") && prior.get(path) == Some(*line);
            if !mount_point && !unchanged_parent {
                diffs.push(format!("layer of {by:?}: BuildKit has `{line}`, berth does not"));
            }
        }
        for line in mine.difference(&theirs) {
            diffs.push(format!("layer of {by:?}: berth has `{line}`, BuildKit does not"));
        }
        for line in &lines {
            if line.starts_with("d ") {
                let path = line.splitn(5, ' ').nth(4).unwrap_or_default();
                prior.insert(path.to_string(), line.clone());
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "fixture {case}{}: berth differs from Docker's BuildKit:\n- {}",
        variant.map(|v| format!(" ({v})")).unwrap_or_default(),
        diffs.join("\n- ")
    );
    (t, image, log)
}

#[test]
fn fixture_config() {
    let (t, image, _) = conformance("config", None, &[]);
    // The image runs as its config says: ENTRYPOINT with the shell-form CMD as arguments, as nobody.
    assert_eq!(t.run(&image, &[]), "entry /bin/sh -ec echo \"$a\" \"$c\"\n");
    assert_eq!(t.run(&image, &["x"]), "entry x\n");
}

#[test]
fn fixture_shellform() {
    let (t, image, _) = conformance("shellform", None, &[]);
    // A shell-form ENTRYPOINT ignores the CMD.
    assert_eq!(t.run(&image, &[]), "entry hello world\n");
}

#[test]
fn fixture_chmod() {
    conformance("chmod", None, &[]);
}

#[test]
fn fixture_multistage() {
    let (t, image, log) = conformance("multistage", None, &[]);
    // Like BuildKit, only the stages the target needs are built: not `unused`.
    assert!(!log.contains("echo never"), "the unused stage was built:\n{log}");
    assert_eq!(t.run(&image, &[]), "built plain\n");
}

#[test]
fn fixture_multistage_target_build() {
    let (_, _, log) = conformance("multistage", Some("target-build"), &["--target", "build"]);
    assert!(
        !log.contains("COPY --from"),
        "the build went past the target stage:\n{log}"
    );
}

#[test]
fn fixture_args() {
    let (t, image, _) = conformance("args", None, &[]);
    assert_eq!(t.run(&image, &[]), "hello, world\n");
    assert_eq!(t.run(&image, &["cat", "/args.txt"]), "unset=[] message=[hello world]\n");
}

#[test]
fn fixture_args_build_arg() {
    let (t, image, _) = conformance("args", Some("build-arg"), &["--build-arg", "GREETING=hi"]);
    assert_eq!(t.run(&image, &[]), "hi, world\n");
}

#[test]
fn fixture_dockerignore() {
    let (t, image, _) = conformance("dockerignore", None, &[]);
    let listing = std::fs::read_to_string(fixture("dockerignore").join("listing.txt")).unwrap();
    assert_eq!(t.run(&image, &["cat", "/listing"]), listing);
}

#[test]
fn output_names_the_image_as_docker_does() {
    let t = T::new("output");
    let ctx = t.context(
        "output",
        &[("Dockerfile", "FROM localhost/busybox:latest\nLABEL x=y\n")],
    );
    let (out, _) = t.build_ok(&["-t", "plainname", "-t", "localhost/other:v2", ctx.to_str().unwrap()]);
    let id = t.inspect("localhost/other:v2")["Id"].as_str().unwrap().to_string();
    assert_eq!(t.inspect("plainname")["Id"], id.as_str());
    // Docker prints the names as given, normalized to their familiar form.
    assert_eq!(
        out,
        format!(
            "Successfully built {}\nSuccessfully tagged plainname:latest\nSuccessfully tagged localhost/other:v2\n",
            &id[7..19]
        )
    );
}

#[test]
fn user_and_workdir_apply_to_run_and_to_the_container() {
    let t = T::new("user");
    let ctx = t.context(
        "user",
        &[(
            "Dockerfile",
            "FROM localhost/busybox:latest\nRUN { id -u; pwd; } > /tmp/root.txt\nWORKDIR /srv/app\n\
             USER 65534:65534\nRUN { id -u; id -g; pwd; } > /tmp/who.txt\nWORKDIR sub\n\
             RUN pwd > /tmp/sub.txt\n",
        )],
    );
    let id = t.build_q(&[ctx.to_str().unwrap()]);
    assert_eq!(t.run(&id, &["cat", "/tmp/root.txt"]), "0\n/\n");
    assert_eq!(t.run(&id, &["cat", "/tmp/who.txt"]), "65534\n65534\n/srv/app\n");
    assert_eq!(t.run(&id, &["cat", "/tmp/sub.txt"]), "/srv/app/sub\n");
    assert_eq!(t.run(&id, &["sh", "-c", "id -u; pwd"]), "65534\n/srv/app/sub\n");
    // The WORKDIR RUN's user could not have made is root's.
    assert_eq!(t.run(&id, &["stat", "-c", "%u %a", "/srv/app/sub"]), "0 755\n");
}

#[test]
fn built_image_runs_with_its_config() {
    let t = T::new("runs");
    let ctx = t.context(
        "runs",
        &[
            (
                "Dockerfile",
                "FROM localhost/busybox:latest\nENV GREETING=hello\nWORKDIR /app\nCOPY greet.sh /app/\n\
                 RUN chmod +x /app/greet.sh\nENTRYPOINT [\"/app/greet.sh\"]\nCMD [\"world\"]\n",
            ),
            ("greet.sh", "#!/bin/sh\necho \"$GREETING $1 from $(pwd)\"\n"),
        ],
    );
    let (out, _) = t.build_ok(&[
        "-t",
        "localhost/greeter:v1",
        "--label",
        "built.by=test",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.ends_with("Successfully tagged localhost/greeter:v1\n"), "{out}");
    assert_eq!(t.run("localhost/greeter:v1", &[]), "hello world from /app\n");
    assert_eq!(t.run("localhost/greeter:v1", &["berth"]), "hello berth from /app\n");
    let out =
        t.b.berth(&["container", "run", "--rm", "-e", "GREETING=bye", "localhost/greeter:v1"]);
    assert_eq!(succeeded(&["container", "run"], &out), "bye world from /app\n");
    assert_eq!(
        t.inspect("localhost/greeter:v1")["Config"]["Labels"],
        serde_json::json!({"built.by": "test"})
    );
}
