//! The Job controller: runs a job's pods, `parallelism` at a time, until `completions` of
//! them (or each index of an Indexed job) succeeded; fails the job past its backoff limit
//! or its deadline; deletes it `ttlSecondsAfterFinished` after it finished. Container and
//! VM pods alike: a VM that powers off has succeeded.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::{
    self, COMPLETION_INDEX, COMPLETION_INDEX_ENV, Condition, EnvVar, JOB_NAME_LABEL, JOB_UID_LABEL,
    Job, JobStatus, ObjectMeta, ObjectReference, Pod, Resource, Time,
};

use crate::expectations::Expectations;
use crate::replicaset::owned_pods;
use crate::{controller_ref, delete_owned, enqueue_controller, is_ready, split_key};

/// The first wait before a failed pod is replaced; it doubles with each failure.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest wait before a failed pod is replaced.
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Reconciles jobs.
pub struct JobController {
    events: Recorder,
    pods: Api<Pod>,
    jobs: Api<Job>,
    pod_cache: Cache<Pod>,
    expectations: Expectations,
}

impl JobController {
    /// Runs the controller through `client` until dropped, on its `share` of the jobs;
    /// `workers` reconcile at once.
    pub async fn run(client: Client, workers: usize, share: Share) {
        let controller = Controller::<Job>::new(client.api().source("/registry/jobs/"))
            .with_workers(workers)
            .with_share(&share);
        let pod_informer = Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/")));
        let queue = controller.queue().clone();
        pod_informer.on_change(enqueue_controller::<Job, Pod>(queue));
        let reconciler = Self {
            events: Recorder::new(client.clone(), "job-controller"),
            pods: client.api(),
            jobs: client.api(),
            pod_cache: pod_informer.cache(),
            expectations: Expectations::default(),
        };
        let pods_task = tokio::spawn(pod_informer.clone().run());
        pod_informer.wait_synced().await;
        controller.run(reconciler).await;
        pods_task.abort();
    }

    async fn create_pod(&self, key: &str, job: &Job, index: Option<i32>) -> Result<(), String> {
        let m = &job.metadata;
        let template = &job.spec.template;
        let mut labels = template.metadata.labels.clone();
        let mut annotations = template.metadata.annotations.clone();
        for (k, v) in [
            (JOB_NAME_LABEL, &m.name),
            ("job-name", &m.name),
            (JOB_UID_LABEL, &m.uid),
            ("controller-uid", &m.uid),
        ] {
            labels.insert(k.into(), v.clone());
        }
        let mut spec = template.spec.clone();
        let generate_name = match index {
            Some(i) => {
                labels.insert(COMPLETION_INDEX.into(), i.to_string());
                annotations.insert(COMPLETION_INDEX.into(), i.to_string());
                for c in &mut spec.containers {
                    c.env.push(EnvVar {
                        name: COMPLETION_INDEX_ENV.into(),
                        value: i.to_string(),
                        value_from: None,
                    });
                }
                format!("{}-{i}-", m.name)
            }
            None => format!("{}-", m.name),
        };
        let mut pod = Pod::typed(ObjectMeta {
            generate_name,
            tenant: m.tenant_or_system().to_owned(),
            namespace: m.namespace.clone(),
            labels,
            annotations,
            owner_references: vec![controller_ref(job)],
            ..Default::default()
        });
        pod.spec = spec;
        match self.pods.create(pod).await {
            Ok(created) => {
                self.events.normal(
                    ObjectReference::to(job),
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.metadata.name),
                );
                self.expectations.created(key, created.key());
                Ok(())
            }
            Err(e) => {
                self.events.warning(
                    ObjectReference::to(job),
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                Err(e.to_string())
            }
        }
    }

    async fn delete_pods(&self, key: &str, job: &Job, pods: &[Pod]) -> Result<(), String> {
        for p in pods {
            self.pods
                .delete(&p.key(), None)
                .await
                .map_err(|e| e.to_string())?;
            self.events.normal(
                ObjectReference::to(job),
                "SuccessfulDelete",
                format!("Deleted pod: {}", p.metadata.name),
            );
            self.expectations.deleted(key, p.key());
        }
        Ok(())
    }

    async fn write_status(&self, key: &str, job: &Job, status: JobStatus) -> Result<(), String> {
        if job.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.jobs
            .modify_status(key, |j| {
                if j.metadata.uid != job.metadata.uid || j.status.as_ref() == Some(&status) {
                    return false;
                }
                j.status = Some(status.clone());
                true
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// A finished job: deleted once its time to live has passed.
    async fn finished(&self, key: &str, job: &Job, at: Option<Time>) -> Result<Requeue, String> {
        let (Some(ttl), Some(at)) = (job.spec.ttl_seconds_after_finished, at) else {
            return Ok(Requeue::Done);
        };
        let expires = at + chrono::Duration::seconds(ttl.into());
        let now = model::now();
        if now < expires {
            return Ok(Requeue::After((expires - now).to_std().unwrap_or_default()));
        }
        self.jobs
            .delete(key, None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Requeue::Done)
    }
}

/// The completion index of an Indexed job's pod.
fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .get(COMPLETION_INDEX)
        .and_then(|i| i.parse().ok())
}

/// Failures a pod counts for: one if it failed, plus its containers' restarts (`OnFailure`).
fn failures(pod: &Pod) -> i32 {
    let Some(st) = &pod.status else { return 0 };
    let restarts: i32 = st
        .container_statuses
        .iter()
        .map(|c| c.restart_count)
        .sum::<i32>()
        + st.virtual_machine_status
            .as_ref()
            .map_or(0, |v| v.restart_count);
    restarts + i32::from(pod.phase() == "Failed")
}

/// When the last of `pods` failed, by its containers' ends.
fn last_failure(pods: &[Pod]) -> Option<Time> {
    pods.iter()
        .filter(|p| p.phase() == "Failed")
        .flat_map(|p| p.status.iter().flat_map(|s| &s.container_statuses))
        .filter_map(|c| c.state.terminated.as_ref()?.finished_at)
        .max()
}

/// Indexes as Kubernetes writes them: ascending ranges, `0-2,5`.
pub fn index_ranges(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = indexes.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn condition(type_: &str, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message,
        last_transition_time: Some(model::now()),
        ..Default::default()
    }
}

#[async_trait]
impl Reconciler<Job> for JobController {
    async fn reconcile(&self, key: &str, job: Option<Job>) -> Result<Requeue, String> {
        let Some(job) = job.filter(|j| j.metadata.deletion_timestamp.is_none()) else {
            // Gone: its pods go too (garbage collection by owner).
            if let Some((tenant, ns, name)) = split_key(key) {
                delete_owned(&self.pods, &self.pod_cache, tenant, ns, Job::KIND, name).await?;
            }
            self.expectations.forget(key);
            return Ok(Requeue::Done);
        };
        let old = job.status.clone().unwrap_or_default();
        if let Some(done) = old.finished() {
            let at = old.completion_time.or(done.last_transition_time);
            return self.finished(key, &job, at).await;
        }
        let m = &job.metadata;
        let spec = &job.spec;
        let pods = owned_pods(&self.pod_cache, m.tenant_or_system(), &m.namespace, &m.uid);
        let present: HashSet<String> = pods.iter().map(Resource::key).collect();
        let unseen = self.expectations.unseen(key, &present);
        let active: Vec<Pod> = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(p.phase(), "Succeeded" | "Failed")
                    && !unseen.deleted.contains(&p.key())
            })
            .cloned()
            .collect();
        let succeeded: Vec<&Pod> = pods.iter().filter(|p| p.phase() == "Succeeded").collect();
        let failed = pods.iter().map(failures).sum::<i32>();
        let done_indexes: BTreeSet<i32> = succeeded.iter().filter_map(|p| index_of(p)).collect();
        let now = model::now();
        let mut status = JobStatus {
            start_time: old.start_time.or(Some(now)),
            active: active.len() as i32,
            succeeded: succeeded.len() as i32,
            failed: pods.iter().filter(|p| p.phase() == "Failed").count() as i32,
            ready: Some(active.iter().filter(|p| is_ready(p)).count() as i32),
            completed_indexes: if spec.indexed() {
                index_ranges(&done_indexes)
            } else {
                String::new()
            },
            conditions: old
                .conditions
                .iter()
                .filter(|c| c.type_ != "Suspended")
                .cloned()
                .collect(),
            ..Default::default()
        };

        // Suspended: nothing runs, and the deadline clock stops.
        if spec.suspend == Some(true) {
            self.delete_pods(key, &job, &active).await?;
            status.active = 0;
            status.start_time = None;
            status.conditions.push(condition(
                "Suspended",
                "JobSuspended",
                "Job suspended".into(),
            ));
            self.write_status(key, &job, status).await?;
            return Ok(Requeue::Done);
        }

        // Failure: past the backoff limit or the deadline, its running pods are stopped.
        let deadline = spec
            .active_deadline_seconds
            .and_then(|s| status.start_time.map(|t| t + chrono::Duration::seconds(s)));
        let failure = if failed > spec.backoff_limit.unwrap_or(6) {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_owned(),
            ))
        } else if deadline.is_some_and(|d| now >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_owned(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            self.delete_pods(key, &job, &active).await?;
            status.active = 0;
            status.ready = Some(0);
            status
                .conditions
                .push(condition("Failed", reason, message.clone()));
            self.events
                .warning(ObjectReference::to(&job), reason, message);
            self.write_status(key, &job, status).await?;
            return self.finished(key, &job, Some(now)).await;
        }

        // Completion, and the pods still wanted.
        let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
        let (complete, wanted): (bool, Vec<Option<i32>>) = match spec.completions {
            Some(c) if spec.indexed() => {
                let running: HashSet<i32> = active.iter().filter_map(index_of).collect();
                let missing: Vec<Option<i32>> = (0..c)
                    .filter(|i| !done_indexes.contains(i) && !running.contains(i))
                    .map(Some)
                    .collect();
                (done_indexes.len() as i32 >= c, missing)
            }
            Some(c) => {
                let left = (c as usize).saturating_sub(succeeded.len());
                (left == 0, vec![None; left.saturating_sub(active.len())])
            }
            // A work queue: done when one succeeded and the others have finished.
            None => {
                let done = !succeeded.is_empty();
                (
                    done && active.is_empty(),
                    if done {
                        vec![]
                    } else {
                        vec![None; parallelism]
                    },
                )
            }
        };
        if complete {
            // Extra pods of a job that is done are no longer needed.
            self.delete_pods(key, &job, &active).await?;
            status.active = 0;
            status.completion_time = Some(now);
            status
                .conditions
                .push(condition("Complete", "", String::new()));
            self.events
                .normal(ObjectReference::to(&job), "Completed", "Job completed");
            self.write_status(key, &job, status).await?;
            return self.finished(key, &job, Some(now)).await;
        }
        let room = parallelism.saturating_sub(active.len());
        let mut requeue = deadline.map(|d| (d - now).to_std().unwrap_or_default());
        if active.len() > parallelism && unseen.created == 0 {
            // Parallelism lowered: the newest go.
            let mut extra = active.clone();
            extra.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp));
            self.delete_pods(key, &job, &extra[..active.len() - parallelism])
                .await?;
        } else if room > 0 && !wanted.is_empty() && unseen.created == 0 {
            // (Creations not yet seen may hold indexes; their pods' arrival requeues.)
            // Replacing failed pods waits out a back-off that doubles with each failure.
            let wait = match (failed, last_failure(&pods)) {
                (f, Some(at)) if f > 0 => {
                    let backoff = BACKOFF_BASE
                        .saturating_mul(1 << (f - 1).min(16))
                        .min(BACKOFF_MAX);
                    let ready_at = at + chrono::Duration::from_std(backoff).unwrap_or_default();
                    (ready_at > now).then(|| (ready_at - now).to_std().unwrap_or_default())
                }
                _ => None,
            };
            match wait {
                Some(w) => requeue = Some(requeue.map_or(w, |r| r.min(w))),
                None => {
                    for index in wanted.into_iter().take(room) {
                        self.create_pod(key, &job, index).await?;
                    }
                }
            }
        }
        self.write_status(key, &job, status).await?;
        Ok(requeue.map_or(Requeue::Done, Requeue::After))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_written_as_ranges() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(index_ranges(&set(&[])), "");
        assert_eq!(index_ranges(&set(&[0])), "0");
        assert_eq!(index_ranges(&set(&[0, 1, 2, 5, 7, 8])), "0-2,5,7-8");
    }
}
