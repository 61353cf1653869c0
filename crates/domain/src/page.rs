//! Page sizes of list requests (AIP-158).

use crate::error::FieldViolation;

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

/// 0 means the default; negative or above the maximum is rejected.
pub fn page_size(field: &str, requested: i32) -> Result<u64, FieldViolation> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1.. if requested as u64 <= MAX_PAGE_SIZE => Ok(requested as u64),
        _ => Err(FieldViolation::new(
            field,
            format!("must be between 0 and {MAX_PAGE_SIZE}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_bounds() {
        assert_eq!(page_size("page_size", 0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size("page_size", 100), Ok(100));
        assert!(page_size("page_size", 101).is_err());
        assert!(page_size("page_size", -1).is_err());
    }
}
