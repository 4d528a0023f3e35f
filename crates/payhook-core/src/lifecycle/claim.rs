//! The rules of a claim that are not SQL: which due deliveries are leased, superseded or left
//! to wait. The store finds the candidates (due, unleased, oldest due first) and answers two
//! questions about each; these rules decide.

use std::collections::HashMap;

/// A due, unleased delivery a claim found, with what per-operation order says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// The destination `host:port`, the unit of per-destination concurrency.
    pub host: String,
    /// A newer delivery of the operation exists.
    pub newer: bool,
    /// An older delivery of the operation is still pending and is not itself a candidate of
    /// this claim (a candidate older than another has a newer one, so it is superseded here).
    pub older_pending: bool,
}

/// What a claim does with its candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimChoice {
    /// A newer status of the operation exists: never sent.
    pub superseded: Vec<String>,
    /// Leased to the claiming node, in candidate order.
    pub leased: Vec<String>,
}

/// The hosts this node may not send more to: at or over `per_host_limit` in flight.
pub fn busy_hosts(in_flight: &HashMap<String, usize>, per_host_limit: usize) -> Vec<String> {
    let mut busy: Vec<String> =
        in_flight.iter().filter(|(_, n)| **n >= per_host_limit).map(|(h, _)| h.clone()).collect();
    busy.sort();
    busy
}

/// Chooses among `candidates` (oldest due first): a candidate with a newer delivery is
/// superseded; one with an older delivery still pending waits its turn (per-operation order);
/// the rest are leased, at most `limit`, keeping each host within `per_host_limit` counting
/// what is `in_flight` already. Work for a host at its limit waits, so a slow merchant delays
/// no other.
pub fn choose(
    candidates: Vec<Candidate>,
    in_flight: &HashMap<String, usize>,
    per_host_limit: usize,
    limit: usize,
) -> ClaimChoice {
    let mut in_flight = in_flight.clone();
    let mut choice = ClaimChoice::default();
    for c in candidates {
        if c.newer {
            choice.superseded.push(c.id);
            continue;
        }
        if choice.leased.len() >= limit || c.older_pending {
            continue;
        }
        let n = in_flight.entry(c.host).or_insert(0);
        if *n >= per_host_limit {
            continue;
        }
        *n += 1;
        choice.leased.push(c.id);
    }
    choice
}
