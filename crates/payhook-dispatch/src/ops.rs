//! The operator alerts' sender. The store queues `merchant.*` alerts (a destination failing,
//! recovered or disabled; a merchant paused or resumed) and this worker posts them to the
//! operator's webhook, signed as Standard Webhooks callbacks are.
//!
//! The ops webhook is the operator's own and trusted, so it has a client of its own: no SSRF
//! guard (an internal address is its usual place), no redirects, no proxy, a total timeout.
//! It runs in a task of its own with no slot of the dispatcher's, so a slow ops endpoint never
//! holds a merchant's callback back. Alerts go one at a time, oldest first, so a destination's
//! `failing` reaches the operator before its `recovered`. The store's leases make each alert go
//! out once per cluster; a failed send is retried on a fixed schedule until 24 hours after the
//! alert was raised.

use payhook_core::clock::Clock;
use payhook_core::signing::SigningSecret;
use payhook_core::Timestamp;
use payhook_store::{AlertOutcome, OpsAlert, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where and how alerts are sent.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// The operator's webhook.
    pub url: String,
    /// Signs every alert (`webhook-signature`).
    pub secret: SigningSecret,
    /// Identifies this node's leases.
    pub node_id: String,
    /// One request, connect to last byte.
    pub timeout: Duration,
    /// How long a claimed batch is held: it must outlast sending the whole batch.
    pub lease: Duration,
    /// Alerts claimed at once.
    pub batch: u32,
    /// Longest sleep between claims (alerts queued by other nodes, leases expiring).
    pub poll_interval: Duration,
}

impl OpsConfig {
    pub fn new(url: String, secret: SigningSecret, node_id: String, timeout: Duration) -> Self {
        let batch = 10;
        OpsConfig {
            url,
            secret,
            node_id,
            timeout,
            lease: timeout * batch + Duration::from_secs(15),
            batch,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The wait after each failed send, by the attempts made before it; hourly after the last.
const BACKOFF: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1_800),
    Duration::from_secs(3_600),
];
const HOURLY: Duration = Duration::from_secs(3_600);

/// How long after it was raised an alert is still tried.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3_600);

/// The wait before the next try of an alert that failed after `attempts` earlier attempts.
pub fn backoff(attempts: u32) -> Duration {
    BACKOFF.get(attempts as usize).copied().unwrap_or(HOURLY)
}

/// What follows a failed send of `alert` at `now`: another try on the schedule, the last one
/// at the deadline, or given up once the deadline has passed.
pub fn after_failure(alert: &OpsAlert, error: String, now: Timestamp) -> AlertOutcome {
    let deadline = alert.created_at.plus(GIVE_UP_AFTER);
    if now >= deadline {
        return AlertOutcome::Exhausted(error);
    }
    AlertOutcome::RetryAt(now.plus(backoff(alert.attempts)).min(deadline), error)
}

/// The alert's body as sent: the Standard Webhooks envelope.
pub fn body(alert: &OpsAlert) -> Vec<u8> {
    let envelope = serde_json::json!({
        "type": alert.kind,
        "timestamp": alert.created_at.rfc3339_millis(),
        "data": alert.data,
    });
    serde_json::to_vec(&envelope).expect("a JSON value serializes")
}

pub struct OpsNotifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    config: OpsConfig,
}

impl OpsNotifier {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: OpsConfig,
    ) -> Result<Arc<Self>, reqwest::Error> {
        // Trusted and operator-configured: no SSRF guard. Still no redirect (a 3xx is a
        // failure the operator sees) and no proxy from the environment.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("payhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(OpsNotifier { store, clock, client, config }))
    }

    /// Sends every alert due now, batch after batch, until none is left (tests, with the
    /// manual clock); returns how many sends were made.
    pub async fn run_once(&self) -> usize {
        let never = CancellationToken::new();
        let mut total = 0;
        loop {
            let Some((alerts, until)) = self.claim().await else { return total };
            if alerts.is_empty() {
                return total;
            }
            total += self.send_batch(alerts, until, &never).await;
        }
    }

    /// Sends alerts until `shutdown`; an alert being sent finishes first.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let claimed = self.claim().await;
            let full = claimed.as_ref().is_some_and(|(a, _)| a.len() == self.config.batch as usize);
            if let Some((alerts, until)) = claimed {
                self.send_batch(alerts, until, &shutdown).await;
            }
            if full {
                continue; // there may be more due right now
            }
            let sleep = self.idle_wait().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Leases a batch of due alerts, with the time the lease ends; `None` when the store
    /// failed (logged).
    async fn claim(&self) -> Option<(Vec<OpsAlert>, Timestamp)> {
        let (c, now) = (&self.config, self.clock.now());
        match self.store.claim_alerts(&c.node_id, now, c.lease, c.batch).await {
            Ok(alerts) => Some((alerts, now.plus(c.lease))),
            Err(e) => {
                tracing::error!(error = %e, "claiming operator alerts failed");
                None
            }
        }
    }

    /// How long to sleep with nothing to send: until the next alert falls due, at most the
    /// poll interval.
    async fn idle_wait(&self) -> Duration {
        let poll = self.config.poll_interval;
        match self.store.next_alert_at().await {
            Ok(Some(at)) => at.since(self.clock.now()).clamp(Duration::from_millis(5), poll),
            _ => poll,
        }
    }

    /// Sends a claimed batch in order and records each outcome; returns the sends made. A
    /// claim holds at most one alert per merchant (its oldest pending), so a merchant's
    /// alerts keep their order across retries. What is left when the lease could end during
    /// the next request, or at shutdown, stays leased until the lease ends.
    async fn send_batch(
        &self,
        alerts: Vec<OpsAlert>,
        lease_until: Timestamp,
        stop: &CancellationToken,
    ) -> usize {
        let mut sent = 0;
        for alert in alerts {
            if stop.is_cancelled() || self.clock.now().plus(self.config.timeout) > lease_until {
                break;
            }
            sent += 1;
            let outcome = self.attempt(&alert).await;
            self.record(&alert, &outcome).await;
        }
        sent
    }

    /// One send of one alert and what follows from it.
    async fn attempt(&self, alert: &OpsAlert) -> AlertOutcome {
        match self.post(alert).await {
            Ok(()) => AlertOutcome::Delivered,
            Err(error) => after_failure(alert, error, self.clock.now()),
        }
    }

    async fn post(&self, alert: &OpsAlert) -> Result<(), String> {
        let body = body(alert);
        let timestamp = self.clock.now().unix_seconds();
        let signature = self.config.secret.sign(&alert.id, timestamp, &body);
        let sent = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &alert.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let response = sent.map_err(|e| self.describe(&e))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("the ops webhook answered {}", s.as_u16())),
        }
    }

    /// A transport failure in words, with its causes.
    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no complete answer within {:?}", self.config.timeout);
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    async fn record(&self, alert: &OpsAlert, outcome: &AlertOutcome) {
        log(alert, outcome);
        let node = &self.config.node_id;
        if let Err(e) = self.store.record_alert(node, &alert.id, outcome, self.clock.now()).await {
            tracing::error!(
                alert_id = %alert.id, error = %e,
                "recording an operator alert failed; its lease will end and it is sent again"
            );
        }
    }
}

fn log(alert: &OpsAlert, outcome: &AlertOutcome) {
    let (id, kind, merchant) = (&alert.id, &alert.kind, alert.merchant.as_str());
    match outcome {
        AlertOutcome::Delivered => {
            tracing::info!(alert_id = %id, %kind, merchant_id = merchant, "operator alert sent")
        }
        AlertOutcome::RetryAt(at, error) => tracing::warn!(
            alert_id = %id, %kind, merchant_id = merchant, %error, retry_at = %at.rfc3339_millis(),
            "operator alert not sent; retried later"
        ),
        AlertOutcome::Exhausted(error) => tracing::error!(
            alert_id = %id, %kind, merchant_id = merchant, %error,
            "operator alert given up after 24 hours of failures"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn alert(attempts: u32) -> OpsAlert {
        OpsAlert {
            id: "evt_1".into(),
            kind: "merchant.paused".into(),
            merchant: "mer_1".parse().expect("merchant id"),
            data: serde_json::json!({"merchant_id": "mer_1"}),
            created_at: T0,
            attempts,
        }
    }

    #[test]
    fn the_schedule_is_fixed_then_hourly() {
        let secs: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 30, 120, 600, 1_800, 3_600, 3_600, 3_600, 3_600]);
        assert_eq!(backoff(u32::MAX), HOURLY);
    }

    #[test]
    fn a_failure_is_retried_on_the_schedule_until_a_day_after_the_alert() {
        let now = T0.plus(Duration::from_secs(60));
        let retry = after_failure(&alert(1), "500".into(), now);
        assert_eq!(retry, AlertOutcome::RetryAt(now.plus(Duration::from_secs(30)), "500".into()));
        let late = T0.plus(GIVE_UP_AFTER - Duration::from_secs(60));
        let last = after_failure(&alert(20), "500".into(), late);
        assert_eq!(last, AlertOutcome::RetryAt(T0.plus(GIVE_UP_AFTER), "500".into()), "capped");
        let over = after_failure(&alert(21), "500".into(), T0.plus(GIVE_UP_AFTER));
        assert_eq!(over, AlertOutcome::Exhausted("500".into()));
    }

    #[test]
    fn the_body_is_the_standard_webhooks_envelope() {
        let sent: serde_json::Value = serde_json::from_slice(&body(&alert(0))).expect("JSON");
        let want = serde_json::json!({"type": "merchant.paused",
            "timestamp": "2023-11-14T22:13:20.000Z", "data": {"merchant_id": "mer_1"}});
        assert_eq!(sent, want);
        let keys: Vec<&String> = sent.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["type", "timestamp", "data"]);
    }
}
