//! The tags this function writes, and the step that tags the instance with its quarantine
//! status, the incident and what was changed, so that anyone looking at the instance in the
//! console sees it is contained.
//!
//! The tags go out once the steps on the critical path have written (see [`super::progress`]),
//! beside their read-backs, and are written again if a read-back disagrees: until the run ends,
//! the status tag is what the writes returned. The report and the incident record carry the
//! verified outcome; should the run die between the two writes, the retry tags the instance
//! again.
//!
//! IAM: `ec2:CreateTags` on instances, network interfaces and volumes (`ec2-quarantine:*` keys
//! only), `ec2:DescribeTags`.
//!
//! Every network interface and volume of the instance is marked with the status and the
//! incident too: EC2 authorizes a change of an interface's groups on the interface, and the
//! guard policies protect what carries these marks, whatever triggered the containment.
//!
//! EC2 allows 50 tags per resource. An instance close to that gets the status and the incident
//! first; the report names the tags that did not fit.
//!
//! None of these keys is the trigger key, so writing them never retriggers the rule. Tags are
//! informational: anyone allowed to tag can edit them, so release never trusts them. The first
//! containment's time, incident and reason are kept by later runs.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_ec2::types::{Filter, Tag};
use futures::future::join_all;

use super::instance::InstanceFacts;
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::consistency::until_settled;
use crate::report::{InstanceOutcome, Status, Step, StepReport};

pub const STATUS: &str = "ec2-quarantine:status";
pub const CONTAINED_AT: &str = "ec2-quarantine:contained-at";
pub const INCIDENT: &str = "ec2-quarantine:incident";
pub const REASON: &str = "ec2-quarantine:reason";
pub const CHANGES: &str = "ec2-quarantine:changes";
/// On snapshots: the instance they were taken from.
pub const SNAPSHOT_INSTANCE: &str = "ec2-quarantine:instance-id";
/// On the isolation group, so that guard policies can protect it.
pub const ROLE: &str = "ec2-quarantine:role";
pub const ROLE_ISOLATION: &str = "isolation";
/// The allow-all group an interface passes through on its way to isolation (see `network`).
pub const ROLE_INTERIM: &str = "interim";
/// On IAM roles, set by their owners (value `true`): with `RevocableRoles=tagged`, the only roles
/// the stack may write its credential deny on. Never written by this function.
pub const REVOCABLE: &str = "ec2-quarantine:revocable";

const MAX_VALUE_CHARS: usize = 256;
/// EC2's limit of tags per resource; tags with the `aws:` prefix do not count.
const MAX_TAGS: usize = 50;
/// The order the tags are written in when not all fit: what the guard and a retry need first.
const PRIORITY: [&str; 5] = [STATUS, INCIDENT, CONTAINED_AT, REASON, CHANGES];

pub fn status_value(outcome: InstanceOutcome) -> &'static str {
    match outcome {
        InstanceOutcome::Contained => "contained",
        InstanceOutcome::Partial => "partial",
        InstanceOutcome::NotContained | InstanceOutcome::Rejected => "not-contained",
        // Never written: a dry run writes no tag. What a real run would write is "contained".
        InstanceOutcome::DryRun => "contained",
        InstanceOutcome::Released => crate::incident::RELEASED,
    }
}

/// The tags the instance should carry after this run, from each step's status. Pure.
pub fn desired(
    existing: &BTreeMap<String, String>,
    outcome: InstanceOutcome,
    incident: &str,
    reason: &str,
    steps: &[(Step, Status)],
    now: &str,
) -> BTreeMap<String, String> {
    let keep_or = |key: &str, value: &str| {
        existing
            .get(key)
            .cloned()
            .unwrap_or_else(|| truncate(value))
    };
    // In the steps' own order, whatever order they ended in, so that the same outcome always
    // gives the same value.
    let mut done: Vec<Step> = steps
        .iter()
        .filter(|(_, status)| *status == Status::Done)
        .map(|(step, _)| *step)
        .collect();
    done.sort_unstable();
    done.dedup();
    let done: Vec<String> = done
        .iter()
        .map(|step| {
            serde_json::to_value(step)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    let changes = if done.is_empty() {
        keep_or(CHANGES, "none")
    } else {
        truncate(&done.join(","))
    };
    BTreeMap::from([
        (STATUS.to_owned(), status_value(outcome).to_owned()),
        (CONTAINED_AT.to_owned(), keep_or(CONTAINED_AT, now)),
        (INCIDENT.to_owned(), keep_or(INCIDENT, incident)),
        (REASON.to_owned(), keep_or(REASON, reason)),
        (CHANGES.to_owned(), changes),
    ])
}

fn truncate(value: &str) -> String {
    value.chars().take(MAX_VALUE_CHARS).collect()
}

/// The tags written once every step had ended or had its writes return, before the last
/// read-backs.
pub struct EarlyTags {
    started: Instant,
    /// What the instance carries now, if the write went through.
    carried: BTreeMap<String, String>,
    /// The keys written and those that did not fit; the error when the write failed.
    written: Result<Written, AwsError>,
    /// The status the interfaces and volumes were marked with, if the write went through.
    marked: Result<String, AwsError>,
}

/// What one write of the instance's tags did.
#[derive(Default)]
struct Written {
    keys: Vec<String>,
    /// Keys that did not fit in the 50 tags EC2 allows.
    left_out: Vec<String>,
}

/// Writes the tags the steps' statuses so far call for. The statuses of steps still reading
/// back are what their writes returned; [`finish_tags`] corrects the tags if a read-back
/// disagrees.
pub async fn write_early(
    clients: &Clients,
    facts: &InstanceFacts,
    wanted: BTreeMap<String, String>,
    marks_now: Result<Marks, AwsError>,
) -> EarlyTags {
    let started = Instant::now();
    let marks_now = marks_now.ok();
    let (written, marked) = tokio::join!(
        write_differing(clients, &facts.instance_id, &facts.tags, &wanted),
        mark(clients, facts, &wanted, marks_now.as_ref()),
    );
    let mut carried = facts.tags.clone();
    if let Ok(written) = &written {
        carried.extend(
            wanted
                .into_iter()
                .filter(|(k, _)| !written.left_out.contains(k)),
        );
    }
    EarlyTags {
        started,
        carried,
        written,
        marked,
    }
}

/// Only the status, when the invocation's time ran out before the tags went out.
pub async fn write_status(
    clients: &Clients,
    instance_id: &str,
    status: &str,
) -> Result<(), AwsError> {
    clients
        .ec2
        .create_tags()
        .resources(instance_id)
        .tags(Tag::builder().key(STATUS).value(status).build())
        .send()
        .await
        .map(|_| ())
        .map_err(aws_err("CreateTags"))
}

/// The resources that carry the marks: every interface and volume of the instance.
pub(crate) fn marked_resources(facts: &InstanceFacts) -> Vec<String> {
    let interfaces = facts.interfaces.iter().map(|i| i.id.clone());
    interfaces
        .chain(facts.volumes.iter().map(|v| v.volume_id.clone()))
        .collect()
}

/// The marks (`ec2-quarantine:status` and `incident`) each resource carries, by resource id.
pub type Marks = BTreeMap<String, BTreeMap<String, String>>;

/// The marks of `wanted`: its status and incident.
pub(crate) fn marks_of(wanted: &BTreeMap<String, String>) -> Vec<(&'static str, &str)> {
    [STATUS, INCIDENT]
        .into_iter()
        .filter_map(|key| Some((key, wanted.get(key)?.as_str())))
        .collect()
}

/// Pure: the resources that do not carry every one of `marks` (all of them when the current
/// marks are unknown).
pub(crate) fn unmarked(
    resources: &[String],
    current: Option<&Marks>,
    marks: &[(&str, &str)],
) -> Vec<String> {
    resources
        .iter()
        .filter(|r| {
            let carried = current.and_then(|c| c.get(*r));
            !marks
                .iter()
                .all(|(k, v)| carried.and_then(|c| c.get(*k)).map(String::as_str) == Some(*v))
        })
        .cloned()
        .collect()
}

/// Marks every interface and volume that lacks the status and incident of `wanted`, in one
/// call. Returns the status they carry.
async fn mark(
    clients: &Clients,
    facts: &InstanceFacts,
    wanted: &BTreeMap<String, String>,
    current: Option<&Marks>,
) -> Result<String, AwsError> {
    let marks = marks_of(wanted);
    let resources = unmarked(&marked_resources(facts), current, &marks);
    write_marks(clients, &resources, &marks).await?;
    Ok(wanted.get(STATUS).cloned().unwrap_or_default())
}

/// Every interface and volume marked for `incident`, attached to the instance or not (a volume
/// detached for forensics keeps its marks until the release moves them).
pub(crate) async fn marked_for(clients: &Clients, incident: &str) -> Result<Vec<String>, AwsError> {
    let mut resources = Vec::new();
    let mut pages = clients
        .ec2
        .describe_tags()
        .filters(Filter::builder().name("key").values(INCIDENT).build())
        .filters(Filter::builder().name("value").values(incident).build())
        .filters(
            Filter::builder()
                .name("resource-type")
                .values("network-interface")
                .values("volume")
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        resources.extend(
            page.map_err(aws_err("DescribeTags"))?
                .tags()
                .iter()
                .filter_map(|t| t.resource_id().map(str::to_owned)),
        );
    }
    Ok(resources)
}

/// The marks the interfaces and volumes of `facts` carry now.
pub async fn read_marks(clients: &Clients, facts: &InstanceFacts) -> Result<Marks, AwsError> {
    read_marks_of(clients, &marked_resources(facts)).await
}

async fn read_marks_of(clients: &Clients, resources: &[String]) -> Result<Marks, AwsError> {
    let mut marks = Marks::new();
    if resources.is_empty() {
        return Ok(marks);
    }
    let mut pages = clients
        .ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-id")
                .set_values(Some(resources.to_vec()))
                .build(),
        )
        .filters(
            Filter::builder()
                .name("key")
                .values(STATUS)
                .values(INCIDENT)
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for tag in page.map_err(aws_err("DescribeTags"))?.tags() {
            if let (Some(resource), Some(key)) = (tag.resource_id(), tag.key()) {
                marks
                    .entry(resource.to_owned())
                    .or_default()
                    .insert(key.to_owned(), tag.value().unwrap_or("").to_owned());
            }
        }
    }
    Ok(marks)
}

/// Writes `marks` on `resources` in one `CreateTags`. One resource at EC2's 50 tags fails the
/// whole call: then each is marked on its own, and the error names those that could not be.
pub(crate) async fn write_marks(
    clients: &Clients,
    resources: &[String],
    marks: &[(&str, &str)],
) -> Result<(), AwsError> {
    let send = |resources: Vec<String>| {
        clients
            .ec2
            .create_tags()
            .set_resources(Some(resources))
            .set_tags(Some(
                marks
                    .iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
    };
    if resources.is_empty() {
        return Ok(());
    }
    match send(resources.to_vec())
        .await
        .map_err(aws_err("CreateTags"))
    {
        Err(e) if e.has_code("TagLimitExceeded") && resources.len() > 1 => {}
        other => return other.map(|_| ()),
    }
    let each = join_all(resources.iter().map(|r| send(vec![r.clone()]))).await;
    let unmarked: Vec<String> = resources
        .iter()
        .zip(each)
        .filter_map(|(r, result)| {
            let e = AwsError::from_sdk("CreateTags", result.err()?);
            Some(format!("{r} ({})", e.code.unwrap_or(e.message)))
        })
        .collect();
    match unmarked.is_empty() {
        true => Ok(()),
        false => Err(AwsError {
            operation: "CreateTags",
            code: Some("TagLimitExceeded".to_owned()),
            message: format!(
                "not marked, so the guard policies do not protect them: {}",
                unmarked.join(", ")
            ),
        }),
    }
}

/// Reads the marks back until every resource carries `status` (tags may read back stale).
pub(crate) async fn read_back_marks(
    clients: &Clients,
    resources: &[String],
    status: &str,
) -> Result<(), AwsError> {
    if resources.is_empty() {
        return Ok(());
    }
    let wanted = [(STATUS, status)];
    let all = |marks: &Marks| unmarked(resources, Some(marks), &wanted).is_empty();
    let marks = until_settled(|| read_marks_of(clients, resources), all).await?;
    let missing = unmarked(resources, Some(&marks), &wanted);
    match missing.is_empty() {
        true => Ok(()),
        false => Err(AwsError::local(
            "DescribeTags",
            format!("read back {} without {STATUS}={status}", missing.join(", ")),
        )),
    }
}

/// With every step's final status known: writes what changed since the early write, then reads
/// every written key back.
pub async fn finish_tags(
    clients: &Clients,
    facts: &InstanceFacts,
    early: EarlyTags,
    wanted: &BTreeMap<String, String>,
) -> StepReport {
    let started = early.started;
    let status = wanted.get(STATUS).cloned().unwrap_or_default();
    let marks = async {
        // Marked with another status, or not at all: written again with the final one.
        if early.marked.as_deref().ok() != Some(status.as_str()) {
            mark(clients, facts, wanted, None).await?;
        }
        read_back_marks(clients, &marked_resources(facts), &status).await
    };
    let (tagged, marked) = tokio::join!(
        finish(clients, facts, early.carried, early.written, wanted),
        marks
    );
    let result = tagged.and_then(|mut result| {
        marked?;
        let resources = marked_resources(facts).len();
        if resources > 0 {
            result.detail = format!(
                "{}; {resources} interface(s) and volume(s) marked {STATUS}={status}",
                result.detail
            );
        }
        Ok(result)
    });
    step_report(Step::TagInstance, started, result)
}

async fn finish(
    clients: &Clients,
    facts: &InstanceFacts,
    carried: BTreeMap<String, String>,
    written: Result<Written, AwsError>,
    wanted: &BTreeMap<String, String>,
) -> Result<StepResult, AwsError> {
    let (mut keys, carried, early) = match written {
        Ok(written) => (written.keys, carried, None),
        // The early write did not land: the final tags are written over the instance's own.
        Err(e) => (Vec::new(), facts.tags.clone(), Some(e)),
    };
    let corrected = write_differing(clients, &facts.instance_id, &carried, wanted)
        .await
        .map_err(|e| match &early {
            Some(first) => AwsError {
                message: format!(
                    "{} (the write before the read-backs failed too: {})",
                    e.message, first.message
                ),
                ..e
            },
            None => {
                let stale: Vec<String> = wanted
                    .iter()
                    .filter(|(k, v)| carried.get(*k) != Some(*v))
                    .filter_map(|(k, _)| Some(format!("{k}={}", carried.get(k)?)))
                    .collect();
                let message = match stale.is_empty() {
                    true => e.message.clone(),
                    false => format!(
                        "{}; the instance still carries {} from the write before the read-backs",
                        e.message,
                        stale.join(", ")
                    ),
                };
                AwsError { message, ..e }
            }
        })?;
    for key in corrected.keys {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let left_out = match corrected.left_out.is_empty() {
        true => String::new(),
        false => format!(
            "; did not fit in the {MAX_TAGS} tags EC2 allows: {}",
            corrected.left_out.join(", ")
        ),
    };
    if keys.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "{STATUS}={} already set{left_out}",
            wanted.get(STATUS).map(String::as_str).unwrap_or_default()
        )));
    }
    read_back(clients, &facts.instance_id, &keys, wanted).await?;
    Ok(StepResult::done(format!(
        "{STATUS}={} ({} tag(s) written){left_out}",
        wanted.get(STATUS).map(String::as_str).unwrap_or_default(),
        keys.len()
    )))
}

/// Pure: the tags of `wanted` that `carried` lacks or holds with another value, in the order of
/// [`PRIORITY`], as many as fit in EC2's limit; and the keys that did not fit.
fn fit(
    carried: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut differing: Vec<(&String, &String)> = wanted
        .iter()
        .filter(|(k, v)| carried.get(*k) != Some(*v))
        .collect();
    let rank = |key: &str| {
        PRIORITY
            .iter()
            .position(|p| *p == key)
            .unwrap_or(PRIORITY.len())
    };
    differing.sort_by_key(|(k, _)| rank(k));
    let in_use = carried.keys().filter(|k| !k.starts_with("aws:")).count();
    let mut room = MAX_TAGS.saturating_sub(in_use);
    let (mut fits, mut left_out) = (Vec::new(), Vec::new());
    for (key, value) in differing {
        // Overwriting a key the instance has takes no room.
        if carried.contains_key(key) {
            fits.push((key.clone(), value.clone()));
        } else if room > 0 {
            room -= 1;
            fits.push((key.clone(), value.clone()));
        } else {
            left_out.push(key.clone());
        }
    }
    (fits, left_out)
}

/// Writes the tags of `wanted` that `carried` lacks or holds with another value, as many as fit;
/// says which were written and which did not fit. The status must fit.
async fn write_differing(
    clients: &Clients,
    instance_id: &str,
    carried: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Result<Written, AwsError> {
    let (fits, left_out) = fit(carried, wanted);
    if left_out.iter().any(|k| k == STATUS) {
        return Err(AwsError::local(
            "CreateTags",
            format!(
                "{instance_id} carries {MAX_TAGS} tags, the most EC2 allows: no room for \
                 {STATUS}; remove a tag and run the containment again"
            ),
        ));
    }
    if fits.is_empty() {
        return Ok(Written {
            keys: Vec::new(),
            left_out,
        });
    }
    let keys = fits.iter().map(|(k, _)| k.clone()).collect();
    let differing: Vec<Tag> = fits
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    clients
        .ec2
        .create_tags()
        .resources(instance_id)
        .set_tags(Some(differing))
        .send()
        .await
        .map_err(aws_err("CreateTags"))?;
    Ok(Written { keys, left_out })
}

/// Tags just written may read back stale for seconds: read until they show, within the budget.
async fn read_back(
    clients: &Clients,
    instance_id: &str,
    keys: &[String],
    wanted: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    let actual = until_settled(
        || read_tags(clients, instance_id, keys),
        |actual| agreed(actual, keys, wanted),
    )
    .await?;
    if !agreed(&actual, keys, wanted) {
        return Err(AwsError::local(
            "DescribeTags",
            format!(
                "read back {INCIDENT}={:?} {STATUS}={:?}, expected {:?} and a status",
                actual.get(INCIDENT),
                actual.get(STATUS),
                wanted.get(INCIDENT)
            ),
        ));
    }
    Ok(())
}

async fn read_tags(
    clients: &Clients,
    instance_id: &str,
    keys: &[String],
) -> Result<BTreeMap<String, String>, AwsError> {
    let read = clients
        .ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-id")
                .values(instance_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("key")
                .set_values(Some(keys.to_vec()))
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("DescribeTags"))?;
    Ok(read
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect())
}

/// Concurrent invocations for one instance write these tags at the same time and the last write
/// wins, so only what they agree on is checked: the incident (one per instance, from the record)
/// and that a status is there.
fn agreed(
    actual: &BTreeMap<String, String>,
    keys: &[String],
    wanted: &BTreeMap<String, String>,
) -> bool {
    let incident_ok =
        actual.get(INCIDENT) == wanted.get(INCIDENT) || !keys.iter().any(|k| k == INCIDENT);
    let status_ok = actual.contains_key(STATUS) || !keys.iter().any(|k| k == STATUS);
    incident_ok && status_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resources_without_the_marks_are_marked_again() {
        let resources = vec!["eni-1".to_owned(), "vol-1".to_owned()];
        let marks = [(STATUS, "contained"), (INCIDENT, "e1")];
        let current: Marks = BTreeMap::from([(
            "eni-1".to_owned(),
            BTreeMap::from([
                (STATUS.to_owned(), "contained".to_owned()),
                (INCIDENT.to_owned(), "e1".to_owned()),
            ]),
        )]);
        assert_eq!(unmarked(&resources, Some(&current), &marks), ["vol-1"]);
        assert_eq!(unmarked(&resources, None, &marks), resources);
    }

    fn tags(n: usize) -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("team-{i:02}"), "x".to_owned()))
            .collect()
    }

    fn ours() -> BTreeMap<String, String> {
        PRIORITY
            .iter()
            .map(|k| (k.to_string(), "v".to_owned()))
            .collect()
    }

    #[test]
    fn close_to_the_limit_the_status_and_incident_go_first_and_the_rest_is_named() {
        let (fits, left_out) = fit(&tags(48), &ours());
        let keys: Vec<&str> = fits.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [STATUS, INCIDENT]);
        assert_eq!(left_out, [CONTAINED_AT, REASON, CHANGES]);
    }

    #[test]
    fn keys_the_instance_already_has_take_no_room_and_aws_tags_do_not_count() {
        let mut carried = tags(45);
        carried.insert(STATUS.to_owned(), "partial".to_owned());
        carried.insert("aws:cloudformation:stack-name".to_owned(), "s".to_owned());
        let (fits, left_out) = fit(&carried, &ours());
        assert_eq!(fits.len(), 5, "{fits:?}");
        assert!(left_out.is_empty());
        let (fits, left_out) = fit(&tags(50), &ours());
        assert!(fits.is_empty());
        assert_eq!(left_out[0], STATUS);
    }

    fn step(step: Step, status: Status) -> (Step, Status) {
        (step, status)
    }

    #[test]
    fn a_first_containment_records_time_incident_reason_and_the_steps_done() {
        let tags = desired(
            &BTreeMap::new(),
            InstanceOutcome::Contained,
            "evt-1",
            "tag Quarantine=true set",
            &[
                step(Step::MoveNetworkInterfaces, Status::Done),
                step(Step::DetachAutoScaling, Status::Unchanged),
                step(Step::ReplaceInstanceProfile, Status::Done),
            ],
            "2026-11-23T10:00:00Z",
        );
        assert_eq!(tags[STATUS], "contained");
        assert_eq!(tags[CONTAINED_AT], "2026-11-23T10:00:00Z");
        assert_eq!(tags[INCIDENT], "evt-1");
        assert_eq!(
            tags[CHANGES],
            "move-network-interfaces,replace-instance-profile"
        );
    }

    #[test]
    fn a_rerun_keeps_the_first_runs_time_incident_and_changes() {
        let existing = desired(
            &BTreeMap::new(),
            InstanceOutcome::Contained,
            "evt-1",
            "first",
            &[step(Step::MoveNetworkInterfaces, Status::Done)],
            "2026-11-23T10:00:00Z",
        );
        let again = desired(
            &existing,
            InstanceOutcome::Contained,
            "evt-2",
            "second",
            &[step(Step::MoveNetworkInterfaces, Status::Unchanged)],
            "2026-11-24T10:00:00Z",
        );
        assert_eq!(again, existing);
    }

    #[test]
    fn the_changes_name_the_steps_in_their_own_order_whatever_order_they_ended_in() {
        let ended = |steps: &[(Step, Status)]| {
            desired(
                &BTreeMap::new(),
                InstanceOutcome::Contained,
                "e",
                "r",
                steps,
                "t",
            )[CHANGES]
                .clone()
        };
        let network_first = ended(&[
            step(Step::MoveNetworkInterfaces, Status::Done),
            step(Step::RevokeCredentials, Status::Done),
        ]);
        let credentials_first = ended(&[
            step(Step::RevokeCredentials, Status::Done),
            step(Step::MoveNetworkInterfaces, Status::Done),
        ]);
        assert_eq!(network_first, "move-network-interfaces,revoke-credentials");
        assert_eq!(credentials_first, network_first);
    }

    #[test]
    fn a_failed_cut_is_tagged_not_contained() {
        let tags = desired(
            &BTreeMap::new(),
            InstanceOutcome::NotContained,
            "e",
            "r",
            &[],
            "t",
        );
        assert_eq!(tags[STATUS], "not-contained");
    }

    #[test]
    fn long_values_are_cut_to_what_ec2_accepts() {
        let reason = "x".repeat(300);
        let tags = desired(
            &BTreeMap::new(),
            InstanceOutcome::Contained,
            "e",
            &reason,
            &[],
            "t",
        );
        assert_eq!(tags[REASON].chars().count(), 256);
    }
}
