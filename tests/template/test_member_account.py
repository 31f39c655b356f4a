"""member-account.yaml against template.yaml: the two stacks of a many-account deployment.

The member role must be able to do what the function role does, and no more: its statements
are checked against the function role's, so that a permission added to one and forgotten in
the other fails here rather than as a failed containment in a member account.
"""

from __future__ import annotations

import json
import re
import subprocess

from template_helpers import (
    REPO,
    as_list,
    function,
    function_role,
    getatt,
    ref,
    release_function,
    load_template,
    render_sub,
    resources_of_type,
    role_statements,
    venv_tool,
)

MEMBER_TEMPLATE = REPO / "member-account.yaml"

# What only the security account has: the function's logs, its destinations, the incident table.
SECURITY_ONLY_SIDS = {"Logs", "FailureDestination", "SuccessDestination", "IncidentRecord"}
# The same for the release function: its logs and the incident table.
RELEASE_SECURITY_ONLY_SIDS = {"Logs", "IncidentRecord"}
# IAM's longest role name; the member release role's is the member role's plus this suffix.
ROLE_NAME_MAX = 64
RELEASE_SUFFIX = "-release"

SECURITY = "123456789012"
MEMBER = "111122223333"


def load_member() -> dict:
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(MEMBER_TEMPLATE))))


def _glob(pattern: str, value: str) -> bool:
    rx = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value) is not None


def _by_sid(statements: list[dict]) -> dict[str, dict]:
    out = {s["Sid"]: s for s in statements}
    assert len(out) == len(statements), "every statement has its own Sid"
    return out


def test_cfn_lint_passes_on_the_member_template():
    tool = venv_tool("cfn-lint")
    assert tool, "cfn-lint not installed (requirements/test.txt)"
    r = subprocess.run([tool, str(MEMBER_TEMPLATE)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"cfn-lint exit {r.returncode}\n{r.stdout}\n{r.stderr}"


def _assert_same_statements_in_the_member(member: dict, member_role: str, security_role: dict, security_only: set[str]):
    """The member role's statements are the security role's, minus `security_only`, scoped to the member."""
    wanted = {sid: s for sid, s in _by_sid(role_statements(security_role)).items() if sid not in security_only}
    assert security_only <= set(_by_sid(role_statements(security_role))), "a security-only Sid was renamed"
    got = _by_sid(role_statements(member["Resources"][member_role]))
    assert set(got) == set(wanted), (
        f"missing {sorted(set(wanted) - set(got))}, unexpected {sorted(set(got) - set(wanted))}"
    )
    for sid, statement in wanted.items():
        without_resource = {k: v for k, v in statement.items() if k != "Resource"}
        assert {k: v for k, v in got[sid].items() if k != "Resource"} == without_resource, sid
        # Resources may differ, but only ever name the member's own account or its own stack.
        for resource in as_list(got[sid]["Resource"]):
            if isinstance(resource, str):
                assert resource == "*", (sid, resource)
            elif getatt(resource):
                assert getatt(resource)[0] in member["Resources"], (sid, resource)
            else:
                text = resource["Fn::Sub"]
                assert "${AWS::AccountId}" in text or ":iam::" not in text and "::snapshot/" in text, (sid, text)
                assert "SecurityAccountId" not in text, (sid, text)
    assert not member["Resources"][member_role]["Properties"].get("ManagedPolicyArns")


def test_the_member_role_has_the_function_roles_containment_statements_and_no_other(template):
    _, function_role_resource = function_role(template)
    _assert_same_statements_in_the_member(load_member(), "MemberRole", function_role_resource, SECURITY_ONLY_SIDS)


def test_the_member_release_role_has_the_release_roles_statements_and_no_other(template):
    _, release_role_resource = function_role(template, release_function(template)[1])
    _assert_same_statements_in_the_member(
        load_member(), "MemberReleaseRole", release_role_resource, RELEASE_SECURITY_ONLY_SIDS
    )


def test_the_member_release_role_exists_only_when_the_release_role_is_given():
    member = load_member()
    parameter = member["Parameters"]["ReleaseFunctionRoleArn"]
    assert (parameter["Type"], parameter["Default"]) == ("String", "")
    rx = re.compile(parameter["AllowedPattern"])
    assert rx.fullmatch("") and rx.fullmatch(f"arn:aws:iam::{SECURITY}:role/ec2-quarantine/x-ReleaseFunctionRole-AB1")
    assert not rx.fullmatch("ReleaseFunctionRole") and not rx.fullmatch(f"arn:aws:iam::{SECURITY}:user/x")
    assert rx.pattern == "^$|" + member["Parameters"]["FunctionRoleArn"]["AllowedPattern"]
    condition = member["Resources"]["MemberReleaseRole"]["Condition"]
    assert member["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReleaseFunctionRoleArn"}, ""]}]}
    output = member["Outputs"]["MemberReleaseRoleArn"]
    assert output["Condition"] == condition
    assert output["Value"] == {"Fn::GetAtt": ["MemberReleaseRole", "Arn"]}
    # Everything else of the member stack is there either way.
    conditional = {name for name, res in member["Resources"].items() if "Condition" in res}
    assert conditional == {"MemberReleaseRole"}
    props = member["Resources"]["MemberReleaseRole"]["Properties"]
    assert props["MaxSessionDuration"] == member["Resources"]["MemberRole"]["Properties"]["MaxSessionDuration"]


def test_the_member_role_trusts_only_the_security_accounts_function_role():
    member = load_member()
    trust = member["Resources"]["MemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    (statement,) = trust
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRole"
    principal = render_sub(statement["Principal"]["AWS"], {"AWS::Partition": "aws", "SecurityAccountId": SECURITY})
    assert principal == f"arn:aws:iam::{SECURITY}:root"
    assert statement["Condition"] == {"ArnEquals": {"aws:PrincipalArn": {"Ref": "FunctionRoleArn"}}}
    assert member["Parameters"]["SecurityAccountId"]["AllowedPattern"] == "^[0-9]{12}$"


def test_the_member_release_role_trusts_only_the_security_accounts_release_function_role():
    member = load_member()
    trust = member["Resources"]["MemberReleaseRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    (statement,) = trust
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRole"
    principal = render_sub(statement["Principal"]["AWS"], {"AWS::Partition": "aws", "SecurityAccountId": SECURITY})
    assert principal == f"arn:aws:iam::{SECURITY}:root"
    # The release function's role only: not the containment function's, which every tag event runs as.
    assert statement["Condition"] == {"ArnEquals": {"aws:PrincipalArn": {"Ref": "ReleaseFunctionRoleArn"}}}
    assert "FunctionRoleArn" not in json.dumps(statement).replace("ReleaseFunctionRoleArn", "")


def test_the_function_assumes_the_member_role_by_the_arn_the_member_stack_gives_it(template):
    member = load_member()
    role = member["Resources"]["MemberRole"]["Properties"]
    assert role["RoleName"] == {"Ref": "MemberRoleName"}
    assert role["Path"] == "/ec2-quarantine/"
    name = "ec2-quarantine-member"
    member_role_arn = f"arn:aws:iam::{MEMBER}:role{role['Path']}{name}"

    _, fn = function(template)
    variable = fn["Properties"]["Environment"]["Variables"]["MEMBER_ROLE_NAME"]
    condition, when_set, when_unset = variable["Fn::If"]
    assert (condition, when_unset) == ("MemberRoleSet", "")
    assert template["Conditions"]["MemberRoleSet"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "MemberRoleName"}, ""]}]}
    # What the function builds from MEMBER_ROLE_NAME (src/accounts.rs): arn:...:role/<value>.
    assert f"arn:aws:iam::{MEMBER}:role/" + render_sub(when_set, {"MemberRoleName": name}) == member_role_arn

    policy = template["Resources"]["MemberRoleAssumption"]
    assert policy["Type"] == "AWS::IAM::Policy" and policy["Condition"] == "MemberRoleSet"
    assert policy["Properties"]["Roles"] == [{"Ref": "QuarantineFunctionRole"}]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "sts:AssumeRole")
    allowed = render_sub(statement["Resource"], {"AWS::Partition": "aws", "MemberRoleName": name})
    assert _glob(allowed, member_role_arn)
    assert not _glob(allowed, f"arn:aws:iam::{MEMBER}:role/{name}"), "only under the path"

    # The guard policy exempts the member role as it does the function role.
    guard = json.loads((REPO / "policies" / "guard-scp-containment.json").read_text())
    exempt = guard["Statement"][0]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert any(_glob(p, member_role_arn) for p in exempt)

    assert template["Parameters"]["MemberRoleName"]["Default"] == ""
    assert member["Parameters"]["MemberRoleName"]["Default"] == name


def _assume_role_policy(template, name: str, role: str) -> str:
    """The one sts:AssumeRole resource of the conditional policy `name` on `role`."""
    policy = template["Resources"][name]
    assert policy["Type"] == "AWS::IAM::Policy" and policy["Condition"] == "MemberRoleSet"
    assert policy["Properties"]["Roles"] == [{"Ref": role}]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "sts:AssumeRole")
    return render_sub(statement["Resource"], {"AWS::Partition": "aws", "MemberRoleName": "ec2-quarantine-member"})


def test_the_release_function_assumes_the_member_release_role_by_the_arn_the_member_stack_gives_it(template):
    member = load_member()
    role = member["Resources"]["MemberReleaseRole"]["Properties"]
    assert role["RoleName"] == {"Fn::Sub": "${MemberRoleName}-release"}
    assert role["Path"] == "/ec2-quarantine/"
    name = member["Parameters"]["MemberRoleName"]["Default"]
    release_role_arn = f"arn:aws:iam::{MEMBER}:role{role['Path']}" + render_sub(role["RoleName"], {"MemberRoleName": name})
    member_role_arn = f"arn:aws:iam::{MEMBER}:role/ec2-quarantine/{name}"

    release_fn_name, release_fn = release_function(template)
    variable = release_fn["Properties"]["Environment"]["Variables"]["MEMBER_ROLE_NAME"]
    condition, when_set, when_unset = variable["Fn::If"]
    assert (condition, when_unset) == ("MemberRoleSet", "")
    # What the release function builds from its MEMBER_ROLE_NAME (src/accounts.rs): arn:...:role/<value>.
    assert f"arn:aws:iam::{MEMBER}:role/" + render_sub(when_set, {"MemberRoleName": name}) == release_role_arn

    release_role, _ = function_role(template, release_fn)
    allowed = _assume_role_policy(template, "MemberReleaseRoleAssumption", release_role)
    assert _glob(allowed, release_role_arn)
    assert not _glob(allowed, f"arn:aws:iam::{MEMBER}:role/{name}-release"), "only under the path"
    # Each function reaches its own member role only.
    assert not _glob(allowed, member_role_arn), "the release function must not assume the containment's member role"
    contain_allowed = _assume_role_policy(template, "MemberRoleAssumption", function_role(template)[0])
    assert not _glob(contain_allowed, release_role_arn), "the containment function must not assume the release role"
    # No other policy lets either role assume anything.
    assuming = {
        policy_name
        for policy_name, policy in resources_of_type(template, "AWS::IAM::Policy").items()
        if "sts:AssumeRole" in json.dumps(policy["Properties"]["PolicyDocument"])
    }
    assert assuming == {"MemberRoleAssumption", "MemberReleaseRoleAssumption"}
    assert release_fn_name != function(template)[0]

    # The guard policy exempts the member release role as it does the release function's role.
    guard = json.loads((REPO / "policies" / "guard-scp-containment.json").read_text())
    exempt = guard["Statement"][0]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert any(_glob(p, release_role_arn) for p in exempt)
    # And the member stack's own denies keep both member roles' policies out of reach.
    for holder in ("MemberRole", "MemberReleaseRole"):
        (deny,) = [s for s in role_statements(member["Resources"][holder]) if s.get("Sid") == "NeverTouchOwnOrIsolationRole"]
        denied = [
            render_sub(r, {"AWS::Partition": "aws", "AWS::AccountId": MEMBER})
            for r in as_list(deny["Resource"])
            if not getatt(r)
        ]
        for arn in (member_role_arn, release_role_arn):
            assert any(_glob(d, arn) for d in denied), (holder, arn)


def test_the_member_role_name_leaves_room_for_the_release_suffix(template):
    member = load_member()
    security_pattern = template["Parameters"]["MemberRoleName"]["AllowedPattern"]
    member_pattern = member["Parameters"]["MemberRoleName"]["AllowedPattern"]
    assert security_pattern == "^$|" + member_pattern, "both stacks admit the same names"
    rx = re.compile(member_pattern)
    longest = ROLE_NAME_MAX - len(RELEASE_SUFFIX)
    assert rx.fullmatch("a" * longest)
    assert not rx.fullmatch("a" * (longest + 1)), f"{'a' * (longest + 1)}{RELEASE_SUFFIX} is longer than IAM allows"
    assert rx.fullmatch(member["Parameters"]["MemberRoleName"]["Default"])


def test_the_isolation_profile_is_where_the_translated_arn_points(template):
    """The function names the security account's profile by ARN and replaces the account."""
    member = load_member()
    own = template["Resources"]["IsolationInstanceProfile"]["Properties"]
    theirs = member["Resources"]["IsolationInstanceProfile"]["Properties"]
    assert theirs["Path"] == own["Path"]
    assert theirs["InstanceProfileName"] == {"Ref": "IsolationInstanceProfileName"}
    assert template["Outputs"]["IsolationInstanceProfileName"]["Value"] == {"Ref": "IsolationInstanceProfile"}
    role = member["Resources"]["IsolationRole"]["Properties"]
    assert role["Policies"][0]["PolicyDocument"]["Statement"] == [
        {"Sid": "DenyAll", "Effect": "Deny", "Action": "*", "Resource": "*"}
    ]
    assert role["AssumeRolePolicyDocument"] == template["Resources"]["IsolationRole"]["Properties"]["AssumeRolePolicyDocument"]


def _bus_arn(member: dict, value) -> str:
    condition, default, given = value["Fn::If"]
    assert condition == "DefaultSecurityBus" and given == {"Ref": "SecurityEventBusArn"}
    return render_sub(default, {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "SecurityAccountId": SECURITY})


def test_the_forwarding_rule_has_the_security_stacks_tag_pattern(template):
    member = load_member()
    params = {"QuarantineTagKey": "SecOps:Quarantine", "QuarantineTagValue": "yes"}
    ours = json.loads(render_sub(template["Resources"]["QuarantineTagRule"]["Properties"]["EventPattern"], params))
    theirs = json.loads(render_sub(member["Resources"]["ForwardQuarantineTagRule"]["Properties"]["EventPattern"], params))
    assert theirs == ours
    for key in ("QuarantineTagKey", "QuarantineTagValue"):
        for field in ("Default", "AllowedPattern"):
            assert member["Parameters"][key][field] == template["Parameters"][key][field], (key, field)


def test_snapshot_completions_are_forwarded_too():
    member = load_member()
    pattern = member["Resources"]["ForwardSnapshotEventsRule"]["Properties"]["EventPattern"]
    assert pattern == {
        "$or": [
            {"source": ["aws.ec2"], "detail-type": ["EBS Multi-Volume Snapshots Completion Status"]},
            # EBS sends snapshot notifications as aws.ec2 (EBS user guide, "EventBridge for
            # Amazon EBS"); aws.ebs would forward nothing.
            {"source": ["aws.ec2"], "detail-type": ["EBS Snapshot Notification"]},
        ]
    }
    # The security account's copy rule, which these forwarded events must reach, agrees.
    security = load_template()
    copy = security["Resources"]["SnapshotCopyCompletedRule"]["Properties"]["EventPattern"]
    assert {"source": copy["source"], "detail-type": copy["detail-type"]} in pattern["$or"]


def test_every_message_of_the_member_dead_letter_queue_is_alarmed():
    member = load_member()
    alarms = [r for r in member["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    (alarm,) = alarms
    p = alarm["Properties"]
    assert p["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ForwardDeadLetterQueue", "QueueName"]}}]
    assert (p["Namespace"], p["MetricName"], p["Statistic"], p["Period"]) == ("AWS/SQS", "NumberOfMessagesSent", "Sum", 60)
    assert (p["ComparisonOperator"], p["Threshold"], p["TreatMissingData"]) == ("GreaterThanOrEqualToThreshold", 1, "notBreaching")
    # Optional action: the alarm exists either way.
    assert p["AlarmActions"] == {"Fn::If": ["HasAlarmAction", [{"Ref": "AlarmActionArn"}], {"Ref": "AWS::NoValue"}]}
    assert member["Parameters"]["AlarmActionArn"]["Default"] == ""


def test_the_forwarding_rules_have_names_the_guard_protects():
    member = load_member()
    for name in ("ForwardQuarantineTagRule", "ForwardSnapshotEventsRule"):
        assert member["Resources"][name]["Properties"]["Name"].startswith("ec2-quarantine-"), name


def test_forwarding_targets_the_security_bus_with_a_role_that_can_only_put_there():
    member = load_member()
    resources = member["Resources"]
    role = resources["ForwardRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    (allow,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert allow["Action"] == "events:PutEvents"
    bus = _bus_arn(member, allow["Resource"])
    assert bus == f"arn:aws:events:us-east-1:{SECURITY}:event-bus/default"
    for rule in ("ForwardQuarantineTagRule", "ForwardSnapshotEventsRule"):
        (target,) = resources[rule]["Properties"]["Targets"]
        assert _bus_arn(member, target["Arn"]) == bus, rule
        assert target["RoleArn"] == {"Fn::GetAtt": ["ForwardRole", "Arn"]}, rule
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["ForwardDeadLetterQueue", "Arn"]}, rule
        assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0, rule


def test_the_bus_policy_admits_members_only_when_an_organization_or_accounts_are_given(template):
    conditions = template["Conditions"]
    assert conditions["OrganizationIdSet"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OrganizationId"}, ""]}]}
    assert conditions["MemberAccountIdsSet"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "MemberAccountIds"}]}, ""]}]
    }
    for name in ("OrganizationId", "MemberAccountIds"):
        assert template["Parameters"][name]["Default"] == "", f"{name} is off by default"
    org = template["Resources"]["OrganizationEventBusPolicy"]
    assert org["Condition"] == "OrganizationIdSet"
    statement = org["Properties"]["Statement"]
    assert (statement["Effect"], statement["Action"], statement["Principal"]) == ("Allow", "events:PutEvents", "*")
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    accounts = template["Resources"]["MemberAccountsEventBusPolicy"]
    assert accounts["Condition"] == "MemberAccountIdsSet"
    statement = accounts["Properties"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Ref": "MemberAccountIds"}}
    assert statement["Action"] == "events:PutEvents"
    for policy in (org, accounts):
        resource = render_sub(
            policy["Properties"]["Statement"]["Resource"],
            {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": SECURITY},
        )
        assert resource == f"arn:aws:events:us-east-1:{SECURITY}:event-bus/default"
        assert policy["Properties"]["EventBusName"] == "default"
    assert ref(template["Outputs"]["EventBusArn"]["Value"]) is None
