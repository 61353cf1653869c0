//! Redemption codes: the text rules (what a code may be, how two spellings compare), how
//! unique codes are made from random bytes, and the bounds on how many a template has.
//!
//! A code compares case-insensitively, ignoring spaces and dashes: it is kept in its canonical
//! form (upper case, without them), so `spring-10`, `SPRING 10` and `Spring10` are one code.
//! Generated codes draw each character from [`ALPHABET`], 32 characters without the look-alikes
//! 0/O and 1/I, so a character is exactly five random bits.

use crate::FieldViolation;

/// The characters of generated codes: digits 2-9 and letters without I and O.
pub const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// Random bits per generated character.
const BITS_PER_CHAR: u32 = 5;
/// The least entropy a generated code may have.
pub const MIN_ENTROPY_BITS: u32 = 40;
/// Random characters of a generated code: at least [`MIN_ENTROPY_BITS`] of entropy.
pub const MIN_RANDOM_LENGTH: i32 = MIN_ENTROPY_BITS.div_ceil(BITS_PER_CHAR) as i32;
pub const MAX_RANDOM_LENGTH: i32 = 32;
pub const DEFAULT_RANDOM_LENGTH: i32 = 12;
pub const MAX_PREFIX_LEN: usize = 16;
/// A shared code's length (canonical form).
pub const MIN_SHARED_LEN: usize = 4;
pub const MAX_CODE_LEN: usize = 64;
/// Codes one `GenerateCouponCodes` call makes at most.
pub const MAX_CODES_PER_GENERATION: i32 = 1_000_000;
/// Unique codes one template may have: a bound on what callers can make the database hold.
pub const MAX_UNIQUE_CODES_PER_TEMPLATE: i64 = 10_000_000;
/// Shared codes one template may have.
pub const MAX_SHARED_CODES_PER_TEMPLATE: i64 = 1_000;

/// A code in its canonical form: upper-case letters and digits, at most [`MAX_CODE_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeText(String);

impl CodeText {
    /// The canonical form of `value` as a caller typed it (spaces and dashes dropped, letters
    /// upper-cased): refused when anything else than ASCII letters and digits remains, or
    /// when it is empty or longer than [`MAX_CODE_LEN`].
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let canonical = canonical(field, value, MAX_CODE_LEN)?;
        if canonical.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        Ok(Self(canonical))
    }

    /// A shared code: as [`Self::parse`], and at least [`MIN_SHARED_LEN`] characters.
    pub fn parse_shared(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let code = Self::parse(field, value)?;
        if code.0.len() < MIN_SHARED_LEN {
            return Err(FieldViolation::new(
                field,
                format!("must have at least {MIN_SHARED_LEN} letters or digits"),
            ));
        }
        Ok(code)
    }

    /// A code as stored (its canonical form); the caller vouches it is one.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for CodeText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `value` without spaces and dashes, upper-cased; refused past `max` characters or with
/// characters other than ASCII letters and digits.
fn canonical(field: &str, value: &str, max: usize) -> Result<String, FieldViolation> {
    let mut out = String::with_capacity(value.len().min(max));
    for c in value.chars() {
        match c {
            ' ' | '-' => {}
            c if c.is_ascii_alphanumeric() => {
                if out.len() == max {
                    return Err(FieldViolation::new(
                        field,
                        format!("must have at most {max} letters and digits"),
                    ));
                }
                out.push(c.to_ascii_uppercase());
            }
            _ => {
                return Err(FieldViolation::new(
                    field,
                    "may hold only letters, digits, spaces and dashes",
                ));
            }
        }
    }
    Ok(out)
}

/// How a code is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeKind {
    /// Any member, within the template's stock and per-member limit.
    Shared,
    /// Once, by one member.
    Unique,
}

impl CodeKind {
    /// The stored code.
    pub fn code(self) -> i16 {
        match self {
            Self::Shared => 1,
            Self::Unique => 2,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(Self::Shared),
            2 => Some(Self::Unique),
            _ => None,
        }
    }
}

/// What a `GenerateCouponCodes` call asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeShape {
    /// Canonical form, possibly empty.
    pub prefix: String,
    /// Random characters after it.
    pub length: i32,
}

impl CodeShape {
    /// Checks `prefix` and `length` (0: [`DEFAULT_RANDOM_LENGTH`]), each violation naming its
    /// field.
    pub fn parse(prefix: &str, length: i32) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let prefix = canonical("prefix", prefix, MAX_PREFIX_LEN)
            .map_err(|v| violations.push(v))
            .ok();
        let length = match length {
            0 => DEFAULT_RANDOM_LENGTH,
            n if n < MIN_RANDOM_LENGTH => {
                violations.push(FieldViolation::new(
                    "length",
                    format!(
                        "must be at least {MIN_RANDOM_LENGTH}: a code needs {MIN_ENTROPY_BITS} \
                         bits of entropy, and each character carries {BITS_PER_CHAR}"
                    ),
                ));
                n
            }
            n if n > MAX_RANDOM_LENGTH => {
                violations.push(FieldViolation::new(
                    "length",
                    format!("must be at most {MAX_RANDOM_LENGTH}"),
                ));
                n
            }
            n => n,
        };
        match prefix {
            Some(prefix) if violations.is_empty() => Ok(Self { prefix, length }),
            _ => Err(violations),
        }
    }

    /// Random bytes one code needs: a byte per character (its low five bits are used).
    pub fn random_bytes(&self) -> usize {
        usize::try_from(self.length).unwrap_or(0)
    }

    /// The code made of the prefix and one character per byte of `random` (its low five
    /// bits: every character equally likely when the bytes are uniform).
    pub fn code_from(&self, random: &[u8]) -> CodeText {
        let mut code = String::with_capacity(self.prefix.len() + random.len());
        code.push_str(&self.prefix);
        code.extend(
            random
                .iter()
                .map(|byte| char::from(ALPHABET[usize::from(byte & 0x1f)])),
        );
        CodeText(code)
    }
}

/// A template's code inventory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeInventory {
    /// Unique codes generated.
    pub unique: i64,
    /// Unique codes claimed.
    pub unique_claimed: i64,
    /// Shared codes.
    pub shared: i64,
}

impl CodeInventory {
    /// Unique codes not claimed yet.
    pub fn unique_available(&self) -> i64 {
        self.unique - self.unique_claimed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_compare_without_case_spaces_and_dashes() {
        let a = CodeText::parse("code", "spring-10").unwrap();
        let b = CodeText::parse("code", " SPRING 10 ").unwrap();
        let c = CodeText::parse("code", "Spring10").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.as_str(), "SPRING10");
    }

    #[test]
    fn codes_refuse_other_characters_and_lengths() {
        for bad in ["SPRING_10", "ÉTÉ10", "A\u{0}B", "A+B"] {
            let err = CodeText::parse("code", bad).unwrap_err();
            assert_eq!(err.field, "code");
        }
        assert!(CodeText::parse("code", "- -").is_err());
        assert!(CodeText::parse("code", &"A".repeat(MAX_CODE_LEN)).is_ok());
        assert!(CodeText::parse("code", &"A".repeat(MAX_CODE_LEN + 1)).is_err());
        // Dashes do not count against the length.
        assert!(CodeText::parse("code", &"A-".repeat(MAX_CODE_LEN)).is_ok());
        assert!(CodeText::parse_shared("code", "AB-C").is_err());
        assert!(CodeText::parse_shared("code", "AB-CD").is_ok());
    }

    #[test]
    fn a_shape_needs_forty_bits() {
        assert_eq!(MIN_RANDOM_LENGTH, 8);
        let err = CodeShape::parse("", 7).unwrap_err();
        assert_eq!(err[0].field, "length");
        assert!(err[0].description.contains("40 bits"), "{}", err[0]);
        assert!(CodeShape::parse("", 33).is_err());
        assert_eq!(
            CodeShape::parse("", 0).unwrap().length,
            DEFAULT_RANDOM_LENGTH
        );
        let both = CodeShape::parse("a_b", 3).unwrap_err();
        assert_eq!(both.len(), 2);
        let shape = CodeShape::parse("sum-mer", 8).unwrap();
        assert_eq!(shape.prefix, "SUMMER");
    }

    #[test]
    fn generated_codes_use_the_alphabet_only() {
        let shape = CodeShape::parse("X", 8).unwrap();
        let code = shape.code_from(&[0, 1, 31, 32, 255, 64, 7, 8]);
        assert_eq!(code.as_str(), "X23Z2Z29A");
        for c in ALPHABET.iter() {
            assert!(!b"01IO".contains(c));
        }
        let distinct: std::collections::BTreeSet<_> = ALPHABET.iter().collect();
        assert_eq!(distinct.len(), 32);
    }
}
