"""Structural checks of template.yaml: least privilege, the configuration contract, the
trigger and both failure paths. Plus cfn-lint, the SAM translator and `sam validate --lint`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tomllib

import pytest

from template_helpers import (
    ACCOUNT,
    REGION,
    REPO,
    STACK,
    TEMPLATE,
    as_list,
    function,
    function_role,
    getatt,
    only_resource_of_type,
    ref,
    release_function,
    resources_of_type,
    role_statements,
    sample_value,
    service_authorization_data,
    venv_tool,
)

# The configuration contract (shared/DESIGN.md "Configuration" plus the deployment brief):
# environment variable -> (template parameter, default). None: not a parameter.
ENV_CONTRACT = {
    "QUARANTINE_TAG_KEY": ("QuarantineTagKey", "Quarantine"),
    "QUARANTINE_TAG_VALUE": ("QuarantineTagValue", "true"),
    "ISOLATION_SECURITY_GROUP_NAME": ("IsolationSecurityGroupName", "ec2-quarantine-isolation"),
    "SNAPSHOT_VOLUMES": ("SnapshotVolumes", "true"),
    "REVOKE_INSTANCE_CREDENTIALS": ("RevokeInstanceCredentials", "true"),
    "CUT_TRACKED_CONNECTIONS": ("CutTrackedConnections", "true"),
    "DRY_RUN": ("DryRun", "false"),
    "FORENSIC_INGRESS_CIDRS": ("ForensicIngressCidrs", ""),
    "FORENSIC_INGRESS_PORTS": ("ForensicIngressPorts", "22"),
    "MAX_CONCURRENT_INSTANCES": ("MaxConcurrentInstances", "10"),
    "GUARDDUTY_MIN_SEVERITY": ("GuardDutyMinSeverity", "7"),
    "SNAPSHOT_KMS_KEY_ID": ("SnapshotKmsKeyArn", ""),
    "DELETE_UNENCRYPTED_SNAPSHOTS": ("DeleteUnencryptedSnapshots", "false"),
    "ISOLATION_INSTANCE_PROFILE": (None, None),
    "INCIDENT_TABLE": (None, None),
    "FUNCTION_MODE": (None, None),
    "MEMBER_ROLE_NAME": (None, None),
    "SWEEP_ACCOUNTS": (None, None),
}

# Every AWS call the function makes (the brief's list). The role must allow exactly these.
FUNCTION_ACTIONS = {
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "ec2:CreateSecurityGroup",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeIamInstanceProfileAssociations",
    "ec2:ReplaceIamInstanceProfileAssociation",
    "ec2:AssociateIamInstanceProfile",
    "ec2:ModifyInstanceAttribute",
    "ec2:DescribeInstanceAttribute",
    "ec2:CreateSnapshots",
    "ec2:DescribeSnapshots",
    "ec2:DescribeTags",
    "ec2:CreateTags",
    "iam:PassRole",
    "iam:GetInstanceProfile",
    "iam:ListRolePolicies",
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DetachInstances",
    "autoscaling:DescribeLifecycleHooks",
    "autoscaling:RecordLifecycleActionHeartbeat",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "sqs:SendMessage",
    "sns:Publish",
    "dynamodb:PutItem",
    "dynamodb:GetItem",
    "dynamodb:UpdateItem",
}

# Calls that must never be in the function's role even though they sound related.
FORBIDDEN_ACTIONS = {
    "ec2:DeleteTags",
    "ec2:DisassociateIamInstanceProfile",
    "ec2:TerminateInstances",
    "ec2:DeleteSnapshot",
    "ec2:DeleteSecurityGroup",
    "dynamodb:DeleteItem",
    "dynamodb:DeleteTable",
    "iam:DeleteRolePolicy",
}

# The role-policy calls of the credential revocation, denied on the function's own role and on
# the isolation role.
ROLE_POLICY_ACTIONS = {"iam:ListRolePolicies", "iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy"}


def arn_matches_resource_type(sar: dict, service: str, rtype: str, arn: str) -> bool:
    info = sar[service]["Resources"].get(rtype.lower())
    assert info, f"{service} has no resource type {rtype}"
    for fmt in info["ARNFormats"]:
        rx = fmt.replace("${Partition}", "aws").replace("${Region}", REGION).replace("${Account}", ACCOUNT)
        if re.fullmatch(rx, arn):
            return True
    return False


# ---------------------------------------------------------------------------------------
# the function
# ---------------------------------------------------------------------------------------
def test_function_build_and_runtime(template):
    _, fn = function(template)
    p = fn["Properties"]
    assert p["Runtime"] == "provided.al2023"
    assert p["Architectures"] == ["arm64"]
    assert p["Handler"] == "bootstrap"
    assert p["CodeUri"] == "."
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    binary = fn["Metadata"]["BuildProperties"]["Binary"]
    assert binary == "ec2-quarantine"
    cargo = REPO / "Cargo.toml"
    if cargo.exists():
        manifest = tomllib.loads(cargo.read_text())
        bins = [b["name"] for b in manifest.get("bin", [])] or [manifest["package"]["name"]]
        assert binary in bins, f"Cargo.toml builds {bins}, the template deploys {binary}"
    assert 1 <= p["Timeout"] <= 900
    assert 128 <= p["MemorySize"] <= 10240
    assert "Events" not in p, "the only trigger is the explicit rule (nothing else reaches the function)"


def test_logging_json_with_retained_log_group(template):
    _, fn = function(template)
    lc = fn["Properties"]["LoggingConfig"]
    assert lc["LogFormat"] == "JSON"
    group = ref(lc["LogGroup"])
    assert group and template["Resources"][group]["Type"] == "AWS::Logs::LogGroup"
    retention = template["Resources"][group]["Properties"]["RetentionInDays"]
    param = ref(retention)
    assert param, "retention comes from a parameter"
    assert template["Parameters"][param]["Default"] == 365


def test_every_contract_variable_is_set_from_its_parameter(template):
    _, fn = function(template)
    variables = fn["Properties"]["Environment"]["Variables"]
    missing = set(ENV_CONTRACT) - set(variables)
    assert not missing, f"environment lacks {sorted(missing)}"
    params = template["Parameters"]
    for var, (param, default) in ENV_CONTRACT.items():
        if param is None:
            continue
        assert ref(variables[var]) == param, f"{var} should be !Ref {param}, is {variables[var]!r}"
        assert str(params[param]["Default"]) == default, f"{param} default {params[param]['Default']!r} != {default!r}"
    assert params["SnapshotVolumes"]["AllowedValues"] == ["true", "false"]
    assert params["RevokeInstanceCredentials"]["AllowedValues"] == ["true", "false", "role-wide"]
    assert params["CutTrackedConnections"]["AllowedValues"] == ["true", "false"]
    assert params["DryRun"]["AllowedValues"] == ["true", "false"]
    # Environment variables must be strings: no parameter of type List<...>/CommaDelimitedList.
    for var, value in variables.items():
        p = ref(value)
        if p in params:
            assert params[p]["Type"] in ("String", "Number"), f"{var} from a {params[p]['Type']}"


def test_isolation_profile_variable_is_the_stacks_profile(template):
    _, fn = function(template)
    ga = getatt(fn["Properties"]["Environment"]["Variables"]["ISOLATION_INSTANCE_PROFILE"])
    assert ga and ga[1] == "Arn"
    assert template["Resources"][ga[0]]["Type"] == "AWS::IAM::InstanceProfile"


@pytest.mark.parametrize(
    "param,good,bad",
    [
        ("QuarantineTagKey", ["Quarantine", "sec:quarantine", "a b/c=d+e-f@g.h_i"], ['Quar"antine', "x\\y", "", "k" * 129, "{}"]),
        ("QuarantineTagValue", ["true", "yes-now"], ['"', "", "a\\b", "}"]),
        ("ForensicIngressCidrs", ["", "10.0.0.0/8", "10.0.0.0/8,2001:db8::/32"], ["10.0.0.0/8, 1.2.3.4/32", '"']),
        ("ForensicIngressPorts", ["22", "22,3389"], ["", "22 ", "ssh", "22,"]),
        ("IsolationSecurityGroupName", ["ec2-quarantine-isolation"], ["sg-123", ""]),
        # The member release role is <MemberRoleName>-release: 56 + 8 characters, IAM's 64 at most.
        (
            "MemberRoleName",
            ["", "ec2-quarantine-member", "a" * 56, "team+ir=1,x.y@z_w"],
            ["a" * 57, "ec2-quarantine/member", "member role", "member*"],
        ),
        (
            "SnapshotKmsKeyArn",
            ["", "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
             "arn:aws:kms:eu-west-1:210987654321:key/mrk-1234abcd12ab34cd56ef1234567890ab"],
            ["alias/evidence", "1234abcd-12ab-34cd-56ef-1234567890ab",
             "arn:aws:kms:us-east-1:123456789012:alias/evidence", "arn:aws:kms:us-east-1:123456789012:key/*"],
        ),
    ],
)
def test_parameter_patterns(template, param, good, bad):
    """Tag key/value go into a JSON pattern: nothing that would need JSON escaping."""
    rx = re.compile(template["Parameters"][param]["AllowedPattern"])
    for v in good:
        assert rx.fullmatch(v), f"{param} rejects {v!r}"
    for v in bad:
        assert not rx.fullmatch(v), f"{param} accepts {v!r}"


# ---------------------------------------------------------------------------------------
# least privilege
# ---------------------------------------------------------------------------------------
def test_function_role_lists_every_action_explicitly(template):
    _, role = function_role(template)
    assert not role["Properties"].get("ManagedPolicyArns"), "no managed policies on the function role"
    stmts = role_statements(role)
    actions = set()
    for s in stmts:
        assert s["Effect"] in ("Allow", "Deny")
        assert "NotAction" not in s and "NotResource" not in s and "NotPrincipal" not in s
        for a in as_list(s["Action"]):
            assert "*" not in a and "?" not in a, f"wildcard action {a!r}"
            if s["Effect"] == "Allow":
                actions.add(a)
    # A Deny only narrows: the role-policy calls, and the attributes ModifyInstanceAttribute
    # may set (test_policies.py runs both through the evaluator).
    for s in stmts:
        if s["Effect"] == "Deny" and s["Sid"] == "OnlyTheProtectionAttributes":
            assert as_list(s["Action"]) == ["ec2:ModifyInstanceAttribute"], s
        elif s["Effect"] == "Deny":
            assert set(as_list(s["Action"])) == ROLE_POLICY_ACTIONS, s
            assert "Condition" not in s, "the exception holds unconditionally"
    assert actions == FUNCTION_ACTIONS, (
        f"missing {sorted(FUNCTION_ACTIONS - actions)}, unexpected {sorted(actions - FUNCTION_ACTIONS)}"
    )
    assert not actions & FORBIDDEN_ACTIONS


def test_resource_level_permissions_wherever_the_action_supports_them(template):
    sar = service_authorization_data()
    _, role = function_role(template)
    for s in role_statements(role):
        for action in as_list(s["Action"]):
            service, name = action.split(":")
            info = sar[service]["Actions"].get(name.lower())
            assert info is not None, f"{action} is not a known IAM action"
            rtypes = info.get("Resources", [])
            for res in as_list(s["Resource"]):
                arn = sample_value(template, res)
                if arn == "*":
                    assert not rtypes, f"{action} supports resource-level permissions ({rtypes}) but is granted on *"
                    continue
                assert any(arn_matches_resource_type(sar, service, t, arn) for t in rtypes), (
                    f"{action} on {arn}: not an ARN of a resource type the action supports ({rtypes})"
                )


def test_pass_role_only_for_the_isolation_role_to_ec2(template):
    _, role = function_role(template)
    passes = [s for s in role_statements(role) if "iam:PassRole" in as_list(s["Action"])]
    assert len(passes) == 1
    s = passes[0]
    assert as_list(s["Action"]) == ["iam:PassRole"]
    res = as_list(s["Resource"])
    assert len(res) == 1
    ga = getatt(res[0])
    assert ga and ga[1] == "Arn", f"PassRole must name the isolation role, not {res[0]!r}"
    iso_profile = getatt(function(template)[1]["Properties"]["Environment"]["Variables"]["ISOLATION_INSTANCE_PROFILE"])[0]
    profile_roles = template["Resources"][iso_profile]["Properties"]["Roles"]
    assert [ref(r) for r in profile_roles] == [ga[0]], "PassRole's role is the isolation profile's role"
    assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    allowed = {a for st in role_statements(role) if st["Effect"] == "Allow" for a in as_list(st["Action"])}
    assert {a for a in allowed if a.startswith("iam:")} == {
        "iam:PassRole", "iam:GetInstanceProfile", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:PutRolePolicy",
    }


def test_role_policies_of_the_function_and_isolation_roles_are_denied(template):
    """The revocation may write the inline policies of any role but these two."""
    fn_role_name, role = function_role(template)
    denies = [s for s in role_statements(role) if s["Effect"] == "Deny" and "iam:PutRolePolicy" in as_list(s["Action"])]
    assert len(denies) == 1
    resources = [sample_value(template, r) for r in as_list(denies[0]["Resource"])]
    iso_profile = getatt(function(template)[1]["Properties"]["Environment"]["Variables"]["ISOLATION_INSTANCE_PROFILE"])[0]
    (iso_role,) = [ref(r) for r in template["Resources"][iso_profile]["Properties"]["Roles"]]
    for name in (fn_role_name, iso_role):
        arn = sample_value(template, {"Fn::GetAtt": [name, "Arn"]})
        assert any(re.fullmatch(r.replace("*", ".*"), arn) for r in resources), f"{arn} not denied by {resources}"
    assert not any(re.fullmatch(r.replace("*", ".*"), f"arn:aws:iam::{ACCOUNT}:role/web-server") for r in resources)
    # Reads of instance profiles only; writes of role policies only on roles, never a user's or group's.
    for s in role_statements(role):
        if s["Effect"] != "Allow":
            continue
        for a in as_list(s["Action"]):
            if a in ROLE_POLICY_ACTIONS:
                assert [sample_value(template, r) for r in as_list(s["Resource"])] == [f"arn:aws:iam::{ACCOUNT}:role/*"]
            if a == "iam:GetInstanceProfile":
                assert [sample_value(template, r) for r in as_list(s["Resource"])] == [f"arn:aws:iam::{ACCOUNT}:instance-profile/*"]


def test_profile_swap_only_to_the_isolation_profile(template):
    _, role = function_role(template)
    _, fn = function(template)
    profile = fn["Properties"]["Environment"]["Variables"]["ISOLATION_INSTANCE_PROFILE"]
    swaps = [
        s for s in role_statements(role)
        if {"ec2:ReplaceIamInstanceProfileAssociation", "ec2:AssociateIamInstanceProfile"} & set(as_list(s["Action"]))
    ]
    assert swaps
    for s in swaps:
        assert s["Condition"]["ArnEquals"]["ec2:NewInstanceProfile"] == profile


def test_function_never_writes_the_trigger_tag(template):
    """CreateTags only for the function's own keys; snapshots only tagged as they are created."""
    _, role = function_role(template)
    tagging = [s for s in role_statements(role) if "ec2:CreateTags" in as_list(s["Action"])]
    assert tagging
    for s in tagging:
        c = s["Condition"]
        assert c["ForAllValues:StringLike"]["aws:TagKeys"] == ["ec2-quarantine:*"], s
        assert c["Null"]["aws:TagKeys"] == "false", "ForAllValues alone is true when no key is sent"
        for res in as_list(s["Resource"]):
            if ":snapshot/" in sample_value(template, res):
                assert c["StringEquals"]["ec2:CreateAction"] == "CreateSnapshots"


def test_security_group_changes_only_on_isolation_groups(template):
    """Only the function's own groups: isolation, and the interim group interfaces pass through."""
    _, role = function_role(template)
    for s in role_statements(role):
        acts = set(as_list(s["Action"]))
        if not acts & {"ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress",
                       "ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
                       "ec2:ModifyNetworkInterfaceAttribute"}:
            continue
        # Egress is only ever opened on the interim group, never on the isolation group.
        wanted = ["interim"] if "ec2:AuthorizeSecurityGroupEgress" in acts else ["interim", "isolation"]
        for res in as_list(s["Resource"]):
            if ":security-group/" in sample_value(template, res):
                assert set(s["Condition"]) == {"StringEquals"}, s
                (key, values), = s["Condition"]["StringEquals"].items()
                assert key == "aws:ResourceTag/ec2-quarantine:role", s
                assert sorted(as_list(values)) == wanted, s
    # and never ModifyInstanceAttribute on security groups (the Groups attribute)
    for s in role_statements(role):
        if "ec2:ModifyInstanceAttribute" in as_list(s["Action"]):
            assert not any(":security-group/" in sample_value(template, r) for r in as_list(s["Resource"]))


def test_isolation_role_is_deny_all_and_ec2_only(template):
    profile_name, profile = only_resource_of_type(template, "AWS::IAM::InstanceProfile")
    (role_ref,) = profile["Properties"]["Roles"]
    role = template["Resources"][ref(role_ref)]
    p = role["Properties"]
    trust = as_list(p["AssumeRolePolicyDocument"]["Statement"])
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    assert not p.get("ManagedPolicyArns")
    stmts = role_statements(role)
    assert stmts, "the isolation role needs its deny-all policy"
    assert all(s["Effect"] == "Deny" for s in stmts)
    assert any(as_list(s["Action"]) == ["*"] and as_list(s["Resource"]) == ["*"] and "Condition" not in s for s in stmts)


def test_no_named_iam_resources(template):
    """CAPABILITY_IAM suffices (samconfig.toml) only while no IAM resource has a fixed name."""
    for name, res in template["Resources"].items():
        if res["Type"].startswith("AWS::IAM::"):
            for key in ("RoleName", "InstanceProfileName", "ManagedPolicyName", "UserName", "GroupName"):
                assert key not in res.get("Properties", {}), f"{name} sets {key}"


# ---------------------------------------------------------------------------------------
# trigger and failure handling
# ---------------------------------------------------------------------------------------
# The rules that invoke the function: the tag rule always, the GuardDuty rule only when its
# parameter turns it on (None: unconditional).
RULES = {
    "QuarantineTagRule": None,
    "GuardDutyFindingRule": "GuardDutyTriggerOn",
    "SnapshotSetCompletedRule": "EncryptedEvidenceOn",
    "SnapshotCopyCompletedRule": "EncryptedEvidenceOn",
}


def test_the_rules_are_the_tag_rule_and_the_optional_guardduty_rule(template):
    rules = resources_of_type(template, "AWS::Events::Rule")
    assert set(rules) == set(RULES)
    for name, condition in RULES.items():
        assert rules[name].get("Condition") == condition, name
    params = template["Parameters"]
    assert params["GuardDutyTrigger"]["AllowedValues"] == ["true", "false"]
    assert params["GuardDutyTrigger"]["Default"] == "false", "the GuardDuty trigger is off by default"
    assert template["Conditions"]["GuardDutyTriggerOn"] == {"Fn::Equals": [{"Ref": "GuardDutyTrigger"}, "true"]}
    sev = params["GuardDutyMinSeverity"]
    assert (sev["Type"], sev["MinValue"], sev["MaxValue"]) == ("Number", 1, 8.9)


@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_rule_targets_the_function_with_retry_and_dead_letter_queue(template, rule_name):
    fn_name, _ = function(template)
    rule = template["Resources"][rule_name]
    (target,) = rule["Properties"]["Targets"]
    assert getatt(target["Arn"]) == (fn_name, "Arn")
    rp = target["RetryPolicy"]
    assert 0 <= rp["MaximumRetryAttempts"] <= 185
    assert 60 <= rp["MaximumEventAgeInSeconds"] <= 86400
    dlq = getatt(target["DeadLetterConfig"]["Arn"])
    assert dlq and dlq[1] == "Arn" and template["Resources"][dlq[0]]["Type"] == "AWS::SQS::Queue"
    assert template["Resources"][dlq[0]]["Properties"].get("SqsManagedSseEnabled") is True
    # The DLQ's policy lets EventBridge send for the stack's rules only.
    policies = [
        r for r in resources_of_type(template, "AWS::SQS::QueuePolicy").values()
        if {ref(q) for q in r["Properties"]["Queues"]} == {dlq[0]}
    ]
    assert len(policies) == 1
    allows = [s for s in policies[0]["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allows) == 1
    s = allows[0]
    assert s["Principal"] == {"Service": "events.amazonaws.com"}
    assert as_list(s["Action"]) == ["sqs:SendMessage"]
    assert getatt(s["Resource"]) == (dlq[0], "Arn")
    sources = as_list(s["Condition"]["ArnEquals"]["aws:SourceArn"])
    # An optional rule's ARN is there only when the rule exists.
    expected = {
        name: (
            (name, "Arn")
            if condition is None
            else {"Fn::If": [condition, {"Fn::GetAtt": [name, "Arn"]}, {"Ref": "AWS::NoValue"}]}
        )
        for name, condition in RULES.items()
    }
    got = [getatt(v) or v for v in sources]
    assert len(got) == len(RULES), got
    assert expected[rule_name] in got, f"the DLQ policy does not name {rule_name}: {got}"


def test_lambda_permission_only_for_the_rules(template):
    fn_name, _ = function(template)
    perms = resources_of_type(template, "AWS::Lambda::Permission")
    assert len(perms) == len(RULES)
    for_rule = {}
    for name, perm in perms.items():
        p = perm["Properties"]
        assert p["Action"] == "lambda:InvokeFunction"
        assert p["Principal"] == "events.amazonaws.com"
        assert getatt(p["FunctionName"]) == (fn_name, "Arn") or ref(p["FunctionName"]) == fn_name
        rule_name, attr = getatt(p["SourceArn"])
        assert attr == "Arn" and rule_name in RULES, f"{name} allows {p['SourceArn']}"
        # Same condition as its rule: a permission without its rule cannot be created.
        assert perm.get("Condition") == RULES[rule_name], name
        for_rule[rule_name] = name
    assert set(for_rule) == set(RULES)


def test_async_invocation_retries_then_failure_queue(template):
    _, fn = function(template)
    eic = fn["Properties"]["EventInvokeConfig"]
    assert eic["MaximumRetryAttempts"] == 2
    assert 60 <= eic["MaximumEventAgeInSeconds"] <= 21600
    on_failure = eic["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    q = getatt(on_failure["Destination"])
    assert q and q[1] == "Arn"
    queue = template["Resources"][q[0]]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"].get("SqsManagedSseEnabled") is True
    # The destination is written with the function's role.
    _, role = function_role(template)
    sends = [s for s in role_statements(role) if "sqs:SendMessage" in as_list(s["Action"])]
    assert [getatt(r) for s in sends for r in as_list(s["Resource"])] == [(q[0], "Arn")]


def test_failure_queue_and_dlq_have_alarms(template):
    _, fn = function(template)
    failure_q = getatt(fn["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"])[0]
    rule = template["Resources"]["QuarantineTagRule"]
    dlq = getatt(rule["Properties"]["Targets"][0]["DeadLetterConfig"]["Arn"])[0]
    alarmed = set()
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        p = alarm["Properties"]
        # Messages sent per period, not messages visible: a queue still holding the first
        # failure would keep a "visible" alarm in ALARM and silence every later one (issue 13).
        assert p.get("MetricName") != "ApproximateNumberOfMessagesVisible"
        if p.get("Namespace") != "AWS/SQS" or p.get("MetricName") != "NumberOfMessagesSent":
            continue
        assert p["Statistic"] == "Sum" and p["Period"] == 60 and p["EvaluationPeriods"] == 1
        assert p["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and p["Threshold"] == 1
        assert p["TreatMissingData"] == "notBreaching", "a quiet minute returns the alarm to OK, ready for the next"
        (dim,) = p["Dimensions"]
        assert dim["Name"] == "QueueName"
        alarmed.add(getatt(dim["Value"])[0] if getatt(dim["Value"]) and getatt(dim["Value"])[1] == "QueueName" else None)
    assert {failure_q, dlq} <= alarmed, f"alarms on {alarmed}, want {failure_q} and {dlq}"


def test_outputs(template):
    outputs = template["Outputs"]
    for name in ("FunctionArn", "RuleName", "IsolationInstanceProfileArn", "FailureQueueUrl",
                 "FailureQueueArn", "DeadLetterQueueArn"):
        assert name in outputs, f"missing output {name}"


# ---------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------
def test_sam_translator_produces_the_invoke_config():
    """What CloudFormation will get: SAM's own translator, offline."""
    from template_helpers import load_template

    tpl = load_template()
    # The translator asks boto3 for the region (pseudo parameters); give it one offline.
    import boto3

    from samtranslator.translator.translator import Translator
    from samtranslator.parser.parser import Parser

    session = boto3.session.Session(region_name=REGION)
    translator = Translator({}, Parser(), boto_session=session)  # no managed policies used
    packaged = copy.deepcopy(tpl)
    fn_name, _ = function(packaged)
    # What `sam package`/`sam deploy` hands CloudFormation: the code uploaded to S3.
    packaged["Resources"][fn_name]["Properties"]["CodeUri"] = "s3://bucket/ec2-quarantine/code.zip"
    release_name, _ = release_function(packaged)
    packaged["Resources"][release_name]["Properties"]["CodeUri"] = "s3://bucket/ec2-quarantine/code.zip"
    out = translator.translate(packaged, parameter_values={"AWS::AccountId": ACCOUNT,
                                                                   "AWS::StackName": STACK})
    res = out["Resources"]
    fns = {k: v for k, v in res.items() if v["Type"] == "AWS::Lambda::Function"}
    assert set(fns) == {fn_name, release_name}
    for fn in fns.values():
        assert fn["Properties"]["Architectures"] == ["arm64"]
        assert fn["Properties"]["LoggingConfig"]["LogFormat"] == "JSON"
    eics = {
        v["Properties"]["FunctionName"]["Ref"]: v["Properties"]
        for v in res.values() if v["Type"] == "AWS::Lambda::EventInvokeConfig"
    }
    assert set(eics) == {fn_name, release_name}
    p = eics[fn_name]
    assert p["MaximumRetryAttempts"] == 2
    assert "Arn" in json.dumps(p["DestinationConfig"]["OnFailure"])
    assert eics[release_name]["MaximumRetryAttempts"] == 0
    # SAM did not create a role of its own next to ours.
    roles = [k for k, v in res.items() if v["Type"] == "AWS::IAM::Role"]
    assert sorted(roles) == sorted(k for k, v in tpl["Resources"].items() if v["Type"] == "AWS::IAM::Role")


def _run(cmd, **kw):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_cfn_lint_passes():
    tool = venv_tool("cfn-lint")
    assert tool, "cfn-lint not installed (requirements/test.txt)"
    r = _run([tool, str(TEMPLATE)])
    assert r.returncode == 0, f"cfn-lint exit {r.returncode}\n{r.stdout}\n{r.stderr}"


def test_sam_validate_lint_passes():
    tool = venv_tool("sam")
    if not tool:
        pytest.skip("aws-sam-cli not installed")
    r = _run([tool, "validate", "--lint", "--region", REGION, "--template-file", str(TEMPLATE)])
    assert r.returncode == 0, f"sam validate exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "is a valid SAM Template" in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------
# notifications
# ---------------------------------------------------------------------------------------
def test_successful_reports_and_failure_alarms_reach_one_topic(template):
    _, fn = function(template)
    destinations = fn["Properties"]["EventInvokeConfig"]["DestinationConfig"]
    on_success = destinations["OnSuccess"]
    assert on_success["Type"] == "SNS"
    topic = ref(on_success["Destination"])
    assert template["Resources"][topic]["Type"] == "AWS::SNS::Topic"
    for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        actions = alarm["Properties"]["AlarmActions"]
        # !If [HasAlarmAction, [topic, extra], [topic]]: the topic is notified either way.
        branches = actions["Fn::If"][1:]
        for branch in branches:
            assert topic in [ref(a) for a in branch], f"{name} does not notify {topic}"


def test_the_function_may_publish_only_to_its_own_topic(template):
    _, role = function_role(template)
    publishing = [s for s in role_statements(role) if "sns:Publish" in as_list(s["Action"])]
    assert len(publishing) == 1
    assert ref(publishing[0]["Resource"]) == "NotificationTopic"


def test_the_email_subscription_exists_only_when_an_address_is_given(template):
    subscriptions = resources_of_type(template, "AWS::SNS::Subscription")
    assert subscriptions
    for sub in subscriptions.values():
        assert sub["Condition"] == "HasNotificationEmail"
        assert sub["Properties"]["Protocol"] == "email"
    assert template["Parameters"]["NotificationEmail"]["Default"] == ""


# ---------------------------------------------------------------------------------------
# encrypted evidence
# ---------------------------------------------------------------------------------------
SAMPLE_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENCRYPTED_EVIDENCE_ACTIONS = {
    "ec2:CopySnapshot",
    "ec2:CreateTags",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:Decrypt",
    "kms:CreateGrant",
}


def _attached_policy(template, name, condition):
    fn_role, _ = function_role(template)
    policy = template["Resources"][name]
    assert policy["Type"] == "AWS::IAM::Policy"
    assert policy.get("Condition") == condition, f"{name} exists only with {condition}"
    assert [ref(r) for r in policy["Properties"]["Roles"]] == [fn_role]
    return as_list(policy["Properties"]["PolicyDocument"]["Statement"])


def test_encrypted_evidence_is_off_by_default_and_deletion_needs_a_key(template):
    params = template["Parameters"]
    assert params["SnapshotKmsKeyArn"]["Default"] == ""
    assert params["DeleteUnencryptedSnapshots"]["Default"] == "false"
    assert params["DeleteUnencryptedSnapshots"]["AllowedValues"] == ["true", "false"]
    c = template["Conditions"]
    assert c["EncryptedEvidenceOn"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SnapshotKmsKeyArn"}, ""]}]}
    assert c["DeleteUnencryptedSnapshotsOn"] == {
        "Fn::And": [{"Condition": "EncryptedEvidenceOn"}, {"Fn::Equals": [{"Ref": "DeleteUnencryptedSnapshots"}, "true"]}]
    }
    rule = template["Rules"]["DeletionNeedsAKey"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "DeleteUnencryptedSnapshots"}, "true"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SnapshotKmsKeyArn"}, ""]}]}


def test_encrypted_evidence_permissions_copy_and_tag_and_use_only_the_key_through_ec2(template):
    stmts = _attached_policy(template, "EncryptedEvidencePolicy", "EncryptedEvidenceOn")
    actions = {a for s in stmts for a in as_list(s["Action"])}
    assert actions == ENCRYPTED_EVIDENCE_ACTIONS
    sar = service_authorization_data()
    for s in stmts:
        assert s["Effect"] == "Allow"
        for action in as_list(s["Action"]):
            assert "*" not in action
            service, name = action.split(":")
            rtypes = sar[service]["Actions"][name.lower()]["Resources"]
            for res in as_list(s["Resource"]):
                arn = SAMPLE_KEY if ref(res) == "SnapshotKmsKeyArn" else sample_value(template, res)
                assert any(arn_matches_resource_type(sar, service, t, arn) for t in rtypes), (action, arn)
            if service == "kms":
                # The key, and only through EC2: the function never calls KMS itself.
                assert [ref(r) for r in as_list(s["Resource"])] == ["SnapshotKmsKeyArn"]
                assert s["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "ec2.${AWS::Region}.amazonaws.com"}
            if action == "kms:CreateGrant":
                assert s["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
            if action == "ec2:CreateTags":
                c = s["Condition"]
                assert c["StringEquals"] == {"ec2:CreateAction": "CopySnapshot"}
                assert c["ForAllValues:StringLike"]["aws:TagKeys"] == ["ec2-quarantine:*"]
                assert c["Null"]["aws:TagKeys"] == "false"


def test_only_unencrypted_evidence_snapshots_can_be_deleted_and_only_when_asked(template):
    stmts = _attached_policy(template, "DeleteUnencryptedEvidencePolicy", "DeleteUnencryptedSnapshotsOn")
    (s,) = stmts
    assert (s["Effect"], as_list(s["Action"])) == ("Allow", ["ec2:DeleteSnapshot"])
    assert [sample_value(template, r) for r in as_list(s["Resource"])] == [f"arn:aws:ec2:{REGION}::snapshot/*"]
    assert s["Condition"] == {
        "Null": {"aws:ResourceTag/ec2-quarantine:instance-id": "false", "aws:ResourceTag/ec2-quarantine:incident": "false"},
        "Bool": {"ec2:Encrypted": "false"},
    }
    # Nowhere else: the role's own policy never deletes a snapshot.
    _, role = function_role(template)
    assert not any("ec2:DeleteSnapshot" in as_list(st["Action"]) for st in role_statements(role))
    policies = resources_of_type(template, "AWS::IAM::Policy")
    deleting = [n for n, p in policies.items()
                if any("ec2:DeleteSnapshot" in as_list(st["Action"]) for st in as_list(p["Properties"]["PolicyDocument"]["Statement"]))]
    assert deleting == ["DeleteUnencryptedEvidencePolicy"]


# ---------------------------------------------------------------------------------------
# lost events: the sweep
# ---------------------------------------------------------------------------------------
def test_the_sweep_schedule_invokes_the_function_with_the_sweep_input_on_by_default(template):
    fn_name, _ = function(template)
    name, schedule = only_resource_of_type(template, "AWS::Scheduler::Schedule")
    params = template["Parameters"]
    assert params["Sweep"]["Default"] == "true" and params["Sweep"]["AllowedValues"] == ["true", "false"]
    assert template["Conditions"]["SweepOn"] == {"Fn::Equals": [{"Ref": "Sweep"}, "true"]}
    assert schedule["Condition"] == "SweepOn"
    interval = params["SweepIntervalMinutes"]
    assert (interval["Type"], interval["Default"], interval["MinValue"]) == ("Number", 15, 5)
    props = schedule["Properties"]
    assert props["Name"] == "ec2-quarantine-sweep", "under the prefix the guard protects"
    assert props["State"] == "ENABLED"
    assert props["ScheduleExpression"] == {"Fn::Sub": "rate(${SweepIntervalMinutes} minutes)"}
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = props["Target"]
    assert getatt(target["Arn"]) == (fn_name, "Arn")
    assert json.loads(target["Input"]) == {"action": "sweep"}
    assert 0 <= target["RetryPolicy"]["MaximumRetryAttempts"] <= 185
    assert 60 <= target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 86400


def test_the_sweep_role_is_trusted_by_scheduler_in_this_account_and_may_only_invoke_the_function(template):
    fn_name, _ = function(template)
    _, schedule = only_resource_of_type(template, "AWS::Scheduler::Schedule")
    role_name, attr = getatt(schedule["Properties"]["Target"]["RoleArn"])
    assert attr == "Arn"
    role = template["Resources"][role_name]
    assert role["Type"] == "AWS::IAM::Role" and role["Condition"] == "SweepOn"
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    statements = role_statements(role)
    assert len(statements) == 1
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["lambda:InvokeFunction"]
    assert getatt(statement["Resource"]) == (fn_name, "Arn"), "this function only, no wildcard"
    assert "ManagedPolicyArns" not in role["Properties"]


def test_sweep_accounts_are_the_member_accounts_only_with_the_member_role(template):
    _, fn = function(template)
    value = fn["Properties"]["Environment"]["Variables"]["SWEEP_ACCOUNTS"]
    assert value == {
        "Fn::If": ["MemberRoleSet", {"Fn::Join": [",", {"Ref": "MemberAccountIds"}]}, ""]
    }


def test_a_sweep_that_found_nothing_is_not_mailed_but_everything_else_is(template):
    (sub,) = resources_of_type(template, "AWS::SNS::Subscription").values()
    props = sub["Properties"]
    assert props["FilterPolicyScope"] == "MessageBody"
    assert props["FilterPolicy"] == {
        "$or": [
            {"responsePayload": {"outcome": [{"anything-but": ["swept"]}]}},
            {"responsePayload": {"outcome": [{"exists": False}]}},
        ]
    }
