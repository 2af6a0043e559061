//! Healthchecks with Docker's semantics: the check a `ContainerSpec` carries (`Healthcheck`), the
//! `Health` record the supervisor keeps in `state.json`, and the pure rules between them: which
//! argv a test runs, when the next probe is due, how a result moves the status (`starting` →
//! `healthy` / `unhealthy`), the five-entry log and its 4096-byte outputs. The supervisor runs
//! the probes; nothing here touches the system.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Result, RuntimeError};

/// Docker's default time between probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Docker's default time a probe may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Docker's default number of consecutive failures that make a container unhealthy.
pub const DEFAULT_RETRIES: u32 = 3;
/// Docker's default time between probes during the start period.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest non-zero duration Docker accepts for any of the check's times.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// Results kept in `Health::log`, as Docker's `State.Health.Log`.
pub const MAX_LOG_ENTRIES: usize = 5;
/// Bytes of a probe's output kept in a result; more is cut and marked with `...`, as Docker does.
pub const MAX_OUTPUT: usize = 4096;

/// A container's healthcheck, in Docker's terms. Times are `None` (or zero) for Docker's defaults;
/// they are stored in `config.json` as whole milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Healthcheck {
    /// Docker's form: `["NONE"]` disables the check, `["CMD", argv…]` runs argv directly,
    /// `["CMD-SHELL", command]` runs `/bin/sh -c command`. Empty: no check.
    #[serde(default)]
    pub test: Vec<String>,
    /// Time between probes (default 30s).
    #[serde(default, with = "millis")]
    pub interval: Option<Duration>,
    /// Time after which a probe is killed and counted as failed (default 30s).
    #[serde(default, with = "millis")]
    pub timeout: Option<Duration>,
    /// Consecutive failures that make the container unhealthy (default 3).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Time after each start during which failures do not count (default 0).
    #[serde(default, with = "millis")]
    pub start_period: Option<Duration>,
    /// Time between probes during the start period (default 5s).
    #[serde(default, with = "millis")]
    pub start_interval: Option<Duration>,
}

/// Zero means "the default", as in Docker's API.
fn or_default(d: Option<Duration>, default: Duration) -> Duration {
    d.filter(|d| !d.is_zero()).unwrap_or(default)
}

impl Healthcheck {
    /// The argv a probe runs, or `None` when the check is disabled (`NONE`, or no test at all).
    pub fn probe_args(&self) -> Result<Option<Vec<String>>> {
        let Some((kind, rest)) = self.test.split_first() else {
            return Ok(None);
        };
        match kind.as_str() {
            "NONE" => Ok(None),
            "CMD" if rest.is_empty() => Err(RuntimeError::Spec(
                "healthcheck test [\"CMD\"] names no command; give [\"CMD\", program, args…]".into(),
            )),
            "CMD" => Ok(Some(rest.to_vec())),
            "CMD-SHELL" if rest.is_empty() => Err(RuntimeError::Spec(
                "healthcheck test [\"CMD-SHELL\"] names no command; give [\"CMD-SHELL\", command]".into(),
            )),
            "CMD-SHELL" => {
                let mut argv = vec!["/bin/sh".to_string(), "-c".to_string()];
                argv.extend(rest.iter().cloned());
                Ok(Some(argv))
            }
            other => Err(RuntimeError::Spec(format!(
                "unknown healthcheck type {other:?} in test {:?}: expected \"CMD\", \"CMD-SHELL\" or \"NONE\"",
                self.test
            ))),
        }
    }

    /// An image config's `Healthcheck` (Docker's `HealthConfig`: `Test`, times in nanoseconds,
    /// `Retries`); fields of the wrong type are ignored.
    pub fn from_docker(v: &serde_json::Value) -> Healthcheck {
        let time = |k: &str| v[k].as_u64().filter(|n| *n > 0).map(Duration::from_nanos);
        Healthcheck {
            test: v["Test"]
                .as_array()
                .map(|t| t.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            interval: time("Interval"),
            timeout: time("Timeout"),
            retries: v["Retries"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .filter(|r| *r > 0),
            start_period: time("StartPeriod"),
            start_interval: time("StartInterval"),
        }
    }

    /// This check with what it leaves unset (no test, zero or absent times, no retries) taken from
    /// `base`, as Docker's daemon merges a container's check over its image's.
    pub fn or_from(mut self, base: &Healthcheck) -> Healthcheck {
        let is_set = |d: Option<Duration>| d.is_some_and(|d| !d.is_zero());
        let pick = |ours: Option<Duration>, theirs: Option<Duration>| if is_set(ours) { ours } else { theirs };
        if self.test.is_empty() {
            self.test = base.test.clone();
        }
        self.interval = pick(self.interval, base.interval);
        self.timeout = pick(self.timeout, base.timeout);
        self.start_period = pick(self.start_period, base.start_period);
        self.start_interval = pick(self.start_interval, base.start_interval);
        self.retries = self.retries.filter(|r| *r > 0).or(base.retries);
        self
    }

    /// Whether the check runs probes at all (a valid, not disabled test).
    pub fn enabled(&self) -> bool {
        matches!(self.probe_args(), Ok(Some(_)))
    }

    /// Checks what Docker checks at create time: a known test form, and times that are zero (the
    /// default) or at least 1ms.
    pub fn validate(&self) -> Result<()> {
        self.probe_args()?;
        for (name, d) in [
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("start period", self.start_period),
            ("start interval", self.start_interval),
        ] {
            if let Some(d) = d
                && !d.is_zero()
                && d < MIN_DURATION
            {
                return Err(RuntimeError::Spec(format!(
                    "healthcheck {name} cannot be less than 1ms (got {})",
                    go_duration(d)
                )));
            }
        }
        Ok(())
    }

    /// Time between probes.
    pub fn interval(&self) -> Duration {
        or_default(self.interval, DEFAULT_INTERVAL)
    }
    /// Time a probe may run.
    pub fn timeout(&self) -> Duration {
        or_default(self.timeout, DEFAULT_TIMEOUT)
    }
    /// Consecutive failures before `unhealthy`.
    pub fn retries(&self) -> u32 {
        self.retries.filter(|r| *r > 0).unwrap_or(DEFAULT_RETRIES)
    }
    /// The start period.
    pub fn start_period(&self) -> Duration {
        self.start_period.unwrap_or_default()
    }
    /// Time between probes during the start period.
    pub fn start_interval(&self) -> Duration {
        or_default(self.start_interval, DEFAULT_START_INTERVAL)
    }

    /// The wait before the next probe, counted from the end of the last one (or from the start):
    /// the start interval while the container is starting within its start period, else the
    /// interval (Docker's `getInterval`).
    pub fn next_delay(&self, status: HealthStatus, since_start: Duration) -> Duration {
        if status == HealthStatus::Starting && since_start < self.start_period() {
            self.start_interval()
        } else {
            self.interval()
        }
    }

    /// Whether a probe that began `since_start` after the process started is in the start period.
    pub fn in_start_period(&self, since_start: Duration) -> bool {
        since_start < self.start_period()
    }
}

/// The health of a running container, with Docker's names.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No probe has succeeded since the process started, and failures have not reached `retries`.
    #[default]
    Starting,
    /// The last probe succeeded, or failures since have not reached `retries`.
    Healthy,
    /// `retries` consecutive probes failed.
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// One probe's result, as an entry of Docker's `State.Health.Log`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthResult {
    /// When it started, RFC 3339.
    pub start: String,
    /// When it ended, RFC 3339.
    pub end: String,
    /// 0 healthy, anything else a failure; -1 when it could not run or timed out.
    pub exit_code: i32,
    /// Its stdout and stderr together, at most `MAX_OUTPUT` bytes (then `...`).
    pub output: String,
}

/// The health record in `state.json` while the container runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// Current status.
    pub status: HealthStatus,
    /// Consecutive failed probes that counted (outside the start period, or after a success).
    pub failing_streak: u32,
    /// The last `MAX_LOG_ENTRIES` results, oldest first.
    pub log: Vec<HealthResult>,
}

impl Health {
    /// The record of a freshly (re)started process.
    pub fn starting() -> Health {
        Health::default()
    }

    /// Applies a probe's result (Docker's `handleProbeResult`). A success makes the container
    /// healthy and ends the streak. A failure adds to the streak, unless the container is still
    /// starting within its start period; `retries` counted failures make it unhealthy.
    pub fn record(&mut self, result: HealthResult, in_start_period: bool, retries: u32) {
        let passed = result.exit_code == 0;
        self.log.push(result);
        if self.log.len() > MAX_LOG_ENTRIES {
            let extra = self.log.len() - MAX_LOG_ENTRIES;
            self.log.drain(..extra);
        }
        if passed {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
            return;
        }
        if self.status == HealthStatus::Starting && in_start_period {
            return;
        }
        self.failing_streak = self.failing_streak.saturating_add(1);
        if self.failing_streak >= retries.max(1) {
            self.status = HealthStatus::Unhealthy;
        }
    }
}

/// A probe's output for the log: the first `MAX_OUTPUT` bytes as (lossy) UTF-8, with `...` when
/// `truncated` says more was written.
pub fn output_text(kept: &[u8], truncated: bool) -> String {
    let kept = &kept[..kept.len().min(MAX_OUTPUT)];
    let mut s = String::from_utf8_lossy(kept).into_owned();
    if truncated {
        s.push_str("...");
    }
    s
}

/// The output Docker records for a probe killed at its timeout.
pub fn timeout_output(timeout: Duration) -> String {
    format!("Health check exceeded timeout ({})", go_duration(timeout))
}

/// A duration as Go's `time.Duration.String` prints it (`500ms`, `1.5s`, `1m30s`, `1h0m0s`), which
/// is how Docker's messages show them.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |value: u128, unit: u128| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{whole}.{rest:0digits$}");
        s.trim_end_matches('0').to_string()
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = frac(ns % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `Option<Duration>` as whole milliseconds (a plain JSON number, or null).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> HealthResult {
        HealthResult {
            exit_code: code,
            ..Default::default()
        }
    }

    fn check(test: &[&str]) -> Healthcheck {
        Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_success_makes_it_healthy_and_ends_the_streak() {
        let mut h = Health::starting();
        assert_eq!(h.status, HealthStatus::Starting);
        h.record(result(1), false, 3);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 1));
        h.record(result(0), false, 3);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy() {
        let mut h = Health::starting();
        h.record(result(0), false, 3);
        h.record(result(1), false, 3);
        h.record(result(2), false, 3);
        // Healthy stays healthy until the streak reaches retries.
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 2));
        h.record(result(-1), false, 3);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 3));
        h.record(result(1), false, 3);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 4));
        h.record(result(0), false, 3);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        // A starting container becomes unhealthy directly.
        let mut h = Health::starting();
        h.record(result(1), false, 1);
        assert_eq!(h.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_unless_healthy() {
        let mut h = Health::starting();
        for _ in 0..10 {
            h.record(result(1), true, 1);
        }
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        // A success in it counts: healthy, and later failures count even within the period.
        h.record(result(0), true, 1);
        assert_eq!(h.status, HealthStatus::Healthy);
        h.record(result(1), true, 1);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 1));
        // After the period failures count while starting.
        let mut h = Health::starting();
        h.record(result(1), false, 2);
        h.record(result(1), false, 2);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 2));
    }

    #[test]
    fn the_log_keeps_the_last_five() {
        let mut h = Health::starting();
        for code in 0..8 {
            h.record(result(code), false, 100);
        }
        let codes: Vec<i32> = h.log.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn tests_map_to_argv_like_docker() {
        assert_eq!(check(&[]).probe_args().unwrap(), None);
        assert_eq!(check(&["NONE"]).probe_args().unwrap(), None);
        assert_eq!(
            check(&["CMD", "curl", "-f", "http://x/"]).probe_args().unwrap(),
            Some(vec!["curl".into(), "-f".into(), "http://x/".into()])
        );
        assert_eq!(
            check(&["CMD-SHELL", "test -e /ok || exit 1"]).probe_args().unwrap(),
            Some(vec!["/bin/sh".into(), "-c".into(), "test -e /ok || exit 1".into()])
        );
        assert!(!check(&["NONE"]).enabled());
        assert!(check(&["CMD", "true"]).enabled());
        for bad in [&["CMD"][..], &["CMD-SHELL"], &["SHELL", "true"]] {
            let e = check(bad).validate().unwrap_err().to_string();
            assert!(e.contains("healthcheck"), "{e}");
        }
        let mut c = check(&["CMD", "true"]);
        c.interval = Some(Duration::from_micros(10));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("interval cannot be less than 1ms")
        );
        c.interval = Some(Duration::ZERO);
        c.validate().unwrap();
    }

    #[test]
    fn defaults_and_intervals_are_dockers() {
        let c = check(&["CMD", "true"]);
        assert_eq!(c.interval(), Duration::from_secs(30));
        assert_eq!(c.timeout(), Duration::from_secs(30));
        assert_eq!(c.retries(), 3);
        // Zero means the default, as in Docker's API.
        assert_eq!(
            Healthcheck {
                retries: Some(0),
                ..c.clone()
            }
            .retries(),
            3
        );
        assert_eq!(c.start_period(), Duration::ZERO);
        assert_eq!(c.start_interval(), Duration::from_secs(5));
        // No start period: the interval from the first probe on.
        assert_eq!(
            c.next_delay(HealthStatus::Starting, Duration::ZERO),
            Duration::from_secs(30)
        );
        let c = Healthcheck {
            interval: Some(Duration::from_secs(10)),
            start_period: Some(Duration::from_secs(60)),
            start_interval: Some(Duration::from_secs(1)),
            ..c
        };
        assert_eq!(
            c.next_delay(HealthStatus::Starting, Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            c.next_delay(HealthStatus::Healthy, Duration::from_secs(5)),
            Duration::from_secs(10)
        );
        assert_eq!(
            c.next_delay(HealthStatus::Starting, Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert!(c.in_start_period(Duration::from_secs(59)));
        assert!(!c.in_start_period(Duration::from_secs(60)));
    }

    #[test]
    fn output_is_cut_at_4096_bytes() {
        let long = vec![b'x'; MAX_OUTPUT + 10];
        let s = output_text(&long, true);
        assert_eq!(s.len(), MAX_OUTPUT + 3);
        assert!(s.ends_with("x..."));
        assert_eq!(output_text(b"ok\n", false), "ok\n");
    }

    #[test]
    fn durations_print_like_go() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(300)), "300ms");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(30_000)), "30s");
        assert_eq!(go_duration(ms(90_000)), "1m30s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(timeout_output(ms(300)), "Health check exceeded timeout (300ms)");
    }

    #[test]
    fn checks_serialise_times_as_milliseconds_and_old_records_load() {
        let c = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(Duration::from_millis(250)),
            retries: Some(2),
            ..Default::default()
        };
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["interval"], 250);
        assert_eq!(j["timeout"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Healthcheck>(j).unwrap(), c);
        let c: Healthcheck = serde_json::from_str(r#"{"test":["NONE"]}"#).unwrap();
        assert_eq!(c.interval, None);
        let h: Health = serde_json::from_str(r#"{"status":"unhealthy","failing_streak":3,"log":[]}"#).unwrap();
        assert_eq!(h.status, HealthStatus::Unhealthy);
        // Records written before healthchecks existed.
        let mut spec = serde_json::to_value(super::super::ContainerSpec::default()).unwrap();
        spec.as_object_mut().unwrap().remove("healthcheck");
        let spec: super::super::ContainerSpec = serde_json::from_value(spec).unwrap();
        assert_eq!(spec.healthcheck, None);
        let state: super::super::state::RunState = serde_json::from_str(r#"{"status":"running","pid":1,"supervisor_pid":2,"started_at":null,"finished_at":null,"exit_code":null,"oom_killed":false,"restart_count":0,"error":null,"stopped_by_user":false}"#).unwrap();
        assert_eq!(state.health, None);
    }
}
