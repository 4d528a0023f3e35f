//! Table-driven tests of the lifecycle rules: each case is an input and what it must give.

use super::attempt::{transport_failure, unsent};
use super::report::{return_target, NoReturn, Supersede};
use super::*;
use crate::dialect::{Dialect, Verdict};
use crate::fixtures::{merchant, operation, T0};
use crate::ids::{DeliveryId, EventId};
use crate::model::{
    AttemptOutcome, CallbackSettings, Delivery, DeliveryKind, DeliveryState, ErrorKind, Poll,
    PollOutcome, WatchState,
};
use crate::retry::RetryPolicy;
use crate::status::Status;
use crate::status_source::{Reading, StatusSource};
use crate::Timestamp;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

fn report(status: Status, key: Option<&str>) -> StatusReport {
    StatusReport {
        operation_id: operation(Status::Pending).id,
        status,
        data: json!({"rrn": "42"}).as_object().cloned().expect("object"),
        event_key: key.map(str::to_owned),
    }
}

fn event_id() -> EventId {
    EventId::from_suffix("e1")
}

#[test]
fn a_report_is_checked_against_the_transition_table() {
    fn check(from: Status, to: Status, expect: Result<(i64, bool), Refusal>) {
        let got = apply_report(operation(from), &report(to, None), event_id(), ms(T0, 5))
            .map(|c| (c.event.seq, c.finishes_watch));
        assert_eq!(got, expect, "{from} → {to}");
    }
    let refused =
        |from, to| Err(Refusal::InvalidTransition(crate::status::InvalidTransition { from, to }));
    check(Status::Pending, Status::Success, Ok((2, false)));
    check(Status::Created, Status::Pending, Ok((2, false)));
    check(Status::Success, Status::Success, Ok((2, false)));
    check(Status::Success, Status::Refunded, Ok((2, false)));
    check(Status::Failed, Status::Success, refused(Status::Failed, Status::Success));
    check(Status::Success, Status::Pending, refused(Status::Success, Status::Pending));
    check(Status::Refunded, Status::Refunded, refused(Status::Refunded, Status::Refunded));
}

#[test]
fn an_accepted_report_plans_its_event_and_what_it_supersedes() {
    let now = ms(T0, 7);
    let change = apply_report(
        operation(Status::Pending),
        &report(Status::Success, Some("k")),
        event_id(),
        now,
    )
    .expect("accepted");
    let e = &change.event;
    assert_eq!((e.id.clone(), e.position, e.seq), (event_id(), 0, 2));
    assert_eq!((e.status, e.previous_status), (Status::Success, Status::Pending));
    assert_eq!((e.event_key.as_deref(), e.created_at), (Some("k"), now));
    assert_eq!(e.operation.status, Status::Success);
    assert_eq!((e.operation.seq, e.operation.updated_at), (2, now));
    assert_eq!(e.operation.data.get("rrn"), Some(&json!("42")), "the data is merged");
    assert!(change.data_changed);
    assert_eq!(change.supersede, Supersede { seq_below: 2, at: now });
}

#[test]
fn a_final_status_finishes_the_watch_of_a_watched_operation_only() {
    fn check(watched: bool, to: Status, expect: bool) {
        let mut op = operation(Status::Pending);
        op.callback.status_source = watched.then(|| json!({"url": "https://psp.example/s"}));
        let change = apply_report(op, &report(to, None), event_id(), T0).expect("accepted");
        assert_eq!(change.finishes_watch, expect, "watched {watched}, {to}");
    }
    check(true, Status::Success, true);
    check(true, Status::Expired, true);
    check(true, Status::Requires3ds, false);
    check(false, Status::Success, false);
}

#[test]
fn a_repeated_event_key_is_the_earlier_event_or_a_conflict() {
    let earlier = registration_event(operation(Status::Success), event_id(), T0);
    let mut keyed = earlier.clone();
    keyed.status = Status::Success;
    keyed.event_key = Some("k".into());
    assert_eq!(replay(keyed.clone(), &report(Status::Success, Some("k"))), Ok(keyed.clone()));
    assert_eq!(
        replay(keyed, &report(Status::Failed, Some("k"))),
        Err(Refusal::EventKeyConflict("k".into()))
    );
}

#[test]
fn registration_records_a_created_event_at_seq_zero() {
    let mut op = operation(Status::Created);
    op.seq = 0;
    let e = registration_event(op, event_id(), T0);
    assert_eq!(
        (e.seq, e.status, e.previous_status, e.event_key),
        (0, Status::Created, Status::Created, None)
    );
}

fn delivery_of(dialect: Dialect, disabled: bool) -> Delivery {
    let m = merchant(dialect);
    let op = operation(Status::Success);
    new_delivery(NewDelivery {
        id: DeliveryId::from_suffix("d1"),
        merchant: &m,
        operation: &op,
        event_id: event_id(),
        url: "https://merchant.example/cb".into(),
        kind: DeliveryKind::Status,
        disabled,
        now: T0,
    })
}

#[test]
fn a_new_delivery_is_due_now_unless_its_destination_is_disabled() {
    fn check(disabled: bool, expect: (DeliveryState, Option<Timestamp>, bool, Option<&str>)) {
        let d = delivery_of(Dialect::Standard, disabled);
        let got = (d.state, d.next_attempt_at, delivery::is_due(&d, T0), d.last_error.as_deref());
        assert_eq!(got, expect, "disabled {disabled}");
    }
    check(false, (DeliveryState::Pending, Some(T0), true, None));
    check(true, (DeliveryState::Cancelled, None, false, Some(delivery::DISABLED_DESTINATION)));
}

#[test]
fn a_new_delivery_takes_the_operations_then_the_merchants_then_the_dialects_policy() {
    let own = RetryPolicy::fixed(vec![Duration::from_secs(1)]);
    let merchants = RetryPolicy::fixed(vec![Duration::from_secs(2)]);
    let cases = [
        (Some(own.clone()), Some(merchants.clone()), own.clone()),
        (None, Some(merchants.clone()), merchants.clone()),
        (None, None, Dialect::Xpay.default_policy()),
    ];
    for (op_policy, merchant_policy, expect) in cases {
        let mut m = merchant(Dialect::Xpay);
        m.retry = merchant_policy;
        let mut op = operation(Status::Success);
        op.callback.retry = op_policy;
        let d = new_delivery(NewDelivery {
            id: DeliveryId::from_suffix("d1"),
            merchant: &m,
            operation: &op,
            event_id: event_id(),
            url: "https://merchant.example/cb".into(),
            kind: DeliveryKind::Status,
            disabled: false,
            now: T0,
        });
        assert_eq!((d.policy, d.dialect, d.seq), (expect, Dialect::Xpay, op.seq));
    }
}

#[test]
fn destinations_by_dialect_and_kind() {
    fn check(dialect: Dialect, status: Status, kind: DeliveryKind, expect: Option<&str>) {
        let m = merchant(dialect);
        let got = delivery::destination(&m, &operation(status), kind);
        assert_eq!(got.as_deref(), expect, "{dialect} {status} {kind:?}");
    }
    let cb = Some("https://merchant.example/cb");
    check(Dialect::Standard, Status::Success, DeliveryKind::Status, cb);
    check(Dialect::Standard, Status::Created, DeliveryKind::Status, None);
    check(Dialect::Standard, Status::Pending, DeliveryKind::PollTimeout, None);
    check(Dialect::Ws2mpi, Status::Pending, DeliveryKind::PollTimeout, cb);
}

fn retry(kind: ErrorKind, after: Option<u64>) -> Verdict {
    Verdict::Retry { kind, detail: "boom".into(), retry_after: after.map(Duration::from_secs) }
}

#[test]
fn a_verdict_gives_the_attempts_outcome_and_the_next_step() {
    let now = ms(T0, 1_000);
    let mut d = delivery_of(Dialect::Standard, false);
    d.policy = RetryPolicy::fixed(vec![Duration::from_secs(5), Duration::from_secs(60)]);
    let check =
        |made: u32, verdict: Verdict, expect: (AttemptOutcome, Option<ErrorKind>, NextStep)| {
            let mut d = d.clone();
            d.series_attempts = made;
            let j = judge(&verdict, &d, now, || 0.0);
            assert_eq!((j.outcome, j.error_kind, j.next), expect, "{verdict:?} after {made}");
        };
    use AttemptOutcome::{Delivered, Permanent, Retry};
    check(0, Verdict::Delivered, (Delivered, None, NextStep::Delivered));
    check(
        0,
        retry(ErrorKind::Timeout, None),
        (Retry, Some(ErrorKind::Timeout), NextStep::RetryAt(ms(now, 5_000))),
    );
    check(
        1,
        retry(ErrorKind::HttpStatus, None),
        (Retry, Some(ErrorKind::HttpStatus), NextStep::RetryAt(ms(now, 60_000))),
    );
    check(
        0,
        retry(ErrorKind::HttpStatus, Some(30)),
        (Retry, Some(ErrorKind::HttpStatus), NextStep::RetryAt(ms(now, 30_000))),
    );
    check(
        2,
        retry(ErrorKind::Connect, None),
        (Permanent, Some(ErrorKind::Connect), NextStep::Exhausted),
    );
    check(
        0,
        Verdict::Gone,
        (Permanent, Some(ErrorKind::HttpStatus), NextStep::Cancel(CancelReason::Gone)),
    );
    let blocked = Verdict::Permanent { kind: ErrorKind::BlockedTarget, detail: "no".into() };
    check(
        0,
        blocked,
        (Permanent, Some(ErrorKind::BlockedTarget), NextStep::Cancel(CancelReason::BlockedTarget)),
    );
    let refused = Verdict::Permanent { kind: ErrorKind::AckRejected, detail: "no".into() };
    check(
        0,
        refused,
        (Permanent, Some(ErrorKind::AckRejected), NextStep::Cancel(CancelReason::Permanent)),
    );
}

#[test]
fn only_a_retry_draws_a_jitter_sample() {
    let d = delivery_of(Dialect::Standard, false);
    let never = || -> f64 { panic!("a jitter sample drawn for an attempt that is not retried") };
    assert_eq!(judge(&Verdict::Delivered, &d, T0, never).next, NextStep::Delivered);
    assert_eq!(judge(&Verdict::Gone, &d, T0, never).next, NextStep::Cancel(CancelReason::Gone));
}

#[test]
fn an_exchange_without_an_answer_retries_unless_the_target_is_forbidden() {
    let check = |kind: ErrorKind, expect_retry: bool| {
        let v = transport_failure(kind, "x".into());
        assert_eq!(matches!(v, Verdict::Retry { .. }), expect_retry, "{kind:?}");
    };
    check(ErrorKind::BlockedTarget, false);
    check(ErrorKind::Dns, true);
    check(ErrorKind::Connect, true);
    check(ErrorKind::Timeout, true);
    let j = unsent(ErrorKind::Render, "no key".into());
    assert_eq!(
        (j.outcome, j.next),
        (AttemptOutcome::Permanent, NextStep::Cancel(CancelReason::Permanent))
    );
}

#[test]
fn the_next_step_settles_the_deliverys_state() {
    let at = ms(T0, 9);
    let check = |next: NextStep, newer: bool, expect: (DeliveryState, Option<Timestamp>, bool)| {
        let s = settle(&next, newer);
        assert_eq!(
            (s.state, s.next_attempt_at, s.disable_destination),
            expect,
            "{next:?} newer {newer}"
        );
    };
    check(NextStep::Delivered, false, (DeliveryState::Delivered, None, false));
    check(NextStep::Delivered, true, (DeliveryState::Delivered, None, false));
    check(NextStep::RetryAt(at), false, (DeliveryState::Pending, Some(at), false));
    check(NextStep::RetryAt(at), true, (DeliveryState::Superseded, None, false));
    check(NextStep::Exhausted, true, (DeliveryState::Exhausted, None, false));
    check(NextStep::Cancel(CancelReason::Gone), false, (DeliveryState::Cancelled, None, true));
    check(
        NextStep::Cancel(CancelReason::BlockedTarget),
        false,
        (DeliveryState::Cancelled, None, false),
    );
    check(
        NextStep::Cancel(CancelReason::Permanent),
        false,
        (DeliveryState::Cancelled, None, false),
    );
    assert!(NextStep::RetryAt(at).asks_for_newer());
    assert!(!NextStep::Exhausted.asks_for_newer());
}

fn cand(id: &str, host: &str, newer: bool, older_pending: bool) -> Candidate {
    Candidate { id: id.into(), host: host.into(), newer, older_pending }
}

#[test]
fn a_claim_supersedes_waits_and_leases_within_its_limits() {
    let check = |cands: Vec<Candidate>,
                 in_flight: &[(&str, usize)],
                 per_host: usize,
                 limit: usize,
                 expect: (&[&str], &[&str])| {
        let in_flight: HashMap<String, usize> =
            in_flight.iter().map(|(h, n)| (h.to_string(), *n)).collect();
        let c = choose(cands, &in_flight, per_host, limit);
        assert_eq!(
            (c.superseded.as_slice(), c.leased.as_slice()),
            (
                expect.0.iter().map(|s| s.to_string()).collect::<Vec<_>>().as_slice(),
                expect.1.iter().map(|s| s.to_string()).collect::<Vec<_>>().as_slice()
            )
        );
    };
    // Newer exists: superseded, even past the limit.
    check(
        vec![cand("a", "h", true, false), cand("b", "h", false, false)],
        &[],
        8,
        1,
        (&["a"], &["b"]),
    );
    check(
        vec![cand("b", "h", false, false), cand("a", "h", true, false)],
        &[],
        8,
        1,
        (&["a"], &["b"]),
    );
    // An older one still pending holds the newer back.
    check(vec![cand("a", "h", false, true)], &[], 8, 8, (&[], &[]));
    // The host limit counts what is in flight already; other hosts go on.
    check(
        vec![
            cand("a", "h", false, false),
            cand("b", "h", false, false),
            cand("c", "g", false, false),
        ],
        &[("h", 1)],
        2,
        8,
        (&[], &["a", "c"]),
    );
    check(
        vec![cand("a", "h", false, false), cand("b", "g", false, false)],
        &[],
        1,
        1,
        (&[], &["a"]),
    );
}

#[test]
fn busy_hosts_are_those_at_their_limit() {
    let in_flight: HashMap<String, usize> =
        [("a".into(), 2), ("b".into(), 1), ("c".into(), 3)].into();
    assert_eq!(busy_hosts(&in_flight, 2), vec!["a".to_owned(), "c".to_owned()]);
    assert!(busy_hosts(&HashMap::new(), 1).is_empty());
}

#[test]
fn merchants_are_checked_against_their_dialects_rules() {
    let check = |edit: &dyn Fn(&mut crate::model::Merchant), expect: Option<&str>| {
        let mut m = merchant(Dialect::Standard);
        edit(&mut m);
        assert_eq!(check_merchant(&m).err().map(|v| v.code), expect);
    };
    check(&|_| {}, None);
    check(&|m| m.dialect = Dialect::Uapay, Some("allowed_callback_urls_required"));
    check(
        &|m| {
            m.dialect = Dialect::Uapay;
            m.allowed_callback_urls = vec!["https://merchant.example/".into()];
        },
        None,
    );
    check(
        &|m| m.allowed_callback_urls = vec!["https://other.example/".into()],
        Some("callback_url_not_allowed"),
    );
    check(&|m| m.encryption_key = Some(json!({"kty": "oct"})), Some("invalid_encryption_key"));
    check(
        &|m| {
            m.settings.insert("nope".into(), json!(1));
        },
        Some("unknown_setting"),
    );
    check(
        &|m| {
            m.settings.insert("ecom_operations_field".into(), json!("x"));
        },
        Some("invalid_setting"),
    );
    check(
        &|m| {
            m.settings.insert("ecom_operations_field".into(), json!("operations"));
        },
        None,
    );
}

#[test]
fn operations_are_checked_against_their_dialects_rules() {
    let check = |dialect: Dialect,
                 edit: &dyn Fn(&mut crate::model::Merchant, &mut CallbackSettings),
                 external_id: &str,
                 expect: Option<(&str, &str)>| {
        let mut m = merchant(dialect);
        let mut cb = CallbackSettings::default();
        edit(&mut m, &mut cb);
        let got = check_operation(&m, dialect, &cb, external_id).err().map(|v| (v.code, v.field));
        assert_eq!(got, expect, "{dialect}");
    };
    let none = |_: &mut crate::model::Merchant, _: &mut CallbackSettings| {};
    check(Dialect::Standard, &none, "order-1", None);
    check(
        Dialect::Standard,
        &|m, _| m.callback_url = None,
        "o",
        Some(("callback_url_required", "callback_url")),
    );
    check(Dialect::Ws2mpi, &none, &"x".repeat(33), Some(("field_too_long", "external_id")));
    check(Dialect::Ws2mpi, &none, &"x".repeat(32), None);
    check(Dialect::Uapay, &none, "o", Some(("callback_url_not_allowed", "callback_url")));
    check(
        Dialect::Xpay,
        &|m, cb| {
            m.callback_url = None;
            cb.success_url = Some("https://merchant.example/ok".into());
        },
        "o",
        Some(("callback_url_required", "fail_url")),
    );
    check(Dialect::Xpay, &none, "o", None);
    check(
        Dialect::Standard,
        &|m, _| m.allowed_callback_urls = vec!["https://merchant.example/cb".into()],
        "o",
        None,
    );
    check(
        Dialect::Standard,
        &|_, cb| cb.callback_url = Some("https://elsewhere.example/".into()),
        "o",
        None,
    );
    check(
        Dialect::Standard,
        &|m, cb| {
            m.allowed_callback_urls = vec!["https://merchant.example/".into()];
            cb.callback_url = Some("https://elsewhere.example/".into());
        },
        "o",
        Some(("callback_url_not_allowed", "callback_url")),
    );
    check(
        Dialect::Ecom,
        &|_, cb| cb.encrypt = true,
        "o",
        Some(("encryption_key_missing", "encrypt")),
    );
}

fn poll(number: u32, outcome: PollOutcome, mapped: Option<Status>) -> Poll {
    Poll {
        operation_id: operation(Status::Pending).id,
        number,
        started_at: T0,
        duration_ms: 1,
        request: "GET x".into(),
        response_status: Some(200),
        response_body: None,
        read: None,
        mapped,
        outcome,
        error_kind: None,
        error: None,
    }
}

#[test]
fn after_a_poll_the_watch_goes_on_finishes_or_gives_up() {
    let source = StatusSource::from_json(
        &json!({"url": "https://psp.example/s", "schedule": ["10s", "1m"]}),
    )
    .expect("source");
    let now = ms(T0, 3);
    let check =
        |p: Poll, expect: PollNext| assert_eq!(after_poll(&source, &p, now), expect, "{p:?}");
    check(poll(1, PollOutcome::Changed, Some(Status::Success)), PollNext::Finished);
    check(poll(1, PollOutcome::Unchanged, Some(Status::Pending)), PollNext::At(ms(now, 60_000)));
    check(poll(1, PollOutcome::Failed, Some(Status::Success)), PollNext::At(ms(now, 60_000)));
    check(poll(2, PollOutcome::Unchanged, Some(Status::Pending)), PollNext::Exhausted);
    assert_eq!(PollNext::At(now).watch_state(), (WatchState::Active, Some(now)));
    assert_eq!(PollNext::Finished.watch_state(), (WatchState::Finished, None));
    assert_eq!(PollNext::Exhausted.watch_state(), (WatchState::Exhausted, None));
    assert!(PollNext::Exhausted.owes_poll_timeout() && !PollNext::Finished.owes_poll_timeout());
}

#[test]
fn a_reading_reports_only_a_status_the_operation_does_not_have() {
    let op = operation(Status::Pending);
    let reading = |status| Reading { raw: "x".into(), status };
    assert!(watch::report_of(&op, &reading(Status::Pending), 1).is_none());
    let r = watch::report_of(&op, &reading(Status::Success), 3).expect("a report");
    assert_eq!((r.status, r.event_key.as_deref()), (Status::Success, Some("status_source:poll:3")));
}

#[test]
fn the_return_url_answers_once_the_status_is_final() {
    let check = |status: Status, url: Option<&str>, expect: Result<&str, NoReturn>| {
        let mut op = operation(status);
        op.callback.return_url = url.map(str::to_owned);
        assert_eq!(return_target(&op), expect, "{status} {url:?}");
    };
    check(Status::Success, Some("https://shop.example/back"), Ok("https://shop.example/back"));
    check(Status::Pending, Some("https://shop.example/back"), Err(NoReturn::NotFinal));
    check(Status::Success, None, Err(NoReturn::NoUrl));
}

fn ms(t: Timestamp, n: i64) -> Timestamp {
    Timestamp(t.0 + n)
}

#[test]
fn a_status_change_owes_its_delivery_as_of_the_events_time() {
    let m = merchant(Dialect::Standard);
    let event = registration_event(operation(Status::Success), event_id(), ms(T0, 40));
    let url = "https://merchant.example/cb".to_owned();
    let d = delivery::of_event(DeliveryId::from_suffix("d2"), &m, &event, url.clone(), false);
    let expect = new_delivery(NewDelivery {
        id: DeliveryId::from_suffix("d2"),
        merchant: &m,
        operation: &event.operation,
        event_id: event.id.clone(),
        url,
        kind: DeliveryKind::Status,
        disabled: false,
        now: ms(T0, 40),
    });
    assert_eq!(d, expect);
}

#[test]
fn retention_settings_keep_operations_at_least_as_long_as_their_history() {
    fn check(history: u64, operations: u64, expect: Result<(), &str>) {
        let got = Retention::new(Duration::from_secs(history), Duration::from_millis(operations))
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (&got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(msg), Err(part)) => assert!(msg.contains(part), "{history}/{operations}: {msg}"),
            _ => panic!("{history}s / {operations}ms: got {got:?}, expected {expect:?}"),
        }
    }
    check(30 * 86_400, 0, Ok(()));
    check(0, 0, Ok(()));
    check(60, 60_000, Ok(()));
    check(60, 59_999, Err("shorter than retention_history"));
    check(0, 90_000, Err("shorter than retention_history"));
    check(1, 500, Err("at least 1s"));
}

#[test]
fn a_purge_plan_cuts_at_now_minus_each_retention() {
    let now = ms(T0, 100_000);
    let r = Retention::new(Duration::from_secs(30), Duration::from_secs(90)).expect("valid");
    let plan = r.plan(now);
    assert_eq!(plan.history_before, Some(ms(T0, 70_000)));
    assert_eq!(plan.operations_before, Some(ms(T0, 10_000)));
    let keep_ops = Retention::new(Duration::from_secs(30), Duration::ZERO).expect("valid");
    assert_eq!(keep_ops.plan(now).operations_before, None);
    assert_eq!(
        Retention::FOREVER.plan(now),
        PurgePlan { history_before: None, operations_before: None }
    );
}

#[test]
fn a_feed_cursor_below_the_purged_positions_is_refused() {
    fn check(after: i64, purged_through: i64, expect: bool) {
        assert_eq!(
            check_cursor(after, purged_through).is_err(),
            expect,
            "{after} / {purged_through}"
        );
    }
    check(0, 0, false);
    check(0, 500, false);
    check(499, 500, true);
    check(1, 500, true);
    check(500, 500, false);
    check(501, 500, false);
    check(7, 0, false);
}

#[test]
fn only_ended_deliveries_and_final_operations_are_purgeable() {
    assert!(!retention::ENDED.contains(&DeliveryState::Pending));
    assert_eq!(retention::ENDED.len() + 1, DeliveryState::ALL.len());
    let finals = retention::final_statuses();
    assert!(!finals.contains(&Status::Pending) && !finals.contains(&Status::Created));
    assert!(finals.contains(&Status::Success) && finals.contains(&Status::Refunded));
}

#[test]
fn pause_resume_and_archive_move_a_merchant_and_archived_is_the_end() {
    use crate::model::MerchantState::{Active, Archived as Gone, Paused};
    use merchant::MerchantAction::{Archive, Pause, Resume};
    fn check(
        from: crate::model::MerchantState,
        action: MerchantAction,
        expect: Result<crate::model::MerchantState, Archived>,
    ) {
        assert_eq!(change_state(from, action), expect, "{from:?} {action:?}");
    }
    check(Active, Pause, Ok(Paused));
    check(Paused, Pause, Ok(Paused));
    check(Paused, Resume, Ok(Active));
    check(Active, Resume, Ok(Active));
    check(Active, Archive, Ok(Gone));
    check(Paused, Archive, Ok(Gone));
    check(Gone, Archive, Ok(Gone));
    check(Gone, Pause, Err(Archived));
    check(Gone, Resume, Err(Archived));
}

#[test]
fn a_paused_merchants_deliveries_are_not_handed_off_and_an_archived_one_takes_no_operation() {
    use crate::model::MerchantState;
    let mut m = merchant(Dialect::Standard);
    let d = delivery_of(Dialect::Standard, false);
    for (state, hand_off, accepts) in [
        (MerchantState::Active, true, true),
        (MerchantState::Paused, false, true),
        (MerchantState::Archived, true, false),
    ] {
        m.state = state;
        assert_eq!(may_hand_off(&m, &d, T0), hand_off, "{state:?}");
        assert_eq!(accepts_operations(&m).is_ok(), accepts, "{state:?}");
    }
    let mut later = delivery_of(Dialect::Standard, false);
    later.next_attempt_at = Some(ms(T0, 1));
    assert!(!may_hand_off(&merchant(Dialect::Standard), &later, T0), "not due yet");
}

#[test]
fn recovery_takes_exhausted_and_disabled_destination_deliveries_only() {
    use recovery::{is_recoverable, GONE};
    let check = |state, error: Option<&str>, expect: bool| {
        assert_eq!(is_recoverable(state, error), expect, "{state:?} {error:?}");
    };
    check(DeliveryState::Exhausted, Some("HTTP 503"), true);
    check(DeliveryState::Cancelled, Some(GONE), true);
    check(DeliveryState::Cancelled, Some(delivery::DISABLED_DESTINATION), true);
    check(DeliveryState::Cancelled, Some("blocked_target"), false);
    check(DeliveryState::Cancelled, None, false);
    check(DeliveryState::Delivered, None, false);
    check(DeliveryState::Superseded, None, false);
    check(DeliveryState::Pending, None, false);
    assert!(recovery::check_since(T0, T0).is_ok());
    assert!(recovery::check_since(ms(T0, 1), T0).is_err());
}
