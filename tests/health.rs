//! Root integration tests of healthchecks, through the `berth container` CLI against the real kernel:
//! the supervisor's probes, Docker's status rules, the log in `inspect` and the `ps` status. Each test
//! has its own state root; the `Berth` guard removes its containers even when the test fails. Times
//! are hundreds of milliseconds so the file runs in seconds; waits are on conditions, with generous
//! limits.

mod common;

use std::time::{Duration, Instant};

use common::berth::{Berth, text};
use serde_json::Value;

/// `State.Health` of a container (`Null` when it has none).
fn health(env: &Berth, id: &str) -> Value {
    env.inspect(id)["State"]["Health"].clone()
}

/// The STATUS column of `ps` for a container.
fn ps_status(env: &Berth, id: &str) -> String {
    let out = env.ok(&["container", "ps", "-a"]);
    let line = out
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_else(|| panic!("{id} not in ps:\n{out}"));
    // Columns are separated by at least three spaces; STATUS is the fifth.
    let cols: Vec<&str> = line.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    cols[4].to_string()
}

/// Waits until the health status is `want`, returning `State.Health` then.
fn wait_status(env: &Berth, id: &str, want: &str, secs: u64) -> Value {
    let mut h = Value::Null;
    env.until(secs, &format!("health {want}"), || {
        h = health(env, id);
        h["Status"] == want
    });
    h
}

#[test]
fn a_passing_check_becomes_healthy() {
    let env = Berth::new("health-pass");
    let id = env.run_d(
        &["--health-cmd", "echo ok from $HOSTNAME", "--health-interval", "200ms"],
        &["sleep", "100"],
    );
    let h = wait_status(&env, &id, "healthy", 10);
    assert_eq!(h["FailingStreak"], 0);
    let log = h["Log"].as_array().unwrap();
    let last = log.last().unwrap();
    assert_eq!(last["ExitCode"], 0);
    // The probe runs in the container, with its environment.
    assert_eq!(last["Output"], format!("ok from {}\n", &id[..12]));
    let (start, end) = (last["Start"].as_str().unwrap(), last["End"].as_str().unwrap());
    let start: jiff::Timestamp = start.parse().unwrap();
    let end: jiff::Timestamp = end.parse().unwrap();
    assert!(start <= end, "{start} > {end}");
    assert!(ps_status(&env, &id).ends_with("(healthy)"), "{}", ps_status(&env, &id));
    let config = &env.inspect(&id)["Config"]["Healthcheck"];
    assert_eq!(
        config["Test"],
        serde_json::json!(["CMD-SHELL", "echo ok from $HOSTNAME"])
    );
    assert_eq!(config["Interval"], 200_000_000);

    // Output is cut at 4096 bytes, as Docker does.
    let loud = env.run_d(
        &[
            "--health-cmd",
            "head -c 100000 /dev/zero | tr '\\0' x",
            "--health-interval",
            "200ms",
        ],
        &["sleep", "100"],
    );
    let h = wait_status(&env, &loud, "healthy", 10);
    let output = h["Log"][0]["Output"].as_str().unwrap().to_string();
    assert_eq!(output.len(), 4096 + 3, "{output}");
    assert!(output.starts_with("xxxx") && output.ends_with("x..."), "{output}");

    // Before the first probe (the interval is long) it is starting.
    let slow = env.run_d(&["--health-cmd", "true", "--health-interval", "1m"], &["sleep", "100"]);
    let h = health(&env, &slow);
    assert_eq!(h["Status"], "starting", "{h}");
    assert_eq!(h["Log"], serde_json::json!([]));
    let st = ps_status(&env, &slow);
    assert!(st.starts_with("Up ") && st.ends_with("(health: starting)"), "{st}");
}

#[test]
fn a_failing_check_becomes_unhealthy_after_retries() {
    let env = Berth::new("health-fail");
    let id = env.run_d(
        &[
            "--health-cmd",
            "echo nope; echo err >&2; exit 3",
            "--health-interval",
            "200ms",
            "--health-retries",
            "3",
        ],
        &["sleep", "100"],
    );
    // Follow the streak: never unhealthy before three failures.
    let mut seen = Vec::new();
    env.until(10, "a failing streak of 6", || {
        let h = health(&env, &id);
        let streak = h["FailingStreak"].as_u64().unwrap_or(0);
        let status = h["Status"].as_str().unwrap_or("").to_string();
        seen.push((status.clone(), streak));
        assert!(
            (status == "unhealthy") == (streak >= 3),
            "status {status} with a failing streak of {streak}: {h}"
        );
        streak >= 6
    });
    assert!(seen.iter().any(|(s, _)| s == "starting"), "{seen:?}");
    let h = health(&env, &id);
    assert_eq!(h["Status"], "unhealthy");
    // The log keeps the last five results; stdout and stderr both land in the output.
    let log = h["Log"].as_array().unwrap();
    assert_eq!(log.len(), 5, "{h}");
    for r in log {
        assert_eq!(r["ExitCode"], 3);
        assert_eq!(r["Output"], "nope\nerr\n");
    }
    assert!(
        ps_status(&env, &id).ends_with("(unhealthy)"),
        "{}",
        ps_status(&env, &id)
    );
    // Unhealthy is only reported: the container keeps running.
    assert_eq!(env.inspect(&id)["State"]["Status"], "running");

    // A command that cannot run fails with Docker's -1 and the reason.
    let id = env.run_d(
        &[
            "--health-cmd",
            "true",
            "--health-interval",
            "100ms",
            "--health-retries",
            "1",
        ],
        &["sh", "-c", "rm /bin/sh; sleep 100"],
    );
    let h = wait_status(&env, &id, "unhealthy", 10);
    let last = &h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1, "{h}");
    assert!(last["Output"].as_str().unwrap().contains("/bin/sh"), "{h}");
}

#[test]
fn a_hanging_check_is_killed_at_its_timeout() {
    let env = Berth::new("health-timeout");
    // `; true` keeps the shell waiting on sleep, so killing only the shell would leave sleep behind.
    let id = env.run_d(
        &[
            "--health-cmd",
            "sleep 30; true",
            "--health-timeout",
            "300ms",
            "--health-interval",
            "100ms",
            "--health-retries",
            "2",
        ],
        &["sleep", "100"],
    );
    let t = Instant::now();
    let h = wait_status(&env, &id, "unhealthy", 10);
    // Two probes of 300ms each, 100ms apart.
    assert!(t.elapsed() >= Duration::from_millis(600), "{:?}", t.elapsed());
    assert!(h["FailingStreak"].as_u64().unwrap_or(0) >= 2, "{h}");
    for r in h["Log"].as_array().unwrap() {
        assert_eq!(r["ExitCode"], -1, "{h}");
        assert_eq!(r["Output"], "Health check exceeded timeout (300ms)");
        let start: jiff::Timestamp = r["Start"].as_str().unwrap().parse().unwrap();
        let end: jiff::Timestamp = r["End"].as_str().unwrap().parse().unwrap();
        let took = end.duration_since(start).as_secs_f64();
        assert!((0.25..2.0).contains(&took), "a probe took {took}s: {h}");
    }
    // Killed with everything it started: at most the current probe's sleep runs.
    env.until(10, "a longer failing streak", || {
        health(&env, &id)["FailingStreak"].as_u64().unwrap_or(0) >= 4
    });
    let top = env.ok(&["container", "top", &id]);
    // The current probe is a shell and its sleep; earlier ones must be gone.
    let sleeps = top.lines().filter(|l| l.ends_with("   sleep 30")).count();
    assert!(sleeps <= 1, "probes were left running:\n{top}");
}

#[test]
fn failures_in_the_start_period_do_not_count() {
    let env = Berth::new("health-start");
    // Fails until the process is ready after ~1s; one failure after the period would be enough.
    let id = env.run_d(
        &[
            "--health-cmd",
            "test -e /tmp/ready",
            "--health-interval",
            "100ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "5s",
            "--health-start-interval",
            "100ms",
        ],
        &["sh", "-c", "sleep 1; touch /tmp/ready; sleep 100"],
    );
    let mut failed_while_starting = false;
    env.until(10, "healthy", || {
        let h = health(&env, &id);
        assert_ne!(h["Status"], "unhealthy", "a failure in the start period counted: {h}");
        if h["Status"] == "starting" {
            assert_eq!(h["FailingStreak"], 0, "{h}");
            failed_while_starting |= h["Log"]
                .as_array()
                .is_some_and(|l| l.iter().any(|r| r["ExitCode"] == 1));
        }
        h["Status"] == "healthy"
    });
    assert!(failed_while_starting, "no failure was seen during the start period");

    // Once the period is over, failures count.
    let t = Instant::now();
    let id = env.run_d(
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "100ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "800ms",
            "--health-start-interval",
            "100ms",
        ],
        &["sleep", "100"],
    );
    wait_status(&env, &id, "unhealthy", 10);
    assert!(t.elapsed() >= Duration::from_millis(800), "{:?}", t.elapsed());

    // The start interval applies during the start period: healthy long before the 1m interval.
    let id = env.run_d(
        &[
            "--health-cmd",
            "true",
            "--health-interval",
            "1m",
            "--health-start-period",
            "1m",
            "--health-start-interval",
            "100ms",
        ],
        &["sleep", "100"],
    );
    wait_status(&env, &id, "healthy", 10);
}

#[test]
fn no_healthcheck_disables_it() {
    let env = Berth::new("health-none");
    let id = env.run_d(&["--no-healthcheck"], &["sleep", "100"]);
    assert_eq!(
        env.inspect(&id)["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(health(&env, &id), Value::Null);
    let st = ps_status(&env, &id);
    assert!(st.starts_with("Up ") && !st.contains('('), "{st}");
    // Without any flag there is no check either.
    let plain = env.run_d(&[], &["sleep", "100"]);
    assert_eq!(health(&env, &plain), Value::Null);
    assert_eq!(env.inspect(&plain)["Config"]["Healthcheck"], Value::Null);

    // Docker's flag errors.
    let rootfs = env.rootfs.to_string_lossy().into_owned();
    for (flags, message) in [
        (
            &["--no-healthcheck", "--health-cmd", "true"][..],
            "--no-healthcheck conflicts with --health-* options",
        ),
        (&["--health-interval", "-1s"], "--health-interval cannot be negative"),
        (&["--health-retries", "-2"], "--health-retries cannot be negative"),
        (&["--health-timeout", "soon"], "invalid --health-timeout"),
    ] {
        let mut args = vec!["container", "create", "--rootfs", rootfs.as_str()];
        args.extend_from_slice(flags);
        args.push("true");
        let out = env.berth(&args);
        assert_ne!(out.status.code(), Some(0), "{flags:?} was accepted");
        assert!(text(&out.stderr).contains(message), "{flags:?}: {}", text(&out.stderr));
    }
}

#[test]
fn health_resets_when_the_process_restarts() {
    let env = Berth::new("health-restart");
    // The first run is healthy and exits; the restarted one fails its checks (but fewer than the
    // retries), so only a reset can make it `starting` again.
    let id = env.run_d(
        &[
            "--restart",
            "always",
            "--health-cmd",
            "test -e /tmp/ok",
            "--health-interval",
            "100ms",
            "--health-retries",
            "1000",
        ],
        &[
            "sh",
            "-c",
            "if [ -e /tmp/ran ]; then rm -f /tmp/ok; sleep 100; else touch /tmp/ran /tmp/ok; sleep 2; exit 1; fi",
        ],
    );
    wait_status(&env, &id, "healthy", 10);
    env.until(10, "a restart with a failing check", || {
        let doc = env.inspect(&id);
        let h = &doc["State"]["Health"];
        doc["RestartCount"].as_u64().unwrap_or(0) >= 1
            && doc["State"]["Status"] == "running"
            && h["FailingStreak"].as_u64().unwrap_or(0) >= 2
    });
    let h = health(&env, &id);
    assert_eq!(h["Status"], "starting", "{h}");
    // The log starts again too: only the new run's failures.
    let log = h["Log"].as_array().unwrap();
    assert!(log.iter().all(|r| r["ExitCode"] == 1), "{h}");

    // No health once the process is gone.
    env.ok(&["container", "stop", "-t", "0", &id]);
    let doc = env.inspect(&id);
    assert_eq!(doc["State"]["Status"], "exited");
    assert_eq!(doc["State"]["Health"], Value::Null);
    assert!(ps_status(&env, &id).starts_with("Exited"), "{}", ps_status(&env, &id));
}
