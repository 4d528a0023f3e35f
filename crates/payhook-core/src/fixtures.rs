//! Test fixtures: a merchant, an operation and an event to render, built in one line each.

use crate::dialect::Dialect;
use crate::ids::{EventId, MerchantId, OperationId};
use crate::model::{CallbackSettings, Event, Merchant, Operation};
use crate::signing::SigningSecret;
use crate::status::Status;
use crate::Timestamp;

pub const T0: Timestamp = Timestamp(1_618_221_790_000);

pub fn merchant(dialect: Dialect) -> Merchant {
    Merchant::new(
        "mer_1".parse().expect("valid id"),
        "Test shop",
        dialect,
        Some("https://merchant.example/cb".into()),
        SigningSecret::from_key(&[1u8; 32]),
        T0,
    )
}

pub fn operation(status: Status) -> Operation {
    Operation {
        id: OperationId::from_suffix("0f91bb90"),
        number: 245_786,
        merchant_id: MerchantId::from_suffix("1"),
        external_id: "order-1".into(),
        amount: 100_000,
        currency: "UAH".into(),
        kind: "purchase".into(),
        status,
        seq: 1,
        callback: CallbackSettings::default(),
        data: Default::default(),
        created_at: T0,
        updated_at: T0,
    }
}

pub fn event(op: Operation, previous_status: Status) -> Event {
    Event {
        id: EventId::from_suffix("1"),
        position: 1,
        operation_id: op.id.clone(),
        merchant_id: op.merchant_id.clone(),
        seq: op.seq,
        status: op.status,
        previous_status,
        event_key: None,
        created_at: op.updated_at,
        operation: op,
    }
}
