"""The local run (`make demo`, scripts/demo.py) against the emulator that scripts/test.sh starts,
with the binary that `cargo test` built. The account is read back here through boto3, never from
the demo's printout or the function's own report, so a binary that answers "contained" without
containing anything fails.

Needs MOTO_ENDPOINT_URL (the emulator) and EC2Q_BINARY (the ec2-quarantine binary); both are set
by scripts/test.sh.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_demo():
    # By path: scripts/ is not a package, and the name "demo" is too common to put on sys.path.
    spec = importlib.util.spec_from_file_location("ec2q_demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def _setting(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        # Fail, not skip: a suite that silently skips the demo would let it rot.
        pytest.fail(f"{variable} is not set: run the suite with scripts/test.sh (or `make test`)")
    return value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    endpoint = _setting("MOTO_ENDPOINT_URL")
    binary = _setting("EC2Q_BINARY")
    printed: list[str] = []
    # The suffix keeps this account's IAM and load balancer names apart on a shared emulator.
    result = demo.run(
        endpoint,
        binary,
        out=printed.append,
        suffix=f"-{uuid.uuid4().hex[:6]}",
        log_path=tmp_path_factory.mktemp("demo") / "function.log",
    )
    return result, "\n".join(printed)


@pytest.fixture(scope="module")
def aws():
    endpoint = _setting("MOTO_ENDPOINT_URL")
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return {
        service: session.client(service, endpoint_url=endpoint)
        for service in ["ec2", "autoscaling", "elbv2", "elb"]
    }


def test_the_account_starts_as_a_running_application(run):
    # Otherwise the checks of the state after would prove nothing.
    result, _ = run
    account, before = result.account, result.before
    assert [i.interface_id for i in before.interfaces] == account.interface_ids
    assert all([g.group_id for g in i.groups] == [account.app_group_id] for i in before.interfaces)
    assert before.instance_profile_arn == account.app_profile_arn
    assert before.auto_scaling_group == account.auto_scaling_group
    assert any(before.target_groups.values())
    assert all(before.classic_load_balancers.values())
    assert len(before.volumes) == 2 and all(v.delete_on_termination for v in before.volumes)
    assert before.snapshots == []


def test_the_event_for_another_tag_key_is_ignored(run):
    result, _ = run
    assert result.ignored.ok, result.ignored.body
    assert result.ignored.report["outcome"] == "ignored"
    assert result.ignored.report["instances"] == []


def test_the_trigger_event_succeeds_and_reports_contained(run):
    result, _ = run
    assert result.triggered.ok, result.triggered.body
    assert result.triggered.report["outcome"] == "contained"
    assert result.succeeded


def test_both_interfaces_are_on_one_isolation_group_with_no_rules(run, aws):
    result, _ = run
    account = result.account
    interfaces = aws["ec2"].describe_network_interfaces(NetworkInterfaceIds=account.interface_ids)[
        "NetworkInterfaces"
    ]
    assert len(interfaces) == 2
    groups = {tuple(g["GroupId"] for g in n["Groups"]) for n in interfaces}
    assert len(groups) == 1, f"the interfaces are on different groups: {groups}"
    (group_ids,) = groups
    assert len(group_ids) == 1, f"an interface is on more than the isolation group: {group_ids}"
    assert group_ids[0] != account.app_group_id
    (group,) = aws["ec2"].describe_security_groups(GroupIds=list(group_ids))["SecurityGroups"]
    assert group["GroupName"] == demo.ISOLATION_GROUP_NAME
    assert group["VpcId"] == account.vpc_id
    assert group["IpPermissions"] == []
    assert group["IpPermissionsEgress"] == []


def test_the_isolation_profile_is_associated(run, aws):
    result, _ = run
    account = result.account
    # Not DescribeInstances: the emulator keeps showing the replaced profile there.
    associations = aws["ec2"].describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [account.instance_id]}]
    )["IamInstanceProfileAssociations"]
    associated = [
        a["IamInstanceProfile"]["Arn"] for a in associations if a["State"] == "associated"
    ]
    assert associated == [account.isolation_profile_arn]


def test_the_instance_left_its_auto_scaling_group(run, aws):
    result, _ = run
    account = result.account
    (group,) = aws["autoscaling"].describe_auto_scaling_groups(
        AutoScalingGroupNames=[account.auto_scaling_group]
    )["AutoScalingGroups"]
    assert account.instance_id not in [i["InstanceId"] for i in group["Instances"]]
    assert (
        aws["autoscaling"].describe_auto_scaling_instances(InstanceIds=[account.instance_id])[
            "AutoScalingInstances"
        ]
        == []
    )


def test_the_instance_left_its_load_balancers(run, aws):
    result, _ = run
    account = result.account
    targets = aws["elbv2"].describe_target_health(TargetGroupArn=account.target_group_arn)[
        "TargetHealthDescriptions"
    ]
    assert account.instance_id not in [t["Target"]["Id"] for t in targets]
    (classic,) = aws["elb"].describe_load_balancers(
        LoadBalancerNames=[account.classic_load_balancer]
    )["LoadBalancerDescriptions"]
    assert account.instance_id not in [i["InstanceId"] for i in classic["Instances"]]


def test_both_volumes_are_kept_and_snapshotted(run, aws):
    result, _ = run
    account = result.account
    snapshots = aws["ec2"].describe_snapshots(
        OwnerIds=["self"],
        Filters=[{"Name": "tag:ec2-quarantine:instance-id", "Values": [account.instance_id]}],
    )["Snapshots"]
    assert sorted(s["VolumeId"] for s in snapshots) == sorted(account.volume_ids)
    (reservation,) = aws["ec2"].describe_instances(InstanceIds=[account.instance_id])[
        "Reservations"
    ]
    mappings = reservation["Instances"][0]["BlockDeviceMappings"]
    assert [m["Ebs"]["DeleteOnTermination"] for m in mappings] == [False, False]


def test_the_printout_shows_the_instance_before_and_after_and_the_report(run):
    result, printed = run
    instance_id = result.account.instance_id
    assert f"Instance {instance_id} before" in printed
    assert f"Instance {instance_id} after" in printed
    assert "outcome: ignored" in printed
    assert "outcome: contained" in printed
    assert "move-network-interfaces" in printed
