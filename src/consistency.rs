//! The EC2 API is eventually consistent ("Eventual consistency in the Amazon EC2 API", EC2
//! developer guide): an id a Create call just returned may be unknown to the next call for
//! seconds, and an attribute just written may read back its old value. Both are waited out here,
//! with growing pauses inside one budget, instead of failing the step: a mismatch is declared
//! only once the budget is spent.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::aws::AwsError;

/// How long a step waits for AWS to show what it just created or wrote. AWS documents no bound;
/// new ids are usually visible within a few seconds. Well inside the function's timeout.
pub const VISIBILITY_BUDGET: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// The answers EC2 gives about an id that exists but is not yet visible to this call.
const NOT_YET_VISIBLE: &[&str] = &[
    "InvalidGroup.NotFound",
    "InvalidGroupId.NotFound",
    "InvalidSnapshot.NotFound",
    "InvalidAssociationID.NotFound",
];

pub fn not_yet_visible(error: &AwsError) -> bool {
    NOT_YET_VISIBLE.iter().any(|code| error.has_code(code))
}

/// The pauses between tries: doubling from 100 ms to 1 s, ending before the budget does.
struct Pauses {
    started: Instant,
    next: Duration,
    budget: Duration,
}

impl Pauses {
    fn within(budget: Duration) -> Self {
        Self {
            started: Instant::now(),
            next: FIRST_PAUSE,
            budget,
        }
    }

    /// Waits before the next try; `false` once the budget would be spent.
    async fn wait(&mut self) -> bool {
        if self.started.elapsed() + self.next > self.budget {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        true
    }
}

/// Calls `call` until AWS stops answering that an id it returned does not exist, or the budget
/// is spent (then the last answer is returned).
pub async fn until_visible<T, Fut>(call: impl FnMut() -> Fut) -> Result<T, AwsError>
where
    Fut: Future<Output = Result<T, AwsError>>,
{
    until_visible_within(VISIBILITY_BUDGET, call).await
}

async fn until_visible_within<T, Fut>(
    budget: Duration,
    mut call: impl FnMut() -> Fut,
) -> Result<T, AwsError>
where
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut pauses = Pauses::within(budget);
    loop {
        match call().await {
            Err(e) if not_yet_visible(&e) && pauses.wait().await => continue,
            answer => return answer,
        }
    }
}

/// Reads until `settled` accepts what was read (a just-written value, a just-created id), or the
/// budget is spent; then the last read is returned for the caller to judge. An id not yet
/// visible counts as not settled.
pub async fn until_settled<T, Fut>(
    read: impl FnMut() -> Fut,
    settled: impl Fn(&T) -> bool,
) -> Result<T, AwsError>
where
    Fut: Future<Output = Result<T, AwsError>>,
{
    until_settled_within(VISIBILITY_BUDGET, read, settled).await
}

async fn until_settled_within<T, Fut>(
    budget: Duration,
    mut read: impl FnMut() -> Fut,
    settled: impl Fn(&T) -> bool,
) -> Result<T, AwsError>
where
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut pauses = Pauses::within(budget);
    loop {
        match read().await {
            Ok(value) if settled(&value) => return Ok(value),
            Err(e) if !not_yet_visible(&e) => return Err(e),
            last => {
                if !pauses.wait().await {
                    return last;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn missing() -> AwsError {
        AwsError {
            operation: "RevokeSecurityGroupEgress",
            code: Some("InvalidGroup.NotFound".to_owned()),
            message: "The security group 'sg-1' does not exist".to_owned(),
        }
    }

    #[tokio::test]
    async fn an_id_that_becomes_visible_is_called_again_until_it_answers() {
        let calls = AtomicU32::new(0);
        let answer = until_visible(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(missing()),
                _ => Ok("done"),
            }
        })
        .await;
        assert_eq!(answer, Ok("done"));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_id_that_never_becomes_visible_fails_once_the_budget_is_spent() {
        let budget = Duration::from_millis(700);
        let calls = AtomicU32::new(0);
        let answer: Result<(), _> = until_visible_within(budget, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(missing())
        })
        .await;
        assert_eq!(answer, Err(missing()));
        // Tries after 0, 100, 300 ms; the next pause (400 ms) would end past the budget.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn another_error_is_not_waited_out() {
        let calls = AtomicU32::new(0);
        let denied = AwsError {
            code: Some("UnauthorizedOperation".to_owned()),
            ..missing()
        };
        let answer: Result<(), _> = until_visible(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(denied.clone())
        })
        .await;
        assert_eq!(answer, Err(denied));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stale_read_is_read_again_until_it_shows_the_write() {
        let reads = AtomicU32::new(0);
        let read = until_settled(
            || async { Ok(reads.fetch_add(1, Ordering::SeqCst) >= 2) },
            |on| *on,
        )
        .await;
        assert_eq!(read, Ok(true));
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_read_that_never_settles_returns_the_last_read_for_the_caller_to_judge() {
        let budget = Duration::from_millis(300);
        let read = until_settled_within(budget, || async { Ok(false) }, |on| *on).await;
        assert_eq!(read, Ok(false));
    }
}
