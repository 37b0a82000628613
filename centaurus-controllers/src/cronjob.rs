//! The CronJob controller: makes a cron job's Job at each scheduled time (UTC), following
//! its concurrency policy and starting deadline, and keeps the history its limits allow.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::{
    self, CronJob, CronJobStatus, Job, ObjectMeta, ObjectReference, Resource, SCHEDULED_TIMESTAMP,
    Schedule, Time,
};

use crate::{controller_ref, enqueue_controller, split_key};

/// More missed times than this since the last one and the cron job is only told so, as
/// Kubernetes does (a clock jump or a long outage must not start a flood of jobs).
const MAX_MISSED: usize = 100;

/// Reconciles cron jobs.
pub struct CronJobController {
    events: Recorder,
    jobs: Api<Job>,
    cron_jobs: Api<CronJob>,
    job_cache: Cache<Job>,
}

impl CronJobController {
    /// Runs the controller through `client` until dropped, on its `share` of the cron jobs.
    pub async fn run(client: Client, share: Share) {
        let controller = Controller::<CronJob>::new(client.api().source("/registry/cronjobs/"))
            .with_share(&share);
        let job_informer = Arc::new(Informer::<Job>::new(client.api().source("/registry/jobs/")));
        let queue = controller.queue().clone();
        job_informer.on_change(enqueue_controller::<CronJob, Job>(queue));
        let reconciler = Self {
            events: Recorder::new(client.clone(), "cronjob-controller"),
            jobs: client.api(),
            cron_jobs: client.api(),
            job_cache: job_informer.cache(),
        };
        let jobs_task = tokio::spawn(job_informer.clone().run());
        job_informer.wait_synced().await;
        controller.run(reconciler).await;
        jobs_task.abort();
    }

    fn owned_jobs(&self, cj: &CronJob) -> Vec<Job> {
        let m = &cj.metadata;
        self.job_cache
            .list_prefix(&format!(
                "/registry/jobs/{}/{}/",
                m.tenant_or_system(),
                m.namespace
            ))
            .into_iter()
            .filter(|j| j.metadata.controller_ref().is_some_and(|r| r.uid == m.uid))
            .collect()
    }

    async fn make_job(&self, cj: &CronJob, at: Time) -> Result<(), String> {
        let m = &cj.metadata;
        let template = &cj.spec.job_template;
        let mut annotations = template.metadata.annotations.clone();
        annotations.insert(SCHEDULED_TIMESTAMP.into(), at.to_rfc3339());
        let mut job = Job::typed(ObjectMeta {
            // Named by the scheduled minute, so a retried creation finds its own job.
            name: format!("{}-{}", m.name, at.timestamp() / 60),
            tenant: m.tenant_or_system().to_owned(),
            namespace: m.namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations,
            owner_references: vec![controller_ref(cj)],
            ..Default::default()
        });
        job.spec = template.spec.clone();
        match self.jobs.create(job).await {
            Ok(created) => {
                self.events.normal(
                    ObjectReference::to(cj),
                    "SuccessfulCreate",
                    format!("Created job {}", created.metadata.name),
                );
                Ok(())
            }
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => {
                self.events.warning(
                    ObjectReference::to(cj),
                    "FailedCreate",
                    format!("Error creating job: {e}"),
                );
                Err(e.to_string())
            }
        }
    }

    async fn delete_job(&self, cj: &CronJob, job: &Job, reason: &str) -> Result<(), String> {
        self.jobs
            .delete(&job.key(), None)
            .await
            .map_err(|e| e.to_string())?;
        self.events.normal(
            ObjectReference::to(cj),
            reason,
            format!("Deleted job {}", job.metadata.name),
        );
        Ok(())
    }
}

/// The latest scheduled time in `(after, now]`, and how many there were (counted up to
/// one past [`MAX_MISSED`]).
fn latest_missed(schedule: &Schedule, after: Time, now: Time) -> (Option<Time>, usize) {
    let latest = schedule.at_or_before(&now).filter(|t| *t > after);
    let mut count = 0;
    let mut t = after;
    while latest.is_some() && count <= MAX_MISSED {
        match schedule.next_after(&t) {
            Some(next) if next <= now => {
                count += 1;
                t = next;
            }
            _ => break,
        }
    }
    (latest, count)
}

#[async_trait]
impl Reconciler<CronJob> for CronJobController {
    async fn reconcile(&self, key: &str, cj: Option<CronJob>) -> Result<Requeue, String> {
        let Some(cj) = cj.filter(|c| c.metadata.deletion_timestamp.is_none()) else {
            // Gone: its jobs go too (the Job controller then removes their pods).
            if let Some((tenant, ns, name)) = split_key(key) {
                for job in self
                    .job_cache
                    .list_prefix(&format!("/registry/jobs/{tenant}/{ns}/"))
                {
                    if job
                        .metadata
                        .controller_ref()
                        .is_some_and(|r| r.kind == CronJob::KIND && r.name == name)
                    {
                        self.jobs
                            .delete(&job.key(), None)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            return Ok(Requeue::Done);
        };
        let spec = &cj.spec;
        let old = cj.status.clone().unwrap_or_default();
        let mut jobs = self.owned_jobs(&cj);
        jobs.sort_by_key(|j| j.metadata.creation_timestamp);
        let finished = |j: &Job| {
            j.status
                .as_ref()
                .and_then(|s| s.finished())
                .map(|c| c.type_.clone())
        };
        let mut status = CronJobStatus {
            last_schedule_time: old.last_schedule_time,
            last_successful_time: jobs
                .iter()
                .filter_map(|j| j.status.as_ref()?.completion_time)
                .max()
                .max(old.last_successful_time),
            active: Vec::new(),
        };
        let mut active: Vec<&Job> = jobs.iter().filter(|j| finished(j).is_none()).collect();

        // History: the oldest finished jobs beyond the limits go.
        for (kind, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let done: Vec<&Job> = jobs
                .iter()
                .filter(|j| finished(j).as_deref() == Some(kind))
                .collect();
            let extra = done.len().saturating_sub(limit.max(0) as usize);
            for job in &done[..extra] {
                self.delete_job(&cj, job, "SuccessfulDelete").await?;
            }
        }

        let now = model::now();
        let schedule = Schedule::parse(&spec.schedule)?;
        let requeue_at = |from: Time| {
            schedule
                .next_after(&from)
                .map(|next| (next - now).to_std().unwrap_or_default() + Duration::from_millis(100))
        };
        if spec.suspend != Some(true) {
            let since = old
                .last_schedule_time
                .or(cj.metadata.creation_timestamp)
                .unwrap_or(now);
            let (missed, count) = latest_missed(&schedule, since, now);
            if count > MAX_MISSED {
                self.events.warning(
                    ObjectReference::to(&cj),
                    "TooManyMissedTimes",
                    format!("too many missed start times (> {MAX_MISSED}): only the latest runs"),
                );
            }
            let too_late = |t: Time| {
                spec.starting_deadline_seconds
                    .is_some_and(|d| now - t > chrono::Duration::seconds(d))
            };
            if let Some(at) = missed {
                if too_late(at) {
                    self.events.warning(
                        ObjectReference::to(&cj),
                        "MissSchedule",
                        format!(
                            "missed the scheduled time {at} by more than its starting deadline"
                        ),
                    );
                } else {
                    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                    let run = match policy {
                        "Forbid" if !active.is_empty() => {
                            self.events.normal(
                                ObjectReference::to(&cj),
                                "JobAlreadyActive",
                                "Not starting job because prior execution is running and concurrency policy is Forbid".to_owned(),
                            );
                            false
                        }
                        "Replace" => {
                            for job in active.drain(..) {
                                self.delete_job(&cj, job, "SuccessfulDelete").await?;
                            }
                            true
                        }
                        _ => true,
                    };
                    if run {
                        self.make_job(&cj, at).await?;
                    }
                }
                // A skipped time is not retried: the next one is awaited.
                status.last_schedule_time = Some(at);
            }
        }
        status.active = active.into_iter().map(ObjectReference::to).collect();
        // The job just made reaches `active` when its watch event requeues the cron job.
        if cj.status.as_ref() != Some(&status) {
            self.cron_jobs
                .modify_status(key, |c| {
                    if c.metadata.uid != cj.metadata.uid || c.status.as_ref() == Some(&status) {
                        return false;
                    }
                    c.status = Some(status.clone());
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        if spec.suspend == Some(true) {
            return Ok(Requeue::Done);
        }
        Ok(requeue_at(now).map_or(Requeue::Done, Requeue::After))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Time {
        s.parse().unwrap()
    }

    #[test]
    fn the_latest_missed_time_is_found_and_floods_are_bounded() {
        let every_minute = Schedule::parse("*/1 * * * *").unwrap();
        let (latest, count) = latest_missed(
            &every_minute,
            at("2026-01-01T00:00:30Z"),
            at("2026-01-01T00:03:10Z"),
        );
        assert_eq!(latest, Some(at("2026-01-01T00:03:00Z")));
        assert_eq!(count, 3);
        let (none, zero) = latest_missed(
            &every_minute,
            at("2026-01-01T00:03:00Z"),
            at("2026-01-01T00:03:59Z"),
        );
        assert_eq!((none, zero), (None, 0));
        let (_, flood) = latest_missed(
            &every_minute,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(flood, MAX_MISSED + 1);
        assert_eq!(
            latest_missed(
                &every_minute,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-02T00:00:00Z")
            )
            .0,
            Some(at("2026-01-02T00:00:00Z")),
            "the latest time runs, not the hundredth"
        );
        let hourly = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            hourly.next_after(&at("2026-01-01T00:10:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
    }
}
