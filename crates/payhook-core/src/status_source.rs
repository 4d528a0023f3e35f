//! The re-poll watchdog's view of a status source (SPEC-dialects, ws2mpi section): where to ask
//! for an operation's status, how to read the answer, and how often to ask.
//!
//! `{"url":"…","method":"GET"|"POST","headers":{…},"body":<json?>,"status_pointer":"/orderStatus",
//!   "status_map":{"2":"success",…},"schedule":["5s","10s",…]}`. Pure: building the request and
//! reading the answer; the dispatcher's watchdog does the I/O.

use crate::dialect::{Method, Outgoing};
use crate::model::ErrorKind;
use crate::status::Status;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Ukrcard's recommended re-query cadence: 5 s, 10 s, 15 s, 30 s, 1 m, 1 m, 2 m, 3 m, 5 m, 10 m.
pub const DEFAULT_SCHEDULE_SECS: [u64; 10] = [5, 10, 15, 30, 60, 60, 120, 180, 300, 600];
/// WS2MPI's `orderStatus` field.
pub const DEFAULT_POINTER: &str = "/orderStatus";
/// At most this many polls per watch.
pub const MAX_POLLS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct StatusSource {
    pub url: String,
    pub method: Method,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// RFC 6901 JSON pointer to the status in the answer.
    pub status_pointer: String,
    /// The source's value (as text) → canonical status.
    pub status_map: Vec<(String, Status)>,
    /// Wait before poll *n* (index 0: after registration). Its length is the poll budget.
    pub schedule: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid status_source: {0}")]
pub struct SourceError(pub String);

fn bad(msg: impl Into<String>) -> SourceError {
    SourceError(msg.into())
}

/// Ukrcard's `orderStatus` codes mapped to canonical statuses (the default `status_map`).
fn default_map() -> Vec<(String, Status)> {
    [
        ("1", Status::Success),
        ("2", Status::Success),
        ("3", Status::Reversed),
        ("4", Status::Refunded),
        ("6", Status::Failed),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// What one answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The value found at the pointer, as text.
    pub raw: String,
    pub status: Status,
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    pub kind: ErrorKind,
    pub detail: String,
    /// The value found, when the failure is that it maps to nothing.
    pub raw: Option<String>,
}

impl StatusSource {
    pub fn from_json(v: &Value) -> Result<Self, SourceError> {
        let obj = v.as_object().ok_or_else(|| bad("must be an object"))?;
        let known =
            ["url", "method", "headers", "body", "status_pointer", "status_map", "schedule"];
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(format!("unknown field {k:?}")));
        }
        Ok(StatusSource {
            url: parse_url(obj.get("url"))?,
            method: parse_method(obj.get("method"))?,
            headers: parse_headers(obj.get("headers"))?,
            body: obj.get("body").filter(|b| !b.is_null()).cloned(),
            status_pointer: parse_pointer(obj.get("status_pointer"))?,
            status_map: parse_map(obj.get("status_map"))?,
            schedule: parse_schedule(obj.get("schedule"))?,
        })
    }

    /// The normalized JSON form (defaults filled in).
    pub fn to_json(&self) -> Value {
        let headers: Map<String, Value> =
            self.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let map: Map<String, Value> =
            self.status_map.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let schedule: Vec<String> =
            self.schedule.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
        json!({
            "url": self.url, "method": self.method.as_str(), "headers": headers, "body": self.body,
            "status_pointer": self.status_pointer, "status_map": map, "schedule": schedule,
        })
    }

    /// The wait before poll number `n` (1-based), `None` once the budget is spent.
    pub fn delay_before(&self, n: u32) -> Option<Duration> {
        self.schedule.get(usize::try_from(n.checked_sub(1)?).ok()?).copied()
    }

    /// The poll request.
    pub fn request(&self) -> Outgoing {
        let mut headers = self.headers.clone();
        let body = match (&self.method, &self.body) {
            (Method::Post, Some(b)) => {
                if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                serde_json::to_vec(b).expect("JSON values serialize")
            }
            _ => Vec::new(),
        };
        Outgoing { method: self.method, url: self.url.clone(), headers, body }
    }

    /// Reads an answer: a 2xx JSON body with a mapped value at the pointer.
    pub fn read(&self, http_status: u16, body: &[u8]) -> Result<Reading, ReadFailure> {
        let fail = |kind, detail: String, raw| Err(ReadFailure { kind, detail, raw });
        if !(200..300).contains(&http_status) {
            return fail(ErrorKind::HttpStatus, format!("HTTP {http_status}"), None);
        }
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return fail(ErrorKind::Malformed, "the answer is not JSON".into(), None);
        };
        let raw = match doc.pointer(&self.status_pointer) {
            None | Some(Value::Null) => {
                return fail(
                    ErrorKind::MissingField,
                    format!("nothing at {}", self.status_pointer),
                    None,
                )
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        match self.status_map.iter().find(|(k, _)| *k == raw) {
            Some((_, status)) => Ok(Reading { raw, status: *status }),
            None => fail(ErrorKind::Unmapped, format!("{raw:?} is not in status_map"), Some(raw)),
        }
    }
}

fn parse_url(v: Option<&Value>) -> Result<String, SourceError> {
    let s = v.and_then(Value::as_str).ok_or_else(|| bad("url is required"))?;
    let u = url::Url::parse(s).map_err(|e| bad(format!("url: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(bad("url must be an absolute http or https URL"));
    }
    Ok(s.to_owned())
}

fn parse_method(v: Option<&Value>) -> Result<Method, SourceError> {
    match v.map(|m| m.as_str()) {
        None | Some(Some("GET")) => Ok(Method::Get),
        Some(Some("POST")) => Ok(Method::Post),
        _ => Err(bad("method is \"GET\" or \"POST\"")),
    }
}

fn parse_headers(v: Option<&Value>) -> Result<Vec<(String, String)>, SourceError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let obj = v.as_object().ok_or_else(|| bad("headers must be an object of strings"))?;
    obj.iter()
        .map(|(k, v)| {
            let value = v.as_str().ok_or_else(|| bad("headers must be an object of strings"))?;
            Ok((k.clone(), value.to_owned()))
        })
        .collect()
}

fn parse_pointer(v: Option<&Value>) -> Result<String, SourceError> {
    match v {
        None => Ok(DEFAULT_POINTER.to_owned()),
        Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => Ok(p.clone()),
        _ => Err(bad("status_pointer must be a JSON pointer such as \"/orderStatus\"")),
    }
}

fn parse_map(v: Option<&Value>) -> Result<Vec<(String, Status)>, SourceError> {
    let Some(v) = v else { return Ok(default_map()) };
    let obj = v.as_object().ok_or_else(|| bad("status_map must be an object"))?;
    if obj.is_empty() {
        return Err(bad("status_map must map at least one value"));
    }
    obj.iter()
        .map(|(k, v)| {
            let status = v
                .as_str()
                .and_then(|s| s.parse::<Status>().ok())
                .ok_or_else(|| bad(format!("status_map[{k:?}] must be a canonical status")))?;
            Ok((k.clone(), status))
        })
        .collect()
}

fn parse_schedule(v: Option<&Value>) -> Result<Vec<Duration>, SourceError> {
    let Some(v) = v else {
        return Ok(DEFAULT_SCHEDULE_SECS.into_iter().map(Duration::from_secs).collect());
    };
    let list = v.as_array().ok_or_else(|| bad("schedule must be a list of durations"))?;
    if list.is_empty() || list.len() > MAX_POLLS {
        return Err(bad(format!("schedule must have 1 to {MAX_POLLS} entries")));
    }
    list.iter()
        .map(|d| {
            let text =
                d.as_str().ok_or_else(|| bad("schedule entries are durations like \"5s\""))?;
            humantime::parse_duration(text).map_err(|_| bad(format!("invalid duration {text:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: Value) -> StatusSource {
        let mut v = json!({"url": "https://processing.example/status/1"});
        v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        StatusSource::from_json(&v).expect("valid source")
    }

    #[test]
    fn defaults_are_ukrcards() {
        let s = source(json!({}));
        assert_eq!(s.method, Method::Get);
        assert_eq!(s.status_pointer, "/orderStatus");
        let secs: Vec<u64> = s.schedule.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, DEFAULT_SCHEDULE_SECS);
        assert_eq!(s.delay_before(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_before(11), None);
        assert_eq!(StatusSource::from_json(&s.to_json()), Ok(s));
    }

    #[test]
    fn reads_numbers_and_strings_through_the_pointer() {
        let s = source(
            json!({"status_pointer": "/result/state", "status_map": {"2": "success", "DECLINED": "failed"}}),
        );
        let read = |body: &str| s.read(200, body.as_bytes());
        assert_eq!(read(r#"{"result":{"state":2}}"#).map(|r| r.status), Ok(Status::Success));
        assert_eq!(
            read(r#"{"result":{"state":"DECLINED"}}"#).map(|r| r.status),
            Ok(Status::Failed)
        );
        let kind = |r: Result<Reading, ReadFailure>| r.err().map(|f| f.kind);
        assert_eq!(kind(read(r#"{"result":{}}"#)), Some(ErrorKind::MissingField));
        assert_eq!(kind(read(r#"{"result":{"state":7}}"#)), Some(ErrorKind::Unmapped));
        assert_eq!(kind(read("<html>")), Some(ErrorKind::Malformed));
        assert_eq!(kind(s.read(503, b"{}")), Some(ErrorKind::HttpStatus));
    }

    #[test]
    fn post_sources_send_their_json_body() {
        let s = source(
            json!({"method": "POST", "body": {"orderId": "o-1"}, "headers": {"x-key": "k"}}),
        );
        let req = s.request();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("x-key"), Some("k"));
        assert_eq!(req.body, br#"{"orderId":"o-1"}"#);
    }

    #[test]
    fn refuses_bad_sources() {
        for bad in [
            json!({"url": "ftp://x.example/"}),
            json!({"url": "https://x.example/", "method": "PUT"}),
            json!({"url": "https://x.example/", "status_pointer": "orderStatus"}),
            json!({"url": "https://x.example/", "status_map": {"2": "paid"}}),
            json!({"url": "https://x.example/", "schedule": []}),
            json!({"url": "https://x.example/", "schedule": ["soon"]}),
            json!({"url": "https://x.example/", "headers": {"a": 1}}),
            json!({"url": "https://x.example/", "surprise": true}),
            json!("https://x.example/"),
        ] {
            assert!(StatusSource::from_json(&bad).is_err(), "{bad}");
        }
    }
}
