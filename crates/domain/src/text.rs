//! The rules for free display text (names, descriptions, reasons): what a request may put in
//! a field that people read. Checked before anything is written, on both backends alike.
//!
//! Names are one line: no control characters at all. Descriptions and reasons may span lines:
//! tab, line feed and carriage return are allowed, every other control character (NUL, the
//! rest of C0, DEL and C1) is refused, so what one backend stores the other stores too
//! (PostgreSQL refuses NUL in text; SQLite would keep it).

use crate::FieldViolation;

/// Whether a text is a one-line name or may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: no control characters.
    Line,
    /// Several lines: `\t`, `\n` and `\r` allowed, other control characters refused.
    Lines,
}

/// `Ok(())` when `value` is at most `max_chars` characters and has only the control
/// characters its kind allows.
pub fn check_display_text(
    field: &str,
    value: &str,
    kind: TextKind,
    max_chars: usize,
) -> Result<(), FieldViolation> {
    if value.chars().count() > max_chars {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    let allowed = |c: char| kind == TextKind::Lines && matches!(c, '\t' | '\n' | '\r');
    if let Some(bad) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        let what = match kind {
            TextKind::Line => "must not contain control characters",
            TextKind::Lines => "must not contain control characters other than tab and line breaks",
        };
        return Err(FieldViolation::new(
            field,
            format!("{what} (found U+{:04X})", u32::from(bad)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_every_control_character() {
        for bad in ["a\0b", "a\nb", "a\tb", "\u{7f}", "\u{85}", "\u{1b}[31m"] {
            let err = check_display_text("name", bad, TextKind::Line, 100).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(err.description.contains("control"), "{err}");
        }
        assert!(
            check_display_text("name", "Spring 10% \u{1F600} \u{200d}", TextKind::Line, 100)
                .is_ok()
        );
    }

    #[test]
    fn descriptions_allow_line_breaks_and_tabs_only() {
        assert!(check_display_text("d", "line 1\r\nline 2\tend", TextKind::Lines, 100).is_ok());
        for bad in ["a\0b", "\u{7}", "\u{7f}", "\u{9b}", "\u{c}"] {
            let err = check_display_text("d", bad, TextKind::Lines, 100).unwrap_err();
            assert!(err.description.contains("U+"), "{err}");
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(check_display_text("d", &"é".repeat(10), TextKind::Lines, 10).is_ok());
        let err = check_display_text("d", &"é".repeat(11), TextKind::Lines, 10).unwrap_err();
        assert_eq!(err.description, "must be at most 10 characters");
    }
}
