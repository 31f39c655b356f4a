//! The AWS-behaviour layer: under the function's clients, it makes the emulator behave as AWS
//! documents where the emulator is kinder. The function under test always runs over it
//! ([`super::recorded_clients`]); the tests' own observer clients do not, so that a test reads
//! the account back as it is.
//!
//! - Eventual consistency ("Eventual consistency in the Amazon EC2 API"): an id a Create or Copy
//!   call returned (security groups, snapshots) is unknown for `lag` to every call that names it
//!   (`InvalidGroup.NotFound`, `InvalidSnapshot.NotFound`) and missing from filtered Describe
//!   answers; and for `stale` after a write of an attribute (instance attributes, the profile
//!   association, tags), a read the function made before that write gets the answer it got then.
//! - Throttling ("Request throttling for the Amazon EC2 API"): a token bucket per API, with the
//!   documented sizes and refill rates by kind of action, answering `RequestLimitExceeded` (EC2,
//!   HTTP 503), `Throttling` (Auto Scaling, IAM) or `ThrottlingException` (DynamoDB) when empty.
//!   Elastic Load Balancing has its own ("Request throttling for the Elastic Load Balancing
//!   API"): each API version (v2, and v1 for classic load balancers) one bucket for all its
//!   `Describe*` actions and one for registering and deregistering targets, answering
//!   `ThrottlingException`.
//!
//! The ids are per process (AWS's lag is the id's, whoever asks); the stale reads and buckets
//! are per layer (one account's view, one function's clients).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;

use super::faults::{error_response, operation_of};

/// How AWS would behave; `Default` is what every end-to-end test runs under.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// How long a new id stays unknown.
    pub lag: Duration,
    /// How long a read made before an attribute write keeps its old answer.
    pub stale: Duration,
    /// Token buckets per API: `None` for none at all.
    pub buckets: Option<Buckets>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            lag: Duration::from_secs(1),
            stale: Duration::from_secs(1),
            buckets: Some(Buckets::documented()),
        }
    }
}

#[allow(dead_code)] // each user (tests, benchmark) uses part of it
impl Behaviour {
    /// The emulator as it is: for a test about something else that says why.
    pub fn emulator_as_is() -> Self {
        Self {
            lag: Duration::ZERO,
            stale: Duration::ZERO,
            buckets: None,
        }
    }

    pub fn with_lag(lag: Duration) -> Self {
        Self {
            lag,
            stale: lag,
            ..Self::default()
        }
    }
}

/// Bucket size and refill per second for each kind of action.
#[derive(Clone, Copy, Debug)]
pub struct Buckets {
    pub mutating: (f64, f64),
    pub non_mutating: (f64, f64),
    /// Elastic Load Balancing's `Describe*` actions, one bucket per API version.
    pub elb_describe: (f64, f64),
    /// Elastic Load Balancing's other actions (registering and deregistering targets among
    /// them), one bucket per API version.
    pub elb_registration: (f64, f64),
    /// Scales every refill rate (and so time), for tests that need a long run to be short.
    pub speed: f64,
}

impl Buckets {
    /// The figures of "Request throttling for the Amazon EC2 API": non-mutating actions 100
    /// tokens refilled at 20 a second, mutating actions 200 refilled at 5; they stand in for
    /// Auto Scaling, IAM and DynamoDB, whose documented limits are of the same order. Elastic
    /// Load Balancing's from "Request throttling for the Elastic Load Balancing API": `Describe*`
    /// 40 tokens refilled at 10 a second; registering and deregistering targets 20 refilled at
    /// 4, which also stands in for its other mutating actions (this function makes no other).
    pub fn documented() -> Self {
        Self {
            mutating: (200.0, 5.0),
            non_mutating: (100.0, 20.0),
            elb_describe: (40.0, 10.0),
            elb_registration: (20.0, 4.0),
            speed: 1.0,
        }
    }

    /// The bucket a call takes its token from, its size and its refill rate.
    fn of(&self, operation: &str, body: &str) -> (String, f64, f64) {
        let reads = ["Describe", "Get", "List", "Query", "Scan"];
        let read = reads.iter().any(|r| operation.starts_with(r));
        let (key, (size, refill)) = match elb_version(body) {
            // ELB buckets are shared by every action of a kind, per API version.
            Some(version) if operation.starts_with("Describe") => {
                (format!("elb {version} Describe*"), self.elb_describe)
            }
            Some(version) => (format!("elb {version} mutating"), self.elb_registration),
            None if read => (operation.to_owned(), self.non_mutating),
            None => (operation.to_owned(), self.mutating),
        };
        (key, size, refill * self.speed)
    }
}

/// The Elastic Load Balancing API version a query-protocol request is for, if it is one.
fn elb_version(body: &str) -> Option<&'static str> {
    if body.contains("Version=2015-12-01") {
        Some("v2")
    } else if body.contains("Version=2012-06-01") {
        Some("v1")
    } else {
        None
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// New ids and when each becomes visible, across the process.
static CREATED: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);

/// The writes after which earlier reads of the same resource may answer as before.
const ATTRIBUTE_WRITES: &[&str] = &[
    "ModifyInstanceAttribute",
    "AssociateIamInstanceProfile",
    "ReplaceIamInstanceProfileAssociation",
    "DisassociateIamInstanceProfile",
    "CreateTags",
    "DeleteTags",
];

/// An answer read whole, to keep, change or give again.
#[derive(Clone)]
pub(super) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Arc<[u8]>,
}

#[derive(Default)]
struct Reads {
    /// The last answer to each read, by request, under each id the request names.
    latest: HashMap<String, HashMap<String, Answer>>,
    /// Per id: until when reads answer as they did before its last write, and those answers.
    frozen: HashMap<String, (Instant, HashMap<String, Answer>)>,
}

struct State {
    behaviour: Behaviour,
    buckets: Mutex<HashMap<String, Bucket>>,
    reads: Mutex<Reads>,
    throttled: AtomicU32,
}

/// One layer: wrap a client's HTTP client in it with [`AwsLike::wrap`].
#[derive(Clone)]
pub struct AwsLike {
    state: Arc<State>,
}

impl std::fmt::Debug for AwsLike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsLike")
            .field("behaviour", &self.state.behaviour)
            .finish()
    }
}

#[allow(dead_code)] // each user (tests, benchmark) uses part of it
impl AwsLike {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            state: Arc::new(State {
                behaviour,
                buckets: Mutex::default(),
                reads: Mutex::default(),
                throttled: AtomicU32::new(0),
            }),
        }
    }

    /// How many calls a bucket refused.
    pub fn throttled(&self) -> u32 {
        self.state.throttled.load(Ordering::Relaxed)
    }

    pub fn wrap(&self, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(AwsLikeClient {
            inner,
            layer: self.clone(),
        })
    }
}

#[derive(Debug)]
struct AwsLikeClient {
    inner: SharedHttpClient,
    layer: AwsLike,
}

impl HttpClient for AwsLikeClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(AwsLikeConnector {
            inner: self.inner.http_connector(settings, components),
            layer: self.layer.clone(),
        })
    }
}

#[derive(Debug)]
struct AwsLikeConnector {
    inner: SharedHttpConnector,
    layer: AwsLike,
}

/// The form parameters of a query-protocol request (EC2, IAM, Auto Scaling, ELB).
fn params(body: &str) -> Vec<(&str, &str)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

const ID_PREFIXES: &[&str] = &["sg-", "snap-", "i-", "eni-", "vol-", "iip-assoc-"];

/// Every EC2 id in `text`: a known prefix and at least 8 hex digits, not inside another word.
pub fn ids_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut ids = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let prefix = ID_PREFIXES
            .iter()
            .find(|p| boundary && text[i..].starts_with(*p));
        if let Some(prefix) = prefix {
            let start = i + prefix.len();
            let end = start
                + text[start..]
                    .bytes()
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
            if end - start >= 8 {
                ids.push(text[i..end].to_owned());
                i = end;
                continue;
            }
        }
        i += 1;
    }
    ids
}

fn not_found_code(id: &str) -> &'static str {
    if id.starts_with("snap-") {
        "InvalidSnapshot.NotFound"
    } else {
        "InvalidGroup.NotFound"
    }
}

fn hidden_now(ids: &[String]) -> Vec<String> {
    let created = CREATED.lock().unwrap();
    let now = Instant::now();
    ids.iter()
        .filter(|id| created.get(*id).is_some_and(|visible| *visible > now))
        .cloned()
        .collect()
}

/// `xml` without the items of its top-level `set` that mention any of `ids`.
pub fn strip_items(xml: &str, set: &str, ids: &[String]) -> String {
    let open = format!("<{set}>");
    let Some(set_start) = xml.find(&open).map(|s| s + open.len()) else {
        return xml.to_owned();
    };
    let mut out = xml[..set_start].to_owned();
    let mut rest = &xml[set_start..];
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if !rest.starts_with("<item>") {
            out.push_str(rest);
            return out;
        }
        // The end of this item, counting the items nested in it.
        let (mut depth, mut at) = (0usize, 0usize);
        loop {
            let next_open = rest[at..].find("<item>").map(|p| p + at);
            let next_close = rest[at..].find("</item>").map(|p| p + at);
            match (next_open, next_close) {
                (Some(o), Some(c)) if o < c => {
                    depth += 1;
                    at = o + "<item>".len();
                }
                (_, Some(c)) => {
                    depth -= 1;
                    at = c + "</item>".len();
                    if depth == 0 {
                        break;
                    }
                }
                _ => {
                    out.push_str(rest);
                    return out;
                }
            }
        }
        let item = &rest[..at];
        if !ids.iter().any(|id| item.contains(&format!(">{id}<"))) {
            out.push_str(item);
        }
        rest = &rest[at..];
    }
}

/// The set a Describe answer lists its resources in.
fn listing_set(operation: &str) -> Option<&'static str> {
    match operation {
        "DescribeSecurityGroups" => Some("securityGroupInfo"),
        "DescribeSnapshots" => Some("snapshotSet"),
        _ => None,
    }
}

fn is_read(operation: &str) -> bool {
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl AwsLike {
    /// Takes a token for `operation`; `false` when its bucket is empty.
    fn take_token(&self, operation: &str, body: &str) -> bool {
        let Some(buckets) = self.state.behaviour.buckets else {
            return true;
        };
        let (key, size, refill) = buckets.of(operation, body);
        let mut all = self.state.buckets.lock().unwrap();
        let now = Instant::now();
        let bucket = all.entry(key).or_insert(Bucket {
            tokens: size,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * refill).min(size);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.state.throttled.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// An earlier answer to this read, if a write of a resource it names made it stale.
    fn stale_answer(&self, key: &str, ids: &[String]) -> Option<Answer> {
        let reads = self.state.reads.lock().unwrap();
        let now = Instant::now();
        ids.iter().find_map(|id| {
            let (until, answers) = reads.frozen.get(id)?;
            (*until > now).then(|| answers.get(key).cloned()).flatten()
        })
    }

    /// Before an attribute write of `ids`: the reads made so far keep their answers a while.
    fn freeze(&self, ids: &[String]) {
        let stale = self.state.behaviour.stale;
        if stale.is_zero() {
            return;
        }
        let mut reads = self.state.reads.lock().unwrap();
        let until = Instant::now() + stale;
        for id in ids {
            let before = reads.latest.get(id).cloned().unwrap_or_default();
            match reads.frozen.get_mut(id) {
                // A second write keeps the answers from before the first, for longer.
                Some((frozen_until, _)) if *frozen_until > Instant::now() => *frozen_until = until,
                _ => {
                    reads.frozen.insert(id.clone(), (until, before));
                }
            }
        }
    }

    fn remember_read(&self, key: &str, ids: &[String], answer: &Answer) {
        let mut reads = self.state.reads.lock().unwrap();
        for id in ids {
            reads
                .latest
                .entry(id.clone())
                .or_default()
                .insert(key.to_owned(), answer.clone());
        }
    }

    fn register_created(&self, body: &str) {
        let lag = self.state.behaviour.lag;
        if lag.is_zero() {
            return;
        }
        let visible = Instant::now() + lag;
        let mut created = CREATED.lock().unwrap();
        for tag in ["groupId", "snapshotId"] {
            let open = format!("<{tag}>");
            for part in body.split(&open).skip(1) {
                if let Some(id) = part.split('<').next() {
                    created.insert(id.to_owned(), visible);
                }
            }
        }
    }
}

impl HttpConnector for AwsLikeConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = operation_of(&request);
        let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
        let layer = self.layer.clone();
        if !layer.take_token(&operation, &body) {
            let (status, code) = throttling_answer(&request, &body);
            return HttpConnectorFuture::ready(Ok(error_response(&request, status, code)));
        }
        let ec2 = body.contains("Version=2016-11-15");
        if !ec2 {
            return self.inner.call(request);
        }
        let form = params(&body);
        let named: Vec<String> = form.iter().flat_map(|(_, v)| ids_in(v)).collect();
        // An id named outside a filter must exist; in a filter it is just not found.
        let named_outright: Vec<String> = form
            .iter()
            .filter(|(k, _)| !k.starts_with("Filter."))
            .flat_map(|(_, v)| ids_in(v))
            .collect();
        if let Some(id) = hidden_now(&named_outright).first() {
            return HttpConnectorFuture::ready(Ok(error_response(
                &request,
                400,
                not_found_code(id),
            )));
        }
        let key = format!("{operation}?{body}");
        if is_read(&operation) {
            if let Some(answer) = layer.stale_answer(&key, &named) {
                return HttpConnectorFuture::ready(Ok(response_of(&answer)));
            }
        }
        if ATTRIBUTE_WRITES.contains(&operation.as_str()) {
            layer.freeze(&named);
        }
        let inner = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let response = inner.await?;
            let answer = collect(response).await?;
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            if answer.status == 200
                && (operation.starts_with("Create") || operation == "CopySnapshot")
            {
                layer.register_created(&text);
            }
            if answer.status == 200 && is_read(&operation) {
                // The association a later replace names is only in the answer.
                let mut ids = named.clone();
                ids.extend(
                    ids_in(&text)
                        .into_iter()
                        .filter(|id| id.starts_with("iip-assoc-")),
                );
                layer.remember_read(&key, &ids, &answer);
            }
            let answer = match listing_set(&operation) {
                Some(set) if answer.status == 200 => {
                    let hidden = hidden_now(&ids_in(&text));
                    match hidden.is_empty() {
                        true => answer,
                        false => Answer {
                            body: strip_items(&text, set, &hidden).into_bytes().into(),
                            ..answer
                        },
                    }
                }
                _ => answer,
            };
            Ok(response_of(&answer))
        })
    }
}

/// Each service's throttling answer, as its API reference documents it.
fn throttling_answer(request: &HttpRequest, body: &str) -> (u16, &'static str) {
    if request.headers().get("x-amz-target").is_some() || elb_version(body).is_some() {
        (400, "ThrottlingException")
    } else if body.contains("Version=2016-11-15") {
        (503, "RequestLimitExceeded")
    } else {
        (400, "Throttling")
    }
}

pub(super) async fn collect(response: HttpResponse) -> Result<Answer, ConnectorError> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let body = ByteStream::new(response.into_body())
        .collect()
        .await
        .map_err(|e| ConnectorError::io(e.into()))?
        .into_bytes();
    Ok(Answer {
        status,
        headers,
        body: body.to_vec().into(),
    })
}

pub(super) fn response_of(answer: &Answer) -> HttpResponse {
    let mut response = HttpResponse::new(
        answer
            .status
            .try_into()
            .expect("a status the emulator gave"),
        SdkBody::from(answer.body.to_vec()),
    );
    for (k, v) in &answer.headers {
        // The length is of the body as it is now.
        if k.eq_ignore_ascii_case("content-length") {
            continue;
        }
        response.headers_mut().insert(k.clone(), v.clone());
    }
    response
}
