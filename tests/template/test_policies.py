"""policies/: the guard policies (SCPs) and the analyst's tag-setter policy.

Besides parsing and naming the actions, the policies are run through a small evaluator of
the IAM features they use (Action/Resource wildcards; StringEquals, StringNotEquals,
StringLike, their IgnoreCase forms, ArnLike, ArnNotLike, Null; ForAnyValue/ForAllValues)
against concrete scenarios: who can undo a containment, who can set the tag, who can claim
the guard's exemption. The evaluator implements the documented semantics of those operators
only; it is not a full IAM engine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from template_helpers import (
    ACCOUNT,
    POLICIES,
    REGION,
    as_list,
    function_role,
    parameter_defaults,
    release_function,
    render_sub,
    role_statements,
    sample_value,
    service_authorization_data,
)

# The guard, split so that each file fits an SCP (5,120 characters as stored). Attach all of
# them: a request is denied when any one of them denies it.
GUARDS = sorted(POLICIES.glob("guard-scp-*.json"))
TAG_SETTER = POLICIES / "tag-setter-policy.json"

RESPONDER = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine/ec2-quarantine-QuarantineFunctionRole-AB12CD"
BREAK_GLASS = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine-breakglass"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/Admin"
ISOLATION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine-isolation/ec2-quarantine-IsolationRole-XY9"
ISOLATION_PROFILE = f"arn:aws:iam::{ACCOUNT}:instance-profile/ec2-quarantine-isolation/ec2-quarantine-IsolationInstanceProfile-XY9"
OTHER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/web-server"

INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
ENI = f"arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/eni-0123456789abcdef0"
VOLUME = f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0123456789abcdef0"
SG = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-0123456789abcdef0"
SNAPSHOT = f"arn:aws:ec2:{REGION}::snapshot/snap-0123456789abcdef0"

QUARANTINED = {"Quarantine": "true", "ec2-quarantine:status": "contained"}
# The marks the function writes on every interface and volume of a contained instance (and
# the instance): the guard keys on them, not on the configurable trigger tag.
MARKED = {"ec2-quarantine:status": "contained", "ec2-quarantine:incident": "x"}
PARTIAL = {"ec2-quarantine:status": "partial", "ec2-quarantine:incident": "x"}
RELEASED = {"ec2-quarantine:status": "released", "ec2-quarantine:incident": "x"}
FORENSICS = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine-forensics"
EXEMPT_PATH_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine/attacker-made"
MEMBER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine/ec2-quarantine-member"
FORWARD_RULE = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/ec2-quarantine-forward-tag"
OTHER_RULE = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/nightly-backup"
CONTAIN_FN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ec2-quarantine-contain"
RELEASE_FN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ec2-quarantine-release"
OTHER_FN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:web-backend"
ISOLATION_SG = {"ec2-quarantine:role": "isolation"}
INTERIM_SG = {"ec2-quarantine:role": "interim"}
RELEASER = f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine/ec2-quarantine-ReleaseFunctionRole-EF34GH"
EVIDENCE = {"ec2-quarantine:instance-id": "i-0123456789abcdef0", "ec2-quarantine:incident": "x"}


# ---------------------------------------------------------------------------------------
# evaluator
# ---------------------------------------------------------------------------------------
def _glob(pattern: str, value: str, case: bool = True) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, 0 if case else re.IGNORECASE) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    """ArnLike: each of the six colon-separated components matched on its own."""
    p, a = pattern.split(":", 5), arn.split(":", 5)
    return len(p) == 6 and len(a) == 6 and all(_glob(x, y) for x, y in zip(p, a))


@dataclass
class Request:
    principal: str
    action: str
    resource: str
    resource_tags: dict = field(default_factory=dict)
    request_tags: dict | None = None  # tags in the request (CreateTags/DeleteTags)
    delete_all_tags: bool = False  # DeleteTags without a tag list
    keys: dict = field(default_factory=dict)  # any other context key: name -> value or list

    def context(self) -> dict[str, list[str]]:
        ctx: dict[str, list[str]] = {"aws:PrincipalArn": [self.principal]}
        for k, v in self.keys.items():
            ctx[k] = v if isinstance(v, list) else [v]
        for k, v in self.resource_tags.items():
            ctx[f"aws:ResourceTag/{k}"] = [v]
        # An empty tag list puts no aws:TagKeys in the context (as IAM treats a missing key).
        if self.request_tags and not self.delete_all_tags:
            ctx["aws:TagKeys"] = list(self.request_tags)
            for k, v in self.request_tags.items():
                if v is not None:
                    ctx[f"aws:RequestTag/{k}"] = [v]
        return ctx


_OPS = {
    "StringEquals": lambda p, v: p == v,
    "StringLike": lambda p, v: _glob(p, v),
    "ArnEquals": lambda p, v: p == v,
    "ArnLike": _arn_like,
}


def _condition_holds(op: str, key: str, expected, ctx: dict[str, list[str]]) -> bool:
    expected = expected if isinstance(expected, list) else [expected]
    values = ctx.get(key)
    if op == "Null":
        (want,) = expected
        return (values is None) == (want == "true")
    qualifier = None
    if ":" in op:
        qualifier, op = op.split(":", 1)
    ignore_case = op.endswith("IgnoreCase")
    op = op.removesuffix("IgnoreCase")
    negate = op.endswith("NotEquals") or op.endswith("NotLike")
    base = op.replace("Not", "", 1) if negate else op
    match = _OPS[base]
    if ignore_case:
        match = lambda p, v, m=match: m(p.lower(), v.lower())  # noqa: E731
    if qualifier == "ForAnyValue":
        return bool(values) and any(match(p, v) for v in values for p in expected)
    if qualifier == "ForAllValues":
        return not values or all(any(match(p, v) for p in expected) for v in values)
    assert qualifier is None, qualifier
    if values is None:
        return negate  # a missing key: positive operators false, negated ones true
    hit = any(match(p, v) for v in values for p in expected)
    return not hit if negate else hit


def statement_applies(s: dict, req: Request) -> bool:
    actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
    if not any(_glob(a, req.action, case=False) for a in actions):
        return False
    resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
    if not any(r == "*" or _arn_like(r, req.resource) for r in resources):
        return False
    ctx = req.context()
    for op, kv in s.get("Condition", {}).items():
        for key, expected in kv.items():
            if not _condition_holds(op, key, expected, ctx):
                return False
    return True


def denied_by(policy: dict, req: Request) -> list[str]:
    return [s.get("Sid", "?") for s in policy["Statement"] if s["Effect"] == "Deny" and statement_applies(s, req)]


def allowed_by(policy: dict, req: Request) -> bool:
    if denied_by(policy, req):
        return False
    return any(statement_applies(s, req) for s in policy["Statement"] if s["Effect"] == "Allow")


def test_evaluator_operators():
    """The evaluator itself, on cases whose IAM answer is documented."""
    ctx = {"aws:TagKeys": ["a", "b"], "aws:PrincipalArn": [ADMIN]}
    assert _condition_holds("ForAnyValue:StringEquals", "aws:TagKeys", ["b"], ctx)
    assert not _condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["b"], ctx)
    assert _condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["b"], {})  # vacuous truth
    assert not _condition_holds("ForAnyValue:StringEquals", "aws:TagKeys", ["b"], {})
    assert _condition_holds("ForAllValues:StringLike", "aws:TagKeys", ["*"], ctx)
    assert not _condition_holds("ForAllValues:StringLike", "aws:TagKeys", ["a*"], ctx)
    assert _condition_holds("Null", "aws:TagKeys", "true", {})
    assert _condition_holds("Null", "aws:TagKeys", "false", ctx)
    assert _condition_holds("ArnNotLike", "aws:PrincipalArn", ["arn:aws:iam::*:role/x/*"], ctx)
    assert not _condition_holds("ArnNotLike", "aws:PrincipalArn", ["arn:aws:iam::*:role/*"], ctx)
    assert not _arn_like("arn:aws:iam::*:role/ec2-quarantine/*", f"arn:aws:iam::{ACCOUNT}:role/ec2-quarantine-isolation/x")
    assert not _condition_holds("StringEquals", "aws:ResourceTag/Q", "true", {})
    # A negated operator on a missing key holds: why the guard pairs StringNotEquals with Null.
    assert _condition_holds("StringNotEquals", "aws:ResourceTag/Q", "released", {})
    assert not _condition_holds("StringNotEquals", "aws:ResourceTag/Q", "released", {"aws:ResourceTag/Q": ["released"]})
    assert _condition_holds("StringEqualsIgnoreCase", "ec2:Attribute", "userData", {"ec2:Attribute": ["USERDATA"]})
    assert not _condition_holds("StringNotEqualsIgnoreCase", "ec2:Attribute", "userData", {"ec2:Attribute": ["userdata"]})


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------
def _combined(paths) -> dict:
    """The guard as AWS applies it: every attached SCP's statements together."""
    statements = []
    for path in paths:
        statements.extend(json.loads(path.read_text())["Statement"])
    return {"Version": "2012-10-17", "Statement": statements}


@pytest.fixture(scope="module")
def guard() -> dict:
    return _combined(GUARDS)


@pytest.fixture(scope="module")
def tag_setter() -> dict:
    return json.loads(TAG_SETTER.read_text())


POLICY_FILES = [*GUARDS, TAG_SETTER]


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_is_a_valid_document(path):
    doc = json.loads(path.read_text())
    assert doc["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in doc["Statement"]]
    assert len(sids) == len(set(sids)), "Sids must be unique"
    for s in doc["Statement"]:
        assert re.fullmatch(r"[A-Za-z0-9]+", s["Sid"]), s["Sid"]
        assert s["Effect"] in ("Allow", "Deny")
        assert "Principal" not in s, "identity policy / SCP: no Principal"
        for a in s["Action"] if isinstance(s["Action"], list) else [s["Action"]]:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", a), a


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_actions_exist(path):
    """Every action is in the Service Authorization Reference (as cfn-lint ships it)."""
    sar = service_authorization_data()
    doc = json.loads(path.read_text())
    for s in doc["Statement"]:
        for a in s["Action"] if isinstance(s["Action"], list) else [s["Action"]]:
            service, name = a.split(":")
            assert name.lower() in sar[service]["Actions"], f"unknown action {a}"


def _resource_types(service: str, arn: str, sar: dict) -> set[str]:
    """The Service Authorization Reference resource types whose ARN format `arn` fits."""
    found = set()
    for rtype, spec in sar[service].get("Resources", {}).items():
        for fmt in spec["ARNFormats"]:
            parts = re.split(r"(\$\{[A-Za-z]+\}|\.\*)", fmt.replace("${Partition}", "aws"))
            rx = "".join(
                "[^:]*" if x.startswith("${") else ".*" if x == ".*" else re.escape(x) for x in parts
            )
            if re.fullmatch(rx, arn.replace("*", "x")):
                found.add(rtype)
    return found


@pytest.mark.parametrize("path", GUARDS, ids=lambda p: p.name)
def test_guard_keys_on_condition_keys_the_resource_types_have(path):
    """Every resource-scoped key (aws:ResourceTag/..., ec2:...) a guard statement uses is a
    condition key of each resource type it names, per the Service Authorization Reference as
    cfn-lint ships it; global keys (aws:PrincipalArn, aws:TagKeys) need no resource."""
    sar = service_authorization_data()
    for s in json.loads(path.read_text())["Statement"]:
        keys = {k for kv in s["Condition"].values() for k in kv}
        scoped = {k.split("/")[0] + "/${TagKey}" if "ResourceTag/" in k else k for k in keys} - {
            "aws:PrincipalArn",
            "aws:TagKeys",
        }
        arns = [a for a in as_list(s["Resource"]) if a != "*"]  # "*": the tag keys narrow it
        for action in as_list(s["Action"]):
            service, name = action.split(":")
            # EBS direct APIs authorize on the EC2 snapshot ARN, a resource type of their own.
            typed = {t for arn in arns for t in _resource_types(service, arn, sar)}
            if not arns:
                continue
            fits = typed & set(sar[service]["Actions"][name.lower()]["Resources"])
            assert fits, (s["Sid"], action, arns)
            for rtype in fits:
                # A resource type with no condition keys of its own has none listed.
                missing = scoped - set(sar[service]["Resources"][rtype].get("ConditionKeys", []))
                assert not missing, (s["Sid"], action, rtype, missing)


@pytest.mark.parametrize("path", GUARDS, ids=lambda p: p.name)
def test_each_guard_file_fits_an_scp_as_shipped(path):
    # An SCP holds at most 5,120 characters, and the CLI and SDKs store the document with its
    # whitespace: the file as it is on disk is what counts.
    assert len(path.read_text()) <= 5120, f"{path.name}: {len(path.read_text())} characters"


def test_the_guard_is_split_into_few_enough_files_to_attach():
    # Five SCPs per target, one of which is usually FullAWSAccess.
    assert 1 < len(GUARDS) <= 4, [p.name for p in GUARDS]
    assert not (POLICIES / "guard-scp.json").exists(), "the unsplit guard is gone"


def test_every_guard_statement_denies_and_exempts_by_principal(guard):
    for s in guard["Statement"]:
        assert s["Effect"] == "Deny"
        principals = s["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
        assert "arn:aws:iam::*:role/ec2-quarantine-breakglass" in principals, s["Sid"]


def test_guard_names_the_containment_actions(guard):
    actions = {a for s in guard["Statement"] for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    required = {
        "ec2:ModifyNetworkInterfaceAttribute", "ec2:ModifyInstanceAttribute",
        "ec2:AssociateIamInstanceProfile", "ec2:ReplaceIamInstanceProfileAssociation",
        "ec2:DisassociateIamInstanceProfile", "ec2:DeleteTags", "ec2:CreateTags",
        "ec2:TerminateInstances", "ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress", "ec2:ModifySecurityGroupRules",
        "ec2:DeleteSnapshot",
    }
    assert required <= actions, f"missing {sorted(required - actions)}"


def test_guard_exempts_the_templates_role_path(template):
    """The exemption pattern fits the function roles the template creates, and only them."""
    name, _ = function_role(template)
    arn = sample_value(template, {"Fn::GetAtt": [name, "Arn"]})
    assert _arn_like("arn:aws:iam::*:role/ec2-quarantine/*", arn), arn
    release_role, _ = function_role(template, release_function(template)[1])
    arn = sample_value(template, {"Fn::GetAtt": [release_role, "Arn"]})
    assert _arn_like("arn:aws:iam::*:role/ec2-quarantine/*", arn), arn
    iso = next(k for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::InstanceProfile")
    iso_role = template["Resources"][iso]["Properties"]["Roles"][0]["Ref"]
    iso_role_arn = sample_value(template, {"Fn::GetAtt": [iso_role, "Arn"]})
    iso_profile_arn = sample_value(template, {"Fn::GetAtt": [iso, "Arn"]})
    assert not _arn_like("arn:aws:iam::*:role/ec2-quarantine/*", iso_role_arn)
    assert _arn_like("arn:aws:iam::*:role/ec2-quarantine-isolation/*", iso_role_arn)
    assert _arn_like("arn:aws:iam::*:instance-profile/ec2-quarantine-isolation/*", iso_profile_arn)


REVOCABLE = {"ec2-quarantine:revocable": "true"}

# (what, request, denied?)
GUARD_SCENARIOS = [
    # undoing a containment
    ("admin changes a quarantined instance's attributes", Request(ADMIN, "ec2:ModifyInstanceAttribute", INSTANCE, QUARANTINED), True),
    ("admin restores the instance profile", Request(ADMIN, "ec2:ReplaceIamInstanceProfileAssociation", INSTANCE, QUARANTINED), True),
    ("admin associates a profile", Request(ADMIN, "ec2:AssociateIamInstanceProfile", INSTANCE, QUARANTINED), True),
    ("admin removes the isolation profile", Request(ADMIN, "ec2:DisassociateIamInstanceProfile", INSTANCE, QUARANTINED), True),
    ("admin attaches a new ENI", Request(ADMIN, "ec2:AttachNetworkInterface", INSTANCE, QUARANTINED), True),
    ("admin terminates the instance", Request(ADMIN, "ec2:TerminateInstances", INSTANCE, QUARANTINED), True),
    ("admin changes a marked ENI's groups", Request(ADMIN, "ec2:ModifyNetworkInterfaceAttribute", ENI, MARKED), True),
    ("admin changes a partially contained ENI's groups", Request(ADMIN, "ec2:ModifyNetworkInterfaceAttribute", ENI, PARTIAL), True),
    ("admin detaches a marked ENI", Request(ADMIN, "ec2:DetachNetworkInterface", ENI, MARKED), True),
    ("admin deletes a marked ENI", Request(ADMIN, "ec2:DeleteNetworkInterface", ENI, MARKED), True),
    ("admin changes a released ENI's groups", Request(ADMIN, "ec2:ModifyNetworkInterfaceAttribute", ENI, RELEASED), False),
    ("admin changes an unmarked ENI", Request(ADMIN, "ec2:ModifyNetworkInterfaceAttribute", ENI, {"Quarantine": "true"}), False),
    # an instance contained by GuardDuty or a direct invocation carries no trigger tag
    ("admin restores the profile of a GuardDuty-contained instance", Request(ADMIN, "ec2:ReplaceIamInstanceProfileAssociation", INSTANCE, MARKED), True),
    ("admin detaches a marked volume", Request(ADMIN, "ec2:DetachVolume", VOLUME, MARKED), True),
    ("admin deletes a marked volume", Request(ADMIN, "ec2:DeleteVolume", VOLUME, MARKED), True),
    ("admin sets DeleteOnTermination back on a marked volume", Request(ADMIN, "ec2:ModifyInstanceAttribute", VOLUME, MARKED), True),
    ("admin attaches a volume to a marked instance", Request(ADMIN, "ec2:AttachVolume", INSTANCE, MARKED), True),
    ("admin detaches a released volume", Request(ADMIN, "ec2:DetachVolume", VOLUME, RELEASED), False),
    ("admin terminates a released instance", Request(ADMIN, "ec2:TerminateInstances", INSTANCE, RELEASED), False),
    ("admin strips every tag of a marked ENI", Request(ADMIN, "ec2:DeleteTags", ENI, MARKED, {}, delete_all_tags=True), True),
    ("admin strips every tag of a released volume", Request(ADMIN, "ec2:DeleteTags", VOLUME, RELEASED, {}, delete_all_tags=True), False),
    ("admin marks an ENI released", Request(ADMIN, "ec2:CreateTags", ENI, MARKED, {"ec2-quarantine:status": "released"}), True),
    ("admin launches an instance pre-marked", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"ec2-quarantine:status": "released"}), True),
    ("responder marks an ENI", Request(RESPONDER, "ec2:CreateTags", ENI, {}, {"ec2-quarantine:status": "contained"}), False),
    ("release function marks a volume released", Request(RELEASER, "ec2:CreateTags", VOLUME, MARKED, {"ec2-quarantine:status": "released"}), False),
    ("admin changes a healthy instance", Request(ADMIN, "ec2:ModifyInstanceAttribute", INSTANCE, {"Quarantine": "false"}), False),
    ("admin changes an untagged instance", Request(ADMIN, "ec2:ModifyInstanceAttribute", INSTANCE, {}), False),
    ("responder contains", Request(RESPONDER, "ec2:ModifyInstanceAttribute", INSTANCE, QUARANTINED), False),
    ("responder swaps the profile", Request(RESPONDER, "ec2:ReplaceIamInstanceProfileAssociation", INSTANCE, QUARANTINED), False),
    ("break-glass releases", Request(BREAK_GLASS, "ec2:ModifyInstanceAttribute", INSTANCE, QUARANTINED), False),
    # the trigger tag
    ("analyst sets Quarantine=true on a healthy instance", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"Quarantine": "true"}), False),
    ("admin sets Quarantine=false", Request(ADMIN, "ec2:CreateTags", INSTANCE, QUARANTINED, {"Quarantine": "false"}), True),
    ("admin deletes Quarantine", Request(ADMIN, "ec2:DeleteTags", INSTANCE, QUARANTINED, {"Quarantine": None}), True),
    ("admin deletes every tag of a quarantined instance", Request(ADMIN, "ec2:DeleteTags", INSTANCE, QUARANTINED, {}, delete_all_tags=True), True),
    ("admin adds a note tag to a quarantined instance", Request(ADMIN, "ec2:CreateTags", INSTANCE, QUARANTINED, {"Note": "ir-42"}), False),
    ("admin deletes Quarantine=false from a healthy instance", Request(ADMIN, "ec2:DeleteTags", INSTANCE, {"Quarantine": "false"}, {"Quarantine": None}), False),
    # the responder's status tags
    ("admin fakes ec2-quarantine:status", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"ec2-quarantine:status": "contained"}), True),
    ("admin deletes ec2-quarantine:changes", Request(ADMIN, "ec2:DeleteTags", INSTANCE, QUARANTINED, {"ec2-quarantine:changes": None}), True),
    ("responder writes its status", Request(RESPONDER, "ec2:CreateTags", INSTANCE, QUARANTINED, {"ec2-quarantine:status": "contained"}), False),
    # the isolation group
    ("admin opens the isolation group", Request(ADMIN, "ec2:AuthorizeSecurityGroupIngress", SG, ISOLATION_SG), True),
    ("admin opens its egress", Request(ADMIN, "ec2:AuthorizeSecurityGroupEgress", SG, ISOLATION_SG), True),
    ("admin edits its rules", Request(ADMIN, "ec2:ModifySecurityGroupRules", SG, ISOLATION_SG), True),
    ("admin deletes it", Request(ADMIN, "ec2:DeleteSecurityGroup", SG, ISOLATION_SG), True),
    ("admin untags it", Request(ADMIN, "ec2:DeleteTags", SG, ISOLATION_SG, {"ec2-quarantine:role": None}), True),
    ("admin strips all its tags", Request(ADMIN, "ec2:DeleteTags", SG, ISOLATION_SG, {}, delete_all_tags=True), True),
    ("admin changes another group", Request(ADMIN, "ec2:AuthorizeSecurityGroupIngress", SG, {"Name": "web"}), False),
    ("responder revokes the isolation group's egress", Request(RESPONDER, "ec2:RevokeSecurityGroupEgress", SG, ISOLATION_SG), False),
    # the interim group: allow-all, so putting it on an interface opens it to everything
    ("admin puts the interim group on an interface", Request(ADMIN, "ec2:ModifyNetworkInterfaceAttribute", SG, INTERIM_SG), True),
    ("admin puts it on an instance", Request(ADMIN, "ec2:ModifyInstanceAttribute", SG, INTERIM_SG), True),
    ("admin launches an instance with it", Request(ADMIN, "ec2:RunInstances", SG, INTERIM_SG), True),
    ("admin creates an interface with it", Request(ADMIN, "ec2:CreateNetworkInterface", SG, INTERIM_SG), True),
    ("admin edits the interim group's rules", Request(ADMIN, "ec2:RevokeSecurityGroupEgress", SG, INTERIM_SG), True),
    ("admin deletes the interim group", Request(ADMIN, "ec2:DeleteSecurityGroup", SG, INTERIM_SG), True),
    ("admin strips all the interim group's tags", Request(ADMIN, "ec2:DeleteTags", SG, INTERIM_SG, {}, delete_all_tags=True), True),
    ("admin puts another group on an interface", Request(ADMIN, "ec2:ModifyNetworkInterfaceAttribute", SG, {"Name": "web"}), False),
    ("responder moves an interface through the interim group", Request(RESPONDER, "ec2:ModifyNetworkInterfaceAttribute", SG, INTERIM_SG), False),
    ("responder converges the interim group's rules", Request(RESPONDER, "ec2:AuthorizeSecurityGroupEgress", SG, INTERIM_SG), False),
    # release
    ("the release function restores a quarantined interface", Request(RELEASER, "ec2:ModifyNetworkInterfaceAttribute", ENI, MARKED), False),
    ("the release function restores the profile", Request(RELEASER, "ec2:ReplaceIamInstanceProfileAssociation", INSTANCE, QUARANTINED), False),
    ("the release function tags the instance released", Request(RELEASER, "ec2:CreateTags", INSTANCE, QUARANTINED, {"ec2-quarantine:status": "released"}), False),
    # evidence
    ("admin deletes an evidence snapshot", Request(ADMIN, "ec2:DeleteSnapshot", SNAPSHOT, EVIDENCE), True),
    ("admin strips an evidence snapshot's tags", Request(ADMIN, "ec2:DeleteTags", SNAPSHOT, EVIDENCE, {}, delete_all_tags=True), True),
    ("admin deletes an ordinary snapshot", Request(ADMIN, "ec2:DeleteSnapshot", SNAPSHOT, {"Name": "nightly"}), False),
    ("admin shares an evidence snapshot", Request(ADMIN, "ec2:ModifySnapshotAttribute", SNAPSHOT, EVIDENCE), True),
    ("admin reads evidence blocks directly", Request(ADMIN, "ebs:GetSnapshotBlock", SNAPSHOT, EVIDENCE), True),
    ("admin lists evidence blocks", Request(ADMIN, "ebs:ListSnapshotBlocks", SNAPSHOT, EVIDENCE), True),
    ("admin diffs evidence blocks", Request(ADMIN, "ebs:ListChangedBlocks", SNAPSHOT, EVIDENCE), True),
    ("the forensic role reads evidence blocks", Request(FORENSICS, "ebs:GetSnapshotBlock", SNAPSHOT, EVIDENCE), False),
    ("the forensic role shares evidence to the forensic account", Request(FORENSICS, "ec2:ModifySnapshotAttribute", SNAPSHOT, EVIDENCE), False),
    ("the forensic role deletes evidence", Request(FORENSICS, "ec2:DeleteSnapshot", SNAPSHOT, EVIDENCE), True),
    ("admin shares an ordinary snapshot", Request(ADMIN, "ec2:ModifySnapshotAttribute", SNAPSHOT, {"Name": "nightly"}), False),
    # the isolation role
    ("admin detaches the deny-all policy", Request(ADMIN, "iam:DeleteRolePolicy", ISOLATION_ROLE), True),
    ("admin attaches a policy to the isolation role", Request(ADMIN, "iam:AttachRolePolicy", ISOLATION_ROLE), True),
    ("admin swaps the isolation profile's role", Request(ADMIN, "iam:RemoveRoleFromInstanceProfile", ISOLATION_PROFILE), True),
    ("admin edits another role", Request(ADMIN, "iam:AttachRolePolicy", OTHER_ROLE), False),
    # RevocableRoles=tagged: opting a role in widens what the function may write on it, and
    # taking the tag off blocks the deny and its release
    ("admin opts a role into revocation", Request(ADMIN, "iam:TagRole", OTHER_ROLE, {}, REVOCABLE), True),
    ("admin takes a role's opt-in off", Request(ADMIN, "iam:UntagRole", OTHER_ROLE, REVOCABLE, {"ec2-quarantine:revocable": None}), True),
    ("admin creates a role already opted in", Request(ADMIN, "iam:CreateRole", OTHER_ROLE, {}, REVOCABLE), True),
    ("break-glass opts a role in", Request(BREAK_GLASS, "iam:TagRole", OTHER_ROLE, {}, REVOCABLE), False),
    ("admin tags a role otherwise", Request(ADMIN, "iam:TagRole", OTHER_ROLE, {}, {"team": "web"}), False),
    # the exemption itself: whoever holds a role on the exempt path or name is exempt
    ("admin creates a role on the exempt path", Request(ADMIN, "iam:CreateRole", EXEMPT_PATH_ROLE), True),
    ("admin creates the break-glass role", Request(ADMIN, "iam:CreateRole", BREAK_GLASS), True),
    ("admin creates the forensic role", Request(ADMIN, "iam:CreateRole", FORENSICS), True),
    ("admin re-trusts the member role", Request(ADMIN, "iam:UpdateAssumeRolePolicy", MEMBER_ROLE), True),
    ("admin attaches a policy to the member role", Request(ADMIN, "iam:AttachRolePolicy", MEMBER_ROLE), True),
    ("admin puts a policy on the function role", Request(ADMIN, "iam:PutRolePolicy", RESPONDER), True),
    ("admin deletes the function role's policy", Request(ADMIN, "iam:DeleteRolePolicy", RESPONDER), True),
    ("admin tags the release role", Request(ADMIN, "iam:TagRole", RELEASER, {}, {"team": "x"}), True),
    ("admin deletes the member role", Request(ADMIN, "iam:DeleteRole", MEMBER_ROLE), True),
    ("admin passes the function role to a new function", Request(ADMIN, "iam:PassRole", RESPONDER), True),
    ("the function role itself re-trusts a member role", Request(RESPONDER, "iam:UpdateAssumeRolePolicy", MEMBER_ROLE), True),
    ("the deploying principal updates the member role", Request(BREAK_GLASS, "iam:UpdateAssumeRolePolicy", MEMBER_ROLE), False),
    ("the deploying principal passes the function role to Lambda", Request(BREAK_GLASS, "iam:PassRole", RESPONDER), False),
    ("admin creates an ordinary role", Request(ADMIN, "iam:CreateRole", OTHER_ROLE), False),
    ("admin passes an ordinary role", Request(ADMIN, "iam:PassRole", OTHER_ROLE), False),
    # the forwarding rules and the functions
    ("admin disables a forwarding rule", Request(ADMIN, "events:DisableRule", FORWARD_RULE), True),
    ("admin retargets a forwarding rule", Request(ADMIN, "events:PutTargets", FORWARD_RULE), True),
    ("admin removes its targets", Request(ADMIN, "events:RemoveTargets", FORWARD_RULE), True),
    ("admin rewrites its pattern", Request(ADMIN, "events:PutRule", FORWARD_RULE), True),
    ("admin deletes it", Request(ADMIN, "events:DeleteRule", FORWARD_RULE), True),
    ("the function role disables a rule", Request(RESPONDER, "events:DisableRule", FORWARD_RULE), True),
    ("the deploying principal updates a rule", Request(BREAK_GLASS, "events:PutRule", FORWARD_RULE), False),
    ("admin disables another rule", Request(ADMIN, "events:DisableRule", OTHER_RULE), False),
    ("admin replaces the function's code", Request(ADMIN, "lambda:UpdateFunctionCode", CONTAIN_FN), True),
    ("admin sets DRY_RUN in its configuration", Request(ADMIN, "lambda:UpdateFunctionConfiguration", CONTAIN_FN), True),
    ("admin throttles it to zero", Request(ADMIN, "lambda:PutFunctionConcurrency", CONTAIN_FN), True),
    ("admin deletes the release function", Request(ADMIN, "lambda:DeleteFunction", RELEASE_FN), True),
    ("admin lets another account invoke the release function", Request(ADMIN, "lambda:AddPermission", RELEASE_FN), True),
    ("admin drops the rule's invoke permission", Request(ADMIN, "lambda:RemovePermission", CONTAIN_FN), True),
    ("admin turns off the failure destination", Request(ADMIN, "lambda:PutFunctionEventInvokeConfig", CONTAIN_FN), True),
    ("admin removes code signing", Request(ADMIN, "lambda:DeleteFunctionCodeSigningConfig", CONTAIN_FN), True),
    ("the deploying principal updates the function", Request(BREAK_GLASS, "lambda:UpdateFunctionCode", CONTAIN_FN), False),
    ("admin updates another function", Request(ADMIN, "lambda:UpdateFunctionCode", OTHER_FN), False),
]


@pytest.mark.parametrize("what,req,denied", GUARD_SCENARIOS, ids=[s[0] for s in GUARD_SCENARIOS])
def test_guard_scenarios(guard, what, req, denied):
    by = denied_by(guard, req)
    assert bool(by) is denied, f"{what}: {'denied by ' + ', '.join(by) if by else 'not denied'}"


TAG_SETTER_SCENARIOS = [
    ("set Quarantine=true on an instance", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"Quarantine": "true"}), True),
    ("set Quarantine=false", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"Quarantine": "false"}), False),
    ("set Quarantine=True", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"Quarantine": "True"}), False),
    ("set Quarantine=true and Owner", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"Quarantine": "true", "Owner": "x"}), False),
    ("set another key", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"Owner": "x"}), False),
    ("set ec2-quarantine:status", Request(ADMIN, "ec2:CreateTags", INSTANCE, {}, {"ec2-quarantine:status": "released"}), False),
    ("set Quarantine=true on a volume", Request(ADMIN, "ec2:CreateTags", VOLUME, {}, {"Quarantine": "true"}), False),
    ("delete Quarantine", Request(ADMIN, "ec2:DeleteTags", INSTANCE, QUARANTINED, {"Quarantine": None}), False),
    ("stop the instance", Request(ADMIN, "ec2:StopInstances", INSTANCE, {}), False),
]


@pytest.mark.parametrize("what,req,allowed", TAG_SETTER_SCENARIOS, ids=[s[0] for s in TAG_SETTER_SCENARIOS])
def test_tag_setter_scenarios(tag_setter, what, req, allowed):
    assert allowed_by(tag_setter, req) is allowed, what


_NO_VALUE = object()


def _condition(template: dict, expression, parameters: dict[str, str]) -> bool:
    """A template condition (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition) for these values."""
    if isinstance(expression, dict) and list(expression) == ["Condition"]:
        return _condition(template, template["Conditions"][expression["Condition"]], parameters)
    (function, args), = expression.items()
    if function == "Fn::Equals":
        a, b = (parameters[v["Ref"]] if isinstance(v, dict) else v for v in args)
        return a == b
    if function == "Fn::Not":
        return not _condition(template, args[0], parameters)
    if function == "Fn::And":
        return all(_condition(template, a, parameters) for a in args)
    if function == "Fn::Or":
        return any(_condition(template, a, parameters) for a in args)
    raise AssertionError(f"condition function {function} not evaluated here")


def _resolve(template: dict, value, parameters: dict[str, str]):
    """`value` with every Fn::If decided and AWS::NoValue dropped."""
    if isinstance(value, dict):
        if list(value) == ["Fn::If"]:
            name, yes, no = value["Fn::If"]
            holds = _condition(template, template["Conditions"][name], parameters)
            return _resolve(template, yes if holds else no, parameters)
        if value == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        resolved = {k: _resolve(template, v, parameters) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
    if isinstance(value, list):
        return [v for v in (_resolve(template, v, parameters) for v in value) if v is not _NO_VALUE]
    return value


def _role_policy(template, role: dict, **parameters: str) -> dict:
    """A role's inline policy as deployed with `parameters` (the rest at their defaults), every
    resource rendered to a sample ARN."""
    values = {**parameter_defaults(template), **parameters}
    statements = []
    for p in role["Properties"]["Policies"]:
        for st in p["PolicyDocument"]["Statement"]:
            st = _resolve(template, st, values)
            res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            statements.append({**st, "Resource": [sample_value(template, r) for r in res]})
    return {"Statement": statements}


def _function_role_policy(template, **parameters: str) -> dict:
    return _role_policy(template, function_role(template)[1], **parameters)


def test_the_revocation_writes_any_role_policy_but_the_functions_and_the_isolation_roles(template):
    policy = _function_role_policy(template)
    name, _ = function_role(template)
    own_role = sample_value(template, {"Fn::GetAtt": [name, "Arn"]})
    iso = next(k for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::InstanceProfile")
    iso_role = sample_value(template, {"Fn::GetAtt": [template["Resources"][iso]["Properties"]["Roles"][0]["Ref"], "Arn"]})
    app_profile = f"arn:aws:iam::{ACCOUNT}:instance-profile/web-server"
    for action in ("iam:ListRolePolicies", "iam:GetRolePolicy", "iam:PutRolePolicy"):
        assert allowed_by(policy, Request(RESPONDER, action, OTHER_ROLE)), action
        assert allowed_by(policy, Request(RESPONDER, action, f"arn:aws:iam::{ACCOUNT}:role/team/app")), action
        for protected in (own_role, iso_role):
            assert denied_by(policy, Request(RESPONDER, action, protected)), f"{action} on {protected}"
    assert allowed_by(policy, Request(RESPONDER, "iam:GetInstanceProfile", app_profile))
    for never in ("iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy", "iam:PutUserPolicy"):
        assert not allowed_by(policy, Request(RESPONDER, never, OTHER_ROLE)), never


@pytest.mark.parametrize("who", ["containment", "release"])
def test_revocable_roles_tagged_keeps_the_role_policy_writes_to_roles_that_opted_in(template, who):
    if who == "containment":
        role = function_role(template)[1]
        writes = ["iam:PutRolePolicy"]
        reads = ["iam:ListRolePolicies", "iam:GetRolePolicy"]
    else:
        role = function_role(template, release_function(template)[1])[1]
        writes = ["iam:PutRolePolicy", "iam:DeleteRolePolicy"]
        reads = ["iam:GetRolePolicy"]
    assert template["Parameters"]["RevocableRoles"]["Default"] == "any"
    by_default = _role_policy(template, role)
    tagged = _role_policy(template, role, RevocableRoles="tagged")
    for action in writes:
        assert allowed_by(by_default, Request(RESPONDER, action, OTHER_ROLE)), action
        assert not allowed_by(tagged, Request(RESPONDER, action, OTHER_ROLE)), action
        assert not allowed_by(
            tagged, Request(RESPONDER, action, OTHER_ROLE, {"ec2-quarantine:revocable": "false"})
        ), action
        assert allowed_by(tagged, Request(RESPONDER, action, OTHER_ROLE, REVOCABLE)), action
    for action in reads:
        assert allowed_by(tagged, Request(RESPONDER, action, OTHER_ROLE)), action
    # Every write of a role policy, in either role, carries the opt-in condition.
    for st in role_statements(role):
        if st["Effect"] == "Allow" and set(as_list(st["Action"])) & {"iam:PutRolePolicy", "iam:DeleteRolePolicy"}:
            assert st["Condition"]["Fn::If"][0] == "RevocableRolesTagged", st["Sid"]
            assert set(as_list(st["Action"])) <= {"iam:PutRolePolicy", "iam:DeleteRolePolicy"}, st["Sid"]


def test_tag_setter_grants_only_create_tags(tag_setter):
    for s in tag_setter["Statement"]:
        assert s["Effect"] == "Allow"
        assert s["Action"] in ("ec2:CreateTags", ["ec2:CreateTags"])
        for r in s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]:
            assert r.endswith(":instance/*"), r


# ---------------------------------------------------------------------------------------
# the function roles, through the evaluator (issue 13)
# ---------------------------------------------------------------------------------------
CONTAINED_MARKS = {"ec2-quarantine:status": "contained", "ec2-quarantine:incident": "i-0123456789abcdef0/2026-01-01"}


@pytest.mark.parametrize("resource", [INSTANCE, ENI, VOLUME], ids=["instance", "interface", "volume"])
def test_the_containment_role_marks_instances_interfaces_and_volumes_with_its_own_keys_only(template, resource):
    policy = _function_role_policy(template)
    for status in ("contained", "partial", "not-contained"):
        marks = {**CONTAINED_MARKS, "ec2-quarantine:status": status}
        assert allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", resource, {}, marks)), status
    assert not allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", resource, {}, {"Quarantine": "true"}))
    assert not allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", resource, {}, {**CONTAINED_MARKS, "Owner": "x"}))
    # No keys at all: ForAllValues alone would hold; the Null guard refuses it.
    assert not allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", resource, {}, {}))
    assert not allowed_by(policy, Request(RESPONDER, "ec2:DeleteTags", resource, {}, {"ec2-quarantine:status": None}))


def test_the_containment_role_tags_security_groups_only_as_it_creates_them(template):
    policy = _function_role_policy(template)
    role_tag = {"ec2-quarantine:role": "isolation"}
    on_create = {"ec2:CreateAction": "CreateSecurityGroup"}
    assert allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", SG, {}, role_tag, keys=on_create))
    assert not allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", SG, {}, role_tag)), "an existing group"
    assert not allowed_by(
        policy, Request(RESPONDER, "ec2:CreateTags", SG, {}, role_tag, keys={"ec2:CreateAction": "RunInstances"})
    )
    assert not allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", SG, {}, {"Name": "x"}, keys=on_create))
    # Snapshots stay tagged at creation only, as before.
    assert not allowed_by(policy, Request(RESPONDER, "ec2:CreateTags", SNAPSHOT, {}, {"ec2-quarantine:instance-id": "i-1"}))


PROTECTION_ATTRIBUTES = ["disableApiTermination", "disableApiStop", "instanceInitiatedShutdownBehavior", "blockDeviceMapping"]


@pytest.mark.parametrize("resource", [INSTANCE, VOLUME], ids=["instance", "volume"])
def test_the_containment_role_modifies_only_the_protection_attributes_where_aws_names_the_attribute(template, resource):
    policy = _function_role_policy(template)
    for attribute in PROTECTION_ATTRIBUTES:
        assert allowed_by(policy, Request(RESPONDER, "ec2:ModifyInstanceAttribute", resource, keys={"ec2:Attribute": attribute}))
    for attribute in ("userData", "instanceType", "groupSet", "sourceDestCheck", "kernel", "enaSupport"):
        assert not allowed_by(
            policy, Request(RESPONDER, "ec2:ModifyInstanceAttribute", resource, keys={"ec2:Attribute": attribute})
        ), attribute
    # Without the key (where AWS does not supply it) the protection step must still work.
    assert allowed_by(policy, Request(RESPONDER, "ec2:ModifyInstanceAttribute", resource))
    # And never on a security group: Groups is not an attribute the function sets.
    assert not allowed_by(policy, Request(RESPONDER, "ec2:ModifyInstanceAttribute", SG))


@pytest.mark.parametrize("resource", [INSTANCE, ENI, VOLUME], ids=["instance", "interface", "volume"])
def test_the_release_role_moves_the_marks_to_released(template, resource):
    policy = _role_policy(template, function_role(template, release_function(template)[1])[1])
    assert allowed_by(policy, Request(RELEASER, "ec2:CreateTags", resource, CONTAINED_MARKS, {"ec2-quarantine:status": "released"}))
    # The containment's own tags come off the instance only; an interface's or volume's marks
    # are moved to released, never deleted.
    deleting = Request(RELEASER, "ec2:DeleteTags", resource, CONTAINED_MARKS, {"ec2-quarantine:changes": None})
    assert allowed_by(policy, deleting) == (resource == INSTANCE)
    assert not allowed_by(policy, Request(RELEASER, "ec2:DeleteTags", resource, CONTAINED_MARKS, {}, delete_all_tags=True))
    assert not allowed_by(policy, Request(RELEASER, "ec2:DeleteTags", resource, QUARANTINED, {"Quarantine": None}))


def _assumption_policy(template, name: str, **parameters: str) -> dict:
    values = {**parameter_defaults(template), "MemberRoleName": "ec2-quarantine-member", **parameters}
    doc = template["Resources"][name]["Properties"]["PolicyDocument"]
    statements = []
    for st in doc["Statement"]:
        st = _resolve(template, st, values)
        resource = render_sub(st["Resource"], {"AWS::Partition": "aws", **values})
        st = json.loads(json.dumps(st).replace('{"Ref": "OrganizationId"}', json.dumps(values["OrganizationId"])))
        statements.append({**st, "Resource": resource})
    return {"Statement": statements}


@pytest.mark.parametrize(
    "policy_name,role", [("MemberRoleAssumption", "ec2-quarantine-member"), ("MemberReleaseRoleAssumption", "ec2-quarantine-member-release")]
)
def test_member_roles_are_assumed_only_inside_the_organization_when_one_is_given(template, policy_name, role):
    member_role = f"arn:aws:iam::210987654321:role/ec2-quarantine/{role}"
    ours, theirs = {"aws:ResourceOrgID": "o-abcdefghij"}, {"aws:ResourceOrgID": "o-zzzzzzzzzz"}
    scoped = _assumption_policy(template, policy_name, OrganizationId="o-abcdefghij")
    assert allowed_by(scoped, Request(RESPONDER, "sts:AssumeRole", member_role, keys=ours))
    assert not allowed_by(scoped, Request(RESPONDER, "sts:AssumeRole", member_role, keys=theirs))
    assert not allowed_by(scoped, Request(RESPONDER, "sts:AssumeRole", member_role)), "an account outside any organization"
    # Without OrganizationId (member accounts listed by id), the path and name alone.
    unscoped = _assumption_policy(template, policy_name)
    assert allowed_by(unscoped, Request(RESPONDER, "sts:AssumeRole", member_role))


# ---------------------------------------------------------------------------------------
# the incident table and the notification topic (issue 13)
# ---------------------------------------------------------------------------------------
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/ec2-quarantine-IncidentTable-ABC123"
RECORD_WRITES = [
    "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete",
]


def _table_policy(template) -> dict:
    doc = template["Resources"]["IncidentTable"]["Properties"]["ResourcePolicy"]["PolicyDocument"]
    variables = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT}
    return json.loads(
        json.dumps(doc).replace(
            json.dumps({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/ec2-quarantine/*"}),
            json.dumps(render_sub({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/ec2-quarantine/*"}, variables)),
        )
    )


def test_only_the_two_function_roles_write_incident_records(template):
    policy = _table_policy(template)
    assert all(s["Principal"] == "*" for s in policy["Statement"])
    release_role = sample_value(template, {"Fn::GetAtt": [function_role(template, release_function(template)[1])[0], "Arn"]})
    contain_role = sample_value(template, {"Fn::GetAtt": [function_role(template)[0], "Arn"]})
    for action in RECORD_WRITES:
        for writer in (ADMIN, OTHER_ROLE, BREAK_GLASS, f"arn:aws:iam::{ACCOUNT}:user/alice",
                       "arn:aws:iam::210987654321:role/ec2-quarantine/ec2-quarantine-member"):
            assert denied_by(policy, Request(writer, action, TABLE)), (writer, action)
        for function_writer in (contain_role, release_role):
            assert not denied_by(policy, Request(function_writer, action, TABLE)), (function_writer, action)
    # Reads and the control plane stay with IAM: responders read records, and CloudFormation
    # (as whoever deploys) can still update the table and this very policy.
    for action in ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:PutResourcePolicy",
                   "dynamodb:UpdateTable", "dynamodb:DescribeTable"):
        assert not denied_by(policy, Request(ADMIN, action, TABLE)), action
    sar = service_authorization_data()
    for action in RECORD_WRITES:
        assert "table" in sar["dynamodb"]["Actions"][action.split(":")[1].lower()]["Resources"], action


def test_the_notification_topic_is_encrypted_with_a_key_the_alarms_can_use(template):
    topic = template["Resources"]["NotificationTopic"]["Properties"]
    key_expr = {"Fn::If": ["CreateNotificationKey", {"Fn::GetAtt": ["NotificationKey", "Arn"]}, {"Ref": "NotificationKmsKeyArn"}]}
    assert topic["KmsMasterKeyId"] == key_expr
    assert template["Parameters"]["NotificationKmsKeyArn"]["Default"] == ""
    # The AWS managed key cannot admit CloudWatch alarms: refused at deploy time.
    pattern = template["Parameters"]["NotificationKmsKeyArn"]["AllowedPattern"]
    assert not re.fullmatch(pattern, "alias/aws/sns")
    assert re.fullmatch(pattern, "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    key = template["Resources"]["NotificationKey"]
    assert key["Condition"] == "CreateNotificationKey" and key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    alarms = {"Statement": [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]}
    alarms = json.loads(json.dumps(alarms).replace('{"Ref": "AWS::AccountId"}', json.dumps(ACCOUNT)))
    here, elsewhere = {"aws:SourceAccount": ACCOUNT}, {"aws:SourceAccount": "210987654321"}
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert allowed_by(alarms, Request("cloudwatch.amazonaws.com", action, "*", keys=here)), action
        assert not allowed_by(alarms, Request("cloudwatch.amazonaws.com", action, "*", keys=elsewhere)), action
    assert not allowed_by(alarms, Request("cloudwatch.amazonaws.com", "kms:Encrypt", "*", keys=here))
    # The destination publishes as the function's role: the key, through SNS only.
    use = template["Resources"]["NotificationKeyUse"]["Properties"]
    assert use["Roles"] == [{"Ref": function_role(template)[0]}]
    (st,) = use["PolicyDocument"]["Statement"]
    assert st["Resource"] == key_expr
    st = {**st, "Resource": "arn:aws:kms:us-east-1:123456789012:key/k", "Condition": {"StringEquals": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}}}
    policy = {"Statement": [st]}
    via_sns = {"kms:ViaService": "sns.us-east-1.amazonaws.com"}
    assert allowed_by(policy, Request(RESPONDER, "kms:GenerateDataKey", st["Resource"], keys=via_sns))
    assert not allowed_by(policy, Request(RESPONDER, "kms:Decrypt", st["Resource"])), "not outside SNS"
    assert render_sub(use["PolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]["kms:ViaService"], {"AWS::Region": REGION}) == "sns.us-east-1.amazonaws.com"


def test_log_groups_take_an_optional_key(template):
    assert template["Parameters"]["LogsKmsKeyArn"]["Default"] == ""
    for name in ("QuarantineFunctionLogGroup", "ReleaseFunctionLogGroup"):
        props = template["Resources"][name]["Properties"]
        assert props["KmsKeyId"] == {"Fn::If": ["LogsKmsKeyOn", {"Ref": "LogsKmsKeyArn"}, {"Ref": "AWS::NoValue"}]}
        assert _resolve(template, props, {**parameter_defaults(template)}).get("KmsKeyId") is None
        key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        assert _resolve(template, props, {**parameter_defaults(template), "LogsKmsKeyArn": key})["KmsKeyId"] == {"Ref": "LogsKmsKeyArn"}
