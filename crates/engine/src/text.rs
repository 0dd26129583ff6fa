//! Reading the text files users give (JSON Lines, TSV, TREC runs): one rule for all of them.

/// The text without a leading UTF-8 byte order mark. Editors on Windows and Python's `utf-8-sig`
/// writers put one at the start of a file; it is not part of the first line's content, so it is
/// skipped as Python's `utf-8-sig` readers and most tools skip it.
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_leading_mark_goes() {
        assert_eq!(super::without_bom("\u{feff}{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(super::without_bom("{}\u{feff}"), "{}\u{feff}");
        assert_eq!(super::without_bom("plain"), "plain");
    }
}
