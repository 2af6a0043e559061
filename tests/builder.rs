//! Dockerfile builds end to end through the CLI, as root: the cache, errors, here-documents, archives,
//! ownership, ONBUILD, a Compose build under `up`, and a C program compiled with Debian's toolchain.
//! The comparisons with what Docker's BuildKit made of the fixtures are in `build_conformance.rs`.

mod common;

use std::path::Path;

use common::berth::{Berth, text};
use serde_json::Value;

/// A state root with the busybox image as `localhost/busybox:latest`.
fn with_busybox(name: &str) -> Berth {
    let b = Berth::new(&format!("build-{name}"));
    b.import_busybox("localhost/busybox:latest", &[r#"CMD ["sh"]"#]);
    b
}

/// An empty build context directory in the state root.
fn context(b: &Berth) -> std::path::PathBuf {
    let ctx = b.root.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    ctx
}

/// The image config of `image` (its id is the config blob's digest).
fn config(b: &Berth, image: &str) -> Value {
    let id = b.ok(&["image", "inspect", image]);
    let doc: Value = serde_json::from_str(&id).unwrap();
    let id = doc[0]["Id"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    serde_json::from_slice(&std::fs::read(b.root.join("images/blobs/sha256").join(id)).unwrap()).unwrap()
}

#[test]
fn cache_hits_and_misses() {
    let b = with_busybox("cache");
    let ctx = context(&b);
    std::fs::write(ctx.join("app.txt"), "v1\n").unwrap();
    std::fs::write(ctx.join("noise.log"), "a\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:latest\nRUN echo one > /one\nCOPY app.txt /app.txt\nRUN cat /app.txt > /copy\nCMD [\"cat\", \"/copy\"]\n",
    )
    .unwrap();
    let c = ctx.to_str().unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["image", "build", "-t", "cache/app:1"];
        args.extend_from_slice(extra);
        args.push(c);
        let out = b.berth(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let first = build(&[]);
    assert_eq!(first.matches("Using cache").count(), 0, "{first}");
    let id1 = b.ok(&["image", "build", "-q", "-t", "cache/app:1", c]);
    std::fs::write(ctx.join("noise.log"), "b\n").unwrap();
    let again = build(&[]);
    assert_eq!(
        again.matches("Using cache").count(),
        4,
        "an ignored file keeps the cache: {again}"
    );
    assert_eq!(b.ok(&["image", "build", "-q", "-t", "cache/app:1", c]), id1);
    std::fs::write(ctx.join("app.txt"), "v2\n").unwrap();
    let changed = build(&[]);
    assert_eq!(
        changed.matches("Using cache").count(),
        1,
        "the COPY and what follows run again: {changed}"
    );
    assert_eq!(b.ok(&["container", "run", "--rm", "cache/app:1"]), "v2\n");
    let forced = build(&["--no-cache"]);
    assert_eq!(forced.matches("Using cache").count(), 0, "{forced}");
}

#[test]
fn a_killed_build_leaves_its_container_to_the_next_build() {
    let b = with_busybox("killed");
    let ctx = context(&b);
    std::fs::write(ctx.join("Dockerfile"), "FROM localhost/busybox:latest\nRUN sleep 60\n").unwrap();
    let c = ctx.to_str().unwrap();
    let mut build = b
        .command(&["image", "build", "-t", "killed/app", c])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let steps = || b.ok(&["container", "ps", "-a"]);
    common::berth::until(20, "the RUN step's container", || steps().contains("berth-build-"));
    build.kill().unwrap();
    build.wait().unwrap();
    assert!(
        steps().contains("berth-build-"),
        "the killed build's step is still there"
    );
    std::fs::write(ctx.join("Dockerfile"), "FROM localhost/busybox:latest\nRUN true\n").unwrap();
    b.ok(&["image", "build", "-t", "next/app", c]);
    let left = steps();
    assert!(
        !left.contains("berth-build-"),
        "the next build removed the abandoned step's container:\n{left}"
    );
}

#[test]
fn errors_name_the_step_and_the_line() {
    let b = with_busybox("errors");
    let ctx = context(&b);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:latest\nRUN echo boom; exit 3\n",
    )
    .unwrap();
    let out = b.berth(&["image", "build", ctx.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("step 2/2 failed") && err.contains("exit code 3") && err.contains("boom"),
        "{err}"
    );
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:latest\nRUN true\nNOPE x\n",
    )
    .unwrap();
    let out = b.berth(&["image", "build", ctx.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("Dockerfile:3"), "{}", text(&out.stderr));
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:latest\nCOPY missing.txt /x\n",
    )
    .unwrap();
    let out = b.berth(&["image", "build", ctx.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("missing.txt"), "{}", text(&out.stderr));
    let out = b.berth(&["image", "build", "--target", "nope", ctx.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    // Nothing is left running or stored by failed builds.
    assert_eq!(b.ok(&["container", "ps", "-a", "-q"]), "");
}

#[test]
fn heredocs_archives_ownership_and_onbuild() {
    let b = with_busybox("features");
    let ctx = b.root.join("ctx");
    std::fs::create_dir_all(ctx.join("tree")).unwrap();
    std::fs::write(ctx.join("tree/inner.txt"), "inner\n").unwrap();
    let tgz = std::fs::File::create(ctx.join("bundle.tar.gz")).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(tgz, flate2::Compression::default()));
    t.append_dir_all("tree", ctx.join("tree")).unwrap();
    t.into_inner().unwrap().finish().unwrap();
    std::fs::write(ctx.join("owned.txt"), "owned\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:latest AS parent\nONBUILD RUN touch /triggered\n\
         FROM parent\n\
         RUN <<EOF\nset -e\necho from-heredoc > /h.txt\nEOF\n\
         COPY <<EOF /etc/greeting\nhello $HOSTNAME_UNSET!\nEOF\n\
         ADD bundle.tar.gz /opt/bundle/\n\
         COPY --chown=1000:1000 --chmod=0640 owned.txt /srv/owned.txt\n\
         FROM scratch AS final\nCOPY --from=1 /h.txt /triggered /opt/bundle/tree/inner.txt /srv/owned.txt /out/\n",
    )
    .unwrap();
    b.ok(&[
        "image",
        "build",
        "--target",
        "1",
        "-t",
        "feat/mid:1",
        ctx.to_str().unwrap(),
    ]);
    let got = b.ok(&[
        "container",
        "run",
        "--rm",
        "feat/mid:1",
        "sh",
        "-c",
        "cat /h.txt /etc/greeting /opt/bundle/tree/inner.txt; stat -c '%u:%g %a' /srv/owned.txt /srv; ls /triggered",
    ]);
    assert_eq!(
        got,
        "from-heredoc\nhello !\ninner\n1000:1000 640\n1000:1000 755\n/triggered\n"
    );
    b.ok(&["image", "build", "-t", "feat/final:1", ctx.to_str().unwrap()]);
    let cfg = config(&b, "feat/final:1");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1, "{cfg}");
}

#[test]
fn compose_builds_and_recreates_on_change() {
    let b = with_busybox("compose");
    let dir = b.root.join("proj");
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(
        dir.join("web/Dockerfile"),
        "FROM localhost/busybox:latest\nARG MSG=default\nRUN echo \"$MSG\" > /msg\nCMD [\"sh\", \"-c\", \"cat /msg; exec sleep 1000\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  web:\n    build:\n      context: ./web\n      args:\n        MSG: from-compose\n",
    )
    .unwrap();
    let file = dir.join("compose.yaml");
    let f = file.to_str().unwrap();
    let compose = |args: &[&str]| {
        let mut all = vec!["-f", f, "-p", "tbuild"];
        all.extend_from_slice(args);
        b.berth(&all)
    };
    let out = compose(&["up", "-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    b.until(10, "the log", || {
        text(&compose(&["logs", "web"]).stdout).contains("from-compose")
    });
    std::fs::write(
        dir.join("web/Dockerfile"),
        "FROM localhost/busybox:latest\nARG MSG=default\nRUN echo \"$MSG v2\" > /msg\nCMD [\"sh\", \"-c\", \"cat /msg; exec sleep 1000\"]\n",
    )
    .unwrap();
    let out = compose(&["up", "-d", "--build"]);
    let err = text(&out.stderr);
    assert!(out.status.success() && err.contains("Recreated"), "{err}");
    b.until(10, "the new log", || {
        text(&compose(&["logs", "web"]).stdout).contains("from-compose v2")
    });
    let out = compose(&["build", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = compose(&["down", "-t", "0", "--rmi", "local"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b.ok(&["container", "ps", "-a", "-q"]), "");
}

#[test]
fn a_stage_compiles_c_with_debians_toolchain_and_the_final_stage_runs_it() {
    let b = with_busybox("compile");
    let images = b.root.join("images-out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-images.sh");
    let made = std::process::Command::new("bash")
        .arg(&script)
        .arg(&images)
        .arg("--debian")
        .output()
        .expect("run scripts/make-images.sh (needs debootstrap: apt-get install debootstrap)");
    assert!(
        made.status.success(),
        "make-images.sh --debian failed (is debootstrap installed?): {}",
        text(&made.stderr)
    );
    b.ok(&["image", "load", "-i", images.join("debian.tar").to_str().unwrap()]);
    let ctx = context(&b);
    std::fs::write(
        ctx.join("hello.c"),
        "#include <stdio.h>\nint main(void) { printf(\"compiled by berth\\n\"); return 0; }\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm AS build\n\
         RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null\n\
         COPY hello.c /src/hello.c\n\
         RUN gcc -static -O2 -o /hello /src/hello.c\n\
         FROM localhost/busybox:latest\n\
         COPY --from=build /hello /usr/local/bin/hello\n\
         CMD [\"hello\"]\n",
    )
    .unwrap();
    b.ok(&["image", "build", "-q", "-t", "compiled/hello:1", ctx.to_str().unwrap()]);
    assert_eq!(
        b.ok(&["container", "run", "--rm", "compiled/hello:1"]),
        "compiled by berth\n"
    );
    // The final image is the busybox layer plus the one COPY: nothing of the toolchain.
    let cfg = config(&b, "compiled/hello:1");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2, "{cfg}");
}
