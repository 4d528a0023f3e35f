use super::*;

const T0: Timestamp = Timestamp(1_700_000_000_000); // 22:13:20 UTC

fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1000)
}

fn run(outcomes: &[(i64, bool)], rules: &HealthRules) -> Vec<HealthChange> {
    let mut h = Health::default();
    let mut out = Vec::new();
    for &(t, ok) in outcomes {
        let change = after_attempt(h, ok, at(t), rules);
        h = change.health.clone();
        out.push(change);
    }
    out
}

#[test]
fn failures_alert_once_at_the_threshold_and_a_success_recovers() {
    let rules = HealthRules { alert_after_failures: 3, ..HealthRules::default() };
    let mut outcomes: Vec<(i64, bool)> = (0..5).map(|i| (i, false)).collect();
    outcomes.push((10, true));
    outcomes.push((11, true));
    let changes = run(&outcomes, &rules);
    let alerts: Vec<_> = changes.iter().map(|c| c.alert).collect();
    use HealthAlert::*;
    assert_eq!(alerts, [None, None, Some(Failing), None, None, Some(Recovered), None]);
    let failing = &changes[4].health;
    assert_eq!((failing.consecutive_failures, failing.failing_since), (5, Some(at(0))));
    let back = &changes[5].health;
    assert_eq!((back.consecutive_failures, back.failing_since, back.alerted), (0, None, false));
    assert_eq!(back.last_failure_at, Some(at(4)));
    assert_eq!(back.last_success_at, Some(at(10)));
}

#[test]
fn a_success_below_the_threshold_sends_no_recovery() {
    let rules = HealthRules { alert_after_failures: 3, ..HealthRules::default() };
    let changes = run(&[(0, false), (1, false), (2, true)], &rules);
    assert!(changes.iter().all(|c| c.alert.is_none()));
}

#[test]
fn only_failures_for_the_whole_period_disable() {
    let rules = HealthRules { alert_after_failures: 100, disable_after: Duration::from_secs(100) };
    let changes = run(&[(0, false), (99, false), (100, false)], &rules);
    assert_eq!(changes.iter().map(|c| c.disable).collect::<Vec<_>>(), [false, false, true]);
    assert_eq!(changes[2].alert, Some(HealthAlert::Disabled));
    assert!(changes[2].health.alerted, "its recovery will be told");
    let more = run(&[(0, false), (100, false), (101, false)], &rules);
    let told: Vec<_> = more.iter().map(|c| (c.disable, c.alert)).collect();
    assert_eq!(told, [(false, None), (true, Some(HealthAlert::Disabled)), (true, None)], "once");
    let interrupted = run(&[(0, false), (50, true), (60, false), (150, false)], &rules);
    assert!(!interrupted.iter().any(|c| c.disable), "a success starts the period over");
}

#[test]
fn rates_weigh_the_hour_the_window_starts_in() {
    // 22:13:20: this hour 1 ok; the hour before (21:00–22:00) 3 ok, 1 failed.
    let h = Health {
        hours: vec![
            HourCount { hour: at(-3600).0 - at(-3600).0.rem_euclid(HOUR_MS), ok: 3, failed: 1 },
            HourCount { hour: at(0).0 - at(0).0.rem_euclid(HOUR_MS), ok: 1, failed: 0 },
        ],
        ..Health::default()
    };
    let hour = success_rate(&h, at(0), Duration::from_secs(3600)).expect("rate");
    // 46m40s of the previous hour are inside: weight 0.7778 → (1 + 3·w) / (1 + 4·w).
    let w = (3600.0 - 800.0) / 3600.0;
    assert!((hour - (1.0 + 3.0 * w) / (1.0 + 4.0 * w)).abs() < 1e-9, "{hour}");
    assert_eq!(success_rate(&h, at(0), Duration::from_secs(86_400)), Some(4.0 / 5.0));
    assert_eq!(success_rate(&h, at(3 * 86_400), Duration::from_secs(86_400)), None);
}

#[test]
fn a_day_of_hours_is_kept_and_no_more() {
    let outcomes: Vec<(i64, bool)> = (0..40).map(|i| (i * 3600, true)).collect();
    let last = run(&outcomes, &HealthRules::default()).pop().expect("change");
    assert_eq!(last.health.hours.len(), 25);
    assert_eq!(success_rate(&last.health, at(39 * 3600), Duration::from_secs(86_400)), Some(1.0));
}

#[test]
fn a_merchant_is_as_healthy_as_its_worst_destination() {
    let ok = Health { last_success_at: Some(T0), ..Health::default() };
    let failing = Health { consecutive_failures: 1, ..ok.clone() };
    let none = Health::default();
    assert_eq!(merchant_state([]), HealthState::Unknown);
    assert_eq!(merchant_state([(&none, false)]), HealthState::Unknown);
    assert_eq!(merchant_state([(&ok, false), (&none, false)]), HealthState::Healthy);
    assert_eq!(merchant_state([(&ok, false), (&failing, false)]), HealthState::Failing);
    assert_eq!(merchant_state([(&failing, false), (&ok, true)]), HealthState::Disabled);
}
