//! Run-to-completion work (`batch/v1`): `Job` and `CronJob`, for container and VM pods alike
//! (a VM that powers off has completed).

use std::str::FromStr as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod::validate_pod_spec;
use super::validation::{self, Errors, FieldError};
use super::{Condition, LabelSelector, ObjectMeta, ObjectReference, PodTemplateSpec, Time};

/// Label a Job puts on its pods: the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Label a Job puts on its pods: the Job's UID.
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Label and annotation of an Indexed Job's pod: its completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Environment variable holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Annotation of a Job a CronJob created: the time it was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Pods run until a number of them have succeeded.
pub type Job = super::Object<JobSpec, JobStatus>;
crate::impl_resource!(
    Job,
    kind = "Job",
    group = "batch",
    version = "v1",
    plural = "jobs",
    scope = Namespaced,
    validate = validate_job,
    defaults = default_job,
    update = job_update
);

/// Desired state of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Pods running at once at most (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Successful pods that complete the job (default 1 unless only `parallelism` is set:
    /// then the job is a work queue, complete when one pod succeeded and none runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<i32>,
    /// Seconds from the job's start after which it fails and its pods are stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Failed pods (or container restarts under `OnFailure`) tolerated (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// Seconds after it finished that the job and its pods are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// `NonIndexed` (default) or `Indexed`: each of `completions` indexes succeeds once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_mode: Option<String>,
    /// While true, no pod runs (running ones are stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Selects the job's pods; the controller finds them by their owner reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// True when the user wrote the selector (accepted; pods are still found by owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_selector: Option<bool>,
    /// The pods to run; `restartPolicy` must be `Never` or `OnFailure`.
    pub template: PodTemplateSpec,
}

impl JobSpec {
    /// True for an Indexed job.
    pub fn indexed(&self) -> bool {
        self.completion_mode.as_deref() == Some("Indexed")
    }
}

/// Observed state of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// `Complete`, `Failed` or `Suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the controller first ran the job's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job completed (not set for a failed job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Pods pending or running.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub active: i32,
    /// Pods that succeeded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: i32,
    /// Pods that failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: i32,
    /// Active pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
    /// An Indexed job's succeeded indexes, as ranges (`1,3-5`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub completed_indexes: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl JobStatus {
    /// The job's terminal condition (`Complete` or `Failed`) when it has finished.
    pub fn finished(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
    }
}

/// Kubernetes' defaults: one pod at a time, one completion (unless only parallelism is
/// given), six failures tolerated, `NonIndexed`, not suspended; once the job has its UID,
/// a selector of it and the template labels it selects (unless the selector is manual).
fn default_job(job: &mut Job) {
    let m = &job.metadata;
    let spec = &mut job.spec;
    if spec.selector.is_none() && spec.manual_selector != Some(true) && !m.uid.is_empty() {
        let labels = &mut spec.template.metadata.labels;
        for (k, v) in [
            (JOB_UID_LABEL, &m.uid),
            ("controller-uid", &m.uid),
            (JOB_NAME_LABEL, &m.name),
            ("job-name", &m.name),
        ] {
            labels.insert(k.into(), v.clone());
        }
        spec.selector = Some(LabelSelector {
            match_labels: [(JOB_UID_LABEL.to_owned(), m.uid.clone())].into(),
            ..Default::default()
        });
    }
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.template.spec.set_defaults();
}

fn validate_job(job: &Job) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_job_spec(&mut e, "spec", &job.spec);
    e.into_result()
}

fn validate_job_spec(e: &mut Errors, at: &str, spec: &JobSpec) {
    for (field, v) in [
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
    ] {
        if v.is_some_and(|v| v < 0) {
            e.push(format!("{at}.{field}"), "must not be negative");
        }
    }
    if spec.active_deadline_seconds.is_some_and(|v| v <= 0) {
        e.push(format!("{at}.activeDeadlineSeconds"), "must be positive");
    }
    match spec.completion_mode.as_deref() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec.completions.is_none() {
                e.push(
                    format!("{at}.completions"),
                    "required when completionMode is Indexed",
                );
            }
            if spec
                .completions
                .is_some_and(|c| c > MAX_INDEXED_COMPLETIONS)
            {
                e.push(
                    format!("{at}.completions"),
                    format!("at most {MAX_INDEXED_COMPLETIONS} for an Indexed job"),
                );
            }
        }
        Some(m) => e.push(
            format!("{at}.completionMode"),
            format!("Unsupported value: {m:?}: supported values: \"NonIndexed\", \"Indexed\""),
        ),
    }
    if let Some(selector) = &spec.selector
        && !selector.matches(&spec.template.metadata.labels)
    {
        e.push(
            format!("{at}.template.metadata.labels"),
            "must match the selector",
        );
    }
    match spec.template.spec.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => {}
        other => e.push(
            format!("{at}.template.spec.restartPolicy"),
            format!(
                "Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"",
                other.unwrap_or("")
            ),
        ),
    }
    validation::labels(
        e,
        &format!("{at}.template.metadata.labels"),
        &spec.template.metadata.labels,
    );
    validate_pod_spec(e, &format!("{at}.template.spec"), &spec.template.spec);
}

/// An Indexed job's indexes are kept as ranges in its status; Kubernetes bounds them so.
pub const MAX_INDEXED_COMPLETIONS: i32 = 100_000;

/// A job's template, selector and completion mode are fixed once it exists; parallelism,
/// suspension, deadlines and the rest may change.
fn job_update(new: &Job, old: &Job) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    let (n, o) = (&new.spec, &old.spec);
    if n.template != o.template {
        e.push("spec.template", "field is immutable");
    }
    if n.selector != o.selector {
        e.push("spec.selector", "field is immutable");
    }
    if n.completion_mode != o.completion_mode {
        e.push("spec.completionMode", "field is immutable");
    }
    if n.completions != o.completions && n.indexed() {
        e.push(
            "spec.completions",
            "field is immutable (an Indexed job's completions change only with its parallelism)",
        );
    }
    e.into_result()
}

/// Jobs made on a schedule.
pub type CronJob = super::Object<CronJobSpec, CronJobStatus>;
crate::impl_resource!(
    CronJob,
    kind = "CronJob",
    group = "batch",
    version = "v1",
    plural = "cronjobs",
    scope = Namespaced,
    short = ["cj"],
    validate = validate_cron_job,
    defaults = default_cron_job
);

/// Desired state of a cron job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronJobSpec {
    /// When jobs are made: five cron fields (minute hour day-of-month month day-of-week) or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub schedule: String,
    /// The time zone of the schedule: only `UTC` (or `Etc/UTC`), the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Seconds after a scheduled time within which a missed job may still start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// `Allow` (default), `Forbid` (skip while one runs) or `Replace` (stop the running one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<String>,
    /// While true, no job is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// The jobs to make.
    pub job_template: JobTemplateSpec,
    /// Finished successful jobs kept (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed jobs kept (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i32>,
}

/// Metadata and spec of the jobs a cron job makes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobTemplateSpec {
    /// Labels and annotations given to each job.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The jobs' spec.
    #[serde(default)]
    pub spec: JobSpec,
}

/// Observed state of a cron job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronJobStatus {
    /// Its jobs that are running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ObjectReference>,
    /// The last time a job was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a job of it last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
}

/// A parsed cron schedule (UTC).
#[derive(Clone, Debug)]
pub struct Schedule(croner::Cron);

impl Schedule {
    /// Parses a five-field schedule or a macro, as Kubernetes accepts them.
    pub fn parse(text: &str) -> Result<Self, String> {
        use croner::parser::{CronParser, Seconds, Year};
        let text = text.trim();
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            return Err("a time zone is set with spec.timeZone, not in the schedule".into());
        }
        // croner reads `@every`-free macros; anything else must be exactly five fields.
        if !text.starts_with('@') && text.split_whitespace().count() != 5 {
            return Err(format!(
                "{text:?}: expected exactly 5 fields (minute hour day-of-month month day-of-week)"
            ));
        }
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map(Self)
            .map_err(|e| format!("{text:?}: {e}"))
    }

    /// The last scheduled time at or before `t`.
    pub fn at_or_before(&self, t: &Time) -> Option<Time> {
        self.0.find_previous_occurrence(t, true).ok()
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: &Time) -> Option<Time> {
        self.0.find_next_occurrence(t, false).ok()
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// Kubernetes' defaults: `Allow`, not suspended, three successful and one failed job kept.
fn default_cron_job(cj: &mut CronJob) {
    let spec = &mut cj.spec;
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    let mut job = Job {
        spec: std::mem::take(&mut spec.job_template.spec),
        ..Default::default()
    };
    default_job(&mut job);
    spec.job_template.spec = job.spec;
}

fn validate_cron_job(cj: &CronJob) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    let spec = &cj.spec;
    e.check(
        "spec.schedule",
        Schedule::from_str(&spec.schedule).map(drop),
    );
    if let Some(tz) = spec.time_zone.as_deref()
        && !matches!(tz, "UTC" | "Etc/UTC")
    {
        e.push(
            "spec.timeZone",
            format!("{tz:?}: only UTC schedules are supported"),
        );
    }
    match spec.concurrency_policy.as_deref() {
        None | Some("Allow" | "Forbid" | "Replace") => {}
        Some(p) => e.push(
            "spec.concurrencyPolicy",
            format!(
                "Unsupported value: {p:?}: supported values: \"Allow\", \"Forbid\", \"Replace\""
            ),
        ),
    }
    for (field, v) in [
        (
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
        ),
        ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
    ] {
        if v.is_some_and(|v| v < 0) {
            e.push(format!("spec.{field}"), "must not be negative");
        }
    }
    if spec.starting_deadline_seconds.is_some_and(|v| v < 0) {
        e.push("spec.startingDeadlineSeconds", "must not be negative");
    }
    // A job's name is the cron job's and 11 characters of its scheduled minute.
    if cj.metadata.name.len() > 52 {
        e.push(
            "metadata.name",
            "must be no more than 52 characters (the jobs it makes add 11)",
        );
    }
    validate_job_spec(&mut e, "spec.jobTemplate.spec", &spec.job_template.spec);
    e.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Any schedule text a tenant sends is parsed or refused, never a panic, and a parsed
        /// one's next time is always later.
        #[test]
        fn any_schedule_parses_or_is_refused(
            fields in proptest::collection::vec("[0-9*/,\\-A-Z?#LW]{1,6}", 1..7),
            free in "[0-9*/,\\-A-Za-z@ #?]{0,32}",
        ) {
            for text in [fields.join(" "), free] {
                if let Ok(s) = Schedule::parse(&text) {
                    let now = crate::model::now();
                    if let Some(next) = s.next_after(&now) {
                        prop_assert!(next > now);
                    }
                    let _ = s.at_or_before(&now);
                }
            }
        }
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_times() {
        let s = Schedule::parse("0 0 31 2 *").unwrap();
        let t = std::time::Instant::now();
        assert_eq!(s.next_after(&crate::model::now()), None);
        assert_eq!(s.at_or_before(&crate::model::now()), None);
        eprintln!("never-firing schedule searched in {:?}", t.elapsed());
    }
}
