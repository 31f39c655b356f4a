//! Inbound JSON to a decision: contain these instances, ignore the event (with the reason), or
//! reject it as invalid. No I/O happens here, so an ignored or invalid event can never cause an
//! AWS call.

use aws_lambda_events::cloudwatch_events::tag::TagChangeOnResource;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Trigger;

const TAG_SOURCE: &str = "aws.tag";
const TAG_DETAIL_TYPE: &str = "Tag Change on Resource";
const GUARDDUTY_SOURCE: &str = "aws.guardduty";
const GUARDDUTY_DETAIL_TYPE: &str = "GuardDuty Finding";

/// What an inbound event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Contain(ContainRequest),
    Ignore {
        reason: String,
    },
    /// Undo containment (`"action": "release"`); only ever a direct invocation, never an event.
    Release(ReleaseRequest),
    // An EBS snapshot set or copy completed: encrypted evidence (`crate::evidence_copy`).
    Snapshots(crate::evidence_copy::event::SnapshotEvent),
    /// `{"action": "sweep"}`, from the schedule: contain what carries the trigger tag but was
    /// never contained, because its tag event was lost (`crate::sweep`).
    Sweep(SweepRequest),
}

/// `{"action": "sweep", "dry_run": false}`: the sweep finds its instances by tag, so it takes no
/// instance ids, account or reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepRequest {
    /// Report what the sweep would contain, change nothing.
    pub dry_run: bool,
}

/// `{"action": "release", "instance_ids": [...], "reason": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// Validated, de-duplicated, in the order given.
    pub instance_ids: Vec<String>,
    /// Who asked and why: required, because a release re-opens a suspect instance.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainRequest {
    /// Validated, de-duplicated, in the order given.
    pub instance_ids: Vec<String>,
    /// Why, as said by the caller or derived from the event; recorded on the instance.
    pub reason: String,
    /// The EventBridge event id, which names the incident, so that a redelivered event is
    /// recognised as the same incident. Direct invocations carry none.
    pub event_id: Option<String>,
    /// The region the event comes from (EventBridge events only).
    pub region: Option<String>,
    /// A direct invocation's `"dry_run": true`: report what would change, change nothing.
    /// EventBridge events never set it; `DRY_RUN` in the configuration applies to them.
    pub dry_run: bool,
    /// The account the instances are in: a tag event's `account`, a GuardDuty finding's
    /// `detail.accountId`, a direct invocation's optional `account`. `None`: the function's own.
    pub account: Option<String>,
}

/// More instances than one invocation can contain within the function's timeout; a larger
/// batch is almost certainly a mistake (a wrong filter in a playbook), not an incident.
pub const MAX_INSTANCES_PER_EVENT: usize = 500;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event is not valid JSON: {0}")]
    NotJson(String),
    #[error("the event is a JSON {0}, expected an object")]
    NotAnObject(&'static str),
    #[error("the event is neither an EventBridge event (with source, detail-type and detail) nor a direct invocation (with instance_ids)")]
    UnknownShape,
    #[error("the EventBridge event is malformed: {0}")]
    MalformedEnvelope(String),
    #[error("the Tag Change on Resource detail is malformed: {0}")]
    MalformedTagDetail(String),
    #[error("the GuardDuty finding is malformed: {0}")]
    MalformedFinding(String),
    #[error(
        "the instances are in account {account}, not in this function's account {own}, and \
         MEMBER_ROLE_NAME is not set: containment in other accounts is off (see README, \"Many \
         accounts\"); nothing was changed"
    )]
    OtherAccount { account: String, own: String },
    #[error("the EBS snapshot event is malformed: {0}")]
    MalformedSnapshotEvent(String),
    #[error(
        "the instances are in account {0}, but this function's own account is not known (no \
         invoked function ARN), so it cannot tell whether that is another account; nothing was \
         changed"
    )]
    OwnAccountUnknown(String),
    #[error("{0:?} is not an AWS account id (expected 12 digits)")]
    BadAccount(String),
    #[error("the resource {arn} is in account {resource}, not in the event's account {event}")]
    ResourceInOtherAccount {
        arn: String,
        resource: String,
        event: String,
    },
    #[error("the direct invocation is malformed: {0}")]
    MalformedDirect(String),
    #[error("the event names no instance (resources is {0})")]
    NoInstances(&'static str),
    #[error("{0:?} is not an EC2 instance id (expected i- and 8 or 17 hexadecimal digits)")]
    BadInstanceId(String),
    #[error("{0:?} is not an EC2 instance ARN")]
    NotAnInstanceArn(String),
    #[error(
        "the event names {0} instances; one invocation contains at most {MAX_INSTANCES_PER_EVENT}"
    )]
    TooManyInstances(usize),
    #[error("the event comes from region {event}, but this function contains instances in {own}")]
    OtherRegion { event: String, own: String },
    #[error(
        "this is the containment function (FUNCTION_MODE=contain), which never releases: send \
         {{\"action\": \"release\", ...}} to the release function (ReleaseFunction in \
         template.yaml, FUNCTION_MODE=release), which only the break-glass role may invoke"
    )]
    ReleaseNotHere,
    #[error(
        "this is the release function (FUNCTION_MODE=release), which only releases: it takes \
         {{\"action\": \"release\", \"instance_ids\": [...], \"reason\": \"...\"}}, and this \
         {0}; containment goes to the containment function"
    )]
    OnlyRelease(&'static str),
}

impl Request {
    pub fn from_slice(bytes: &[u8], trigger: &Trigger) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
        Self::from_value(value, trigger)
    }

    pub fn from_value(value: Value, trigger: &Trigger) -> Result<Self, EventError> {
        let object = match &value {
            Value::Object(object) => object,
            Value::Null => return Err(EventError::NotAnObject("null")),
            Value::Bool(_) => return Err(EventError::NotAnObject("boolean")),
            Value::Number(_) => return Err(EventError::NotAnObject("number")),
            Value::String(_) => return Err(EventError::NotAnObject("string")),
            Value::Array(_) => return Err(EventError::NotAnObject("array")),
        };
        // Only this exact action: any other `action` without instance ids keeps the errors it
        // has always had.
        if object.get("action").and_then(Value::as_str) == Some(SWEEP_ACTION) {
            return sweep(object);
        }
        if object.contains_key("instance_ids") {
            return direct(value);
        }
        if object.contains_key("detail-type") || object.contains_key("source") {
            return eventbridge(value, trigger);
        }
        Err(EventError::UnknownShape)
    }
}

const SWEEP_ACTION: &str = "sweep";

/// `{"action": "sweep"}`, optionally with `"dry_run": true`. Anything else is refused: a sweep
/// that took instance ids or an account would be a containment request in disguise.
fn sweep(map: &serde_json::Map<String, Value>) -> Result<Request, EventError> {
    const FIELDS: [&str; 2] = ["action", "dry_run"];
    let malformed = |message: String| EventError::MalformedDirect(message);
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!(
            "unknown field {unknown:?} for a sweep (its fields are {}; it finds its instances \
             by the trigger tag)",
            FIELDS.join(", ")
        )));
    }
    let dry_run = match map.get("dry_run") {
        None => false,
        Some(Value::Bool(dry_run)) => *dry_run,
        Some(other) => {
            return Err(malformed(format!(
                "dry_run must be true or false, not {other}"
            )))
        }
    };
    Ok(Request::Sweep(SweepRequest { dry_run }))
}

/// `{"instance_ids": [...], "reason": "..."}`. Read field by field, so that an error names the
/// field. Unknown fields are rejected rather than ignored: a misspelt option in a security tool
/// must fail loudly, not be silently dropped.
fn direct(value: Value) -> Result<Request, EventError> {
    const FIELDS: [&str; 5] = ["action", "instance_ids", "reason", "dry_run", "account"];
    let malformed = |message: String| EventError::MalformedDirect(message);
    let Value::Object(map) = value else {
        return Err(malformed("expected an object".to_owned()));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!(
            "unknown field {unknown:?} (the fields are {})",
            FIELDS.join(", ")
        )));
    }
    let ids = match map.get("instance_ids") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(format!("instance_ids must hold strings, not {item}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(malformed(format!(
                "instance_ids must be a list of instance ids, not {}",
                other
                    .map(Value::to_string)
                    .unwrap_or_else(|| "missing".to_owned())
            )))
        }
    };
    if ids.is_empty() {
        return Err(malformed("instance_ids is empty".to_owned()));
    }
    let reason = match map.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(reason.clone()),
        Some(other) => return Err(malformed(format!("reason must be a string, not {other}"))),
    };
    // Strictly a boolean: "yes" or "false" as a string would be read one way by the caller and
    // possibly the other way here, and a security tool must not guess which run was meant.
    let dry_run = match map.get("dry_run") {
        None => false,
        Some(Value::Bool(dry_run)) => *dry_run,
        Some(other) => {
            return Err(malformed(format!(
                "dry_run must be true or false, not {other}"
            )))
        }
    };
    match map.get("action") {
        None | Some(Value::Null) => {}
        Some(Value::String(action)) if action == "contain" => {}
        Some(Value::String(action)) if action == "release" => {
            // A release has no dry run: running it for real when a rehearsal was asked for
            // would do exactly what the caller did not want.
            if dry_run {
                return Err(malformed(
                    "a release has no dry run; leave out dry_run to release".to_owned(),
                ));
            }
            // The record, which only the function writes, says where the instance was
            // contained; an account in the request could only disagree with it.
            if map.get("account").is_some_and(|a| !a.is_null()) {
                return Err(malformed(
                    "a release takes each instance's account from its incident record; leave \
                     out account"
                        .to_owned(),
                ));
            }
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                return Err(malformed(
                    "a release needs a reason (who asks, and why the instance is safe again)"
                        .to_owned(),
                ));
            };
            return Ok(Request::Release(ReleaseRequest {
                instance_ids: validated_ids(ids)?,
                reason,
            }));
        }
        Some(other) => {
            return Err(malformed(format!(
                "unknown action {other} (the actions are \"contain\", the default, \"release\" \
                 and \"sweep\")"
            )))
        }
    }
    let account = match map.get("account") {
        None | Some(Value::Null) => None,
        Some(Value::String(account)) => Some(validated_account(account)?),
        Some(other) => {
            return Err(malformed(format!(
                "account must be a string of 12 digits, not {other}"
            )))
        }
    };
    Ok(Request::Contain(ContainRequest {
        instance_ids: validated_ids(ids)?,
        reason: reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "direct invocation".to_owned()),
        event_id: None,
        region: None,
        dry_run,
        account,
    }))
}

fn eventbridge(value: Value, trigger: &Trigger) -> Result<Request, EventError> {
    let event: EventBridgeEvent<Value> =
        serde_json::from_value(value).map_err(|e| EventError::MalformedEnvelope(e.to_string()))?;
    if event.source == GUARDDUTY_SOURCE && event.detail_type == GUARDDUTY_DETAIL_TYPE {
        return guardduty(event, trigger);
    }
    if crate::evidence_copy::event::is_snapshot_event(&event.source, &event.detail_type) {
        return crate::evidence_copy::event::parse(event);
    }
    if event.source != TAG_SOURCE || event.detail_type != TAG_DETAIL_TYPE {
        return Ok(ignore(format!(
            "{:?} events from {:?} are not handled (only {TAG_DETAIL_TYPE:?} from {TAG_SOURCE} \
             and {GUARDDUTY_DETAIL_TYPE:?} from {GUARDDUTY_SOURCE})",
            event.detail_type, event.source
        )));
    }
    check_tag_detail(&event.detail)?;
    let detail: TagChangeOnResource = serde_json::from_value(event.detail)
        .map_err(|e| EventError::MalformedTagDetail(e.to_string()))?;
    if detail.service != "ec2" || detail.resource_type != "instance" {
        return Ok(ignore(format!(
            "the tag change is on a {} {}, not an EC2 instance",
            detail.service, detail.resource_type
        )));
    }
    if !detail.changed_tag_keys.contains(&trigger.key) {
        return Ok(ignore(format!(
            "tag {:?} did not change (changed: {:?})",
            trigger.key, detail.changed_tag_keys
        )));
    }
    match detail.tags.get(&trigger.key) {
        None => {
            return Ok(ignore(format!(
                "tag {:?} was removed; removing the tag never releases an instance",
                trigger.key
            )))
        }
        Some(value) if *value != trigger.value => {
            return Ok(ignore(format!(
                "tag {:?} was set to {:?}, not {:?} (compared case-sensitively); changing the value never releases an instance",
                trigger.key, value, trigger.value
            )))
        }
        Some(_) => {}
    }
    let resources = match event.resources {
        None => return Err(EventError::NoInstances("missing")),
        Some(resources) if resources.is_empty() => return Err(EventError::NoInstances("empty")),
        Some(resources) => resources,
    };
    let ids = resources
        .iter()
        .map(|arn| instance_id_from_arn(arn))
        .collect::<Result<Vec<_>, _>>()?;
    // Forwarded from a member account's bus, the event keeps that account: the instances are
    // there. Each resource ARN must agree, or the event would act on the wrong account.
    let account = event
        .account
        .as_deref()
        .map(validated_account)
        .transpose()?;
    if let Some(account) = &account {
        for arn in &resources {
            let resource = arn.split(':').nth(4).unwrap_or_default();
            if resource != account {
                return Err(EventError::ResourceInOtherAccount {
                    arn: arn.clone(),
                    resource: resource.to_owned(),
                    event: account.clone(),
                });
            }
        }
    }
    Ok(Request::Contain(ContainRequest {
        instance_ids: validated_ids(ids)?,
        reason: format!("tag {}={} set", trigger.key, trigger.value),
        event_id: event.id.filter(|id| !id.is_empty()),
        region: event.region,
        dry_run: false,
        account,
    }))
}

/// Names the field that is wrong, which serde's own message does not.
fn check_tag_detail(detail: &Value) -> Result<(), EventError> {
    let malformed = |message: String| EventError::MalformedTagDetail(message);
    let Value::Object(map) = detail else {
        return Err(malformed(format!("detail must be an object, not {detail}")));
    };
    let strings = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    type Check = (&'static str, &'static str, fn(&Value) -> bool);
    let checks: [Check; 5] = [
        ("changed-tag-keys", "a list of strings", strings),
        ("service", "a string", Value::is_string),
        ("resource-type", "a string", Value::is_string),
        ("version", "a number", Value::is_number),
        ("tags", "an object of strings", |v| {
            v.as_object()
                .is_some_and(|o| o.values().all(Value::is_string))
        }),
    ];
    for (field, kind, ok) in checks {
        match map.get(field) {
            Some(value) if ok(value) => {}
            Some(value) => {
                return Err(malformed(format!(
                    "detail.{field} must be {kind}, not {value}"
                )))
            }
            None => return Err(malformed(format!("detail.{field} is missing"))),
        }
    }
    Ok(())
}

/// The few fields of a GuardDuty finding the decision needs; aws_lambda_events has no type
/// for it, and the rest of the finding (service, network details) is left to the analyst.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Finding {
    id: String,
    #[serde(rename = "type")]
    finding_type: String,
    severity: f64,
    account_id: String,
    region: String,
    resource: FindingResource,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FindingResource {
    resource_type: String,
    instance_details: Option<InstanceDetails>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceDetails {
    instance_id: String,
}

fn guardduty(event: EventBridgeEvent<Value>, trigger: &Trigger) -> Result<Request, EventError> {
    check_fields(
        &event.detail,
        &[
            ("/id", "a string", Value::is_string),
            ("/type", "a string", Value::is_string),
            ("/severity", "a number", Value::is_number),
            ("/accountId", "a string", Value::is_string),
            ("/region", "a string", Value::is_string),
            ("/resource", "an object", Value::is_object),
            ("/resource/resourceType", "a string", Value::is_string),
        ],
    )?;
    // Only an instance finding must carry instanceDetails; S3 or IAM findings have none.
    if event.detail.pointer("/resource/resourceType") == Some(&Value::from("Instance")) {
        check_fields(
            &event.detail,
            &[
                ("/resource/instanceDetails", "an object", Value::is_object),
                (
                    "/resource/instanceDetails/instanceId",
                    "a string",
                    Value::is_string,
                ),
            ],
        )?;
    }
    // `CreateSampleFindings` (the console's "Generate sample findings") marks its findings so;
    // the rule drops them too, and a sample never contains anything.
    let sample = event.detail.pointer("/service/additionalInfo/sample") == Some(&Value::Bool(true));
    let finding: Finding = serde_json::from_value(event.detail)
        .map_err(|e| EventError::MalformedFinding(e.to_string()))?;
    let described = format!(
        "GuardDuty finding {} (severity {}, id {})",
        finding.finding_type, finding.severity, finding.id
    );
    if sample {
        return Ok(ignore(format!(
            "{described} is a sample finding (service.additionalInfo.sample), not a real one"
        )));
    }
    if finding.resource.resource_type != "Instance" {
        return Ok(ignore(format!(
            "{described} is about a resource of type {}, not an EC2 instance",
            finding.resource.resource_type
        )));
    }
    let Some(details) = finding.resource.instance_details else {
        return Err(EventError::MalformedFinding(
            "detail.resource.instanceDetails is missing".to_owned(),
        ));
    };
    if finding.severity < trigger.guardduty_min_severity {
        return Ok(ignore(format!(
            "severity {} is below the threshold {} ({described})",
            finding.severity, trigger.guardduty_min_severity
        )));
    }
    Ok(Request::Contain(ContainRequest {
        instance_ids: validated_ids(vec![details.instance_id])?,
        reason: described,
        event_id: event.id.filter(|id| !id.is_empty()),
        // Where the instance is: the handler refuses a finding from another region.
        region: Some(finding.region),
        dry_run: false,
        // An administrator account receives its members' findings: the finding, not the event,
        // names the account the instance is in. The handler decides whether it may act there.
        account: Some(validated_account(&finding.account_id)?),
    }))
}

/// A JSON pointer under `detail`, what it must be, and the test for it.
type FieldCheck = (&'static str, &'static str, fn(&Value) -> bool);

/// Names the field that is wrong (as a path under `detail`), which serde's message does not.
fn check_fields(detail: &Value, checks: &[FieldCheck]) -> Result<(), EventError> {
    let malformed = |message: String| EventError::MalformedFinding(message);
    if !detail.is_object() {
        return Err(malformed(format!("detail must be an object, not {detail}")));
    }
    for (pointer, kind, ok) in checks {
        let field = format!("detail{}", pointer.replace('/', "."));
        match detail.pointer(pointer) {
            Some(value) if ok(value) => {}
            Some(value) => return Err(malformed(format!("{field} must be {kind}, not {value}"))),
            None => return Err(malformed(format!("{field} is missing"))),
        }
    }
    Ok(())
}

fn ignore(reason: String) -> Request {
    Request::Ignore { reason }
}

/// `arn:PARTITION:ec2:REGION:ACCOUNT:instance/ID`.
fn instance_id_from_arn(arn: &str) -> Result<String, EventError> {
    let not_instance = || EventError::NotAnInstanceArn(arn.to_owned());
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || !parts[1].starts_with("aws") || parts[2] != "ec2" {
        return Err(not_instance());
    }
    parts[5]
        .strip_prefix("instance/")
        .map(str::to_owned)
        .ok_or_else(not_instance)
}

fn validated_account(account: &str) -> Result<String, EventError> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(account.to_owned())
    } else {
        Err(EventError::BadAccount(account.to_owned()))
    }
}

fn validated_ids(ids: Vec<String>) -> Result<Vec<String>, EventError> {
    if ids.len() > MAX_INSTANCES_PER_EVENT {
        return Err(EventError::TooManyInstances(ids.len()));
    }
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !is_instance_id(&id) {
            return Err(EventError::BadInstanceId(id));
        }
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    Ok(unique)
}

pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trigger() -> Trigger {
        Trigger {
            key: "Quarantine".into(),
            value: "true".into(),
            guardduty_min_severity: 7.0,
        }
    }

    #[test]
    fn a_sample_finding_is_ignored_however_severe() {
        let mut sample = finding(json!(8), instance_resource());
        sample["detail"]["service"] = json!({"additionalInfo": {"sample": true}});
        let request = Request::from_value(sample, &trigger()).unwrap();
        assert!(
            matches!(&request, Request::Ignore { reason } if reason.contains("is a sample finding")),
            "{request:?}"
        );
        let mut real = finding(json!(8), instance_resource());
        real["detail"]["service"] = json!({"additionalInfo": {"sample": false}});
        assert!(matches!(
            Request::from_value(real, &trigger()).unwrap(),
            Request::Contain(_)
        ));
    }

    fn finding(severity: Value, resource: Value) -> Value {
        json!({
            "version": "0",
            "id": "7c0d5c3e-2f4a-4b1e-9d6a-1a2b3c4d5e6f",
            "detail-type": "GuardDuty Finding",
            "source": "aws.guardduty",
            "account": "123456789012",
            "time": "2026-11-23T10:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "schemaVersion": "2.0",
                "accountId": "123456789012",
                "region": "us-east-1",
                "partition": "aws",
                "id": "a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7",
                "type": "UnauthorizedAccess:EC2/SSHBruteForce",
                "resource": resource,
                "severity": severity,
                "title": "SSH brute force"
            }
        })
    }

    fn instance_resource() -> Value {
        json!({
            "resourceType": "Instance",
            "instanceDetails": {"instanceId": "i-0123456789abcdef0", "instanceState": "running"}
        })
    }

    #[test]
    fn a_guardduty_instance_finding_at_the_threshold_contains_the_instance() {
        let request =
            Request::from_value(finding(json!(7), instance_resource()), &trigger()).unwrap();
        assert_eq!(
            request,
            Request::Contain(ContainRequest {
                instance_ids: vec!["i-0123456789abcdef0".into()],
                reason: "GuardDuty finding UnauthorizedAccess:EC2/SSHBruteForce (severity 7, id a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7)".into(),
                event_id: Some("7c0d5c3e-2f4a-4b1e-9d6a-1a2b3c4d5e6f".into()),
                region: Some("us-east-1".into()),
                dry_run: false,
                account: Some("123456789012".into()),
            })
        );
    }

    #[test]
    fn a_guardduty_finding_below_the_threshold_is_ignored() {
        let request =
            Request::from_value(finding(json!(2), instance_resource()), &trigger()).unwrap();
        assert!(
            matches!(&request, Request::Ignore { reason } if reason.starts_with("severity 2 is below the threshold 7")),
            "{request:?}"
        );
        // Decimals count: 6.9 is below 7.
        let request =
            Request::from_value(finding(json!(6.9), instance_resource()), &trigger()).unwrap();
        assert!(matches!(request, Request::Ignore { .. }));
    }

    #[test]
    fn the_guardduty_threshold_is_the_functions_own() {
        let mut lower = trigger();
        lower.guardduty_min_severity = 2.0;
        let request = Request::from_value(finding(json!(2), instance_resource()), &lower).unwrap();
        assert!(matches!(request, Request::Contain(_)));
    }

    #[test]
    fn a_guardduty_finding_about_another_resource_type_is_ignored() {
        for resource in [
            json!({"resourceType": "S3Bucket", "s3BucketDetails": [{"name": "b"}]}),
            json!({"resourceType": "AccessKey", "accessKeyDetails": {"userName": "u"}}),
        ] {
            let request = Request::from_value(finding(json!(8), resource), &trigger()).unwrap();
            assert!(
                matches!(&request, Request::Ignore { reason } if reason.contains("not an EC2 instance")),
                "{request:?}"
            );
        }
    }

    #[test]
    fn an_aggregated_guardduty_finding_names_the_members_account_not_the_administrators() {
        let mut event = finding(json!(8), instance_resource());
        event["detail"]["accountId"] = json!("210987654321");
        let Request::Contain(request) = Request::from_value(event, &trigger()).unwrap() else {
            panic!("contains");
        };
        assert_eq!(request.account.as_deref(), Some("210987654321"));
    }

    #[test]
    fn an_account_that_is_not_twelve_digits_is_invalid() {
        let mut finding_event = finding(json!(8), instance_resource());
        finding_event["detail"]["accountId"] = json!("21098765432");
        let mut tag = tag_event(&["Quarantine"], json!({"Quarantine": "true"}), json!([ARN]));
        tag["account"] = json!("12345678901a");
        for (event, account) in [
            (finding_event, "21098765432"),
            (tag, "12345678901a"),
            (
                json!({"instance_ids": ["i-12345678"], "account": "1234"}),
                "1234",
            ),
        ] {
            assert_eq!(
                Request::from_value(event, &trigger()).unwrap_err(),
                EventError::BadAccount(account.into())
            );
        }
        let err = Request::from_value(
            json!({"instance_ids": ["i-12345678"], "account": 123456789012u64}),
            &trigger(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, EventError::MalformedDirect(m) if m.contains("account must be a string")),
            "{err}"
        );
    }

    #[test]
    fn a_direct_invocation_may_name_the_account_of_its_instances() {
        let Request::Contain(request) = Request::from_value(
            json!({"instance_ids": ["i-12345678"], "account": "111111111111"}),
            &trigger(),
        )
        .unwrap() else {
            panic!("contains");
        };
        assert_eq!(request.account.as_deref(), Some("111111111111"));
    }

    #[test]
    fn a_tag_event_whose_resource_is_in_another_account_than_the_event_is_invalid() {
        let mut event = tag_event(&["Quarantine"], json!({"Quarantine": "true"}), json!([ARN]));
        event["account"] = json!("111111111111");
        let err = Request::from_value(event, &trigger()).unwrap_err();
        assert_eq!(
            err,
            EventError::ResourceInOtherAccount {
                arn: ARN.into(),
                resource: "123456789012".into(),
                event: "111111111111".into(),
            }
        );
    }

    #[test]
    fn a_malformed_guardduty_finding_names_the_field() {
        let without = |field: &str| {
            let mut event = finding(json!(8), instance_resource());
            event["detail"].as_object_mut().unwrap().remove(field);
            event
        };
        let cases = [
            (
                finding(json!(8), json!({"resourceType": "Instance"})),
                "detail.resource.instanceDetails is missing",
            ),
            (
                finding(
                    json!(8),
                    json!({"resourceType": "Instance", "instanceDetails": {"instanceId": 7}}),
                ),
                "detail.resource.instanceDetails.instanceId must be a string",
            ),
            (
                finding(json!("8"), instance_resource()),
                "detail.severity must be a number",
            ),
            (
                finding(json!(8), json!({"instanceDetails": {}})),
                "detail.resource.resourceType is missing",
            ),
            (without("id"), "detail.id is missing"),
            (without("type"), "detail.type is missing"),
            (without("accountId"), "detail.accountId is missing"),
            (without("region"), "detail.region is missing"),
        ];
        for (event, expected) in cases {
            let err = Request::from_value(event.clone(), &trigger())
                .expect_err(&format!("{event} must be invalid"));
            assert!(
                matches!(&err, EventError::MalformedFinding(m) if m.contains(expected)),
                "error for {event} should say {expected:?}: {err}"
            );
        }
        let bad_id = finding(
            json!(8),
            json!({"resourceType": "Instance", "instanceDetails": {"instanceId": "i-XYZ"}}),
        );
        assert_eq!(
            Request::from_value(bad_id, &trigger()).unwrap_err(),
            EventError::BadInstanceId("i-XYZ".into())
        );
    }

    fn tag_event(keys: &[&str], tags: Value, resources: Value) -> Value {
        json!({
            "version": "0",
            "id": "0b4e4b4c-1d4b-7c3e-2d5b-2f1e3c4d5e6f",
            "detail-type": "Tag Change on Resource",
            "source": "aws.tag",
            "account": "123456789012",
            "time": "2026-11-23T10:00:00Z",
            "region": "us-east-1",
            "resources": resources,
            "detail": {
                "changed-tag-keys": keys,
                "service": "ec2",
                "resource-type": "instance",
                "version": 3,
                "tags": tags
            }
        })
    }

    const ARN: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    #[test]
    fn the_trigger_tag_contains_the_instance_and_names_the_incident_by_event_id() {
        let request = Request::from_value(
            tag_event(&["Quarantine"], json!({"Quarantine": "true"}), json!([ARN])),
            &trigger(),
        )
        .unwrap();
        assert_eq!(
            request,
            Request::Contain(ContainRequest {
                instance_ids: vec!["i-0123456789abcdef0".into()],
                reason: "tag Quarantine=true set".into(),
                event_id: Some("0b4e4b4c-1d4b-7c3e-2d5b-2f1e3c4d5e6f".into()),
                region: Some("us-east-1".into()),
                dry_run: false,
                account: Some("123456789012".into()),
            })
        );
    }

    #[test]
    fn the_value_is_compared_case_sensitively() {
        let request = Request::from_value(
            tag_event(&["Quarantine"], json!({"Quarantine": "True"}), json!([ARN])),
            &trigger(),
        )
        .unwrap();
        assert!(matches!(request, Request::Ignore { reason } if reason.contains("\"True\"")));
    }

    #[test]
    fn removing_the_tag_is_ignored_and_never_releases() {
        let request = Request::from_value(
            tag_event(&["Quarantine"], json!({}), json!([ARN])),
            &trigger(),
        )
        .unwrap();
        assert!(matches!(request, Request::Ignore { reason } if reason.contains("removed")));
    }

    #[test]
    fn another_key_changing_on_a_quarantined_instance_is_ignored() {
        let request = Request::from_value(
            tag_event(
                &["Owner"],
                json!({"Quarantine": "true", "Owner": "x"}),
                json!([ARN]),
            ),
            &trigger(),
        )
        .unwrap();
        assert!(matches!(request, Request::Ignore { reason } if reason.contains("did not change")));
    }

    #[test]
    fn an_event_from_another_source_is_ignored() {
        let request = Request::from_value(
            json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}),
            &trigger(),
        )
        .unwrap();
        assert!(matches!(request, Request::Ignore { .. }));
    }

    #[test]
    fn a_tag_event_without_resources_is_invalid() {
        let err = Request::from_value(
            tag_event(&["Quarantine"], json!({"Quarantine": "true"}), json!([])),
            &trigger(),
        )
        .unwrap_err();
        assert_eq!(err, EventError::NoInstances("empty"));
    }

    #[test]
    fn a_volume_arn_under_an_instance_resource_type_is_invalid() {
        let err = Request::from_value(
            tag_event(
                &["Quarantine"],
                json!({"Quarantine": "true"}),
                json!(["arn:aws:ec2:us-east-1:123456789012:volume/vol-0123456789abcdef0"]),
            ),
            &trigger(),
        )
        .unwrap_err();
        assert!(matches!(err, EventError::NotAnInstanceArn(_)));
    }

    #[test]
    fn a_direct_invocation_is_contained_with_its_reason_and_duplicates_collapse() {
        let request = Request::from_value(
            json!({"instance_ids": ["i-0123456789abcdef0", "i-12345678", "i-0123456789abcdef0"], "reason": "GuardDuty 42"}),
            &trigger(),
        )
        .unwrap();
        assert_eq!(
            request,
            Request::Contain(ContainRequest {
                instance_ids: vec!["i-0123456789abcdef0".into(), "i-12345678".into()],
                reason: "GuardDuty 42".into(),
                event_id: None,
                region: None,
                dry_run: false,
                account: None,
            })
        );
    }

    #[test]
    fn a_direct_invocation_may_ask_for_a_dry_run_with_a_boolean_only() {
        let dry_run = |value: Value| {
            Request::from_value(
                json!({"instance_ids": ["i-12345678"], "dry_run": value}),
                &trigger(),
            )
        };
        assert!(matches!(dry_run(json!(true)), Ok(Request::Contain(r)) if r.dry_run));
        assert!(matches!(dry_run(json!(false)), Ok(Request::Contain(r)) if !r.dry_run));
        for value in [
            json!("yes"),
            json!("true"),
            json!(1),
            json!(null),
            json!({}),
        ] {
            let err = dry_run(value.clone()).unwrap_err();
            assert!(
                matches!(&err, EventError::MalformedDirect(m) if m.contains("dry_run must be true or false")),
                "{value}: {err}"
            );
        }
        let omitted =
            Request::from_value(json!({"instance_ids": ["i-12345678"]}), &trigger()).unwrap();
        assert!(matches!(omitted, Request::Contain(r) if !r.dry_run));
    }

    #[test]
    fn an_explicit_contain_action_is_a_containment() {
        let request = Request::from_value(
            json!({"action": "contain", "instance_ids": ["i-12345678"], "reason": "r"}),
            &trigger(),
        )
        .unwrap();
        assert!(matches!(request, Request::Contain(c) if c.instance_ids == ["i-12345678"]));
    }

    #[test]
    fn a_release_action_asks_for_a_release_with_its_reason() {
        let request = Request::from_value(
            json!({"action": "release", "instance_ids": ["i-12345678", "i-12345678"], "reason": "IR-7 closed by alice"}),
            &trigger(),
        )
        .unwrap();
        assert_eq!(
            request,
            Request::Release(ReleaseRequest {
                instance_ids: vec!["i-12345678".into()],
                reason: "IR-7 closed by alice".into(),
            })
        );
    }

    #[test]
    fn a_release_without_a_reason_or_with_a_bad_action_is_invalid() {
        let cases = [
            (
                json!({"action": "release", "instance_ids": ["i-12345678"]}),
                "needs a reason",
            ),
            (
                json!({"action": "release", "instance_ids": ["i-12345678"], "reason": " "}),
                "needs a reason",
            ),
            (
                json!({"action": "unquarantine", "instance_ids": ["i-12345678"]}),
                "unknown action \"unquarantine\"",
            ),
            (
                json!({"action": "Release", "instance_ids": ["i-12345678"], "reason": "r"}),
                "unknown action",
            ),
            (
                json!({"action": true, "instance_ids": ["i-12345678"]}),
                "unknown action true",
            ),
            (
                json!({"action": "release", "instance_ids": ["i-XYZ"], "reason": "r"}),
                "i-XYZ",
            ),
            (
                json!({"action": "release", "instance_ids": ["i-12345678"], "reason": "r", "dry_run": true}),
                "a release has no dry run",
            ),
            (
                json!({"action": "release", "instance_ids": ["i-12345678"], "reason": "r", "account": "111111111111"}),
                "from its incident record",
            ),
        ];
        for (value, expected) in cases {
            let err = Request::from_value(value.clone(), &trigger())
                .expect_err(&format!("{value} must be invalid"));
            assert!(
                err.to_string().contains(expected),
                "error for {value} should mention {expected:?}: {err}"
            );
        }
    }

    #[test]
    fn the_schedules_input_asks_for_a_sweep_and_may_ask_for_a_dry_run() {
        assert_eq!(
            Request::from_value(json!({"action": "sweep"}), &trigger()),
            Ok(Request::Sweep(SweepRequest { dry_run: false }))
        );
        assert_eq!(
            Request::from_value(json!({"action": "sweep", "dry_run": true}), &trigger()),
            Ok(Request::Sweep(SweepRequest { dry_run: true }))
        );
    }

    #[test]
    fn a_sweep_with_anything_else_is_invalid_and_names_it() {
        let cases = [
            (
                json!({"action": "sweep", "instance_ids": ["i-12345678"]}),
                "unknown field \"instance_ids\" for a sweep",
            ),
            (
                json!({"action": "sweep", "account": "111111111111"}),
                "unknown field \"account\"",
            ),
            (json!({"action": "sweep", "dryrun": true}), "\"dryrun\""),
            (
                json!({"action": "sweep", "dry_run": "true"}),
                "dry_run must be true or false",
            ),
            (
                json!({"action": "Sweep", "instance_ids": ["i-12345678"]}),
                "unknown action \"Sweep\"",
            ),
        ];
        for (value, expected) in cases {
            let err = Request::from_value(value.clone(), &trigger())
                .expect_err(&format!("{value} must be invalid"));
            assert!(
                err.to_string().contains(expected),
                "error for {value} should mention {expected:?}: {err}"
            );
        }
    }

    #[test]
    fn a_misspelt_direct_option_is_rejected_not_ignored() {
        let err = Request::from_value(
            json!({"instance_ids": ["i-12345678"], "dryrun": true}),
            &trigger(),
        )
        .unwrap_err();
        assert!(matches!(err, EventError::MalformedDirect(m) if m.contains("dryrun")));
    }

    #[test]
    fn malformed_input_names_what_is_wrong() {
        let cases = [
            (json!(null), "null"),
            (json!([1]), "array"),
            (json!({"hello": 1}), "neither"),
            (json!({"instance_ids": []}), "empty"),
            (json!({"instance_ids": "i-12345678"}), "must be a list"),
            (
                json!({"instance_ids": ["i-12345678"], "reason": 7}),
                "reason must be a string",
            ),
            (json!({"instance_ids": ["i-XYZ"]}), "i-XYZ"),
            (json!({"source": "aws.tag"}), "detail"),
            (
                json!({"source": "aws.tag", "detail-type": "Tag Change on Resource", "detail": {"service": "ec2"}}),
                "changed-tag-keys",
            ),
        ];
        for (value, expected) in cases {
            let err = Request::from_value(value.clone(), &trigger())
                .expect_err(&format!("{value} must be invalid"));
            assert!(
                err.to_string().contains(expected),
                "error for {value} should mention {expected:?}: {err}"
            );
        }
    }

    #[test]
    fn truncated_json_is_invalid() {
        let err = Request::from_slice(br#"{"instance_ids": ["i-1234"#, &trigger()).unwrap_err();
        assert!(matches!(err, EventError::NotJson(_)));
    }

    #[test]
    fn instance_ids_have_eight_or_seventeen_lowercase_hex_digits() {
        assert!(is_instance_id("i-12345678"));
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(!is_instance_id("i-0123456789ABCDEF0"));
        assert!(!is_instance_id("i-123"));
        assert!(!is_instance_id("vol-12345678"));
    }
}
