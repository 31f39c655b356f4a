//! The containment benchmark: how soon the network and the credentials are cut, how long the
//! whole containment takes, how many calls it makes, and how fast the binary starts. Run it with
//! `bench/run.sh`, which starts the emulator; it writes `bench/results.md` and
//! `bench/results.json`. Not a test: nothing here passes or fails on a figure.
//!
//! Every AWS call goes through the tests' HTTP layer with a fixed delay (50 ms, as to a regional
//! endpoint) and is logged with its start and end. "Round trips" to a point is the length of the
//! longest chain of calls, each starting after the previous one ended, that leads to it: the
//! sequential round trips on the critical path, whatever the emulator adds to each call.
//!
//! The emulator answers one request at a time, so the calls of one round trip end spread out,
//! and with 50 ms a call can start after an unrelated call of its own round trip ended, which
//! counts it one round trip deeper than the code makes it. The round trips are therefore counted
//! in separate runs with a delay (`COUNTING_LATENCY`) longer than that spread; the milliseconds
//! come from the runs with 50 ms.

#[allow(dead_code)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ec2_quarantine::aws::Clients;
use ec2_quarantine::contain::network::IsolationGroups;
use ec2_quarantine::handler::{handle, Deps};
use serde_json::{json, Value};

use support::faults::{Call, Faults};
use support::scenario::{Options, Scenario};
use support::with_faults;

const LATENCY: Duration = Duration::from_millis(50);
/// Longer than the emulator's spread of one round trip's answers (see the module comment).
const COUNTING_LATENCY: Duration = Duration::from_millis(300);
const RUNS: usize = 5;
const FLEET: i32 = 100;

fn trigger(ids: &[&str]) -> Value {
    let resources: Vec<String> = ids
        .iter()
        .map(|id| format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}"))
        .collect();
    json!({
        "version": "0", "id": support::unique("bench"), "detail-type": "Tag Change on Resource",
        "source": "aws.tag", "account": "123456789012", "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1", "resources": resources,
        "detail": {"changed-tag-keys": ["Quarantine"], "service": "ec2",
                   "resource-type": "instance", "version": 1, "tags": {"Quarantine": "true"}}
    })
}

#[derive(Clone, Default)]
struct Figures {
    /// The longest chain of calls, each started after the one before ended.
    critical_path: Vec<String>,
    network_cut: Mark,
    profile_replaced: Mark,
    credentials_denied: Mark,
    done: Mark,
    calls: usize,
}

/// A point of the containment: when it was reached, and after how many sequential round trips.
#[derive(Clone, Copy, Default)]
struct Mark {
    at: Duration,
    round_trips: usize,
}

/// Each call's depth: 1 + the deepest call that ended before it started.
fn depths(timeline: &[Call]) -> Vec<usize> {
    let mut depth = vec![0; timeline.len()];
    let mut order: Vec<usize> = (0..timeline.len()).collect();
    order.sort_by_key(|&i| timeline[i].start);
    for (k, &i) in order.iter().enumerate() {
        depth[i] = 1 + order[..k]
            .iter()
            .filter(|&&j| timeline[j].end <= timeline[i].start)
            .map(|&j| depth[j])
            .max()
            .unwrap_or(0);
    }
    depth
}

/// The deepest call and, back from it, each call it waited for.
fn chain(timeline: &[Call], depth: &[usize]) -> Vec<String> {
    let Some(mut at) = (0..timeline.len()).max_by_key(|&i| (depth[i], timeline[i].end)) else {
        return Vec::new();
    };
    let mut path = vec![timeline[at].operation.clone()];
    while depth[at] > 1 {
        at = (0..timeline.len())
            .filter(|&j| depth[j] == depth[at] - 1 && timeline[j].end <= timeline[at].start)
            .max_by_key(|&j| timeline[j].end)
            .expect("a call one round trip shallower");
        path.push(timeline[at].operation.clone());
    }
    path.reverse();
    path
}

/// When the last call of `operations` ended, counted from `t0`, and its depth.
fn mark(timeline: &[Call], depth: &[usize], t0: Instant, operations: &[&str]) -> Mark {
    timeline
        .iter()
        .zip(depth)
        .filter(|(c, _)| operations.is_empty() || operations.contains(&c.operation.as_str()))
        .map(|(c, d)| Mark {
            at: c.end.saturating_duration_since(t0),
            round_trips: *d,
        })
        .max_by_key(|m| m.at)
        .unwrap_or_default()
}

async fn one_containment(group_exists: bool, cut_tracked: bool, latency: Duration) -> Figures {
    let s = Scenario::build(Options::everything()).await;
    if group_exists {
        // Another instance was contained in this VPC before: its isolation and interim groups
        // are there.
        let clients = Clients::new(&s.account.sdk);
        let groups = IsolationGroups::new(&s.isolation_group_name, &Default::default())
            .cutting_tracked_connections(cut_tracked);
        groups
            .ensure(&clients, &s.vpc_id)
            .await
            .expect("isolation group");
        if cut_tracked {
            groups
                .ensure_interim(&clients, &s.vpc_id)
                .await
                .expect("cutting tracked connections")
                .expect("interim group");
        }
    }
    let faults = Faults::with_latency(latency);
    let deps = Deps {
        clients: Clients::new(&with_faults(&s.account.sdk, &faults)),
        config: s.config(&[(
            "CUT_TRACKED_CONNECTIONS",
            if cut_tracked { "true" } else { "false" },
        )]),
        accounts: support::accounts(&s.account.sdk, &support::CallLog::default()),
    };
    let t0 = Instant::now();
    let report = handle(trigger(&[&s.instance_id]), &support::unique("bench"), &deps)
        .await
        .expect("contained");
    let done = t0.elapsed();
    assert_eq!(report.instances.len(), 1);
    let timeline = faults.timeline();
    let depth = depths(&timeline);
    let swap = [
        "ReplaceIamInstanceProfileAssociation",
        "AssociateIamInstanceProfile",
    ];
    let critical_path = chain(&timeline, &depth);
    // The emulator keeps every scenario's target groups, and the target-group step reads each
    // one: removed, so that every run scans the same three.
    for group in s
        .account
        .elbv2
        .describe_target_groups()
        .send()
        .await
        .unwrap()
        .target_groups()
    {
        s.account
            .elbv2
            .delete_target_group()
            .target_group_arn(group.target_group_arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    Figures {
        critical_path,
        network_cut: mark(&timeline, &depth, t0, &["ModifyNetworkInterfaceAttribute"]),
        profile_replaced: mark(&timeline, &depth, t0, &swap),
        credentials_denied: mark(&timeline, &depth, t0, &["PutRolePolicy"]),
        done: Mark {
            at: done,
            round_trips: depth.iter().copied().max().unwrap_or(0),
        },
        calls: timeline.len(),
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Process start to the first request to the Lambda Runtime API, the binary's cold start.
fn cold_start() -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ec2-quarantine"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "ec2-quarantine")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ISOLATION_INSTANCE_PROFILE", "ec2-quarantine-isolation")
        .env("INCIDENT_TABLE", "ec2-quarantine-incidents")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let (mut stream, _) = listener.accept().unwrap();
    let mut first = [0u8; 64];
    let read = stream.read(&mut first).unwrap();
    let elapsed = started.elapsed();
    assert!(
        String::from_utf8_lossy(&first[..read])
            .starts_with("GET /2018-06-01/runtime/invocation/next"),
        "the first request is the poll for an event"
    );
    child.kill().ok();
    child.wait().ok();
    elapsed
}

async fn fleet() -> (Duration, usize, usize) {
    let (s, ids) = Scenario::fleet(FLEET).await;
    let faults = Faults::with_latency(LATENCY);
    // The emulator serves one request at a time: a hundred instances queue there far longer
    // than AWS would make them wait, so the SDK is given time (the figure is the emulator's).
    let patient = support::patient(&with_faults(&s.account.sdk, &faults));
    let deps = Deps {
        clients: Clients::new(&patient),
        config: s.config(&[("CLAIM_TIMEOUT_MS", "120000")]),
        accounts: support::accounts(&patient, &support::CallLog::default()),
    };
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let report = handle(trigger(&refs), "bench-fleet", &deps)
        .await
        .expect("all contained");
    let elapsed = t0.elapsed();
    assert_eq!(report.instances.len(), ids.len());
    let groups = s
        .account
        .groups_named(&s.vpc_id, &s.isolation_group_name)
        .await
        .len();
    (elapsed, faults.timeline().len(), groups)
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();
    let mut paths = Vec::new();
    let mut json_rows = Vec::new();
    for (label, group_exists, cut_tracked) in [
        ("groups exist, interim step on", true, true),
        ("first containment in the VPC, interim step on", false, true),
        ("group exists, interim step off", true, false),
        (
            "first containment in the VPC, interim step off",
            false,
            false,
        ),
    ] {
        let mut runs = Vec::new();
        let mut counted = Vec::new();
        for _ in 0..RUNS {
            runs.push(one_containment(group_exists, cut_tracked, LATENCY).await);
            counted.push(one_containment(group_exists, cut_tracked, COUNTING_LATENCY).await);
        }
        // The median time of the 50 ms runs, the median round trips of the counting runs.
        let pick = |f: fn(&Figures) -> Mark| {
            let at = median(runs.iter().map(|r| f(r).at).collect());
            let mut trips: Vec<usize> = counted.iter().map(|r| f(r).round_trips).collect();
            trips.sort();
            (at.as_millis(), trips[trips.len() / 2])
        };
        let network = pick(|f| f.network_cut);
        let profile = pick(|f| f.profile_replaced);
        let denied = pick(|f| f.credentials_denied);
        let done = pick(|f| f.done);
        let mut calls: Vec<usize> = runs.iter().map(|f| f.calls).collect();
        calls.sort();
        let calls = calls[calls.len() / 2];
        let path = counted[counted.len() / 2].critical_path.join(" → ");
        paths.push(format!("- {label}: {path}"));
        rows.push(format!(
            "| {label} | {} ms ({} RT) | {} ms ({} RT) | {} ms ({} RT) | {} ms ({} RT) | {calls} |",
            network.0, network.1, profile.0, profile.1, denied.0, denied.1, done.0, done.1,
        ));
        json_rows.push(json!({
            "scenario": label, "cut_tracked_connections": cut_tracked, "network_cut_ms": network.0, "network_cut_rt": network.1,
            "profile_replaced_ms": profile.0, "profile_replaced_rt": profile.1,
            "credentials_denied_ms": denied.0, "credentials_denied_rt": denied.1,
            "done_ms": done.0, "done_rt": done.1, "calls": calls, "critical_path": path,
        }));
    }
    let cold = median((0..RUNS).map(|_| cold_start()).collect());
    let (fleet_time, fleet_calls, fleet_groups) = fleet().await;

    let table = format!(
        "Median of {RUNS} runs, {} ms injected per AWS call; round trips (RT) counted in {RUNS} \
         more runs with {} ms, where the emulator's spread cannot reorder one round trip's \
         calls. \"interim step\" is `CUT_TRACKED_CONNECTIONS` (on by default).\n\n\
         | scenario | network cut | profile replaced | credentials denied | contained and verified | calls |\n\
         |---|---|---|---|---|---|\n{}\n\n\
         The longest chain of calls to \"contained and verified\", one counting run each:\n\n{}\n\n\
         | figure | value |\n|---|---|\n\
         | cold start (process start to first Runtime API poll, debug build) | {} ms |\n\
         | {FLEET} instances in one event | {} ms, {fleet_calls} calls, {fleet_groups} isolation group(s) in the VPC |\n",
        LATENCY.as_millis(),
        COUNTING_LATENCY.as_millis(),
        rows.join("\n"),
        paths.join("\n"),
        cold.as_millis(),
        fleet_time.as_millis(),
    );
    println!("{table}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    std::fs::write(out.join("results.md"), &table).unwrap();
    let document = json!({
        "latency_ms": LATENCY.as_millis(), "counting_latency_ms": COUNTING_LATENCY.as_millis(),
        "runs": RUNS, "containment": json_rows,
        "cold_start_ms": cold.as_millis(),
        "fleet": {"instances": FLEET, "ms": fleet_time.as_millis(), "calls": fleet_calls, "groups": fleet_groups},
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&document).unwrap(),
    )
    .unwrap();
}
