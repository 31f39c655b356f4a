//! A fault-injecting HTTP layer between the SDK and the emulator, for the conditions the emulator
//! cannot produce (throttling, access denied, a call that hangs), and for the benchmark's
//! latency (a fixed delay on every call, as to a regional endpoint, and a timeline of every
//! call's start and end). Everything above the HTTP connector is the real code path: the SDK's
//! retry and timeout policy, its error parsing, and the function's handling of the result.
//! Calls that match no fault go to the emulator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

use super::aws_like::{collect, response_of, Answer};

/// Calls that AWS makes atomic and the emulator does not: its `CreateSecurityGroup` checks for
/// a duplicate name, then inserts, without a lock, so two concurrent creates can both succeed.
/// The layer sends these one at a time across the whole test process, as AWS would decide them,
/// so that tests of concurrent invocations test the function, not the emulator's race.
const ATOMIC_IN_AWS: &[&str] = &["CreateSecurityGroup"];
static ATOMIC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Debug)]
pub enum Fault {
    /// An error answer from the service, with its HTTP status and AWS error code.
    Error { status: u16, code: &'static str },
    /// No answer at all, for longer than any timeout.
    Hang,
    /// Sent on only when the test opens the gate.
    Held(Gate),
    /// A successful answer with this XML body, for a condition the emulator cannot produce (a
    /// listing cut into pages: it answers every listing whole).
    Answer(String),
    /// The emulator's answer with `from` replaced by `to`, for a kind of instance the emulator
    /// cannot launch (an instance-store root), or a field it never answers with.
    /// Every pair `(from, to)` of the rules that match a call applies to its answer.
    Rewrite(Vec<(Arc<str>, Arc<str>)>),
}

/// Holds a call until the test lets it go, to order one invocation's write after another's
/// without timing.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    arrived: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::Notify>,
}

#[allow(dead_code)] // each user (tests, benchmark) uses part of it
impl Gate {
    /// Returns once the held call has reached the gate.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    pub fn open(&self) {
        self.open.notify_one()
    }
}

#[derive(Debug)]
struct Rule {
    operation: &'static str,
    fault: Fault,
    /// Only calls whose request body contains this (one use of an operation with several).
    body_contains: Option<&'static str>,
    /// How many more calls it applies to; `None` for all of them.
    remaining: Option<u32>,
    injected: u32,
}

/// One call as the layer saw it: from the SDK handing it over to the answer coming back.
#[derive(Clone, Debug)]
#[allow(dead_code)] // read by the benchmark, which shares this file
pub struct Call {
    pub operation: String,
    pub start: Instant,
    pub end: Instant,
}

/// The faults to inject, by operation name (`ModifyNetworkInterfaceAttribute`, `PutItem`, ...).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
    latency: Option<Duration>,
    timeline: Arc<Mutex<Vec<Call>>>,
}

#[allow(dead_code)] // each user (tests, benchmark) uses part of it
impl Faults {
    /// Every call waits `latency` before it reaches the emulator.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency: Some(latency),
            ..Self::default()
        }
    }

    /// Every call made so far, in the order they ended.
    pub fn timeline(&self) -> Vec<Call> {
        self.timeline.lock().unwrap().clone()
    }

    /// Every call of `operation` fails with `code`.
    pub fn deny(&self, operation: &'static str, code: &'static str) -> &Self {
        self.add(operation, Fault::Error { status: 403, code }, None)
    }

    /// Every call of `operation` whose request body contains `body_contains` fails with `code`.
    pub fn deny_when(
        &self,
        operation: &'static str,
        body_contains: &'static str,
        code: &'static str,
    ) -> &Self {
        self.rules.lock().unwrap().push(Rule {
            operation,
            fault: Fault::Error { status: 400, code },
            body_contains: Some(body_contains),
            remaining: None,
            injected: 0,
        });
        self
    }

    /// The next `times` calls of `operation` whose request body contains `body_contains` fail
    /// with `code`.
    pub fn deny_next_when(
        &self,
        operation: &'static str,
        body_contains: &'static str,
        code: &'static str,
        times: u32,
    ) -> &Self {
        self.rules.lock().unwrap().push(Rule {
            operation,
            fault: Fault::Error { status: 400, code },
            body_contains: Some(body_contains),
            remaining: Some(times),
            injected: 0,
        });
        self
    }

    /// The next `times` calls of `operation` fail with `code`, which the SDK does not retry.
    pub fn deny_next(&self, operation: &'static str, code: &'static str, times: u32) -> &Self {
        self.add(operation, Fault::Error { status: 403, code }, Some(times))
    }

    /// The next call of `operation` gets `xml` as its successful answer.
    pub fn answer_once(&self, operation: &'static str, xml: String) -> &Self {
        self.add(operation, Fault::Answer(xml), Some(1))
    }

    /// The next `times` calls of `operation` are throttled.
    pub fn throttle(&self, operation: &'static str, code: &'static str, times: u32) -> &Self {
        self.add(operation, Fault::Error { status: 503, code }, Some(times))
    }

    /// Every answer to `operation` has `from` replaced by `to`.
    pub fn rewrite(
        &self,
        operation: &'static str,
        from: impl Into<Arc<str>>,
        to: impl Into<Arc<str>>,
    ) -> &Self {
        self.add(
            operation,
            Fault::Rewrite(vec![(from.into(), to.into())]),
            None,
        )
    }

    /// `DescribeNetworkInterfaces` reports `eni` with these connection tracking timeouts, as AWS
    /// does for an interface whose timeouts were set; the emulator never reports any.
    pub fn connection_tracking(&self, eni: &str, (tcp, udp_stream, udp): (i32, i32, i32)) -> &Self {
        let id = format!("<networkInterfaceId>{eni}</networkInterfaceId>");
        let with = format!(
            "{id}<connectionTrackingConfiguration><tcpEstablishedTimeout>{tcp}\
             </tcpEstablishedTimeout><udpStreamTimeout>{udp_stream}</udpStreamTimeout>\
             <udpTimeout>{udp}</udpTimeout></connectionTrackingConfiguration>"
        );
        self.rewrite("DescribeNetworkInterfaces", id, with)
    }

    /// Every call of `operation` hangs.
    pub fn hang(&self, operation: &'static str) -> &Self {
        self.add(operation, Fault::Hang, None)
    }

    /// The next call of `operation` waits at `gate` until the test opens it.
    pub fn hold(&self, operation: &'static str, gate: &Gate) -> &Self {
        self.add(operation, Fault::Held(gate.clone()), Some(1))
    }

    /// The next call of `operation` whose request body contains `body_contains` waits at `gate`
    /// until the test opens it.
    pub fn hold_when(
        &self,
        operation: &'static str,
        body_contains: &'static str,
        gate: &Gate,
    ) -> &Self {
        self.rules.lock().unwrap().push(Rule {
            operation,
            fault: Fault::Held(gate.clone()),
            body_contains: Some(body_contains),
            remaining: Some(1),
            injected: 0,
        });
        self
    }

    fn add(&self, operation: &'static str, fault: Fault, remaining: Option<u32>) -> &Self {
        self.rules.lock().unwrap().push(Rule {
            operation,
            fault,
            body_contains: None,
            remaining,
            injected: 0,
        });
        self
    }

    /// How many calls of `operation` got a fault.
    pub fn injected(&self, operation: &str) -> u32 {
        self.rules
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.operation == operation)
            .map(|r| r.injected)
            .sum()
    }

    fn take(&self, operation: &str, body: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| {
            r.operation == operation
                && r.remaining != Some(0)
                && r.body_contains.is_none_or(|part| body.contains(part))
        })?;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        rule.injected += 1;
        let fault = rule.fault.clone();
        let Fault::Rewrite(_) = fault else {
            return Some(fault);
        };
        // Rewrites add up: each rule may change another part of the answer.
        let pairs = rules
            .iter_mut()
            .filter(|r| r.operation == operation && r.remaining.is_none())
            .filter_map(|r| match &r.fault {
                Fault::Rewrite(pairs) => Some(pairs.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        Some(Fault::Rewrite(pairs))
    }

    /// An HTTP client that injects these faults in front of the real one.
    pub fn client(&self) -> SharedHttpClient {
        SharedHttpClient::new(FaultClient {
            inner: aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .build_https(),
            faults: self.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultClient {
    inner: SharedHttpClient,
    faults: Faults,
}

impl HttpClient for FaultClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultConnector {
            inner: self.inner.http_connector(settings, components),
            faults: self.faults.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultConnector {
    inner: SharedHttpConnector,
    faults: Faults,
}

/// The operation a request calls: the JSON protocols name it in `X-Amz-Target`, the query
/// protocols (EC2, Auto Scaling, ELB, IAM) in the form body's `Action`.
pub(super) fn operation_of(request: &HttpRequest) -> String {
    if let Some(target) = request.headers().get("x-amz-target") {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    let body = request.body().bytes().unwrap_or_default();
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or_default()
        .to_owned()
}

/// The error body each protocol's parser expects.
pub(super) fn error_response(request: &HttpRequest, status: u16, code: &str) -> HttpResponse {
    let message = format!("injected {code}");
    let body_text =
        String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
    let (content_type, body) = if request.headers().get("x-amz-target").is_some() {
        (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"{code}","message":"{message}"}}"#),
        )
    } else if body_text.contains("Version=2016-11-15") {
        (
            "text/xml",
            format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"),
        )
    } else {
        (
            "text/xml",
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"),
        )
    };
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).expect("valid status"),
        SdkBody::from(body),
    );
    response.headers_mut().insert("content-type", content_type);
    response
}

impl HttpConnector for FaultConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = operation_of(&request);
        let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
        let start = Instant::now();
        let answer = match self.faults.take(&operation, &body) {
            None => self.inner.call(request),
            Some(Fault::Error { status, code }) => {
                HttpConnectorFuture::ready(Ok(error_response(&request, status, code)))
            }
            Some(Fault::Answer(xml)) => {
                let mut response = HttpResponse::new(
                    StatusCode::try_from(200).expect("valid status"),
                    SdkBody::from(xml),
                );
                response.headers_mut().insert("content-type", "text/xml");
                HttpConnectorFuture::ready(Ok(response))
            }
            Some(Fault::Rewrite(pairs)) => {
                let inner = self.inner.call(request);
                HttpConnectorFuture::new(async move {
                    let answer = collect(inner.await?).await?;
                    let text = pairs.iter().fold(
                        String::from_utf8_lossy(&answer.body).into_owned(),
                        |t, (from, to)| t.replace(&**from, to),
                    );
                    Ok(response_of(&Answer {
                        body: text.into_bytes().into(),
                        ..answer
                    }))
                })
            }
            Some(Fault::Held(gate)) => {
                let inner = self.inner.clone();
                HttpConnectorFuture::new(async move {
                    gate.arrived.notify_one();
                    gate.open.notified().await;
                    inner.call(request).await
                })
            }
            Some(Fault::Hang) => {
                let operation = operation.clone();
                HttpConnectorFuture::new(async move {
                    // Far past every timeout the SDK is given: the SDK must give up first.
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Err(ConnectorError::timeout(
                        format!("{operation} hung for 600 s").into(),
                    ))
                })
            }
        };
        let latency = self.faults.latency;
        let timeline = self.faults.timeline.clone();
        let atomic = ATOMIC_IN_AWS.contains(&operation.as_str());
        HttpConnectorFuture::new(async move {
            if let Some(latency) = latency {
                tokio::time::sleep(latency).await;
            }
            let _one_at_a_time = match atomic {
                true => Some(ATOMIC.lock().await),
                false => None,
            };
            let result = answer.await;
            timeline.lock().unwrap().push(Call {
                operation,
                start,
                end: Instant::now(),
            });
            result
        })
    }
}
