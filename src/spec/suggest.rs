//! "Did you mean": the closest known word to one that names nothing.
//! One rule for every name a config refers to (keys, ids, job types,
//! kinds, time zones, filters, inputs), so suggestions read alike.
//!
//! Pure: it compares strings and returns one of the candidates.

/// The candidate closest to `word`, if one is close: the same word in
/// another case, or within an edit distance (a swap of two neighbours
/// counts as one edit) of 1 for words up to 4 characters, else 2. Never
/// `word` itself. Ties go to the first candidate.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        if candidate == word {
            continue;
        }
        let distance = strsim::osa_distance(&lower, &candidate.to_lowercase());
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean `x`?)` to append to a message, or nothing.
pub fn hint<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, known).map_or_else(String::new, |c| format!(" (did you mean `{c}`?)"))
}

/// The IANA time zone name closest to an unknown one, as a hint; `validate`
/// and `cron` say the same.
pub fn zone_hint(name: &str) -> String {
    let zones: Vec<String> = jiff::tz::db()
        .available()
        .map(|z| z.as_str().to_string())
        .collect();
    hint(name, zones.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 3] = ["schedule", "steps", "timeout_ms"];

    #[test]
    fn a_close_word_gets_the_nearest_candidate() {
        assert_eq!(closest("schedul", KEYS), Some("schedule"));
        assert_eq!(closest("stpes", KEYS), Some("steps"));
        assert_eq!(closest("perod", ["period", "count"]), Some("period"));
    }

    #[test]
    fn a_far_word_gets_nothing() {
        assert_eq!(closest("timeout", KEYS), None);
        assert_eq!(closest("zzz", ["a", "b"]), None);
        // Short words need a closer match: `ab` is not `xy`.
        assert_eq!(closest("ab", ["xy"]), None);
    }

    #[test]
    fn never_the_same_word_but_another_case_is_suggested() {
        assert_eq!(closest("steps", KEYS), None);
        assert_eq!(closest("job", ["Job", "Flow"]), Some("Job"));
        assert_eq!(
            closest("europe/berlin", ["Europe/Berlin"]),
            Some("Europe/Berlin")
        );
    }

    #[test]
    fn hint_is_empty_without_a_match() {
        assert_eq!(hint("schedul", KEYS), " (did you mean `schedule`?)");
        assert_eq!(hint("nothing-like-it", KEYS), "");
    }
}
