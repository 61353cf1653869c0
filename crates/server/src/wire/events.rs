//! Events as the contract encodes them (`marketing.v1.Event`): the use cases describe a change
//! with the domain values it left, these make the outbox rows of it (the payload is an
//! `Event` holding only its `payload` oneof; the envelope is the row's columns), and
//! [`event_to_proto`] makes a stored row an `Event` again.

use marketing_domain::{
    MarketingError, MemberId, RequestId, TenantId, UnixMicros,
    auth::{ApiClient, Tenants},
    coupon_code::CodeKind,
    coupon_template::CouponTemplate,
    points::{Entry, TxType},
    points_rule::PointsRule,
    tenant_settings::TenantSettings,
    user_coupon::UserCoupon,
};
use marketing_proto::v1::{self as pb, event::Payload};
use marketing_storage::{
    events::{NewEvent, StoredEvent},
    reminders::ExpiringLot,
};
use prost::Message;

use super::convert::{
    code_kind_to_proto, coupon_to_proto, entry_to_proto, rule_to_proto, settings_to_proto,
    template_to_proto, timestamp,
};

/// What a change did to a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateChanged {
    Created,
    Updated,
    Enabled,
    Disabled,
    /// Stock added (negative: removed).
    StockAdded(i64),
    Archived,
    /// Codes of a kind added (a shared code, or a generation's unique codes).
    CodesAdded(i32, CodeKind),
}

impl TemplateChanged {
    fn event_type(self) -> &'static str {
        match self {
            Self::Created => "coupon_template.created",
            Self::Updated => "coupon_template.updated",
            Self::Enabled => "coupon_template.enabled",
            Self::Disabled => "coupon_template.disabled",
            Self::StockAdded(_) => "coupon_template.stock_added",
            Self::Archived => "coupon_template.archived",
            Self::CodesAdded(..) => "coupon_template.codes_added",
        }
    }
}

/// What a change did to a member's coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponChanged {
    Claimed,
    /// Claimed with a code of this kind.
    ClaimedByCode(CodeKind),
    Distributed,
    Locked,
    Used,
    Released,
    Returned,
    Revoked,
    Expired,
    Unlocked,
    /// A reminder that it expires soon (nothing changed).
    Expiring,
}

impl CouponChanged {
    fn event_type(self) -> &'static str {
        match self {
            Self::Claimed | Self::ClaimedByCode(_) | Self::Distributed => "coupon.claimed",
            Self::Locked => "coupon.locked",
            Self::Used => "coupon.used",
            Self::Released => "coupon.released",
            Self::Returned => "coupon.returned",
            Self::Revoked => "coupon.revoked",
            Self::Expired => "coupon.expired",
            Self::Unlocked => "coupon.unlocked",
            Self::Expiring => "coupon.expiring",
        }
    }

    fn channel(self) -> pb::ClaimChannel {
        match self {
            Self::Claimed => pb::ClaimChannel::Claim,
            Self::Distributed => pb::ClaimChannel::Distribution,
            Self::ClaimedByCode(_) => pb::ClaimChannel::Code,
            _ => pb::ClaimChannel::Unspecified,
        }
    }

    fn code_kind(self) -> pb::CouponCodeKind {
        match self {
            Self::ClaimedByCode(kind) => code_kind_to_proto(kind),
            _ => pb::CouponCodeKind::Unspecified,
        }
    }
}

fn payload(payload: Payload) -> Vec<u8> {
    pb::Event {
        payload: Some(payload),
        ..pb::Event::default()
    }
    .encode_to_vec()
}

/// The event of a template change (by `request`, at the template's update time).
pub fn template_event(
    change: TemplateChanged,
    template: &CouponTemplate,
    request: &RequestId,
) -> NewEvent {
    let stock_added = match change {
        TemplateChanged::StockAdded(amount) => amount,
        _ => 0,
    };
    let (codes_added, code_kind) = match change {
        TemplateChanged::CodesAdded(count, kind) => (count, code_kind_to_proto(kind)),
        _ => (0, pb::CouponCodeKind::Unspecified),
    };
    NewEvent {
        tenant_id: template.tenant_id.clone(),
        event_type: change.event_type(),
        aggregate_type: "coupon_template",
        aggregate_id: template.id.to_string(),
        member_id: None,
        occurred_at: template.updated_at,
        request_id: Some(request.as_str().to_owned()),
        actor: template.actor.clone(),
        payload: payload(Payload::CouponTemplate(pb::CouponTemplateEvent {
            coupon_template: Some(template_to_proto(template)),
            stock_added,
            codes_added,
            code_kind: code_kind as i32,
        })),
    }
}

/// The event of a coupon change at `at` (`request` is `None` for the sweeper's).
pub fn coupon_event(
    change: CouponChanged,
    coupon: &UserCoupon,
    request: Option<&RequestId>,
    at: UnixMicros,
) -> NewEvent {
    NewEvent {
        tenant_id: coupon.tenant_id.clone(),
        event_type: change.event_type(),
        aggregate_type: "user_coupon",
        aggregate_id: coupon.id.to_string(),
        member_id: Some(coupon.member_id.as_str().to_owned()),
        occurred_at: at,
        request_id: request.map(|r| r.as_str().to_owned()),
        // A reminder is the server's own; a change names whoever made it.
        actor: match change {
            CouponChanged::Expiring => None,
            _ => coupon.actor.clone(),
        },
        payload: payload(Payload::UserCoupon(pb::UserCouponEvent {
            user_coupon: Some(without_envelope_coupon(coupon_to_proto(coupon, at))),
            channel: change.channel() as i32,
            code_kind: change.code_kind() as i32,
        })),
    }
}

/// The event of a rule change (by `request`, at the rule's update time).
pub fn rule_event(created: bool, rule: &PointsRule, request: &RequestId) -> NewEvent {
    NewEvent {
        tenant_id: rule.tenant_id.clone(),
        event_type: if created {
            "points_rule.created"
        } else {
            "points_rule.updated"
        },
        aggregate_type: "points_rule",
        aggregate_id: rule.id.to_string(),
        member_id: None,
        occurred_at: rule.updated_at,
        request_id: Some(request.as_str().to_owned()),
        actor: rule.actor.clone(),
        payload: payload(Payload::PointsRule(pb::PointsRuleEvent {
            points_rule: Some(rule_to_proto(rule)),
        })),
    }
}

/// The event of one ledger entry of `member`'s account.
pub fn points_event(tenant: &TenantId, member: &MemberId, entry: &Entry) -> NewEvent {
    let event_type = match entry.tx_type {
        TxType::Earn => "points.earned",
        TxType::Deduct => "points.deducted",
        TxType::Freeze => "points.frozen",
        TxType::Confirm => "points.confirmed",
        TxType::Release => "points.released",
        TxType::Refund => "points.refunded",
        TxType::Expire => "points.expired",
        TxType::Adjust => "points.adjusted",
    };
    NewEvent {
        tenant_id: tenant.clone(),
        event_type,
        aggregate_type: "points_account",
        aggregate_id: member.as_str().to_owned(),
        member_id: Some(member.as_str().to_owned()),
        occurred_at: entry.created_at,
        request_id: entry.meta.request_id.clone(),
        actor: entry.meta.actor.clone(),
        payload: payload(Payload::Points(pb::PointsEvent {
            transaction: Some(without_envelope_entry(entry_to_proto(
                tenant, member, entry,
            ))),
            expiring: None,
        })),
    }
}

/// The reminder that `lot`'s points expire soon, recorded by the sweeper at `at`.
pub fn points_expiring_event(
    lot: &ExpiringLot,
    at: UnixMicros,
) -> Result<NewEvent, MarketingError> {
    let tenant = TenantId::parse("tenant_id", &lot.tenant_id)
        .map_err(|_| MarketingError::internal("a stored lot's tenant id does not parse"))?;
    Ok(NewEvent {
        tenant_id: tenant,
        event_type: "points.expiring",
        aggregate_type: "points_account",
        aggregate_id: lot.member_id.clone(),
        member_id: Some(lot.member_id.clone()),
        occurred_at: at,
        request_id: None,
        actor: None,
        payload: payload(Payload::Points(pb::PointsEvent {
            transaction: None,
            expiring: Some(pb::PointsExpiring {
                lot_id: lot.id.to_string(),
                points: lot.points,
                expire_time: Some(timestamp(lot.expires_at)),
            }),
        })),
    })
}

/// The events of an API client created (`revoked` unset) or revoked at `at`: one in each
/// tenant it may act for (none for a client of every tenant: an operator's credential).
pub fn client_events(
    client: &ApiClient,
    revoked: Option<UnixMicros>,
    at: UnixMicros,
) -> Vec<NewEvent> {
    let Tenants::Only(tenants) = &client.tenants else {
        return Vec::new();
    };
    let message = pb::ApiClientEvent {
        name: client.name.clone(),
        role: client.role.as_str().to_owned(),
        tenant_ids: tenants.iter().map(|t| t.as_str().to_owned()).collect(),
        revoke_time: revoked.map(timestamp),
    };
    tenants
        .iter()
        .map(|tenant| NewEvent {
            tenant_id: tenant.clone(),
            event_type: if revoked.is_some() {
                "api_client.revoked"
            } else {
                "api_client.created"
            },
            aggregate_type: "api_client",
            aggregate_id: client.name.clone(),
            member_id: None,
            occurred_at: at,
            request_id: None,
            actor: None,
            payload: payload(Payload::ApiClient(message.clone())),
        })
        .collect()
}

/// The event of a tenant's settings updated (by `request`, at their update time).
pub fn settings_event(settings: &TenantSettings, request: &RequestId) -> NewEvent {
    NewEvent {
        tenant_id: settings.tenant_id.clone(),
        event_type: "tenant_settings.updated",
        aggregate_type: "tenant_settings",
        aggregate_id: settings.tenant_id.to_string(),
        member_id: None,
        occurred_at: settings.updated_at.unwrap_or(UnixMicros(0)),
        request_id: Some(request.as_str().to_owned()),
        actor: settings.actor.clone(),
        payload: payload(Payload::TenantSettings(pb::TenantSettingsEvent {
            tenant_settings: Some(settings_to_proto(settings)),
        })),
    }
}

// A payload does not store what its row's columns hold already (the envelope: ids, tenant,
// member, request id, actor, time); `event_to_proto` puts it back. A claim's event is a third
// smaller for it, and it is written under the template's lock.

fn without_envelope_coupon(mut coupon: pb::UserCoupon) -> pb::UserCoupon {
    coupon.id.clear();
    coupon.tenant_id.clear();
    coupon.member_id.clear();
    coupon
}

fn without_envelope_entry(mut entry: pb::PointsTransaction) -> pb::PointsTransaction {
    entry.tenant_id.clear();
    entry.member_id.clear();
    entry.request_id.clear();
    entry.actor.clear();
    entry.create_time = None;
    entry
}

/// `field`, when empty (a payload stored without it), is `envelope`'s.
fn restore(field: &mut String, envelope: &str) {
    if field.is_empty() {
        envelope.clone_into(field);
    }
}

/// Puts back in the payload what it was stored without.
fn with_envelope(message: &mut pb::Event) {
    match &mut message.payload {
        Some(Payload::UserCoupon(pb::UserCouponEvent {
            user_coupon: Some(coupon),
            ..
        })) => {
            restore(&mut coupon.id, &message.aggregate_id);
            restore(&mut coupon.tenant_id, &message.tenant_id);
            restore(&mut coupon.member_id, &message.member_id);
        }
        Some(Payload::Points(pb::PointsEvent {
            transaction: Some(entry),
            ..
        })) => {
            restore(&mut entry.tenant_id, &message.tenant_id);
            restore(&mut entry.member_id, &message.member_id);
            restore(&mut entry.request_id, &message.request_id);
            restore(&mut entry.actor, &message.actor);
            if entry.create_time.is_none() {
                entry.create_time = message.create_time;
            }
        }
        _ => {}
    }
}

/// A stored event as the contract encodes it, without decoding its payload: the envelope
/// encoded, then the stored payload (an `Event` holding only its oneof), then what the payload
/// was stored without. Encoded messages of one type concatenated parse as one, merged (an
/// embedded message met twice is merged field by field), so this is `event_to_proto`'s
/// encoding, at a fraction of the cost: the relay sends every event.
pub fn event_bytes(event: StoredEvent) -> Vec<u8> {
    let restore = match event.aggregate_type.as_str() {
        "user_coupon" => Some(Payload::UserCoupon(pb::UserCouponEvent {
            user_coupon: Some(pb::UserCoupon {
                id: event.aggregate_id.clone(),
                tenant_id: event.tenant_id.clone(),
                member_id: event.member_id.clone().unwrap_or_default(),
                ..Default::default()
            }),
            channel: 0,
            code_kind: 0,
        })),
        "points_account" if event.event_type != "points.expiring" => {
            Some(Payload::Points(pb::PointsEvent {
                transaction: Some(pb::PointsTransaction {
                    tenant_id: event.tenant_id.clone(),
                    member_id: event.member_id.clone().unwrap_or_default(),
                    request_id: event.request_id.clone().unwrap_or_default(),
                    actor: event.actor.clone().unwrap_or_default(),
                    create_time: Some(timestamp(event.occurred_at)),
                    ..Default::default()
                }),
                expiring: None,
            }))
        }
        _ => None,
    };
    let payload = event.payload;
    let envelope = pb::Event {
        position: event.position,
        id: event.id.to_string(),
        tenant_id: event.tenant_id,
        r#type: event.event_type,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        member_id: event.member_id.unwrap_or_default(),
        create_time: Some(timestamp(event.occurred_at)),
        request_id: event.request_id.unwrap_or_default(),
        actor: event.actor.unwrap_or_default(),
        payload: None,
    };
    let restore = pb::Event {
        payload: restore,
        ..Default::default()
    };
    let mut bytes =
        Vec::with_capacity(envelope.encoded_len() + payload.len() + restore.encoded_len());
    envelope.encode_raw(&mut bytes);
    bytes.extend_from_slice(&payload);
    restore.encode_raw(&mut bytes);
    bytes
}

/// A stored event as the contract sends it. A payload that does not decode (a bug, or a
/// newer server's payload an older one reads) is sent without it, with its envelope.
pub fn event_to_proto(event: StoredEvent) -> pb::Event {
    let mut message = pb::Event::decode(event.payload.as_slice()).unwrap_or_else(|err| {
        marketing_infra::warn_every!(error = %err, event = %event.id, "undecodable event payload");
        pb::Event::default()
    });
    message.position = event.position;
    message.id = event.id.to_string();
    message.tenant_id = event.tenant_id;
    message.r#type = event.event_type;
    message.aggregate_type = event.aggregate_type;
    message.aggregate_id = event.aggregate_id;
    message.member_id = event.member_id.unwrap_or_default();
    message.create_time = Some(timestamp(event.occurred_at));
    message.request_id = event.request_id.unwrap_or_default();
    message.actor = event.actor.unwrap_or_default();
    with_envelope(&mut message);
    message
}

#[cfg(test)]
mod tests {
    use marketing_domain::events::EVENT_TYPES;

    use super::*;

    /// The relay's encoding, made without decoding the payload, parses as the event itself.
    #[test]
    fn an_events_bytes_parse_as_the_event() {
        let tenant = TenantId::parse("tenant_id", "acme").expect("tenant");
        let member = MemberId::parse("member_id", "m1").expect("member");
        let entry = Entry {
            id: uuid::Uuid::now_v7(),
            tx_type: TxType::Earn,
            amount: 10,
            frozen_amount: 0,
            available_after: 10,
            frozen_after: 0,
            meta: marketing_domain::points::EntryMeta {
                request_id: Some("r-1".into()),
                actor: Some("till".into()),
                ..Default::default()
            },
            hold_id: None,
            related_transaction_id: None,
            expires_at: None,
            account_version: 1,
            position: 0,
            created_at: UnixMicros(1_700_000_000_000_000),
        };
        let lot = ExpiringLot {
            id: uuid::Uuid::now_v7(),
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            points: 5,
            expires_at: UnixMicros(1_800_000_000_000_000),
        };
        for (position, new) in [
            points_event(&tenant, &member, &entry),
            points_expiring_event(&lot, UnixMicros(1)).expect("a reminder"),
        ]
        .into_iter()
        .enumerate()
        {
            let stored = StoredEvent {
                position: position as i64 + 1,
                id: uuid::Uuid::now_v7(),
                tenant_id: new.tenant_id.as_str().to_owned(),
                event_type: new.event_type.to_owned(),
                aggregate_type: new.aggregate_type.to_owned(),
                aggregate_id: new.aggregate_id.clone(),
                member_id: new.member_id.clone(),
                occurred_at: new.occurred_at,
                request_id: new.request_id.clone(),
                actor: new.actor.clone(),
                payload: new.payload.clone(),
            };
            let parsed = pb::Event::decode(event_bytes(stored.clone()).as_slice()).expect("bytes");
            assert_eq!(parsed, event_to_proto(stored));
        }
    }

    /// Every type these make is one the domain lists (what readers may filter by).
    #[test]
    fn every_event_type_written_is_one_readers_may_ask_for() {
        let templates = [
            TemplateChanged::Created,
            TemplateChanged::Updated,
            TemplateChanged::Enabled,
            TemplateChanged::Disabled,
            TemplateChanged::StockAdded(1),
            TemplateChanged::Archived,
            TemplateChanged::CodesAdded(1, CodeKind::Shared),
        ]
        .map(TemplateChanged::event_type);
        let coupons = [
            CouponChanged::Claimed,
            CouponChanged::ClaimedByCode(CodeKind::Unique),
            CouponChanged::Distributed,
            CouponChanged::Locked,
            CouponChanged::Used,
            CouponChanged::Released,
            CouponChanged::Returned,
            CouponChanged::Revoked,
            CouponChanged::Expired,
            CouponChanged::Unlocked,
            CouponChanged::Expiring,
        ]
        .map(CouponChanged::event_type);
        let tenant = TenantId::parse("tenant_id", "acme").expect("tenant");
        let member = MemberId::parse("member_id", "m1").expect("member");
        let points = TxType::ALL.map(|tx_type| {
            let entry = Entry {
                id: uuid::Uuid::nil(),
                tx_type,
                amount: 0,
                frozen_amount: 0,
                available_after: 0,
                frozen_after: 0,
                meta: Default::default(),
                hold_id: None,
                related_transaction_id: None,
                expires_at: None,
                account_version: 1,
                position: 0,
                created_at: UnixMicros(0),
            };
            points_event(&tenant, &member, &entry).event_type
        });
        let lot = ExpiringLot {
            id: uuid::Uuid::nil(),
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            points: 1,
            expires_at: UnixMicros(0),
        };
        let reminders = [points_expiring_event(&lot, UnixMicros(0))
            .expect("a reminder")
            .event_type];
        let rules = ["points_rule.created", "points_rule.updated"];
        let client = ApiClient {
            name: "till".into(),
            role: marketing_domain::auth::Role::Checkout,
            tenants: Tenants::Only([tenant.clone()].into()),
            created_at: UnixMicros(0),
            revoked_at: None,
        };
        let clients = [None, Some(UnixMicros(1))]
            .map(|revoked| client_events(&client, revoked, UnixMicros(1))[0].event_type);
        let request = RequestId::parse("request_id", "r").expect("request id");
        let settings =
            [settings_event(&TenantSettings::defaults(tenant.clone()), &request).event_type];
        let written: Vec<&str> = templates
            .into_iter()
            .chain(coupons)
            .chain(points)
            .chain(reminders)
            .chain(rules)
            .chain(clients)
            .chain(settings)
            .collect();
        for name in &written {
            assert!(EVENT_TYPES.contains(name), "{name} is not in EVENT_TYPES");
        }
        for name in EVENT_TYPES {
            assert!(written.contains(&name), "{name} is never written");
        }
    }
}
