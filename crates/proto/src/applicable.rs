//! `marketing.v1.ApplicableCoupon`, written by hand (`extern_path` in the build script) so
//! that a server can send a coupon it already encoded: `ListApplicableCoupons` answers up to
//! fifty coupons a call, and encoding each anew was most of its CPU. On the wire it is the
//! message the contract declares; clients decode it as usual, into `user_coupon`.

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut, Bytes},
    encoding::{self, DecodeContext, WireType},
};

use crate::marketing::v1::UserCoupon;

/// A coupon usable for the cart, and what it takes off alone.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ApplicableCoupon {
    pub user_coupon: Option<UserCoupon>,
    /// What it takes off alone.
    pub discount_amount: i64,
    /// `user_coupon` already encoded: sent in its place when set (servers only; never set by
    /// decoding).
    pub encoded_user_coupon: Option<Bytes>,
}

impl Message for ApplicableCoupon {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded_user_coupon, &self.user_coupon) {
            (Some(encoded), _) => {
                encoding::encode_key(1, WireType::LengthDelimited, buf);
                encoding::encode_varint(encoded.len() as u64, buf);
                buf.put_slice(encoded);
            }
            (None, Some(coupon)) => encoding::message::encode(1, coupon, buf),
            (None, None) => {}
        }
        if self.discount_amount != 0 {
            encoding::int64::encode(2, &self.discount_amount, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.user_coupon.get_or_insert_with(UserCoupon::default),
                buf,
                ctx,
            ),
            2 => encoding::int64::merge(wire_type, &mut self.discount_amount, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let coupon = match (&self.encoded_user_coupon, &self.user_coupon) {
            (Some(encoded), _) => {
                encoding::key_len(1)
                    + encoding::encoded_len_varint(encoded.len() as u64)
                    + encoded.len()
            }
            (None, Some(coupon)) => encoding::message::encoded_len(1, coupon),
            (None, None) => 0,
        };
        let discount = if self.discount_amount != 0 {
            encoding::int64::encoded_len(2, &self.discount_amount)
        } else {
            0
        };
        coupon + discount
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_coupon_is_sent_as_the_message_it_encodes() {
        let coupon = UserCoupon {
            id: "0190c0de-0000-7000-8000-000000000001".into(),
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            version: 3,
            ..UserCoupon::default()
        };
        let plain = ApplicableCoupon {
            user_coupon: Some(coupon.clone()),
            discount_amount: 250,
            encoded_user_coupon: None,
        };
        let preencoded = ApplicableCoupon {
            user_coupon: None,
            discount_amount: 250,
            encoded_user_coupon: Some(Bytes::from(coupon.encode_to_vec())),
        };
        let bytes = plain.encode_to_vec();
        assert_eq!(preencoded.encode_to_vec(), bytes);
        assert_eq!(preencoded.encoded_len(), bytes.len());
        let decoded = ApplicableCoupon::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, plain);
    }
}
