"""The EventBridge rules of template.yaml against every sample event in events/.

The tag rule, and the GuardDuty rule (on when GuardDutyTrigger=true). Each EventPattern is a
!Sub JSON string; it is rendered with the parameter defaults
(or other values) and evaluated by EventBridge's matcher as emulated by moto:

* TestEventPattern when the emulator implements it (it answers with a `Result`);
* otherwise the real delivery path: a rule with the pattern, an SQS target, PutEvents, and
  whether a message arrived. moto 5.2.5 answers TestEventPattern with an empty 200 body (the
  operation is a stub), so with moto this second path is the one that runs; it goes
  through moto's actual pattern matcher (moto.events.models.EventPattern).

test_matcher_semantics first pins the pattern forms the rules rely on (including the
`numeric` operator of the GuardDuty rule, which moto's matcher implements) to the behaviour
EventBridge documents, so a matcher that got them wrong would fail here loudly instead of
blessing a wrong rule.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from template_helpers import (
    ACCOUNT,
    EVENTS,
    REGION,
    event_files,
    load_event,
    parameter_defaults,
    render_sub,
)

TAG_RULE = "QuarantineTagRule"
GUARDDUTY_RULE = "GuardDutyFindingRule"
# Encrypted evidence (on when SnapshotKmsKeyArn is set): EBS's completion events.
SET_RULE = "SnapshotSetCompletedRule"
COPY_RULE = "SnapshotCopyCompletedRule"
RULES = (TAG_RULE, GUARDDUTY_RULE, SET_RULE, COPY_RULE)

# The rule that must deliver it (and the other must not); False: no rule may deliver it.
# None: not an EventBridge event at all (direct invocation payloads), so no rule can ever see it.
EXPECTED = {
    "tag-quarantine-instance.json": TAG_RULE,
    "tag-quarantine-two-instances.json": TAG_RULE,
    "tag-other-key.json": False,
    "tag-function-own-tags.json": False,
    "tag-quarantine-other-value.json": False,
    "tag-quarantine-value-other-case.json": False,
    "tag-quarantine-removed.json": False,
    "tag-volume.json": False,
    "guardduty-instance-high.json": GUARDDUTY_RULE,
    "guardduty-instance-low.json": False,
    "guardduty-s3-finding.json": False,
    "guardduty-sample-finding.json": False,
    "ebs-create-snapshots-succeeded.json": SET_RULE,
    "ebs-create-snapshots-failed.json": SET_RULE,
    "ebs-copy-snapshot-succeeded.json": COPY_RULE,
    "ebs-copy-snapshot-failed.json": COPY_RULE,
    "direct-invocation.json": None,
    "direct-invocation-dry-run.json": None,
    "release-invocation.json": None,
    "member-tag-quarantine-instance.json": TAG_RULE,
    "member-guardduty-instance-high.json": GUARDDUTY_RULE,
    "member-direct-invocation.json": None,
    "invalid-unknown-shape.json": None,
}
EVENTBRIDGE = sorted(n for n, e in EXPECTED.items() if e is not None)
TAG_EVENTS = [n for n in EVENTBRIDGE if n.startswith("tag-")]
GUARDDUTY_EVENTS = [n for n in EVENTBRIDGE if n.startswith("guardduty-")]
EBS_EVENTS = [n for n in EVENTBRIDGE if n.startswith("ebs-")]

ENVELOPE_KEYS = {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
DETAIL_KEYS = {"changed-tag-keys", "service", "resource-type", "version", "tags"}


# ---------------------------------------------------------------------------------------
# the matcher
# ---------------------------------------------------------------------------------------
class Matcher:
    """EventBridge pattern evaluation through the emulator."""

    def __init__(self, session, endpoint: str):
        self.events = session.client("events", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        probe = self.events.test_event_pattern(
            EventPattern=json.dumps({"source": ["x.probe"]}),
            Event=json.dumps(_envelope("x.probe", "Probe", [], {})),
        )
        # moto 5.2.5: TestEventPattern is a stub (empty body, no "Result").
        self.native = "Result" in probe
        self.how = "TestEventPattern" if self.native else "rule -> SQS delivery (PutEvents)"
        # A bus of its own: rules other tests left on the shared emulator never see these
        # events, and these rules never see theirs.
        self.bus = None
        if not self.native:
            self.bus = "template-tests-" + uuid.uuid4().hex[:12]
            self.events.create_event_bus(Name=self.bus)

    def close(self) -> None:
        if self.bus:
            self.events.delete_event_bus(Name=self.bus)

    def matches(self, pattern: dict, event: dict) -> bool:
        if self.native:
            r = self.events.test_event_pattern(EventPattern=json.dumps(pattern), Event=json.dumps(event))
            return bool(r["Result"])
        return self._delivered(pattern, event)

    def _delivered(self, pattern: dict, event: dict) -> bool:
        # PutEvents lets the caller set only these fields; the emulator fills in id, time,
        # account, region, version. Refuse patterns that look at anything else, so this
        # path can never answer for a field it did not send.
        allowed = {"source", "detail-type", "detail", "resources"}
        assert set(pattern) <= allowed, f"delivery-based matching cannot check {set(pattern) - allowed}"
        name = "t-" + uuid.uuid4().hex[:16]
        queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED", EventBusName=self.bus)
        try:
            self.events.put_targets(Rule=name, EventBusName=self.bus, Targets=[{"Id": "q", "Arn": queue_arn}])
            r = self.events.put_events(
                Entries=[
                    {
                        "Source": event["source"],
                        "DetailType": event["detail-type"],
                        "Resources": event["resources"],
                        "Detail": json.dumps(event["detail"]),
                        "EventBusName": self.bus,
                    }
                ]
            )
            assert r["FailedEntryCount"] == 0, r
            # moto delivers to the target inside PutEvents, so the message is there already
            # (an emulator without TestEventPattern and with asynchronous delivery would
            # need a wait here).
            got = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            assert len(messages) <= 1, messages
            if messages:
                body = json.loads(messages[0]["Body"])
                assert body["detail"] == event["detail"], "the emulator delivered another event"
                assert body["source"] == event["source"]
            return bool(messages)
        finally:
            self.events.remove_targets(Rule=name, EventBusName=self.bus, Ids=["q"])
            self.events.delete_rule(Name=name, EventBusName=self.bus)
            self.sqs.delete_queue(QueueUrl=queue_url)


@pytest.fixture(scope="module")
def matcher(aws_session, moto_endpoint):
    m = Matcher(aws_session, moto_endpoint)
    yield m
    m.close()


def _envelope(source, detail_type, resources, detail) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": "2024-05-14T09:12:31Z",
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }


def _tag_event(changed, tags, service="ec2", rtype="instance") -> dict:
    return _envelope(
        "aws.tag",
        "Tag Change on Resource",
        [f"arn:aws:ec2:{REGION}:{ACCOUNT}:{rtype}/i-0123456789abcdef0"],
        {"changed-tag-keys": changed, "service": service, "resource-type": rtype, "version": 1, "tags": tags},
    )


# ---------------------------------------------------------------------------------------
# the rule's pattern
# ---------------------------------------------------------------------------------------
def rule_pattern(template: dict, rule_name: str = TAG_RULE, **overrides: str) -> dict:
    rule = template["Resources"][rule_name]
    assert rule["Type"] == "AWS::Events::Rule"
    raw = rule["Properties"]["EventPattern"]
    if rule_name in (SET_RULE, COPY_RULE):
        # No parameter in these: a plain YAML mapping.
        assert "Fn::Sub" not in raw and not overrides
        return raw
    assert isinstance(raw, dict) and "Fn::Sub" in raw, "EventPattern is expected to be a !Sub JSON string"
    variables = {**parameter_defaults(template), **overrides}
    return json.loads(render_sub(raw, variables))


# ---------------------------------------------------------------------------------------
# 1. the matcher agrees with EventBridge on the forms the rule uses
# ---------------------------------------------------------------------------------------
_P = {
    "source": ["aws.tag"],
    "detail-type": ["Tag Change on Resource"],
    "detail": {
        "service": ["ec2"],
        "resource-type": ["instance"],
        "changed-tag-keys": ["Quarantine"],
        "tags": {"Quarantine": ["true"]},
    },
}
_P_COLON = {"source": ["aws.tag"], "detail": {"changed-tag-keys": ["sec:quarantine"], "tags": {"sec:quarantine": ["yes"]}}}

# (case, pattern, event, EventBridge's answer). The expected answers are EventBridge's
# documented semantics: an array in the event matches when it shares a value with the
# pattern's array; nested objects are matched field by field; matching is exact and
# case-sensitive; a field absent from the event never matches a value filter.
def _finding(severity, resource_type="Instance") -> dict:
    return _envelope(
        "aws.guardduty",
        "GuardDuty Finding",
        [],
        {
            "accountId": ACCOUNT,
            "region": REGION,
            "id": "f" * 32,
            "type": "Backdoor:EC2/C&CActivity.B!DNS",
            "resource": {"resourceType": resource_type, "instanceDetails": {"instanceId": "i-0123456789abcdef0"}},
            "severity": severity,
        },
    )


_GD = {
    "source": ["aws.guardduty"],
    "detail-type": ["GuardDuty Finding"],
    "detail": {
        "resource": {"resourceType": ["Instance"]},
        "severity": [{"numeric": [">=", 7]}],
        # Sample findings carry service.additionalInfo.sample = true; real ones lack it.
        "service": {"additionalInfo": {"sample": [False, {"exists": False}]}},
    },
}


def _with_additional_info(event: dict, info) -> dict:
    """`event` with detail.service.additionalInfo set to `info` (dropped when None)."""
    event = json.loads(json.dumps(event))
    service = event["detail"].setdefault("service", {"serviceName": "guardduty"})
    if info is None:
        service.pop("additionalInfo", None)
    else:
        service["additionalInfo"] = info
    return event
_GD_DECIMAL = {"source": ["aws.guardduty"], "detail": {"severity": [{"numeric": [">=", 5.5]}]}}

SEMANTICS = [
    ("array contains the key (only element)", _P, _tag_event(["Quarantine"], {"Quarantine": "true"}), True),
    ("array contains the key (among others)", _P, _tag_event(["Owner", "Quarantine", "Name"], {"Quarantine": "true"}), True),
    ("array lacks the key", _P, _tag_event(["Owner"], {"Quarantine": "true"}), False),
    ("empty array", _P, _tag_event([], {"Quarantine": "true"}), False),
    ("array holds the key in another case", _P, _tag_event(["quarantine"], {"Quarantine": "true"}), False),
    ("nested tag value differs", _P, _tag_event(["Quarantine"], {"Quarantine": "false"}), False),
    ("nested tag value differs only in case", _P, _tag_event(["Quarantine"], {"Quarantine": "True"}), False),
    ("nested tag value has extra text", _P, _tag_event(["Quarantine"], {"Quarantine": "true "}), False),
    ("nested tag key absent", _P, _tag_event(["Quarantine"], {"Owner": "x"}), False),
    ("tags object empty", _P, _tag_event(["Quarantine"], {}), False),
    ("nested tag key in another case", _P, _tag_event(["Quarantine"], {"quarantine": "true"}), False),
    ("other scalar field differs", _P, _tag_event(["Quarantine"], {"Quarantine": "true"}, rtype="volume"), False),
    ("service differs in case", _P, _tag_event(["Quarantine"], {"Quarantine": "true"}, service="EC2"), False),
    ("tag key with a colon", _P_COLON, _tag_event(["sec:quarantine"], {"sec:quarantine": "yes"}), True),
    ("tag key with a colon, other value", _P_COLON, _tag_event(["sec:quarantine"], {"sec:quarantine": "no"}), False),
    # numeric: a number compared as a number; a string that looks like one never matches.
    ("severity above the threshold", _GD, _finding(8), True),
    ("severity at the threshold", _GD, _finding(7), True),
    ("severity at the threshold, written as a decimal", _GD, _finding(7.0), True),
    ("severity just below the threshold", _GD, _finding(6.9), False),
    ("severity low", _GD, _finding(2), False),
    ("severity as a string", _GD, _finding("8"), False),
    ("severity at the top of the High band", _GD, _finding(8.9), True),
    ("severity Critical", _GD, _finding(9.5), True),
    ("decimal threshold, at it", _GD_DECIMAL, _finding(5.5), True),
    ("decimal threshold, below it", _GD_DECIMAL, _finding(5.4), False),
    ("nested resourceType differs", _GD, _finding(8, "S3Bucket"), False),
    ("nested resourceType differs only in case", _GD, _finding(8, "instance"), False),
    # exists: false matches a field that is absent, however deep; a sample finding never.
    ("no service object at all", _GD, _finding(8), True),
    ("service without additionalInfo", _GD, _with_additional_info(_finding(8), None), True),
    ("additionalInfo without sample", _GD, _with_additional_info(_finding(8), {"value": "{}", "type": "default"}), True),
    ("sample false", _GD, _with_additional_info(_finding(8), {"sample": False}), True),
    ("sample finding", _GD, _with_additional_info(_finding(8), {"sample": True, "value": '{"sample":true}', "type": "default"}), False),
    ("sample finding, low severity", _GD, _with_additional_info(_finding(2), {"sample": True}), False),
]


@pytest.mark.parametrize("case,pattern,event,expected", SEMANTICS, ids=[c[0] for c in SEMANTICS])
def test_matcher_semantics(matcher, case, pattern, event, expected):
    got = matcher.matches(pattern, event)
    assert got is expected, (
        f"the emulator's EventBridge matcher ({matcher.how}) answers {got} for '{case}', "
        f"EventBridge answers {expected}: the emulator cannot be trusted for this form"
    )


# ---------------------------------------------------------------------------------------
# 2. every sample event against the rule
# ---------------------------------------------------------------------------------------
def test_every_event_file_is_classified():
    on_disk = {p.name for p in event_files()}
    assert on_disk == set(EXPECTED), (
        f"events/ and the expectations differ: unclassified {sorted(on_disk - set(EXPECTED))}, "
        f"missing {sorted(set(EXPECTED) - on_disk)}"
    )


def test_rule_pattern_shape(template):
    p = rule_pattern(template)
    assert p == {
        "source": ["aws.tag"],
        "detail-type": ["Tag Change on Resource"],
        "detail": {
            "service": ["ec2"],
            "resource-type": ["instance"],
            "changed-tag-keys": ["Quarantine"],
            "tags": {"Quarantine": ["true"]},
        },
    }


def test_guardduty_rule_pattern_shape(template):
    assert rule_pattern(template, GUARDDUTY_RULE) == _GD


@pytest.mark.parametrize("rule_name", RULES)
@pytest.mark.parametrize("name", EVENTBRIDGE)
def test_event_against_rule(template, matcher, name, rule_name):
    event = load_event(name)
    got = matcher.matches(rule_pattern(template, rule_name), event)
    want = EXPECTED[name] == rule_name
    assert got is want, f"{name}: {rule_name} {'matches' if got else 'does not match'} ({matcher.how})"


def test_guardduty_threshold_comes_from_the_parameter(template, matcher):
    low = load_event("guardduty-instance-low.json")
    assert not matcher.matches(rule_pattern(template, GUARDDUTY_RULE), low)
    assert matcher.matches(rule_pattern(template, GUARDDUTY_RULE, GuardDutyMinSeverity="2"), low)
    assert matcher.matches(rule_pattern(template, GUARDDUTY_RULE, GuardDutyMinSeverity="1.5"), low)
    high = load_event("guardduty-instance-high.json")
    assert not matcher.matches(rule_pattern(template, GUARDDUTY_RULE, GuardDutyMinSeverity="8.5"), high)
    # Whatever the threshold, a finding about anything but an instance never matches.
    assert not matcher.matches(
        rule_pattern(template, GUARDDUTY_RULE, GuardDutyMinSeverity="1"), load_event("guardduty-s3-finding.json")
    )


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e is None))
def test_non_eventbridge_payloads_cannot_reach_the_rule(name):
    event = load_event(name)
    # No envelope: EventBridge rejects such an entry, and the rule's pattern requires
    # `source` and `detail-type`, so only a direct invocation delivers it.
    # A direct invocation may name the account of its instances, as an envelope does.
    assert not (ENVELOPE_KEYS - {"account"}) & set(event), f"{name} looks like an EventBridge event"


def test_trigger_key_and_value_come_from_the_parameters(template, matcher):
    """Both places the key appears (changed-tag-keys and the tags map) follow the parameter."""
    pattern = rule_pattern(template, QuarantineTagKey="sec:isolate", QuarantineTagValue="now")
    assert matcher.matches(pattern, _tag_event(["sec:isolate"], {"sec:isolate": "now"}))
    # The default trigger no longer fires.
    assert not matcher.matches(pattern, load_event("tag-quarantine-instance.json"))
    # Key changed to the default value, or value set under another changed key: no.
    assert not matcher.matches(pattern, _tag_event(["sec:isolate"], {"sec:isolate": "true"}))
    assert not matcher.matches(pattern, _tag_event(["Quarantine"], {"Quarantine": "true", "sec:isolate": "now"}))


# ---------------------------------------------------------------------------------------
# 3. the sample events have the shape AWS sends
# ---------------------------------------------------------------------------------------
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_EC2_ARN = re.compile(r"^arn:aws:ec2:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<type>[a-z-]+)/(?P<id>[a-z]+-[0-9a-f]{8,17})$")


@pytest.mark.parametrize("name", TAG_EVENTS)
def test_eventbridge_samples_have_the_aws_shape(name):
    e = load_event(name)
    assert set(e) == ENVELOPE_KEYS
    assert e["version"] == "0"
    assert _UUID.match(e["id"]), e["id"]
    assert e["detail-type"] == "Tag Change on Resource"
    assert e["source"] == "aws.tag"
    assert e["account"] == ACCOUNT
    assert e["region"] == REGION
    assert _TIME.match(e["time"]), e["time"]
    d = e["detail"]
    assert set(d) == DETAIL_KEYS
    assert d["service"] == "ec2"
    assert isinstance(d["version"], int) and not isinstance(d["version"], bool)
    assert isinstance(d["changed-tag-keys"], list) and d["changed-tag-keys"]
    assert all(isinstance(k, str) for k in d["changed-tag-keys"])
    assert isinstance(d["tags"], dict) and all(isinstance(v, str) for v in d["tags"].values())
    assert e["resources"], "resources is empty"
    for arn in e["resources"]:
        m = _EC2_ARN.match(arn)
        assert m, arn
        assert m["region"] == REGION and m["account"] == ACCOUNT
        assert m["type"] == d["resource-type"], f"{arn} is not a {d['resource-type']}"
    if name != "tag-quarantine-two-instances.json":
        assert len(e["resources"]) == 1, "AWS sends one resource per tag event"


GD_DETAIL_KEYS = {
    "schemaVersion", "accountId", "region", "partition", "id", "arn", "type", "resource",
    "service", "severity", "createdAt", "updatedAt", "title", "description",
}
_FINDING_ID = re.compile(r"^[0-9a-f]{32}$")
_GD_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.mark.parametrize("name", GUARDDUTY_EVENTS)
def test_guardduty_samples_have_the_aws_shape(name):
    """The documented shape of a GuardDuty finding event (GuardDuty User Guide, "EventBridge
    event format" and "Finding format")."""
    e = load_event(name)
    assert set(e) == ENVELOPE_KEYS
    assert e["version"] == "0"
    assert _UUID.match(e["id"]), e["id"]
    assert (e["source"], e["detail-type"]) == ("aws.guardduty", "GuardDuty Finding")
    assert (e["account"], e["region"]) == (ACCOUNT, REGION)
    assert _TIME.match(e["time"]), e["time"]
    assert e["resources"] == [], "GuardDuty finding events carry no resources"
    d = e["detail"]
    assert set(d) == GD_DETAIL_KEYS
    assert (d["schemaVersion"], d["accountId"], d["region"], d["partition"]) == ("2.0", ACCOUNT, REGION, "aws")
    assert _FINDING_ID.match(d["id"]), d["id"]
    assert re.fullmatch(rf"arn:aws:guardduty:{REGION}:{ACCOUNT}:detector/[0-9a-f]{{32}}/finding/{d['id']}", d["arn"])
    assert d["arn"].split("/")[1] == d["service"]["detectorId"]
    assert re.fullmatch(r"[A-Za-z]+:[A-Za-z0-9]+/[A-Za-z0-9&.!_:-]+", d["type"]), d["type"]
    assert isinstance(d["severity"], (int, float)) and not isinstance(d["severity"], bool)
    assert 1 <= d["severity"] <= 10
    assert _GD_TIME.match(d["createdAt"]) and _GD_TIME.match(d["updatedAt"])
    assert d["service"]["serviceName"] == "guardduty"
    r = d["resource"]
    if r["resourceType"] == "Instance":
        assert r["instanceDetails"]["instanceId"] == "i-0123456789abcdef0"
        assert d["type"].split(":")[1].startswith("EC2/")
    else:
        assert "instanceDetails" not in r


def test_sample_event_ids_are_distinct():
    ids = [load_event(n)["id"] for n in EVENTBRIDGE]
    assert len(ids) == len(set(ids))


def test_direct_invocation_sample():
    e = load_event("direct-invocation.json")
    assert e == {"instance_ids": ["i-0123456789abcdef0"], "reason": "GuardDuty finding 1234 (manual)"}


def test_release_invocation_sample():
    """Only a direct invocation asks for a release, with the action and a reason."""
    e = load_event("release-invocation.json")
    assert set(e) == {"action", "instance_ids", "reason"}
    assert e["action"] == "release" and e["instance_ids"] == ["i-0123456789abcdef0"]
    assert e["reason"].strip()


def test_events_readme_lists_every_file_with_the_rule_decision():
    text = (EVENTS / "README.md").read_text()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([^`]+\.json)`\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    assert set(rows) == set(EXPECTED), f"README rows {sorted(rows)} != files {sorted(EXPECTED)}"
    for name, expected in EXPECTED.items():
        word = "n/a" if expected is None else "match" if expected else "no match"
        assert rows[name][0] == word, f"README says rule '{rows[name][0]}' for {name}"
        assert rows[name][1] in {"act", "ignore", "invalid", "release"}, rows[name]
        if expected:
            assert rows[name][1] == "act"
        if expected is False:
            assert rows[name][1] == "ignore"


# ---------------------------------------------------------------------------------------
# encrypted evidence: the EBS completion events
# ---------------------------------------------------------------------------------------
_SET = {
    "source": ["aws.ec2"],
    "detail-type": ["EBS Multi-Volume Snapshots Completion Status"],
    "detail": {"event": ["createSnapshots"], "result": ["succeeded", "failed"]},
}
_COPY = {
    "source": ["aws.ec2"],
    "detail-type": ["EBS Snapshot Notification"],
    "detail": {"event": ["copySnapshot"], "result": ["succeeded", "failed"]},
}


def test_encrypted_evidence_rule_patterns(template):
    assert rule_pattern(template, SET_RULE) == _SET
    assert rule_pattern(template, COPY_RULE) == _COPY


def _ebs(detail_type, detail) -> dict:
    return _envelope("aws.ec2", detail_type, ["arn:aws:ec2:us-east-1::snapshot/snap-0123456789abcdef0"], detail)


@pytest.mark.parametrize(
    "case,pattern,event,expected",
    [
        ("a copy completed", _COPY, _ebs("EBS Snapshot Notification", {"event": "copySnapshot", "result": "succeeded"}), True),
        ("a copy failed", _COPY, _ebs("EBS Snapshot Notification", {"event": "copySnapshot", "result": "failed"}), True),
        # Other snapshot notifications share the detail-type: never delivered.
        ("a single snapshot completed", _COPY, _ebs("EBS Snapshot Notification", {"event": "createSnapshot", "result": "succeeded"}), False),
        ("a snapshot was shared", _COPY, _ebs("EBS Snapshot Notification", {"event": "shareSnapshot", "result": "succeeded"}), False),
        ("a snapshot was locked", _COPY, _ebs("EBS Snapshot Notification", {"event": "lockSnapshot", "result": "succeeded"}), False),
        ("a set completed", _SET, _ebs("EBS Multi-Volume Snapshots Completion Status", {"event": "createSnapshots", "result": "succeeded"}), True),
        ("a set of another source", _SET, {**_ebs("EBS Multi-Volume Snapshots Completion Status", {"event": "createSnapshots", "result": "succeeded"}), "source": "aws.ebs"}, False),
        ("a copy event under the set's detail-type", _SET, _ebs("EBS Multi-Volume Snapshots Completion Status", {"event": "copySnapshot", "result": "succeeded"}), False),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_encrypted_evidence_rules_select_only_these_events(matcher, case, pattern, event, expected):
    assert matcher.matches(pattern, event) is expected, case


@pytest.mark.parametrize("name", EBS_EVENTS)
def test_ebs_samples_have_the_documented_shape(name):
    """The EBS User Guide's examples ("Amazon EventBridge events for Amazon EBS")."""
    e = load_event(name)
    assert set(e) == ENVELOPE_KEYS
    assert e["version"] == "0" and _UUID.match(e["id"]), e["id"]
    assert e["source"] == "aws.ec2"
    assert (e["account"], e["region"]) == (ACCOUNT, REGION)
    assert _TIME.match(e["time"]), e["time"]
    d = e["detail"]
    assert d["result"] in ("succeeded", "failed")
    assert (d["cause"] == "") == (d["result"] == "succeeded")
    assert _TIME.match(d["startTime"]) and _TIME.match(d["endTime"])
    snapshot_arn = re.compile(r"^arn:aws:ec2:(us-east-1:|:us-east-1):snapshot/snap-[0-9a-f]{17}$")
    if e["detail-type"] == "EBS Multi-Volume Snapshots Completion Status":
        assert d["event"] == "createSnapshots"
        assert d["snapshots"], "a set names its snapshots"
        assert [s["snapshot_id"] for s in d["snapshots"]] == e["resources"]
        for s in d["snapshots"]:
            assert snapshot_arn.match(s["snapshot_id"]), s
            assert re.match(r"^arn:aws:ec2:(us-east-1:|:us-east-1):volume/vol-[0-9a-f]{17}$", s["source"]), s
            assert s["status"] == ("completed" if d["result"] == "succeeded" else "error")
    else:
        assert e["detail-type"] == "EBS Snapshot Notification"
        assert d["event"] == "copySnapshot"
        assert e["resources"] == [d["snapshot_id"]]
        assert snapshot_arn.match(d["snapshot_id"]) and snapshot_arn.match(d["source"])
        assert d["snapshot_id"] != d["source"]
