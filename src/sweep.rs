//! The sweep: contains what a lost tag event left uncontained.
//!
//! EventBridge delivers "Tag Change on Resource" events best effort, so an instance can carry
//! the trigger tag without ever having been contained. A schedule (`template.yaml`,
//! `ec2-quarantine-sweep`, every `SweepIntervalMinutes`) invokes the containment function with
//! `{"action": "sweep"}`. In the function's own account, and in each of `SWEEP_ACCOUNTS` with
//! the member role, the sweep lists the instances that carry the trigger tag with the trigger
//! value, reads each one's incident record and decides ([`decide`]):
//!
//! - no record, or a containment that did not end `contained` (`partial`, `not-contained`, or a
//!   `containing` claim older than [`LIVE_CLAIM_SECS`]): contain it, through the same
//!   [`contain::contain_all`] as a tag event, with a reason that says the sweep found it;
//! - `contained`: left alone, nothing to do;
//! - `released`: left alone. A released instance keeps the trigger tag; only a new tag change
//!   quarantines it again;
//! - `release-partial`: left alone. Someone asked for a release; the sweep never undoes it;
//! - `containing` with a live claim: left alone, another invocation is containing it now.
//!
//! It acts only on instances carrying the exact key and value: the filter's wildcards are
//! escaped, and each instance's tags are checked again ([`carries_trigger`]).
//!
//! An account that cannot be reached (member role refused) or listed fails that account in the
//! report, with the AWS operation and code, and the other accounts are swept all the same.
//!
//! With `SNAPSHOT_KMS_KEY_ID` set, the sweep also starts, in its own account, the encrypted
//! copies of evidence snapshots that have none ([`evidence_copy::sweep`]): a copy deferred for
//! the region's concurrent copy limit, or whose completion event was lost, is never lost.
//!
//! IAM: `ec2:DescribeInstances` (already the function's and the member role's) and
//! `dynamodb:GetItem` on the incident table (already the function's): nothing new. Cost per
//! sweep and account: one `DescribeInstances` per 1,000 tagged instances and one `GetItem` per
//! tagged instance; a containment's calls only for an instance it contains.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ec2::types::{Filter, Tag};
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::accounts::{self, Accounts, Target};
use crate::aws::{aws_err, AwsError, Clients};
use crate::config::{Config, Trigger};
use crate::contain;
use crate::event::{ContainRequest, SweepRequest, MAX_INSTANCES_PER_EVENT};
use crate::evidence_copy::{self, EvidenceAction, EvidenceReport};
use crate::incident::{IncidentStore, Record, CONTAINING, RELEASED, RELEASE_PARTIAL};
use crate::report::{InstanceOutcome, InstanceReport, Outcome, Report};

/// A `containing` claim younger than this belongs to an invocation that may still be running:
/// the snapshot lease's length, past the function's timeout (150 s) and Lambda's two retries.
pub const LIVE_CLAIM_SECS: u64 = 15 * 60;

/// The states an instance can still be contained in; a terminated one has nothing to contain.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Member accounts swept at the same time: each runs its own containments, which are already
/// concurrent (`MAX_CONCURRENT_INSTANCES`).
const CONCURRENT_ACCOUNTS: usize = 4;

/// What the sweep did with one instance it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepAction {
    /// Handed to containment; its report is among the report's `instances`.
    Contain,
    /// Left alone, for the reason given.
    Leave,
    /// Its record could not be read, so the sweep cannot tell whether it was released: left
    /// alone, and the sweep fails so that it is seen.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SweptInstance {
    pub instance_id: String,
    pub action: SweepAction,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AwsError>,
}

/// One account's sweep, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountSweep {
    /// `None`: the function's own account, when its id is not known.
    pub account: Option<String>,
    /// Every instance found with the trigger tag, and what was done with it.
    pub instances: Vec<SweptInstance>,
    /// The account could not be reached or listed: nothing in it was swept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AwsError>,
}

impl AccountSweep {
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self
                .instances
                .iter()
                .any(|i| i.action == SweepAction::Failed)
    }

    fn unreached(account: Option<String>, error: AwsError) -> Self {
        Self {
            account,
            instances: Vec::new(),
            error: Some(error),
        }
    }
}

/// Whether the sweep contains an instance, by its incident record, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Contain(String),
    Leave(String),
}

/// The decision for an instance carrying the trigger tag, from its record. Pure.
pub fn decide(record: Option<&Record>, now_secs: u64) -> Decision {
    let Some(record) = record else {
        return Decision::Contain(
            "no incident record: its tag change was never acted on (a lost event)".to_owned(),
        );
    };
    let contained = contain::tags::status_value(InstanceOutcome::Contained);
    let incident = &record.incident;
    match record.status.as_str() {
        status if status == contained => {
            Decision::Leave(format!("contained already (incident {incident})"))
        }
        RELEASED => Decision::Leave(format!(
            "released (incident {incident}): a released instance keeps the tag, and only a new \
             tag change quarantines it again"
        )),
        RELEASE_PARTIAL => Decision::Leave(format!(
            "a release of incident {incident} did not finish (release-partial): the sweep never \
             undoes a release; retry the release, or set the tag again to quarantine it"
        )),
        CONTAINING if claim_is_live(record, now_secs) => Decision::Leave(format!(
            "being contained (incident {incident}): claimed at {} by {}, within the last {} \
             minutes",
            record.claimed_at,
            record.claimed_by,
            LIVE_CLAIM_SECS / 60
        )),
        CONTAINING => Decision::Contain(format!(
            "claimed at {} by {} for incident {incident} and never finished",
            record.claimed_at, record.claimed_by
        )),
        other => Decision::Contain(format!(
            "its containment ended {other:?}, not contained (incident {incident})"
        )),
    }
}

/// An unreadable claim time counts as stale: containing again converges on the claim.
fn claim_is_live(record: &Record, now_secs: u64) -> bool {
    aws_smithy_types::DateTime::from_str(
        &record.claimed_at,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()
    .and_then(|claimed| u64::try_from(claimed.secs()).ok())
    .is_some_and(|claimed| now_secs.saturating_sub(claimed) < LIVE_CLAIM_SECS)
}

/// Whether the instance carries the trigger key with exactly the trigger value. Pure.
pub fn carries_trigger(tags: &[Tag], trigger: &Trigger) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(trigger.key.as_str()) && t.value() == Some(&trigger.value))
}

/// EC2 filter values take `*` and `?` as wildcards and `\` as their escape: escaped, the value
/// matches only itself.
pub fn literal_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '*' | '?') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Sweeps the function's own account and every account of `SWEEP_ACCOUNTS`.
pub async fn sweep_all(
    clients: &Clients,
    accounts: &Accounts,
    config: &Config,
    request: &SweepRequest,
    invocation_id: &str,
) -> Report {
    let own = accounts.own_account().map(|o| o.account.clone());
    let own_sweep = sweep_account(clients, config, own.clone(), request, invocation_id);
    // The own account, if listed, is swept once, as the own account.
    let members = config
        .sweep_accounts
        .iter()
        .filter(|account| Some(*account) != own.as_ref())
        .map(|account| sweep_member(clients, accounts, config, account, request, invocation_id));
    let (own_result, member_results, evidence) = tokio::join!(
        own_sweep,
        stream::iter(members)
            .buffered(CONCURRENT_ACCOUNTS)
            .collect::<Vec<_>>(),
        copy_evidence(clients, config, request)
    );
    let (mut sweeps, mut instances) = (Vec::new(), Vec::new());
    for (sweep, contained) in std::iter::once(own_result).chain(member_results) {
        sweeps.push(sweep);
        instances.extend(contained);
    }
    let mut report = report_of(&config.trigger, request.dry_run, sweeps, instances);
    if evidence.iter().any(|e| e.action == EvidenceAction::Failed) && !request.dry_run {
        report.outcome = Outcome::Partial;
    }
    report.evidence = evidence;
    report
}

/// The evidence pass ([`evidence_copy::sweep`]): the encrypted copies no completion event
/// started, in the own account only, as the events' copies are. A dry run changes nothing, so
/// it starts none.
async fn copy_evidence(
    clients: &Clients,
    config: &Config,
    request: &SweepRequest,
) -> Vec<EvidenceReport> {
    match request.dry_run {
        true => Vec::new(),
        false => evidence_copy::sweep::copy_uncopied(clients, config).await,
    }
}

fn report_of(
    trigger: &Trigger,
    dry_run: bool,
    sweeps: Vec<AccountSweep>,
    instances: Vec<InstanceReport>,
) -> Report {
    let mut report = Report::from_instances(
        format!("sweep for tag {}={}", trigger.key, trigger.value),
        instances,
    );
    report.sweep = sweeps;
    // `swept` only when nothing needed containing: the e-mail subscription leaves those out, so
    // a sweep that contained something reads `contained` (or `partial`) and reaches people.
    report.outcome = if dry_run {
        Outcome::DryRun
    } else if report.has_failures() {
        Outcome::Partial
    } else if report.instances.is_empty() {
        Outcome::Swept
    } else {
        Outcome::Contained
    };
    report
}

async fn sweep_member(
    own: &Clients,
    accounts: &Accounts,
    config: &Config,
    account: &str,
    request: &SweepRequest,
    invocation_id: &str,
) -> (AccountSweep, Vec<InstanceReport>) {
    let unreached = |error| {
        (
            AccountSweep::unreached(Some(account.to_owned()), error),
            vec![],
        )
    };
    let member = match accounts.target(Some(account), config.member_role.as_deref()) {
        Ok(Target::Member(member)) => member,
        // Only when the own account is not known: it is swept as the own account anyway.
        Ok(Target::Own(_)) => {
            return unreached(AwsError::local(
                "AssumeRole",
                "this is the function's own account, swept as such",
            ))
        }
        Err(e) => return unreached(AwsError::local("AssumeRole", e.to_string())),
    };
    match accounts.clients_for(&member, own).await {
        Ok(clients) => {
            let config = accounts::config_in(config, account);
            sweep_account(
                &clients,
                &config,
                Some(account.to_owned()),
                request,
                invocation_id,
            )
            .await
        }
        Err(error) => {
            tracing::error!(account, error = %error, "the sweep cannot reach the account");
            unreached(error)
        }
    }
}

/// One account: list, decide, contain. Returns the account's sweep and the reports of the
/// instances it contained.
async fn sweep_account(
    clients: &Clients,
    config: &Config,
    account: Option<String>,
    request: &SweepRequest,
    invocation_id: &str,
) -> (AccountSweep, Vec<InstanceReport>) {
    let ids = match tagged_instances(&clients.ec2, &config.trigger).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::error!(?account, error = %error, "the sweep cannot list the account's instances");
            return (AccountSweep::unreached(account, error), Vec::new());
        }
    };
    let store = IncidentStore::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let now = now_secs();
    let mut swept: Vec<SweptInstance> = stream::iter(&ids)
        .map(|id| {
            let store = &store;
            async move { swept(id, store.get(id).await, now) }
        })
        .buffered(config.max_concurrent_instances)
        .collect()
        .await;
    let to_contain = bounded(&mut swept);
    tracing::info!(
        ?account,
        found = ids.len(),
        containing = to_contain.len(),
        "swept the account"
    );
    let contained = match to_contain.is_empty() {
        true => Vec::new(),
        false => {
            let request = ContainRequest {
                instance_ids: to_contain,
                reason: format!(
                    "the sweep found tag {}={} on it, not contained: its tag change event was \
                     lost or its containment did not finish",
                    config.trigger.key, config.trigger.value
                ),
                event_id: None,
                region: None,
                dry_run: request.dry_run,
                account: account.clone(),
            };
            contain(clients, config, &request, invocation_id)
                .await
                .instances
        }
    };
    let sweep = AccountSweep {
        account,
        instances: swept,
        error: None,
    };
    (sweep, contained)
}

fn swept(id: &str, record: Result<Option<Record>, AwsError>, now: u64) -> SweptInstance {
    let (action, why, error) = match record {
        Ok(record) => match decide(record.as_ref(), now) {
            Decision::Contain(why) => (SweepAction::Contain, why, None),
            Decision::Leave(why) => (SweepAction::Leave, why, None),
        },
        Err(e) => (
            SweepAction::Failed,
            "its incident record could not be read, so the sweep cannot tell whether it was \
             released: left alone"
                .to_owned(),
            Some(e),
        ),
    };
    SweptInstance {
        instance_id: id.to_owned(),
        action,
        why,
        error,
    }
}

/// The ids to contain, at most one invocation's worth; the rest are left for the next sweep.
fn bounded(swept: &mut [SweptInstance]) -> Vec<String> {
    let mut ids = Vec::new();
    for instance in swept.iter_mut() {
        if instance.action != SweepAction::Contain {
            continue;
        }
        if ids.len() == MAX_INSTANCES_PER_EVENT {
            instance.action = SweepAction::Leave;
            instance.why = format!(
                "{}; left for the next sweep: one invocation contains at most \
                 {MAX_INSTANCES_PER_EVENT}",
                instance.why
            );
            continue;
        }
        ids.push(instance.instance_id.clone());
    }
    ids
}

async fn contain(
    clients: &Clients,
    config: &Config,
    request: &ContainRequest,
    invocation_id: &str,
) -> Report {
    match request.dry_run {
        true => contain::dry_run::plan_all(clients, config, request, invocation_id).await,
        // The sweep's own deadline is not handed down (noted in README): a sweep contains
        // few instances, each well inside the function's timeout.
        false => contain::contain_all(clients, config, request, invocation_id, None).await,
    }
}

/// The live instances carrying the trigger tag and value, every page.
pub async fn tagged_instances(
    ec2: &aws_sdk_ec2::Client,
    trigger: &Trigger,
) -> Result<Vec<String>, AwsError> {
    let mut pages = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{}", trigger.key))
                .values(literal_filter_value(&trigger.value))
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LIVE_STATES.map(str::to_owned).to_vec()))
                .build(),
        )
        .max_results(1000)
        .into_paginator()
        .send();
    let mut ids = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err("DescribeInstances"))?;
        let instances = page.reservations().iter().flat_map(|r| r.instances());
        ids.extend(
            instances
                .filter(|i| carries_trigger(i.tags(), trigger))
                .filter_map(|i| i.instance_id().map(str::to_owned)),
        );
    }
    Ok(ids)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn record(status: &str, claimed_secs_ago: u64) -> Record {
        let claimed = aws_smithy_types::DateTime::from_secs((NOW - claimed_secs_ago) as i64)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap();
        Record {
            instance_id: "i-12345678".into(),
            incident: "evt-1".into(),
            status: status.into(),
            claimed_by: "request-1".into(),
            claimed_at: claimed,
            ..Record::default()
        }
    }

    fn contains(decision: Decision) -> bool {
        matches!(decision, Decision::Contain(_))
    }

    #[test]
    fn an_instance_without_a_record_is_contained_as_a_lost_event() {
        let decision = decide(None, NOW);
        assert!(matches!(&decision, Decision::Contain(why) if why.contains("lost event")));
    }

    #[test]
    fn contained_released_and_release_partial_records_are_left_alone_with_the_reason() {
        for (status, says) in [
            ("contained", "contained already"),
            ("released", "only a new tag change"),
            ("release-partial", "never undoes a release"),
        ] {
            let decision = decide(Some(&record(status, 86_400)), NOW);
            assert!(
                matches!(&decision, Decision::Leave(why) if why.contains(says) && why.contains("evt-1")),
                "{status}: {decision:?}"
            );
        }
    }

    #[test]
    fn a_containment_that_did_not_end_contained_is_contained_again() {
        for status in ["partial", "not-contained", "something-new"] {
            let decision = decide(Some(&record(status, 60)), NOW);
            assert!(
                matches!(&decision, Decision::Contain(why) if why.contains(status)),
                "{status}: {decision:?}"
            );
        }
    }

    #[test]
    fn a_live_claim_is_left_to_its_invocation_and_a_stale_one_is_contained() {
        assert!(!contains(decide(Some(&record("containing", 60)), NOW)));
        assert!(!contains(decide(
            Some(&record("containing", LIVE_CLAIM_SECS - 1)),
            NOW
        )));
        assert!(contains(decide(
            Some(&record("containing", LIVE_CLAIM_SECS)),
            NOW
        )));
        let unreadable = Record {
            claimed_at: "yesterday".into(),
            ..record("containing", 0)
        };
        assert!(contains(decide(Some(&unreadable), NOW)));
    }

    fn tag(key: &str, value: &str) -> Tag {
        Tag::builder().key(key).value(value).build()
    }

    fn trigger(value: &str) -> Trigger {
        Trigger {
            key: "Quarantine".into(),
            value: value.into(),
            guardduty_min_severity: 7.0,
        }
    }

    #[test]
    fn only_the_exact_trigger_key_and_value_count() {
        let t = trigger("true");
        assert!(carries_trigger(
            &[tag("Name", "web"), tag("Quarantine", "true")],
            &t
        ));
        for tags in [
            vec![tag("Quarantine", "True")],
            vec![tag("quarantine", "true")],
            vec![tag("Quarantine", "true ")],
            vec![tag("Quarantine", "")],
            vec![],
        ] {
            assert!(!carries_trigger(&tags, &t), "{tags:?}");
        }
        // A value with a wildcard in it matches only itself.
        assert!(!carries_trigger(
            &[tag("Quarantine", "yes")],
            &trigger("y*")
        ));
    }

    #[test]
    fn filter_wildcards_are_escaped() {
        assert_eq!(literal_filter_value("true"), "true");
        assert_eq!(literal_filter_value(r"a*b?c\d"), r"a\*b\?c\\d");
    }

    #[test]
    fn more_than_one_invocations_worth_is_left_for_the_next_sweep() {
        let mut swept: Vec<SweptInstance> = (0..MAX_INSTANCES_PER_EVENT + 2)
            .map(|n| SweptInstance {
                instance_id: format!("i-{n:08x}"),
                action: if n == 0 {
                    SweepAction::Leave
                } else {
                    SweepAction::Contain
                },
                why: "w".into(),
                error: None,
            })
            .collect();
        let ids = bounded(&mut swept);
        assert_eq!(ids.len(), MAX_INSTANCES_PER_EVENT);
        assert_eq!(ids[0], "i-00000001");
        let last = swept.last().unwrap();
        assert_eq!(last.action, SweepAction::Leave);
        assert!(last.why.contains("next sweep"), "{}", last.why);
    }

    #[test]
    fn an_unreadable_record_fails_the_sweep_and_leaves_the_instance() {
        let instance = swept(
            "i-12345678",
            Err(AwsError::local("GetItem", "timed out")),
            NOW,
        );
        assert_eq!(instance.action, SweepAction::Failed);
        let sweep = AccountSweep {
            account: None,
            instances: vec![instance],
            error: None,
        };
        assert!(sweep.failed());
    }
}
