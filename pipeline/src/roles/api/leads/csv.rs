//! CSV for the lead export (`GET /leads.csv`): RFC 4180 records, made safe to open in a
//! spreadsheet. Pure: text in, text out.
//!
//! - The file starts with a UTF-8 byte order mark ([`BOM`]), so Excel reads it as UTF-8 rather
//!   than the system's code page.
//! - Records end with CRLF; a field holding `"`, `,`, CR or LF is quoted, its quotes doubled
//!   (RFC 4180 section 2). Any other field is written as is.
//! - Formula injection (OWASP "CSV Injection"): a cell whose text starts with `=`, `+`, `-`, `@`,
//!   a tab or a carriage return would be read by a spreadsheet as a formula (`=HYPERLINK(…)`,
//!   `+cmd|…`); it gets a leading `'`, which spreadsheets show as text. The neutralisation is by
//!   the first character only, whatever the column: a negative number would come out as text
//!   (no lead value is negative), and a company called `-2` keeps its name behind the quote.
//!   Reading the file back, a consumer that wants the original strips one leading `'` from a
//!   cell whose next character is one of those.

/// The UTF-8 byte order mark that starts the file.
pub(crate) const BOM: &str = "\u{feff}";

/// The first characters a spreadsheet may read as the start of a formula.
const FORMULA_STARTS: &[char] = &['=', '+', '-', '@', '\t', '\r'];

/// One field: neutralised when it could be a formula, then quoted when RFC 4180 needs it.
pub(crate) fn field(text: &str) -> String {
    let neutral = if text.starts_with(FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if neutral.contains(['"', ',', '\r', '\n']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

/// One record: its fields, comma-separated, ending with CRLF.
pub(crate) fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|text| field(text.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fields_are_written_as_is() {
        assert_eq!(field("Contoso Ltd"), "Contoso Ltd");
        assert_eq!(field(""), "");
        assert_eq!(field("12.50"), "12.50");
        assert_eq!(field("Zürich 東京"), "Zürich 東京");
        assert_eq!(field("a'b"), "a'b");
    }

    #[test]
    fn quotes_commas_and_line_breaks_are_quoted_with_quotes_doubled() {
        assert_eq!(field("Contoso, Ltd"), "\"Contoso, Ltd\"");
        assert_eq!(field("the \"best\" one"), "\"the \"\"best\"\" one\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(field("\""), "\"\"\"\"");
    }

    #[test]
    fn formula_starts_get_a_leading_quote() {
        assert_eq!(
            field("=HYPERLINK(\"http://evil.example\",\"x\")"),
            "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""
        );
        assert_eq!(field("+1"), "'+1");
        assert_eq!(field("-2"), "'-2");
        assert_eq!(field("@x"), "'@x");
        assert_eq!(field("\tcmd"), "'\tcmd");
        assert_eq!(field("\rcmd"), "\"'\rcmd\"");
        assert_eq!(field("=1+2,3"), "\"'=1+2,3\"");
        // Only the first character counts.
        assert_eq!(field("a=b"), "a=b");
        assert_eq!(field(" =1"), " =1");
    }

    #[test]
    fn records_end_with_crlf() {
        assert_eq!(record(&["a", "b,c", ""]), "a,\"b,c\",\r\n");
        assert_eq!(record::<&str>(&[]), "\r\n");
        assert!(BOM.as_bytes() == [0xef, 0xbb, 0xbf]);
    }
}
