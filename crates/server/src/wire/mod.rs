//! The wire format, shared by the gRPC handlers and the use cases: protobuf messages to and
//! from domain values (`convert`), errors as `google.rpc.Status` (`status`), and the records a
//! retry or a cache answers from. A use case keeps its answer as the bytes of the message a
//! client was sent, so a replay answers byte for byte what the first call answered; it never
//! sees the message types themselves.

pub mod convert;
pub mod events;
pub mod status;

use marketing_domain::{
    MarketingError, RequestId, TenantId,
    coupon_template::CouponTemplate,
    points::{AccountView, PointsOutcome},
    points_rule::{PointsRule, RuleTerms},
    user_coupon::{CouponCheck, CouponView, Distribution},
};
use marketing_proto::v1 as pb;
use marketing_storage::idempotency::{IdempotencyKey, Outcome};
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use convert::{
    account_to_proto, coupon_to_proto, entry_to_proto, hold_to_proto, rule_to_proto,
    template_to_proto,
};

/// A domain value a client is answered with, and the message it is answered as.
pub trait ToWire {
    type Message: Message + Default;

    fn to_wire(&self) -> Self::Message;
}

impl ToWire for CouponTemplate {
    type Message = pb::CouponTemplate;

    fn to_wire(&self) -> pb::CouponTemplate {
        template_to_proto(self)
    }
}

impl ToWire for marketing_domain::tenant_settings::TenantSettings {
    type Message = pb::TenantSettings;

    fn to_wire(&self) -> pb::TenantSettings {
        convert::settings_to_proto(self)
    }
}

impl ToWire for marketing_storage::codes::StoredCode {
    type Message = pb::CouponCode;

    fn to_wire(&self) -> pb::CouponCode {
        convert::code_to_proto(self)
    }
}

impl ToWire for CouponView {
    type Message = pb::UserCoupon;

    fn to_wire(&self) -> pb::UserCoupon {
        coupon_to_proto(&self.coupon, self.at)
    }
}

impl ToWire for CouponCheck {
    type Message = pb::ValidateCouponResponse;

    fn to_wire(&self) -> pb::ValidateCouponResponse {
        pb::ValidateCouponResponse {
            usable: self.problems.is_empty(),
            discount_amount: self.discount_amount,
            failures: self
                .problems
                .iter()
                .map(|problem| pb::CouponValidationFailure {
                    reason: problem.reason().to_owned(),
                    message: problem.message(),
                })
                .collect(),
            user_coupon: Some(self.coupon.to_wire()),
        }
    }
}

impl ToWire for Distribution {
    type Message = pb::DistributeCouponsResponse;

    fn to_wire(&self) -> pb::DistributeCouponsResponse {
        let mut response = pb::DistributeCouponsResponse::default();
        for (member, result) in &self.results {
            let (user_coupon, failure_reason) = match result {
                Ok(coupon) => (Some(coupon_to_proto(coupon, self.at)), String::new()),
                Err(refusal) => (None, refusal.into_error().reason().as_str().to_owned()),
            };
            if user_coupon.is_some() {
                response.issued_count += 1;
            } else {
                response.failed_count += 1;
            }
            response.results.push(pb::DistributionResult {
                member_id: member.to_string(),
                user_coupon,
                failure_reason,
            });
        }
        response
    }
}

impl ToWire for AccountView {
    type Message = pb::PointsAccount;

    fn to_wire(&self) -> pb::PointsAccount {
        account_to_proto(&self.account, self.next_expiry)
    }
}

/// Every points change answers with this shape (FreezePoints' response is the superset).
impl ToWire for PointsOutcome {
    type Message = pb::FreezePointsResponse;

    fn to_wire(&self) -> pb::FreezePointsResponse {
        let account = &self.account.account;
        pb::FreezePointsResponse {
            points_account: Some(self.account.to_wire()),
            hold: self
                .hold
                .as_ref()
                .map(|h| hold_to_proto(&account.tenant_id, &account.member_id, h)),
            transaction: self
                .entry
                .as_ref()
                .map(|e| entry_to_proto(&account.tenant_id, &account.member_id, e)),
        }
    }
}

impl ToWire for PointsRule {
    type Message = pb::PointsRule;

    fn to_wire(&self) -> pb::PointsRule {
        rule_to_proto(self)
    }
}

/// `value` as the bytes of the message it is answered as.
pub fn record<T: ToWire>(value: &T) -> Vec<u8> {
    value.to_wire().encode_to_vec()
}

/// The message a record holds.
pub fn from_record<T: ToWire>(bytes: &[u8]) -> Result<T::Message, MarketingError> {
    T::Message::decode(bytes).map_err(MarketingError::internal)
}

/// The outcome a request records when it is answered with `value`.
pub fn answered<T: ToWire>(value: &T) -> Outcome {
    Outcome {
        status_code: 0,
        response: record(value),
    }
}

/// The outcome a request records when it is refused with `err`: the status it is sent.
pub fn refused(err: &MarketingError) -> Outcome {
    let status = status::status_of(err);
    Outcome {
        status_code: status.code() as i32,
        response: status.details().to_vec(),
    }
}

/// A recorded outcome again: the bytes of the response, or the refusal as it was sent.
pub fn replay(outcome: Outcome) -> Result<Vec<u8>, MarketingError> {
    if outcome.status_code == 0 {
        return Ok(outcome.response);
    }
    status::refusal_from_status(&outcome.response)
        .map(|refusal| Err(MarketingError::Replayed(Box::new(refusal))))
        .unwrap_or_else(|| {
            Err(MarketingError::internal(format!(
                "undecodable recorded refusal (code {})",
                outcome.status_code
            )))
        })
}

/// The rule a cache record holds, or `None` when it does not hold one.
/// A tenant's settings from a cached record (`None`: not a record this server writes).
pub fn settings_from_record(
    tenant: &TenantId,
    bytes: &[u8],
) -> Option<marketing_domain::tenant_settings::TenantSettings> {
    use marketing_domain::tenant_settings::{PointsValue, SettingsTerms, TenantSettings};
    let settings = pb::TenantSettings::decode(bytes).ok()?;
    let mut points_values = std::collections::BTreeMap::new();
    for value in &settings.points_values {
        points_values.insert(
            marketing_domain::coupon_template::Currency::parse("currency", &value.currency).ok()?,
            PointsValue {
                points: value.points,
                amount: value.amount,
            },
        );
    }
    Some(TenantSettings {
        tenant_id: tenant.clone(),
        terms: SettingsTerms {
            points_values,
            max_points_share_bp: settings.max_points_share_bp,
            min_points_redemption: settings.min_points_redemption,
            max_coupons_per_order: Some(settings.max_coupons_per_order).filter(|cap| *cap > 0),
        },
        version: settings.version,
        updated_at: settings
            .update_time
            .and_then(|t| marketing_domain::UnixMicros::from_parts(t.seconds, t.nanos)),
        actor: Some(settings.actor).filter(|actor| !actor.is_empty()),
    })
}

pub fn rule_from_record(tenant: &TenantId, bytes: &[u8]) -> Option<PointsRule> {
    let rule = pb::PointsRule::decode(bytes).ok()?;
    let at = |ts: Option<prost_types::Timestamp>| {
        ts.and_then(|t| marketing_domain::UnixMicros::from_parts(t.seconds, t.nanos))
    };
    Some(PointsRule {
        id: Uuid::parse_str(&rule.id).ok()?,
        tenant_id: tenant.clone(),
        event_type: rule.event_type,
        terms: RuleTerms {
            description: rule.description,
            points: rule.points,
            daily_cap: rule.daily_cap,
            expiry_days: rule.expiry_days,
            enabled: rule.enabled,
            per_amount: match rule.per_amount {
                None => None,
                Some(per) => Some(marketing_domain::points_rule::PerAmount {
                    currency: marketing_domain::coupon_template::Currency::parse(
                        "currency",
                        &per.currency,
                    )
                    .ok()?,
                    amount: per.amount,
                    multiplier_bp: per.multiplier_bp,
                    rounding: convert::rounding_from_proto(per.rounding)?,
                }),
            },
        },
        version: rule.version,
        created_at: at(rule.create_time)?,
        updated_at: at(rule.update_time)?,
        actor: Some(rule.actor).filter(|actor| !actor.is_empty()),
    })
}

/// The idempotency key of a mutation: the client whose request id it is (empty without auth),
/// its operation, and a digest of the request without its request id (set `request_id` empty
/// in `request_without_id`).
pub fn idempotency_key<M: Message>(
    tenant_id: &TenantId,
    request_id: RequestId,
    client: &str,
    operation: &'static str,
    request_without_id: &M,
) -> IdempotencyKey {
    let fingerprint = Sha256::digest(request_without_id.encode_to_vec()).to_vec();
    IdempotencyKey {
        tenant_id: tenant_id.clone(),
        request_id,
        client: client.to_owned(),
        operation,
        fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use marketing_domain::{FieldViolation, error::Refusal};
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_recorded_refusal_is_answered_again_as_it_was_sent() {
        for err in [
            MarketingError::Refused(Refusal::InsufficientPoints { available: 7 }),
            MarketingError::Refused(Refusal::PointsLimitExceeded {
                total: "available",
                limit: 9,
            }),
            MarketingError::Refused(Refusal::DuplicateBizReference),
            MarketingError::Refused(Refusal::InvalidArgument(
                (0..300)
                    .map(|i| FieldViolation::new(format!("f{i}"), "bad"))
                    .collect(),
            )),
        ] {
            let first = status::status_of(&err);
            let again = match replay(refused(&err)) {
                Err(replayed @ MarketingError::Replayed(_)) => status::status_of(&replayed),
                other => panic!("not a replayed refusal: {other:?}"),
            };
            assert_eq!(again.code(), first.code());
            assert_eq!(again.message(), first.message());
            assert_eq!(told(&again), told(&first));
        }
    }

    type Told = (
        tonic::Code,
        String,
        String,
        std::collections::HashMap<String, String>,
        Vec<(String, String)>,
    );

    /// What a status tells a client: code, message, reason, metadata and violations.
    fn told(status: &tonic::Status) -> Told {
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo");
        let violations: Vec<(String, String)> = details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        (
            status.code(),
            status.message().to_owned(),
            info.reason.clone(),
            info.metadata.clone(),
            violations,
        )
    }

    #[test]
    fn a_copy_for_another_waiter_tells_what_the_original_tells() {
        let refusals = [
            MarketingError::Refused(Refusal::InsufficientPoints { available: 7 }),
            MarketingError::Refused(Refusal::OutOfStock),
            MarketingError::Refused(Refusal::RequestIdReused),
            MarketingError::invalid("member_id", "is required"),
            MarketingError::Refused(Refusal::DistributionRefused {
                member_id: "m1".into(),
                refusal: Box::new(Refusal::MemberLimitReached),
            }),
        ];
        for err in refusals {
            let copy = err.copy();
            assert_eq!(
                told(&status::status_of(&copy)),
                told(&status::status_of(&err))
            );
            // A copy of a copy (a waiter of a request whose first answer was itself a copy).
            assert_eq!(
                told(&status::status_of(&copy.copy())),
                told(&status::status_of(&err))
            );
        }
        let internal = MarketingError::internal("boom").copy();
        assert_eq!(status::status_of(&internal).code(), tonic::Code::Internal);
        assert!(MarketingError::DeadlineExceeded.copy().is_transient());
    }

    #[test]
    fn a_recorded_response_is_its_bytes() {
        let outcome = Outcome {
            status_code: 0,
            response: vec![1, 2, 3],
        };
        assert_eq!(replay(outcome).expect("a response"), vec![1, 2, 3]);
        let garbage = Outcome {
            status_code: 9,
            response: vec![0xff; 4],
        };
        assert!(matches!(replay(garbage), Err(MarketingError::Internal(_))));
    }
}
