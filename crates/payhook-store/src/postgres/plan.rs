//! The delivery a status change owes, on PostgreSQL: planned by the lifecycle (with the
//! merchant and the disabled destinations each transaction reads once), a slot of this node's
//! dispatcher reserved when it is due now, then stored by one statement that also supersedes
//! what the change supersedes. [`Seen`] carries the transaction's hand-offs until its commit.

use super::rows::*;
use crate::columns::parse_id;
use crate::seal::Sealer;
use crate::{destination_host, mint_id, Claimed, Handoff, Reported, Slot, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::ids::{DeliveryId, MerchantId};
use payhook_core::lifecycle::{self, delivery, Supersede};
use payhook_core::model::{Delivery, DeliveryKind, Event, Merchant};
use payhook_core::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;

/// What a transaction has already read of merchants: a group of reports for one merchant
/// loads (and unseals) it once, and asks once per URL whether it is disabled. It also holds
/// the deliveries the transaction leased to this node's dispatcher, to hand over once the
/// transaction has committed; dropped instead (a rollback), their slots go back.
#[derive(Default)]
pub(super) struct Seen {
    merchants: HashMap<MerchantId, Arc<Merchant>>,
    disabled: HashMap<(MerchantId, String), bool>,
    handoff: Option<Arc<dyn Handoff>>,
    handed: Vec<(DeliveryId, Arc<Merchant>, Slot)>,
}

impl Seen {
    pub(super) fn new(handoff: Option<Arc<dyn Handoff>>) -> Seen {
        Seen { handoff, ..Seen::default() }
    }

    /// After the commit: gives the dispatcher each delivery leased to it, with the event as
    /// stored (its feed position included). A leased delivery whose item was rolled back to
    /// its savepoint is not among `reported`; its slot goes back.
    pub(super) fn hand_over<'a>(self, reported: impl Iterator<Item = &'a Reported>) {
        let (Some(h), false) = (self.handoff, self.handed.is_empty()) else { return };
        let mut stored: HashMap<&str, &Reported> =
            reported.filter_map(|r| r.delivery.as_ref().map(|d| (d.id.as_str(), r))).collect();
        for (id, merchant, slot) in self.handed {
            let Some(r) = stored.remove(id.as_str()) else { continue };
            let Some(delivery) = r.delivery.clone() else { continue };
            h.deliver(Claimed { delivery, event: r.event.clone(), merchant }, slot);
        }
    }

    async fn merchant<C: GenericClient>(
        &mut self,
        tx: &C,
        sealer: &Sealer,
        id: &MerchantId,
    ) -> Result<Arc<Merchant>, StoreError> {
        if let Some(m) = self.merchants.get(id) {
            return Ok(m.clone());
        }
        let m = Arc::new(load_merchant(tx, sealer, id).await?.ok_or(StoreError::NotFound)?);
        self.merchants.insert(id.clone(), m.clone());
        Ok(m)
    }

    async fn is_disabled<C: GenericClient>(
        &mut self,
        tx: &C,
        merchant: &MerchantId,
        url: &str,
    ) -> Result<bool, StoreError> {
        let key = (merchant.clone(), url.to_owned());
        if let Some(d) = self.disabled.get(&key) {
            return Ok(*d);
        }
        let sql = "SELECT 1 FROM disabled_destinations WHERE merchant_id = $1 AND url = $2";
        let d = exists(tx, sql, &[&merchant.as_str(), &url]).await?;
        self.disabled.insert(key, d);
        Ok(d)
    }
}

/// A change's delivery, built and (when due now) with a slot of this node's dispatcher
/// reserved, but not stored yet: [`PlannedDelivery::insert`], then
/// [`PlannedDelivery::finish`].
pub(super) struct PlannedDelivery {
    delivery: Delivery,
    supersede: Supersede,
    host: String,
    merchant: Arc<Merchant>,
    /// The dispatcher's node and lease, with the slot reserved for it.
    lease: Option<(String, Timestamp, Slot)>,
}

impl PlannedDelivery {
    /// Supersedes what the change supersedes and inserts this delivery (one statement); true
    /// when it was inserted leased.
    pub(super) async fn insert<C: GenericClient>(&self, tx: &C) -> Result<bool, StoreError> {
        let lease = self.lease.as_ref().map(|(node, until, _)| (node.as_str(), *until));
        supersede_and_insert(tx, &self.delivery, self.supersede, self.host.clone(), lease).await
    }

    /// The delivery, and whether it goes to the dispatcher after the commit: when it was
    /// inserted leased, its slot is kept in `seen` for the hand-over; otherwise the slot goes
    /// back here.
    pub(super) fn finish(self, seen: &mut Seen, leased: bool) -> (Option<Delivery>, bool) {
        match self.lease.filter(|_| leased) {
            Some((_, _, slot)) => {
                seen.handed.push((self.delivery.id.clone(), self.merchant, slot));
                (Some(self.delivery), true)
            }
            None => (Some(self.delivery), false),
        }
    }
}

/// Plans `event`'s delivery, if its dialect sends one; a slot is reserved when the delivery
/// is due now and the dispatcher has room. The slot is reserved before the statement learns
/// whether an older delivery is in flight (rare); the delivery is then inserted unleased and
/// the slot goes back.
pub(super) async fn plan_delivery<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    event: &Event,
    supersede: Supersede,
) -> Result<Option<PlannedDelivery>, StoreError> {
    let (op, now) = (&event.operation, supersede.at);
    let merchant = seen.merchant(tx, sealer, &op.merchant_id).await?;
    let Some(url) = delivery::destination(&merchant, op, DeliveryKind::Status) else {
        return Ok(None);
    };
    let disabled = seen.is_disabled(tx, &merchant.id, &url).await?;
    let id = parse_id(&mint_id(DeliveryId::PREFIX))?;
    let delivery = delivery::of_event(id, &merchant, event, url, disabled);
    let host = destination_host(&delivery.url);
    let handoff =
        seen.handoff.clone().filter(|_| lifecycle::may_hand_off(&merchant, &delivery, now));
    let lease = handoff.and_then(|h| {
        let slot = h.reserve(&host)?;
        Some((h.node().to_owned(), now.plus(h.lease()), slot))
    });
    Ok(Some(PlannedDelivery { delivery, supersede, host, merchant, lease }))
}

/// Stores a planned delivery: insert, then finish.
pub(super) async fn apply_delivery<C: GenericClient>(
    tx: &C,
    seen: &mut Seen,
    plan: PlannedDelivery,
) -> Result<(Option<Delivery>, bool), StoreError> {
    let leased = plan.insert(tx).await?;
    Ok(plan.finish(seen, leased))
}
