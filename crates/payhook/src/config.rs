//! Settings: every one has a flag, a `PAYHOOK_*` environment variable and a config-file key.
//! Precedence: flag > environment > file > default (see `config.default.toml`).

use anyhow::{bail, Context};
use clap::Args;
use ipnet::IpNet;
use payhook_core::lifecycle::health::HealthRules;
use payhook_core::lifecycle::Retention;
use payhook_core::signing::SigningSecret;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `payhook serve` flags. Every field is optional so the file and defaults can fill it in.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (keys as in config.default.toml).
    #[arg(long, env = "PAYHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the API listens on.
    #[arg(long, env = "PAYHOOK_LISTEN")]
    pub listen: Option<String>,
    /// `./payhook.db` (SQLite file path, the default) or a `postgres://` URL.
    #[arg(long, env = "PAYHOOK_DATABASE")]
    pub database: Option<String>,
    /// The admin token. When unset, one is generated on first start and printed once.
    #[arg(long, env = "PAYHOOK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The master key that seals merchants' secrets at rest: base64 of 32 random bytes. When
    /// unset with SQLite, the key file beside the database is used, created on first start.
    #[arg(long, env = "PAYHOOK_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Allow callbacks to loopback, private and link-local addresses (development only).
    #[arg(long, env = "PAYHOOK_ALLOW_PRIVATE_TARGETS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_targets: Option<bool>,
    /// Open one forbidden range to callbacks and status sources, e.g. `10.0.0.0/8`
    /// (repeatable; the environment variable takes a comma-separated list).
    #[arg(long = "allow-cidr", env = "PAYHOOK_ALLOW_CIDRS", value_delimiter = ',')]
    pub allow_cidrs: Vec<String>,
    /// Refuse `http://` callback URLs and status sources: only `https://`.
    #[arg(long, env = "PAYHOOK_HTTPS_ONLY", num_args = 0..=1, default_missing_value = "true")]
    pub https_only: Option<bool>,
    /// API requests per second allowed per merchant (its API keys together); 0: no limit.
    #[arg(long, env = "PAYHOOK_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Requests a caller may make at once above the rate (default: twice the rate).
    #[arg(long, env = "PAYHOOK_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// API requests per second allowed for the admin token; 0 (the default): no limit.
    #[arg(long, env = "PAYHOOK_ADMIN_RATE_LIMIT")]
    pub admin_rate_limit: Option<u32>,
    /// Timeout of one callback request, e.g. `15s`.
    #[arg(long, env = "PAYHOOK_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Concurrent callback attempts on this node.
    #[arg(long, env = "PAYHOOK_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Concurrent callback attempts per destination host on this node. Callbacks due while a
    /// host is at its limit wait in that host's line (up to 8× the limit) or in the store.
    #[arg(long, env = "PAYHOOK_PER_HOST_LIMIT")]
    pub per_host_limit: Option<usize>,
    /// Longest pause between looks for due work, e.g. `500ms`.
    #[arg(long, env = "PAYHOOK_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// This node's name in leases and logs (default: host name and process id).
    #[arg(long, env = "PAYHOOK_NODE_ID")]
    pub node_id: Option<String>,
    /// `text` or `json` logs.
    #[arg(long, env = "PAYHOOK_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// How long finished history (events, ended deliveries, attempts, polls) is kept after it
    /// ended, e.g. `30d`; `0` keeps it for ever.
    #[arg(long, env = "PAYHOOK_RETENTION_HISTORY")]
    pub retention_history: Option<String>,
    /// How long an operation with a final status is kept after its last change, e.g. `400d`;
    /// `0` (the default) keeps operations for ever. At least `retention_history`.
    #[arg(long, env = "PAYHOOK_RETENTION_OPERATIONS")]
    pub retention_operations: Option<String>,
    /// Time between retention purge runs, e.g. `1m`.
    #[arg(long, env = "PAYHOOK_PURGE_INTERVAL")]
    pub purge_interval: Option<String>,
    /// Do not serve the HTTP API on this node: a dispatch-only node of a cluster.
    #[arg(long, env = "PAYHOOK_NO_API", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_api: Option<bool>,
    /// Do not deliver callbacks from this node: an API-only node of a cluster.
    #[arg(long, env = "PAYHOOK_NO_DISPATCH", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_dispatch: Option<bool>,
    /// The operator's webhook for `merchant.*` alerts (destinations failing, recovered,
    /// disabled; merchants paused, resumed). Needs --ops-webhook-secret.
    #[arg(long, env = "PAYHOOK_OPS_WEBHOOK")]
    pub ops_webhook: Option<String>,
    /// The `whsec_…` secret the ops webhook's alerts are signed with.
    #[arg(long, env = "PAYHOOK_OPS_WEBHOOK_SECRET", hide_env_values = true)]
    pub ops_webhook_secret: Option<String>,
    /// Failures in a row at one destination that raise `merchant.endpoint_failing`.
    #[arg(long, env = "PAYHOOK_ALERT_AFTER_FAILURES")]
    pub alert_after_failures: Option<u32>,
    /// How long nothing but failures disables a destination, e.g. `5d`.
    #[arg(long, env = "PAYHOOK_DISABLE_AFTER")]
    pub disable_after: Option<String>,
}

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database: Option<String>,
    admin_token: Option<String>,
    master_key: Option<String>,
    allow_private_targets: Option<bool>,
    allow_cidrs: Option<Vec<String>>,
    https_only: Option<bool>,
    rate_limit: Option<u32>,
    rate_limit_burst: Option<u32>,
    admin_rate_limit: Option<u32>,
    request_timeout: Option<String>,
    max_in_flight: Option<usize>,
    per_host_limit: Option<usize>,
    poll_interval: Option<String>,
    node_id: Option<String>,
    log_format: Option<String>,
    retention_history: Option<String>,
    retention_operations: Option<String>,
    purge_interval: Option<String>,
    /// `false`: a dispatch-only node.
    api: Option<bool>,
    /// `false`: an API-only node.
    dispatch: Option<bool>,
    ops_webhook: Option<String>,
    ops_webhook_secret: Option<String>,
    alert_after_failures: Option<u32>,
    disable_after: Option<String>,
}

/// The operator's webhook for alerts, and the secret they are signed with.
#[derive(Debug, Clone)]
pub struct OpsWebhook {
    pub url: String,
    pub secret: SigningSecret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings, resolved once at start.
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub database: String,
    pub admin_token: Option<String>,
    /// Base64 of the 32-byte master key; `None`: the SQLite key file.
    pub master_key: Option<String>,
    pub allow_private_targets: bool,
    /// Forbidden ranges the operator opened anyway.
    pub allow_cidrs: Vec<IpNet>,
    pub https_only: bool,
    /// Per-merchant API requests per second (0: none), and the burst (0: twice the rate).
    pub rate_limit: u32,
    pub rate_limit_burst: u32,
    /// Admin-token requests per second (0: none); bursts like the merchants' limit.
    pub admin_rate_limit: u32,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub per_host_limit: usize,
    pub poll_interval: Duration,
    pub node_id: String,
    pub log_format: LogFormat,
    /// What the retention purge lets go, checked at start.
    pub retention: Retention,
    pub purge_interval: Duration,
    /// Serve the HTTP API on this node.
    pub api: bool,
    /// Run the dispatcher on this node.
    pub dispatch: bool,
    /// Where operator alerts go; `None`: no alert is queued.
    pub ops_webhook: Option<OpsWebhook>,
    /// When a destination raises an alert and when it is disabled.
    pub health: HealthRules,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &redact_url(&self.database))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field("allow_private_targets", &self.allow_private_targets)
            .field("allow_cidrs", &self.allow_cidrs)
            .field("https_only", &self.https_only)
            .field("request_timeout", &self.request_timeout)
            .field("node_id", &self.node_id)
            .field("ops_webhook", &self.ops_webhook.as_ref().map(|w| redact_url(&w.url)))
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Hides a password in a database URL.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Parses the operator's CIDR allow-list (`10.0.0.0/8`, `fd00::/8`, or a bare address).
fn cidrs(list: &[String]) -> anyhow::Result<Vec<IpNet>> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .with_context(|| format!("allow_cidrs: {s:?} is not a CIDR like 10.0.0.0/8"))
        })
        .collect()
}

fn duration(key: &str, v: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(v).with_context(|| format!("{key}: {v:?} is not a duration like 15s"))
}

impl Config {
    pub fn defaults() -> Config {
        Config {
            listen: "127.0.0.1:8080".into(),
            database: "payhook.db".into(),
            admin_token: None,
            master_key: None,
            allow_private_targets: false,
            allow_cidrs: Vec::new(),
            https_only: false,
            rate_limit: 100,
            rate_limit_burst: 0,
            admin_rate_limit: 0,
            request_timeout: Duration::from_secs(15),
            max_in_flight: 64,
            per_host_limit: 8,
            poll_interval: Duration::from_millis(500),
            node_id: default_node_id(),
            log_format: LogFormat::Text,
            retention: Retention::new(DEFAULT_HISTORY, Duration::ZERO).expect("valid default"),
            purge_interval: Duration::from_secs(60),
            api: true,
            dispatch: true,
            ops_webhook: None,
            health: HealthRules::default(),
        }
    }

    /// Resolves flags and environment (already merged by clap) over the file over defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let d = Config::defaults();
        let pick = |a: &Option<String>, f: Option<String>| a.clone().or(f);
        let config = Config {
            listen: pick(&args.listen, file.listen).unwrap_or(d.listen),
            database: pick(&args.database, file.database).unwrap_or(d.database),
            admin_token: pick(&args.admin_token, file.admin_token),
            master_key: pick(&args.master_key, file.master_key),
            allow_private_targets: args
                .allow_private_targets
                .or(file.allow_private_targets)
                .unwrap_or(d.allow_private_targets),
            allow_cidrs: cidrs(if args.allow_cidrs.is_empty() {
                file.allow_cidrs.as_deref().unwrap_or_default()
            } else {
                &args.allow_cidrs
            })?,
            https_only: args.https_only.or(file.https_only).unwrap_or(d.https_only),
            rate_limit: args.rate_limit.or(file.rate_limit).unwrap_or(d.rate_limit),
            rate_limit_burst: args
                .rate_limit_burst
                .or(file.rate_limit_burst)
                .unwrap_or(d.rate_limit_burst),
            admin_rate_limit: args
                .admin_rate_limit
                .or(file.admin_rate_limit)
                .unwrap_or(d.admin_rate_limit),
            request_timeout: match pick(&args.request_timeout, file.request_timeout) {
                Some(v) => duration("request_timeout", &v)?,
                None => d.request_timeout,
            },
            max_in_flight: args.max_in_flight.or(file.max_in_flight).unwrap_or(d.max_in_flight),
            per_host_limit: args.per_host_limit.or(file.per_host_limit).unwrap_or(d.per_host_limit),
            poll_interval: match pick(&args.poll_interval, file.poll_interval) {
                Some(v) => duration("poll_interval", &v)?,
                None => d.poll_interval,
            },
            node_id: pick(&args.node_id, file.node_id).unwrap_or(d.node_id),
            log_format: match pick(&args.log_format, file.log_format).as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => bail!("log_format must be text or json, not {other:?}"),
            },
            retention: retention(
                pick(&args.retention_history, file.retention_history),
                pick(&args.retention_operations, file.retention_operations),
            )?,
            purge_interval: match pick(&args.purge_interval, file.purge_interval) {
                Some(v) => duration("purge_interval", &v)?,
                None => d.purge_interval,
            },
            api: args.no_api.map(|off| !off).or(file.api).unwrap_or(d.api),
            dispatch: args.no_dispatch.map(|off| !off).or(file.dispatch).unwrap_or(d.dispatch),
            ops_webhook: ops_webhook(
                pick(&args.ops_webhook, file.ops_webhook),
                pick(&args.ops_webhook_secret, file.ops_webhook_secret),
            )?,
            health: HealthRules {
                alert_after_failures: args
                    .alert_after_failures
                    .or(file.alert_after_failures)
                    .unwrap_or(d.health.alert_after_failures),
                disable_after: match pick(&args.disable_after, file.disable_after) {
                    Some(v) => duration("disable_after", &v)?,
                    None => d.health.disable_after,
                },
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.api && !self.dispatch {
            bail!("a node with neither the API nor the dispatcher would do nothing");
        }
        if self.max_in_flight == 0 || self.per_host_limit == 0 {
            bail!("max_in_flight and per_host_limit must be at least 1");
        }
        if self.purge_interval.is_zero() {
            bail!("purge_interval must be at least 1ms");
        }
        if self.request_timeout.is_zero() || self.request_timeout > Duration::from_secs(300) {
            bail!("request_timeout must be between 1ms and 5m");
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 16 || t.starts_with("pk_") {
                bail!("the admin token must be at least 16 characters and not start with pk_");
            }
        }
        if self.health.alert_after_failures == 0 {
            bail!("alert_after_failures must be at least 1");
        }
        if self.health.disable_after < Duration::from_secs(1) {
            bail!("disable_after must be at least 1s");
        }
        if let Some(key) = &self.master_key {
            payhook_store::seal::Sealer::from_base64(key)
                .map_err(|e| anyhow::anyhow!("master_key: {e}"))?;
        }
        Ok(())
    }
}

/// The ops webhook: its URL and secret together, or neither.
fn ops_webhook(url: Option<String>, secret: Option<String>) -> anyhow::Result<Option<OpsWebhook>> {
    let (url, secret) = match (url, secret) {
        (None, None) => return Ok(None),
        (Some(url), Some(secret)) => (url, secret),
        (Some(_), None) => bail!("ops_webhook needs ops_webhook_secret (a whsec_… secret)"),
        (None, Some(_)) => bail!("ops_webhook_secret is set but ops_webhook is not"),
    };
    let parsed = url::Url::parse(&url).with_context(|| format!("ops_webhook: {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        bail!("ops_webhook must be an http:// or https:// URL");
    }
    let secret =
        SigningSecret::parse(&secret).map_err(|e| anyhow::anyhow!("ops_webhook_secret: {e}"))?;
    Ok(Some(OpsWebhook { url, secret }))
}

/// How long history is kept unless the operator says otherwise (Stripe keeps events 30 days).
const DEFAULT_HISTORY: Duration = Duration::from_secs(30 * 86_400);

/// The retention settings, checked together (`payhook_core::lifecycle::Retention`).
fn retention(history: Option<String>, operations: Option<String>) -> anyhow::Result<Retention> {
    let history = match history {
        Some(v) => duration("retention_history", &v)?,
        None => DEFAULT_HISTORY,
    };
    let operations = match operations {
        Some(v) => duration("retention_operations", &v)?,
        None => Duration::ZERO,
    };
    Retention::new(history, operations).map_err(anyhow::Error::new)
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nrequest_timeout = \"3s\"\n")
            .expect("write config");
        let args = ServeArgs {
            config: Some(path),
            request_timeout: Some("7s".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).expect("valid config");
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.request_timeout, Duration::from_secs(7));
        assert_eq!(c.database, "payhook.db");
        assert!(!c.allow_private_targets);
    }

    #[test]
    fn the_commented_default_file_is_valid_and_matches_the_defaults() {
        let text = include_str!("../../../config.default.toml");
        let file: FileConfig = toml::from_str(text).expect("config.default.toml parses");
        let d = Config::defaults();
        assert_eq!(file.listen.as_deref(), Some(d.listen.as_str()));
        assert_eq!(file.database.as_deref(), Some(d.database.as_str()));
        assert_eq!(file.allow_private_targets, Some(d.allow_private_targets));
        assert_eq!(file.https_only, Some(d.https_only));
        assert_eq!(file.rate_limit, Some(d.rate_limit));
        assert_eq!(file.rate_limit_burst, Some(d.rate_limit_burst));
        assert_eq!(file.admin_rate_limit, Some(d.admin_rate_limit));
        assert_eq!(file.allow_cidrs.map(|l| cidrs(&l).expect("valid")), Some(d.allow_cidrs));
        assert_eq!(file.max_in_flight, Some(d.max_in_flight));
        assert_eq!(file.per_host_limit, Some(d.per_host_limit));
        assert_eq!((file.api, file.dispatch), (Some(d.api), Some(d.dispatch)));
        let (history, ops) = (file.retention_history, file.retention_operations);
        assert_eq!(retention(history, ops).expect("valid"), d.retention);
        let interval = file.purge_interval.expect("purge_interval is listed");
        assert_eq!(duration("purge_interval", &interval).expect("valid"), d.purge_interval);
        let timeout = file.request_timeout.expect("request_timeout is listed");
        assert_eq!(duration("request_timeout", &timeout).expect("valid"), d.request_timeout);
        assert_eq!(file.alert_after_failures, Some(d.health.alert_after_failures));
        let disable = file.disable_after.expect("disable_after is listed");
        assert_eq!(duration("disable_after", &disable).expect("valid"), d.health.disable_after);
        assert!(file.ops_webhook.is_none() && d.ops_webhook.is_none(), "alerts are opt-in");
    }

    const OPS_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn the_ops_webhook_takes_its_url_and_secret_together() {
        let url = Some("http://10.0.0.5:9000/alerts".to_owned());
        let args = ServeArgs {
            ops_webhook: url.clone(),
            ops_webhook_secret: Some(OPS_SECRET.into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).expect("valid config");
        let hook = c.ops_webhook.expect("configured");
        assert_eq!(hook.url, "http://10.0.0.5:9000/alerts");
        assert_eq!(hook.secret.expose(), OPS_SECRET);
        for (url, secret, says) in [
            (url.clone(), None, "needs ops_webhook_secret"),
            (None, Some(OPS_SECRET.to_owned()), "ops_webhook is not"),
            (url, Some("secret".to_owned()), "whsec_"),
            (Some("ftp://ops.example/".to_owned()), Some(OPS_SECRET.to_owned()), "http://"),
            (Some("ops.example".to_owned()), Some(OPS_SECRET.to_owned()), "ops_webhook"),
        ] {
            let args =
                ServeArgs { ops_webhook: url, ops_webhook_secret: secret, ..Default::default() };
            let err = Config::resolve(&args).expect_err(says);
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
    }

    #[test]
    fn health_thresholds_come_from_flags_env_or_file_and_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.toml");
        std::fs::write(&path, "alert_after_failures = 3\ndisable_after = \"2h\"\n")
            .expect("write config");
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        let c = Config::resolve(&args).expect("valid config");
        let rules =
            HealthRules { alert_after_failures: 3, disable_after: Duration::from_secs(7200) };
        assert_eq!(c.health, rules);
        let args = ServeArgs {
            config: Some(path),
            alert_after_failures: Some(4),
            disable_after: Some("1d".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).expect("flags beat the file");
        assert_eq!((c.health.alert_after_failures, c.health.disable_after.as_secs()), (4, 86_400));
        assert_eq!(Config::defaults().health.disable_after, Duration::from_secs(5 * 86_400));
        let zero = ServeArgs { alert_after_failures: Some(0), ..Default::default() };
        assert!(Config::resolve(&zero).is_err());
        let bad = ServeArgs { disable_after: Some("later".into()), ..Default::default() };
        assert!(Config::resolve(&bad).is_err());
    }

    #[test]
    fn refuses_bad_values() {
        let args = ServeArgs { request_timeout: Some("soon".into()), ..Default::default() };
        assert!(Config::resolve(&args).is_err());
        let args = ServeArgs { admin_token: Some("short".into()), ..Default::default() };
        assert!(Config::resolve(&args).is_err());
        let args = ServeArgs { master_key: Some("c2hvcnQ=".into()), ..Default::default() };
        let err = Config::resolve(&args).expect_err("a 5-byte key");
        assert!(format!("{err:#}").contains("32 bytes"), "{err:#}");
    }

    #[test]
    fn target_settings_come_from_flags_env_or_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.toml");
        std::fs::write(&path, "https_only = true\nallow_cidrs = [\"10.0.0.0/8\", \"fd00::/8\"]\n")
            .expect("write config");
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        let c = Config::resolve(&args).expect("valid config");
        assert!(c.https_only);
        let want: Vec<IpNet> =
            vec!["10.0.0.0/8".parse().expect("cidr"), "fd00::/8".parse().expect("cidr")];
        assert_eq!(c.allow_cidrs, want);
        let args = ServeArgs {
            config: Some(path),
            allow_cidrs: vec!["192.168.10.0/24".into(), "127.0.0.1".into()],
            https_only: Some(false),
            ..Default::default()
        };
        let c = Config::resolve(&args).expect("valid config");
        assert!(!c.https_only, "the flag beats the file");
        let want: Vec<IpNet> =
            vec!["192.168.10.0/24".parse().expect("cidr"), "127.0.0.1/32".parse().expect("cidr")];
        assert_eq!(c.allow_cidrs, want);
        let bad = ServeArgs { allow_cidrs: vec!["10.0.0.0/33".into()], ..Default::default() };
        assert!(Config::resolve(&bad).is_err());
    }

    #[test]
    fn the_cidr_flag_repeats_and_the_env_splits_on_commas() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from([
            "payhook",
            "--allow-cidr",
            "10.0.0.0/8",
            "--allow-cidr",
            "172.16.0.0/12,192.168.0.0/16",
            "--https-only",
        ])
        .expect("flags parse");
        assert_eq!(cli.serve.allow_cidrs, ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
        assert_eq!(cli.serve.https_only, Some(true));
    }

    #[test]
    fn roles_come_from_flags_env_or_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.toml");
        std::fs::write(&path, "dispatch = false\n").expect("write config");
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        let c = Config::resolve(&args).expect("valid config");
        assert!(c.api && !c.dispatch);
        let args = ServeArgs { config: Some(path), no_dispatch: Some(false), ..Default::default() };
        let c = Config::resolve(&args).expect("the flag beats the file");
        assert!(c.api && c.dispatch);
        let args = ServeArgs { no_api: Some(true), ..Default::default() };
        let c = Config::resolve(&args).expect("valid config");
        assert!(!c.api && c.dispatch);
        let both = ServeArgs { no_api: Some(true), no_dispatch: Some(true), ..Default::default() };
        assert!(Config::resolve(&both).is_err(), "a node must do something");
    }

    #[test]
    fn retention_comes_from_flags_env_or_file_and_is_checked_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.toml");
        std::fs::write(&path, "retention_history = \"7d\"\nretention_operations = \"400d\"\n")
            .expect("write config");
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        let c = Config::resolve(&args).expect("valid config");
        let day = Duration::from_secs(86_400);
        assert_eq!(c.retention, Retention::new(7 * day, 400 * day).expect("valid"));
        assert_eq!(c.purge_interval, Duration::from_secs(60));
        let d = Config::defaults();
        assert_eq!(d.retention, Retention::new(30 * day, Duration::ZERO).expect("valid"));
        let args = ServeArgs {
            config: Some(path),
            retention_operations: Some("1d".into()),
            ..Default::default()
        };
        let err = Config::resolve(&args).expect_err("operations shorter than history");
        assert!(format!("{err:#}").contains("shorter than retention_history"), "{err:#}");
        let args = ServeArgs { retention_history: Some("0".into()), ..Default::default() };
        assert_eq!(Config::resolve(&args).expect("0: for ever").retention, Retention::FOREVER);
        let args = ServeArgs { retention_history: Some("500ms".into()), ..Default::default() };
        assert!(Config::resolve(&args).is_err(), "under a second");
        let args = ServeArgs { purge_interval: Some("often".into()), ..Default::default() };
        assert!(Config::resolve(&args).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = Config::defaults();
        c.admin_token = Some("super-secret-admin-token".into());
        c.master_key = Some("bWFzdGVyLWtleS1tYXN0ZXIta2V5LW1hc3Rlci1rZXk=".into());
        c.database = "postgres://u:hunter2@db/payhook".into();
        let secret = SigningSecret::parse(OPS_SECRET).expect("secret");
        c.ops_webhook = Some(OpsWebhook { url: "https://ops:pw@ops.example/".into(), secret });
        let text = format!("{c:?}");
        assert!(!text.contains("C2FV") && !text.contains(":pw@"), "{text}");
        assert!(!text.contains("super-secret") && !text.contains("hunter2"), "{text}");
        assert!(!text.contains("bWFzdGVy"), "{text}");
    }
}
