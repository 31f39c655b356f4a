//! The deny on the original role. The emulator does not evaluate policy conditions, so every
//! test reads the policy documents back through the SDK and checks them exactly.

use aws_sdk_ec2::types::{IamInstanceProfileSpecification, InstanceType};
use ec2_quarantine::config::CredentialRevocation;
use ec2_quarantine::contain::credentials::{revoke_credentials, OriginalProfile};
use ec2_quarantine::report::{InstanceOutcome, Status, Step, StepReport};
use ec2_quarantine::revocations::RevocationLedger;
use serde_json::{json, Value};

use crate::containment::{contain, trigger_event};
use crate::support::faults::{Faults, Gate};
use crate::support::scenario::{Account, Options, Scenario};
use crate::support::{recorded_clients, with_faults, CallLog};

const POLICY: &str = "ec2-quarantine-revoke-instance-credentials";

fn instance_arn(instance_id: &str) -> String {
    format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}")
}

fn instance_statement(arns: &[&str]) -> Value {
    json!({
        "Sid": "Ec2QuarantineRevokeInstanceCredentials",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"ArnEquals": {"ec2:SourceInstanceARN": arns}},
    })
}

async fn with_profile() -> Scenario {
    Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await
}

/// The scenario's original role: the scenarios give role and profile one name.
fn role_of(s: &Scenario) -> String {
    let arn = s.original_profile_arn.as_deref().expect("a profile");
    arn.rsplit('/').next().unwrap().to_owned()
}

/// An inline policy of a role as IAM returns it: URL-encoded JSON, decoded and parsed here.
pub async fn role_policy(account: &Account, role: &str, name: &str) -> Option<Value> {
    let output = match account
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
    {
        Ok(output) => output,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            return None
        }
        Err(e) => panic!("GetRolePolicy {role}/{name}: {e:?}"),
    };
    let raw = output.policy_document();
    let text = if raw.starts_with('{') {
        raw.to_owned()
    } else {
        url_decode(raw)
    };
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")))
}

fn url_decode(encoded: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            bytes.push(u8::from_str_radix(std::str::from_utf8(&tail[..2]).unwrap(), 16).unwrap());
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).unwrap()
}

async fn put_role_policy(account: &Account, role: &str, name: &str, document: &str) {
    account
        .iam
        .put_role_policy()
        .role_name(role)
        .policy_name(name)
        .policy_document(document)
        .send()
        .await
        .unwrap();
}

/// Another instance launched with the scenario's original profile, in its subnet.
async fn second_instance(s: &Scenario) -> String {
    let profile = role_of(s);
    let out = s
        .account
        .ec2
        .run_instances()
        .image_id("ami-0123456789abcdef0")
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&s.subnet_id)
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(profile)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_owned()
}

/// An inline policy of exactly `chars` characters, as IAM counts them.
fn padding_policy(chars: usize) -> String {
    let head = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Pad","Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::pad/"#;
    let tail = r#""}]}"#;
    format!(
        "{head}{}{tail}",
        "x".repeat(chars - head.len() - tail.len())
    )
}

fn iam_calls(log: &CallLog) -> Vec<String> {
    log.calls()
        .into_iter()
        .filter(|c| c.starts_with("IAM."))
        .collect()
}

/// The revocation list of one invocation, in the scenario's incident table.
fn ledger(s: &Scenario) -> RevocationLedger {
    RevocationLedger::new(
        aws_sdk_dynamodb::Client::new(&s.account.sdk),
        s.config(&[]).incident_table,
        std::time::Duration::from_secs(5),
    )
}

fn revoke_step(report: &ec2_quarantine::report::Report) -> &StepReport {
    report.instances[0]
        .step(Step::RevokeCredentials)
        .expect("a revoke-credentials step")
}

#[tokio::test]
async fn a_first_containment_denies_the_original_role_to_this_instance_only() {
    let s = with_profile().await;
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("contained");
    let step = revoke_step(&report);
    assert_eq!(step.status, Status::Done, "{}", step.detail);
    let arn = instance_arn(&s.instance_id);
    assert_eq!(
        role_policy(&s.account, &role_of(&s), POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [instance_statement(&[&arn])]}))
    );
    assert_eq!(log.count("GetInstanceProfile"), 1);
    assert_eq!(log.count("PutRolePolicy"), 1);
    // The isolation role is never written to.
    assert_eq!(
        s.account
            .iam
            .list_role_policies()
            .role_name(&s.isolation_profile.0)
            .send()
            .await
            .unwrap()
            .policy_names(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_second_instance_of_the_same_role_joins_the_same_statement() {
    let s = with_profile().await;
    let second = second_instance(&s).await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("first contained");
    let (result, _) = contain(&s, trigger_event(&[&second]), &[]).await;
    let report = result.expect("second contained");
    assert_eq!(revoke_step(&report).status, Status::Done);
    let mut arns = [instance_arn(&s.instance_id), instance_arn(&second)];
    arns.sort();
    let arns: Vec<&str> = arns.iter().map(String::as_str).collect();
    assert_eq!(
        role_policy(&s.account, &role_of(&s), POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [instance_statement(&arns)]}))
    );
}

#[tokio::test]
async fn instances_of_one_event_that_share_a_role_all_end_up_in_its_statement() {
    let s = with_profile().await;
    let second = second_instance(&s).await;
    let third = second_instance(&s).await;
    let (result, _) = contain(&s, trigger_event(&[&s.instance_id, &second, &third]), &[]).await;
    result.expect("all contained");
    let mut arns = [
        instance_arn(&s.instance_id),
        instance_arn(&second),
        instance_arn(&third),
    ];
    arns.sort();
    let arns: Vec<&str> = arns.iter().map(String::as_str).collect();
    assert_eq!(
        role_policy(&s.account, &role_of(&s), POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [instance_statement(&arns)]}))
    );
}

#[tokio::test]
async fn a_rerun_with_the_arn_already_denied_makes_no_write() {
    let s = with_profile().await;
    let original = OriginalProfile::Arn(s.original_profile_arn.clone().unwrap());
    let first = CallLog::default();
    let step = revoke_credentials(
        &recorded_clients(&s.account.sdk, &first),
        Some(&ledger(&s)),
        CredentialRevocation::Instance,
        &s.instance_id,
        original.clone(),
        None,
    )
    .await;
    assert_eq!(step.status, Status::Done, "{}", step.detail);
    assert_eq!(first.count("PutRolePolicy"), 1);
    let before = role_policy(&s.account, &role_of(&s), POLICY).await;

    let again = CallLog::default();
    let step = revoke_credentials(
        &recorded_clients(&s.account.sdk, &again),
        Some(&ledger(&s)),
        CredentialRevocation::Instance,
        &s.instance_id,
        original,
        None,
    )
    .await;
    assert_eq!(step.status, Status::Unchanged, "{}", step.detail);
    assert!(step.detail.contains("already denied"), "{}", step.detail);
    assert_eq!(again.count("PutRolePolicy"), 0);
    assert_eq!(role_policy(&s.account, &role_of(&s), POLICY).await, before);
}

#[tokio::test]
async fn a_write_that_lands_after_a_concurrent_invocations_is_made_again_with_both_arns() {
    let s = with_profile().await;
    let second = second_instance(&s).await;
    let original = OriginalProfile::Arn(s.original_profile_arn.clone().unwrap());
    // Invocation A's policy write is held at the gate until invocation B has finished, so that
    // A's write, made from the list as A saw it, lands last and drops B's instance.
    let gate = Gate::default();
    let faults = Faults::default();
    faults.hold("PutRolePolicy", &gate);
    let a_log = CallLog::default();
    let a_clients = recorded_clients(&with_faults(&s.account.sdk, &faults), &a_log);
    let b_log = CallLog::default();
    let b_clients = recorded_clients(&s.account.sdk, &b_log);
    let (a_ledger, b_ledger) = (ledger(&s), ledger(&s));
    let a = revoke_credentials(
        &a_clients,
        Some(&a_ledger),
        CredentialRevocation::Instance,
        &s.instance_id,
        original.clone(),
        None,
    );
    let b = async {
        gate.arrived().await;
        let step = revoke_credentials(
            &b_clients,
            Some(&b_ledger),
            CredentialRevocation::Instance,
            &second,
            original.clone(),
            None,
        )
        .await;
        gate.open();
        step
    };
    let (a, b) = tokio::join!(a, b);
    assert_eq!(b.status, Status::Done, "{}", b.detail);
    assert_eq!(b_log.count("PutRolePolicy"), 1, "B saw no writer after it");
    assert_eq!(a.status, Status::Done, "{}", a.detail);
    assert_eq!(
        a_log.count("PutRolePolicy"),
        2,
        "A saw B's version and wrote again"
    );
    let mut arns = [instance_arn(&s.instance_id), instance_arn(&second)];
    arns.sort();
    let arns: Vec<&str> = arns.iter().map(String::as_str).collect();
    assert_eq!(
        role_policy(&s.account, &role_of(&s), POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [instance_statement(&arns)]}))
    );
}

#[tokio::test]
async fn without_the_revocation_list_an_arn_lost_to_a_concurrent_writer_is_written_again() {
    let s = with_profile().await;
    let role = role_of(&s);
    let theirs = instance_arn("i-0bbbbbbbbbbbbbbbb");
    let log = CallLog::default();
    let clients = recorded_clients(&s.account.sdk, &log);
    let ours = revoke_credentials(
        &clients,
        None,
        CredentialRevocation::Instance,
        &s.instance_id,
        OriginalProfile::Arn(s.original_profile_arn.clone().unwrap()),
        None,
    );
    // Another invocation that read the role before our write landed, and writes after it.
    let stale_writer = async {
        for _ in 0..200 {
            if role_policy(&s.account, &role, POLICY).await.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let stale = json!({"Version": "2012-10-17", "Statement": [instance_statement(&[&theirs])]});
        put_role_policy(&s.account, &role, POLICY, &stale.to_string()).await;
    };
    let (step, ()) = tokio::join!(ours, stale_writer);
    assert_eq!(step.status, Status::Done, "{}", step.detail);
    assert_eq!(
        log.count("PutRolePolicy"),
        2,
        "written again after the loss"
    );
    let mut arns = [instance_arn(&s.instance_id), theirs];
    arns.sort();
    let arns: Vec<&str> = arns.iter().map(String::as_str).collect();
    assert_eq!(
        role_policy(&s.account, &role, POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [instance_statement(&arns)]}))
    );
}

#[tokio::test]
async fn a_rerun_after_the_profile_was_replaced_finds_the_original_role_in_the_incident_record() {
    let s = with_profile().await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("first contained");
    // The instance now shows the isolation profile; only the record still names the original.
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("second run succeeds");
    let step = revoke_step(&report);
    assert_eq!(step.status, Status::Unchanged, "{}", step.detail);
    assert!(step.detail.contains("already denied"), "{}", step.detail);
    assert_eq!(log.count("PutRolePolicy"), 0, "nothing written again");
}

#[tokio::test]
async fn an_unrelated_inline_policy_on_the_role_is_untouched() {
    let s = with_profile().await;
    let role = role_of(&s);
    let unrelated = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadAssets", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::assets/*"}
    ]});
    put_role_policy(&s.account, &role, "app-assets", &unrelated.to_string()).await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("contained");
    assert_eq!(
        role_policy(&s.account, &role, "app-assets").await,
        Some(unrelated)
    );
    let mut names = s
        .account
        .iam
        .list_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap()
        .policy_names()
        .to_vec();
    names.sort();
    assert_eq!(names, ["app-assets", POLICY]);
}

#[tokio::test]
async fn a_statement_someone_else_put_in_the_revocation_policy_is_kept() {
    let s = with_profile().await;
    let role = role_of(&s);
    let foreign = json!({"Sid": "DenyDeletes", "Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"});
    put_role_policy(
        &s.account,
        &role,
        POLICY,
        &json!({"Version": "2012-10-17", "Statement": [foreign]}).to_string(),
    )
    .await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("contained");
    let arn = instance_arn(&s.instance_id);
    assert_eq!(
        role_policy(&s.account, &role, POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [foreign, instance_statement(&[&arn])]}))
    );
}

#[tokio::test]
async fn turned_off_it_skips_with_no_iam_call() {
    let s = with_profile().await;
    let (result, log) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("REVOKE_INSTANCE_CREDENTIALS", "false")],
    )
    .await;
    let report = result.expect("contained");
    let step = revoke_step(&report);
    assert_eq!(step.status, Status::Skipped);
    assert_eq!(
        step.detail,
        "turned off by REVOKE_INSTANCE_CREDENTIALS=false"
    );
    assert_eq!(iam_calls(&log), Vec::<String>::new());
    assert_eq!(role_policy(&s.account, &role_of(&s), POLICY).await, None);
}

#[tokio::test]
async fn an_instance_without_a_profile_has_no_credentials_to_revoke() {
    let s = Scenario::build(Options::default()).await;
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("contained");
    let step = revoke_step(&report);
    assert_eq!(step.status, Status::Unchanged);
    assert_eq!(
        step.detail,
        "no credentials were issued: the instance had no profile"
    );
    assert_eq!(iam_calls(&log), Vec::<String>::new());
}

#[tokio::test]
async fn role_wide_mode_also_denies_every_session_issued_before_now() {
    let s = with_profile().await;
    let before = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    let (result, _) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("REVOKE_INSTANCE_CREDENTIALS", "role-wide")],
    )
    .await;
    let after = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    let report = result.expect("contained");
    assert_eq!(revoke_step(&report).status, Status::Done);
    let policy = role_policy(&s.account, &role_of(&s), POLICY)
        .await
        .expect("the policy");
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{policy}");
    let arn = instance_arn(&s.instance_id);
    assert_eq!(statements[0], instance_statement(&[&arn]));
    let time = statements[1]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        statements[1],
        json!({
            "Sid": "Ec2QuarantineRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": time}},
        })
    );
    let bound =
        aws_smithy_types::DateTime::from_str(&time, aws_smithy_types::date_time::Format::DateTime)
            .unwrap()
            .secs();
    assert!(
        (before..=after + 1).contains(&bound),
        "{time} is the time of the containment"
    );
}

#[tokio::test]
async fn a_policy_over_the_roles_size_limit_fails_loudly_and_writes_nothing() {
    let s = with_profile().await;
    let role = role_of(&s);
    // Room for 200 characters: less than the smallest revocation document (about 250).
    let padding = padding_policy(10_240 - 200);
    put_role_policy(&s.account, &role, "padding", &padding).await;
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let message = result.expect_err("the invocation fails");
    let report: Value = serde_json::from_str(&message).unwrap();
    assert_eq!(report["instances"][0]["outcome"], "not_contained");
    let step = report["instances"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "revoke-credentials")
        .unwrap()
        .clone();
    assert_eq!(step["status"], "failed");
    let detail = step["detail"].as_str().unwrap();
    assert!(detail.contains("10240"), "{detail}");
    assert!(detail.contains("NOT revoked"), "{detail}");
    assert!(
        detail.contains("REVOKE_INSTANCE_CREDENTIALS=role-wide"),
        "{detail}"
    );
    assert_eq!(log.count("PutRolePolicy"), 0);
    assert_eq!(role_policy(&s.account, &role, POLICY).await, None);
}

#[tokio::test]
async fn role_wide_mode_denies_older_sessions_when_the_instance_list_has_no_room() {
    let s = with_profile().await;
    let role = role_of(&s);
    // Room for 300 characters: the issue-time statement alone (about 200) fits, both (about
    // 410) do not.
    put_role_policy(&s.account, &role, "padding", &padding_policy(10_240 - 300)).await;
    let (result, _) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("REVOKE_INSTANCE_CREDENTIALS", "role-wide")],
    )
    .await;
    let report = result.expect("contained");
    assert_eq!(report.instances[0].outcome, InstanceOutcome::Contained);
    let step = revoke_step(&report);
    assert_eq!(step.status, Status::Done);
    assert!(
        step.detail.contains("is not in the list"),
        "{}",
        step.detail
    );
    let policy = role_policy(&s.account, &role, POLICY)
        .await
        .expect("the policy");
    let sids: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids, ["Ec2QuarantineRevokeOlderSessions"]);
}

#[tokio::test]
async fn when_the_revocation_list_does_not_answer_the_deny_is_still_written_and_says_so() {
    let s = with_profile().await;
    let faults = Faults::default();
    faults.deny("UpdateItem", "AccessDeniedException");
    let unanswering = RevocationLedger::new(
        aws_sdk_dynamodb::Client::new(&with_faults(&s.account.sdk, &faults)),
        s.config(&[]).incident_table,
        std::time::Duration::from_secs(5),
    );
    let log = CallLog::default();
    let step = revoke_credentials(
        &recorded_clients(&s.account.sdk, &log),
        Some(&unanswering),
        CredentialRevocation::Instance,
        &s.instance_id,
        OriginalProfile::Arn(s.original_profile_arn.clone().unwrap()),
        None,
    )
    .await;
    assert_eq!(step.status, Status::Done, "{}", step.detail);
    assert!(
        step.detail.contains("revocation list did not answer"),
        "{}",
        step.detail
    );
    assert_eq!(faults.injected("UpdateItem"), 1);
    let arn = instance_arn(&s.instance_id);
    assert_eq!(
        role_policy(&s.account, &role_of(&s), POLICY).await,
        Some(json!({"Version": "2012-10-17", "Statement": [instance_statement(&[&arn])]}))
    );
}

#[tokio::test]
async fn the_revocation_list_adds_and_removes_instances_and_versions_each_change() {
    let s = with_profile().await;
    let ledger = ledger(&s);
    let role = format!("arn:aws:iam::123456789012:role/{}", role_of(&s));
    let (a, b) = (
        instance_arn("i-0aaaaaaaaaaaaaaaa"),
        instance_arn("i-0bbbbbbbbbbbbbbbb"),
    );
    let first = ledger.add(&role, &a).await.unwrap();
    let second = ledger.add(&role, &b).await.unwrap();
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.instance_arns, [a.clone(), b.clone()].into());
    let removed = ledger.remove(&role, &a).await.unwrap();
    assert_eq!(removed.version, second.version + 1);
    assert_eq!(removed.instance_arns, [b.clone()].into());
    assert_eq!(ledger.current(&role).await.unwrap(), removed);
}

#[tokio::test]
async fn a_refused_deny_names_the_tag_that_opts_the_role_in_and_the_instance_is_still_cut_off() {
    let s = with_profile().await;
    let faults = Faults::default();
    // What IAM answers a stack deployed with RevocableRoles=tagged for an untagged role.
    faults.deny("PutRolePolicy", "AccessDenied");
    let sdk = with_faults(&s.account.sdk, &faults);
    let (result, _) =
        crate::containment::contain_with(&s, trigger_event(&[&s.instance_id]), &[], &sdk).await;
    let message = result.expect_err("a failed credential cut fails the invocation");
    let report: Value = serde_json::from_str(&message).expect("the report");
    let revoked = report["instances"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "revoke-credentials")
        .expect("the revocation step")
        .clone();
    assert_eq!(revoked["status"], "failed");
    assert_eq!(revoked["error"]["code"], "AccessDenied");
    let detail = revoked["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "{}=true",
            ec2_quarantine::contain::tags::REVOCABLE
        )) && detail.contains(&role_of(&s)),
        "{detail}"
    );
    let (group, _, _) = s.isolation_group().await;
    for eni in &s.interfaces {
        assert_eq!(s.account.interface_groups(eni).await, vec![group.clone()]);
    }
    assert_eq!(
        s.account.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str())
    );
}
