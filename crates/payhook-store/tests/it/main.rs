//! The store conformance suite: every case runs against SQLite and PostgreSQL alike.
//!
//! Each case is a generic `async fn(Arc<dyn Store>)` in a module below; [`conformance!`]
//! instantiates it twice, as `sqlite::<case>` (a temp file) and `postgres::<case>` (a fresh
//! schema on `PAYHOOK_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! A PostgreSQL server that cannot be reached fails the tests; nothing is skipped.

mod attempts;
mod claims;
mod dashboard;
mod fixtures;
mod handoff;
mod harness;
mod health;
mod keys;
mod merchants;
mod operations;
mod pg_only;
mod retention;
mod watches;

/// Defines `sqlite::$case` and `postgres::$case` tests for each `module::case`.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = crate::harness::sqlite();
                    crate::$module::$case(t.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = crate::harness::postgres().await;
                    crate::$module::$case(t.store.clone()).await;
                }
            )*
        }
    };
}

conformance! {
    merchants::merchant_round_trip,
    merchants::settings_are_set_once,
    merchants::merchants_are_listed_by_cursor_and_filtered,
    keys::a_merchant_holds_one_or_two_keys,
    keys::keys_of_another_merchant_or_none_are_not_found,
    keys::a_keys_use_is_recorded_to_the_hour,
    keys::admin_actions_are_audited_with_them,
    operations::register_is_idempotent,
    operations::invalid_transition_stores_nothing,
    operations::event_key_is_idempotent,
    operations::seq_grows_and_data_merges,
    operations::events_feed_in_order_by_cursor,
    operations::events_read_back_as_they_were,
    operations::report_supersedes_pending_deliveries,
    operations::report_keeps_a_delivery_in_flight,
    operations::no_delivery_without_destination,
    operations::a_batch_applies_one_operations_items_in_order,
    claims::claims_oldest_due_first,
    claims::older_in_flight_blocks_newer,
    claims::expired_lease_is_reclaimable,
    claims::per_host_limit_is_respected,
    claims::busy_hosts_are_excluded,
    claims::superseded_at_claim_when_newer_exists,
    claims::concurrent_claims_never_share_a_delivery,
    claims::next_due_at_follows_the_queue,
    claims::released_leases_are_claimable_again,
    claims::a_paused_merchants_deliveries_wait_until_it_is_resumed,
    attempts::delivered_is_final_and_logged,
    attempts::retry_waits_for_its_time,
    attempts::exhausted_is_final,
    attempts::gone_disables_the_destination,
    attempts::retry_becomes_superseded,
    attempts::an_attempt_of_an_unknown_delivery_is_not_found_and_changes_nothing,
    attempts::resend_starts_a_new_series,
    attempts::resend_is_refused_when_stale_or_in_flight,
    attempts::recovery_queues_each_operations_latest_ended_delivery_once,
    watches::registration_starts_a_watch,
    watches::due_watches_are_leased,
    watches::polls_move_the_watch_on,
    watches::a_final_status_finishes_the_watch,
    watches::an_exhausted_ws2mpi_watch_sends_a_poll_timeout,
    watches::concurrent_poll_claims_never_share_a_watch,
    dashboard::operations_are_listed_by_cursor,
    dashboard::operation_events_in_seq_order,
    dashboard::delivery_stats_count_states_per_merchant,
    dashboard::pending_backlog_counts_and_finds_the_oldest,
    handoff::a_due_delivery_is_handed_over_leased,
    handoff::without_a_free_slot_the_delivery_is_left_for_a_claim,
    handoff::a_newer_event_waits_for_the_older_in_flight,
    handoff::nothing_is_handed_over_once_the_dispatcher_is_gone,
    handoff::grouped_reports_are_handed_over_with_their_feed_positions,
    handoff::a_paused_merchants_delivery_is_not_handed_over,
    retention::history_goes_after_its_window_and_nothing_pending_does,
    health::attempts_move_the_health_on_and_alert_at_the_threshold,
    health::without_an_ops_webhook_nothing_is_queued,
    health::days_of_failures_disable_the_destination_until_recovery,
    health::alerts_wait_for_their_retry_and_go_to_one_node,
    health::a_merchants_alerts_keep_their_order_and_their_lease,
    retention::the_feed_refuses_a_cursor_into_purged_history,
    retention::operations_go_with_all_they_have_once_final_and_quiet,
    retention::old_polls_go_and_the_watch_stays,
}
