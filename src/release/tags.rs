//! The instance's tags after a release: `ec2-quarantine:status=released`, when, why and which
//! incident, so that anyone looking at it in the console sees it was let out and by what
//! decision.
//!
//! IAM: `ec2:CreateTags` (instances, network interfaces, volumes), `ec2:DeleteTags` (instances),
//! both on `ec2-quarantine:*` keys only; `ec2:DescribeTags`. The marks on the interfaces and
//! volumes take the release's status.
//!
//! A full release deletes the tags that describe the containment (`incident`, `contained-at`,
//! `reason`, `changes`): they are not evidence (the incident record, the snapshots' own tags
//! and the reports keep all of it, and `released-incident` names the incident), and a new
//! quarantine of the instance must start a new incident with new snapshots instead of finding
//! these and converging on the closed one. A partial release keeps them, so that a retry or a
//! new containment still converges on the same incident. The trigger tag is never touched.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_ec2::types::{Filter, Tag};

use crate::aws::{aws_err, AwsError, Clients};
use crate::contain::instance::InstanceFacts;
use crate::contain::tags::{
    marked_for, marked_resources, read_back_marks, write_marks, CHANGES, CONTAINED_AT, INCIDENT,
    REASON, STATUS,
};
use crate::contain::{step_report, StepResult};
use crate::incident::RELEASED;
use crate::report::{Step, StepReport};

pub const RELEASED_AT: &str = "ec2-quarantine:released-at";
pub const RELEASE_REASON: &str = "ec2-quarantine:release-reason";
pub const RELEASED_INCIDENT: &str = "ec2-quarantine:released-incident";
/// What a full release removes: the containment's own description of itself.
pub const CONTAINMENT_TAGS: [&str; 4] = [INCIDENT, CONTAINED_AT, REASON, CHANGES];

const MAX_VALUE_CHARS: usize = 256;

/// Pure: the tags to write and the keys to delete.
pub fn wanted(
    existing: &BTreeMap<String, String>,
    incident: &str,
    status: &str,
    reason: &str,
    now: &str,
) -> (BTreeMap<String, String>, Vec<&'static str>) {
    let put = BTreeMap::from([
        (STATUS.to_owned(), status.to_owned()),
        (RELEASED_AT.to_owned(), now.to_owned()),
        (
            RELEASE_REASON.to_owned(),
            reason.chars().take(MAX_VALUE_CHARS).collect(),
        ),
        (RELEASED_INCIDENT.to_owned(), incident.to_owned()),
    ]);
    let delete = if status == RELEASED {
        CONTAINMENT_TAGS
            .into_iter()
            .filter(|k| existing.contains_key(*k))
            .collect()
    } else {
        Vec::new()
    };
    (put, delete)
}

pub async fn tag_released(
    clients: &Clients,
    facts: &InstanceFacts,
    incident: &str,
    status: &str,
    reason: &str,
    now: &str,
) -> StepReport {
    let started = Instant::now();
    let (put, delete) = wanted(&facts.tags, incident, status, reason, now);
    // The marks on the interfaces and volumes follow the status: the guard lets go of them only
    // once they say `released`. Those detached since the containment are found by the incident.
    let marks = async {
        let mut marked = marked_resources(facts);
        for resource in marked_for(clients, incident).await? {
            if !marked.contains(&resource) {
                marked.push(resource);
            }
        }
        write_marks(clients, &marked, &[(STATUS, status)]).await?;
        read_back_marks(clients, &marked, status).await?;
        Ok(marked)
    };
    let (tagged, marks) = tokio::join!(apply(clients, &facts.instance_id, &put, &delete), marks);
    let result = tagged.and_then(|mut result| {
        let marked: Vec<String> = marks?;
        if !marked.is_empty() {
            result.detail = format!(
                "{}; {} interface(s) and volume(s) marked {STATUS}={status}",
                result.detail,
                marked.len()
            );
        }
        Ok(result)
    });
    step_report(Step::TagInstance, started, result)
}

async fn apply(
    clients: &Clients,
    instance_id: &str,
    put: &BTreeMap<String, String>,
    delete: &[&str],
) -> Result<StepResult, AwsError> {
    clients
        .ec2
        .create_tags()
        .resources(instance_id)
        .set_tags(Some(
            put.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .send()
        .await
        .map_err(aws_err("CreateTags"))?;
    if !delete.is_empty() {
        // Keys only, no values: whatever value they hold now, they describe the closed incident.
        clients
            .ec2
            .delete_tags()
            .resources(instance_id)
            .set_tags(Some(
                delete
                    .iter()
                    .map(|k| Tag::builder().key(*k).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(aws_err("DeleteTags"))?;
    }
    let read = clients
        .ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-id")
                .values(instance_id)
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("DescribeTags"))?;
    let actual: BTreeMap<&str, &str> = read
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or(""))))
        .collect();
    let status = put.get(STATUS).map(String::as_str).unwrap_or_default();
    let left: Vec<&&str> = delete.iter().filter(|k| actual.contains_key(**k)).collect();
    if actual.get(STATUS) != Some(&status) || !left.is_empty() {
        return Err(AwsError::local(
            "DescribeTags",
            format!(
                "read back {STATUS}={:?} and {left:?} still there, expected {status} and them gone",
                actual.get(STATUS)
            ),
        ));
    }
    let removed = if delete.is_empty() {
        String::new()
    } else {
        format!(", removed {}", delete.join(", "))
    };
    Ok(StepResult::done(format!(
        "{STATUS}={status} ({} tag(s) written{removed})",
        put.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::RELEASE_PARTIAL;

    fn contained() -> BTreeMap<String, String> {
        [
            (STATUS, "contained"),
            (INCIDENT, "evt-1"),
            (CONTAINED_AT, "2026-11-23T10:00:00Z"),
            (REASON, "tag Quarantine=true set"),
            (CHANGES, "move-network-interfaces"),
            ("Quarantine", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn a_full_release_removes_the_containment_tags_and_never_the_trigger_tag() {
        let (put, delete) = wanted(&contained(), "evt-1", RELEASED, "IR-7 closed", "t");
        assert_eq!(put[STATUS], "released");
        assert_eq!(put[RELEASED_INCIDENT], "evt-1");
        assert_eq!(put[RELEASE_REASON], "IR-7 closed");
        assert_eq!(delete, vec![INCIDENT, CONTAINED_AT, REASON, CHANGES]);
        assert!(!put.contains_key("Quarantine"));
    }

    #[test]
    fn a_partial_release_keeps_the_incident_tags_for_a_retry() {
        let (put, delete) = wanted(&contained(), "evt-1", RELEASE_PARTIAL, "r", "t");
        assert_eq!(put[STATUS], RELEASE_PARTIAL);
        assert!(delete.is_empty());
    }

    #[test]
    fn a_long_reason_is_cut_to_what_ec2_accepts() {
        let (put, _) = wanted(&BTreeMap::new(), "e", RELEASED, &"x".repeat(300), "t");
        assert_eq!(put[RELEASE_REASON].chars().count(), 256);
    }
}
