//! What both backends' purges share: the walk's window and the rule lists they bind.
//! Which rows may go is `payhook_core::lifecycle::retention`'s; the stores phrase it in SQL
//! over these lists, so neither names a state or a status of its own.

use crate::StoreError;
use payhook_core::lifecycle::retention::{final_statuses, CursorExpired, ENDED};
use payhook_core::model::WatchState;
use payhook_core::Timestamp;

/// The next slice of a walk: rows `(key, created_at)` read in key order after the walk's
/// position. The batch covers the keys up to `to`; the walk is `done` once a row is too young
/// to go (rows are created in key order, so the rest are younger) or the table ends.
pub(crate) fn window(
    rows: &[(i64, i64)],
    after: i64,
    before: Timestamp,
    limit: u32,
) -> (i64, bool) {
    let old = rows.iter().take_while(|(_, created)| *created < before.0).count();
    let to = if old == 0 { after } else { rows[old - 1].0 };
    (to, old < rows.len() || rows.len() < limit as usize)
}

/// The delivery states a purge may take, as a JSON array (SQLite's `json_each`).
pub(crate) fn ended_json() -> String {
    serde_json::to_string(&ended()).expect("strings serialize")
}

/// The delivery states a purge may take.
pub(crate) fn ended() -> Vec<&'static str> {
    ENDED.iter().map(|s| s.as_str()).collect()
}

/// The statuses that let an operation go, as a JSON array.
pub(crate) fn finals_json() -> String {
    serde_json::to_string(&finals()).expect("strings serialize")
}

/// The statuses that let an operation go.
pub(crate) fn finals() -> Vec<&'static str> {
    final_statuses().into_iter().map(|s| s.as_str()).collect()
}

/// The feed's refusal of a cursor into purged history, with the oldest position kept.
pub(crate) fn cursor_expired(expired: CursorExpired, oldest_kept: Option<i64>) -> StoreError {
    StoreError::CursorExpired { purged_through: expired.purged_through, oldest_kept }
}

/// The watch state that keeps an operation.
pub(crate) const ACTIVE_WATCH: WatchState = WatchState::Active;

#[cfg(test)]
mod tests {
    use super::window;
    use payhook_core::Timestamp;

    #[test]
    fn a_window_ends_at_the_first_row_too_young_to_go() {
        let rows = [(3, 10), (5, 20), (8, 30)];
        assert_eq!(window(&rows, 0, Timestamp(25), 3), (5, true));
        assert_eq!(window(&rows, 0, Timestamp(31), 3), (8, false));
        assert_eq!(window(&rows, 0, Timestamp(31), 4), (8, true));
        assert_eq!(window(&rows, 2, Timestamp(5), 3), (2, true));
        assert_eq!(window(&[], 9, Timestamp(5), 3), (9, true));
    }
}
