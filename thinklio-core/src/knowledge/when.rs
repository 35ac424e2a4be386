//! The period a question names — "in March", "mid-February 2026", "on the
//! 3rd of May", "last week", "two months ago" — read from English text
//! relative to when it was asked, so that search can prefer what was said
//! then ([`FactQuery::during`](super::FactQuery::during)).
//!
//! It reads what people write in chat, not every calendar expression: an
//! ISO date, a month name (with an optional day, qualifier and year), and
//! the common relative forms. `may` and `march` count as months only beside
//! a word that makes them one ("in May", "3 March", "May 2026"). A month
//! without a year is its latest occurrence not after the question. Anything
//! else names no period, and search ranks as it would without one.

use crate::time::{DAY_MS, Timestamp, civil_from_days, days_from_civil};

/// A span of time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its first instant.
    pub start: Timestamp,
    /// The first instant after it.
    pub end: Timestamp,
}

const MONTHS: [(&str, i64); 23] = [
    ("january", 1),
    ("jan", 1),
    ("february", 2),
    ("feb", 2),
    ("march", 3),
    ("mar", 3),
    ("april", 4),
    ("apr", 4),
    ("may", 5),
    ("june", 6),
    ("jun", 6),
    ("july", 7),
    ("jul", 7),
    ("august", 8),
    ("aug", 8),
    ("september", 9),
    ("sept", 9),
    ("sep", 9),
    ("october", 10),
    ("oct", 10),
    ("november", 11),
    ("nov", 11),
    ("december", 12),
];

/// Month names that are also common words: months only with a word beside
/// them that makes them one.
const AMBIGUOUS: [&str; 4] = ["may", "march", "mar", "jan"];

/// Words before a month name that make it one.
const BEFORE_MONTH: [&str; 12] = [
    "in",
    "of",
    "during",
    "since",
    "early",
    "mid",
    "middle",
    "late",
    "end",
    "beginning",
    "start",
    "until",
];

const NUMBERS: [(&str, i64); 12] = [
    ("a", 1),
    ("an", 1),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
];

impl Period {
    /// The period from `start` to `end`.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Self { start, end }
    }

    /// Whether `t` falls in it.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }

    /// The whole days from `first` to `last` (inclusive), given as days
    /// since 1970-01-01.
    fn days(first: i64, last: i64) -> Self {
        Self {
            start: Timestamp::from_millis(first * DAY_MS),
            end: Timestamp::from_millis((last + 1) * DAY_MS),
        }
    }

    /// The first period `text` names, asked at `now`; `None` if it names none.
    ///
    /// ```
    /// use thinklio_core::knowledge::Period;
    /// use thinklio_core::Timestamp;
    /// // Asked on 2026-07-02.
    /// let now = Timestamp::from_millis(1_782_993_600_000);
    /// let p = Period::parse("What did I say in the middle of February?", now).unwrap();
    /// assert_eq!((p.start.date(), p.end.date()), ("2026-02-10".into(), "2026-02-21".into()));
    /// assert!(Period::parse("You may know this", now).is_none());
    /// ```
    pub fn parse(text: &str, now: Timestamp) -> Option<Self> {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric() && c != '-')
            .flat_map(|w| w.split('-'))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let today = now.as_millis().div_euclid(DAY_MS);
        let (year_now, month_now, _) = civil_from_days(today);
        // An ISO date first: it is the least ambiguous.
        if let Some(p) = iso_date(text) {
            return Some(p);
        }
        for (i, w) in words.iter().enumerate() {
            let before = |n: usize| {
                i.checked_sub(n)
                    .and_then(|j| words.get(j))
                    .map(String::as_str)
            };
            let after = |n: usize| words.get(i + n).map(String::as_str);
            if let Some(month) = month(w) {
                let day_before = before(1).and_then(day).or_else(|| {
                    // "the 3rd of May"
                    (before(1) == Some("of"))
                        .then(|| before(2).and_then(day))
                        .flatten()
                });
                let day_after = after(1).and_then(day).filter(|_| {
                    // "May 2026" is a year, not a day.
                    after(1).and_then(year).is_none()
                });
                let year_given = after(1)
                    .and_then(year)
                    .or_else(|| after(2).and_then(year).filter(|_| day_after.is_some()));
                let introduced = before(1).is_some_and(|b| BEFORE_MONTH.contains(&b));
                if AMBIGUOUS.contains(&w.as_str())
                    && !introduced
                    && day_before.is_none()
                    && day_after.is_none()
                    && year_given.is_none()
                {
                    continue;
                }
                let year = year_given.unwrap_or(if month > month_now {
                    year_now - 1
                } else {
                    year_now
                });
                let first = days_from_civil(year, month, 1);
                let last = days_from_civil(year + i64::from(month == 12), month % 12 + 1, 1) - 1;
                if let Some(d) = day_before.or(day_after) {
                    let d = first + d - 1;
                    return (d <= last).then(|| Self::days(d, d));
                }
                let qualifier = [before(1), before(2), before(3)];
                let has = |w: &str| qualifier.contains(&Some(w));
                return Some(if has("early") || has("beginning") || has("start") {
                    Self::days(first, first + 9)
                } else if has("mid") || has("middle") {
                    Self::days(first + 9, first + 19)
                } else if has("late") || has("end") {
                    Self::days(first + 19, last)
                } else {
                    Self::days(first, last)
                });
            }
            match w.as_str() {
                "yesterday" => return Some(Self::days(today - 1, today - 1)),
                "today" | "tonight" => return Some(Self::days(today, today)),
                "last" | "this" | "past" => {
                    let this = w == "this";
                    let weekday = (today + 3).rem_euclid(7); // Monday = 0
                    let monday = today - weekday;
                    match after(1) {
                        Some("week") if this => return Some(Self::days(monday, today)),
                        Some("week") if w == "past" => return Some(Self::days(today - 7, today)),
                        Some("week") => return Some(Self::days(monday - 7, monday - 1)),
                        Some("month") => {
                            let (y, m) = if this {
                                (year_now, month_now)
                            } else if month_now == 1 {
                                (year_now - 1, 12)
                            } else {
                                (year_now, month_now - 1)
                            };
                            let first = days_from_civil(y, m, 1);
                            let end = days_from_civil(y + i64::from(m == 12), m % 12 + 1, 1) - 1;
                            return Some(Self::days(first, end.min(today)));
                        }
                        Some("year") => {
                            let y = if this { year_now } else { year_now - 1 };
                            let first = days_from_civil(y, 1, 1);
                            let end = days_from_civil(y + 1, 1, 1) - 1;
                            return Some(Self::days(first, end.min(today)));
                        }
                        Some("weekend") => {
                            let saturday = monday - 2;
                            return Some(Self::days(saturday, saturday + 1));
                        }
                        _ => {}
                    }
                }
                "ago" => {
                    let unit = before(1)?;
                    let n = before(2).and_then(count).unwrap_or(1);
                    let (days, slack) = match unit.trim_end_matches('s') {
                        "day" => (n, 1),
                        "week" => (7 * n, 4),
                        "month" => (30 * n, 15),
                        "year" => (365 * n, 182),
                        _ => continue,
                    };
                    let at = today - days;
                    return Some(Self::days(at - slack, (at + slack).min(today)));
                }
                _ => {}
            }
        }
        None
    }
}

fn month(word: &str) -> Option<i64> {
    MONTHS.iter().find(|(n, _)| *n == word).map(|(_, m)| *m)
}

/// A day of the month: `3`, `3rd`, `21st`.
fn day(word: &str) -> Option<i64> {
    let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &word[digits.len()..];
    if !matches!(suffix, "" | "st" | "nd" | "rd" | "th") || digits.len() > 2 {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

/// A year from 1900 to 2199.
fn year(word: &str) -> Option<i64> {
    (word.len() == 4)
        .then(|| word.parse().ok())
        .flatten()
        .filter(|y| (1900..2200).contains(y))
}

/// A small count: a digit or a word.
fn count(word: &str) -> Option<i64> {
    word.parse()
        .ok()
        .filter(|n| (1..1000).contains(n))
        .or_else(|| NUMBERS.iter().find(|(w, _)| *w == word).map(|(_, n)| *n))
}

/// `YYYY-MM-DD` anywhere in `text`.
fn iso_date(text: &str) -> Option<Period> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(9)).find_map(|i| {
        let s = text.get(i..i + 10)?;
        let b = s.as_bytes();
        let digits = [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&j| b[j].is_ascii_digit());
        if !digits || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let boundary_before = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let boundary_after = bytes.get(i + 10).is_none_or(|c| !c.is_ascii_alphanumeric());
        if !boundary_before || !boundary_after {
            return None;
        }
        let y: i64 = s[0..4].parse().ok()?;
        let m: i64 = s[5..7].parse().ok()?;
        let d: i64 = s[8..10].parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        let day = days_from_civil(y, m, d);
        // 2026-02-30 is not a date.
        (civil_from_days(day) == (y, m, d)).then(|| Period::days(day, day))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-07-02, a Thursday, at noon.
    fn now() -> Timestamp {
        Timestamp::from_millis(days_from_civil(2026, 7, 2) * DAY_MS + 12 * 3_600_000)
    }

    fn span(text: &str) -> Option<(String, String)> {
        Period::parse(text, now()).map(|p| {
            (
                p.start.date(),
                Timestamp::from_millis(p.end.as_millis() - 1).date(),
            )
        })
    }

    fn days(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.into(), b.into()))
    }

    #[test]
    fn months_with_qualifiers_days_and_years() {
        assert_eq!(
            span("what happened in February?"),
            days("2026-02-01", "2026-02-28")
        );
        assert_eq!(
            span("in the middle of May"),
            days("2026-05-10", "2026-05-20")
        );
        assert_eq!(span("mid-May"), days("2026-05-10", "2026-05-20"));
        assert_eq!(span("at the end of July"), days("2026-07-20", "2026-07-31"));
        assert_eq!(span("late July"), days("2026-07-20", "2026-07-31"));
        assert_eq!(span("early march"), days("2026-03-01", "2026-03-10"));
        assert_eq!(span("on the 3rd of May"), days("2026-05-03", "2026-05-03"));
        assert_eq!(span("on May 14"), days("2026-05-14", "2026-05-14"));
        assert_eq!(span("on 14 May 2025"), days("2025-05-14", "2025-05-14"));
        assert_eq!(span("in May 2024"), days("2024-05-01", "2024-05-31"));
        // A month after the question's is last year's.
        assert_eq!(span("in December"), days("2025-12-01", "2025-12-31"));
        assert_eq!(span("on 2026-03-09"), days("2026-03-09", "2026-03-09"));
        assert_eq!(span("february 2028"), days("2028-02-01", "2028-02-29"));
        // A day that cannot be leaves the month.
        assert_eq!(
            span("on the 45th of June"),
            days("2026-06-01", "2026-06-30")
        );
    }

    #[test]
    fn relative_periods_count_from_the_question() {
        assert_eq!(
            span("what did I say yesterday"),
            days("2026-07-01", "2026-07-01")
        );
        assert_eq!(span("last week"), days("2026-06-22", "2026-06-28"));
        assert_eq!(span("this week"), days("2026-06-29", "2026-07-02"));
        assert_eq!(span("last month"), days("2026-06-01", "2026-06-30"));
        assert_eq!(span("last year"), days("2025-01-01", "2025-12-31"));
        assert_eq!(span("last weekend"), days("2026-06-27", "2026-06-28"));
        assert_eq!(span("two weeks ago"), days("2026-06-14", "2026-06-22"));
        assert_eq!(span("3 days ago"), days("2026-06-28", "2026-06-30"));
    }

    /// Words the parser reacts to, mixed with anything, so that cases reach
    /// its branches instead of only missing them.
    fn chat_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let word = prop_oneof![
            Just("in".to_owned()),
            Just("the".to_owned()),
            Just("of".to_owned()),
            Just("mid-may".to_owned()),
            Just("end".to_owned()),
            Just("last".to_owned()),
            Just("this".to_owned()),
            Just("week".to_owned()),
            Just("month".to_owned()),
            Just("year".to_owned()),
            Just("ago".to_owned()),
            Just("february".to_owned()),
            Just("december".to_owned()),
            Just("march".to_owned()),
            Just("99999".to_owned()),
            Just("0".to_owned()),
            "[0-9]{1,5}(st|nd|rd|th)?",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            ".{0,8}",
        ];
        proptest::collection::vec(word, 0..8).prop_map(|w| w.join(" "))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any text, asked at any time: a period or none, never a panic, and
        /// a period is never empty, never in the future of the question by
        /// more than the rest of its year, and at most a year and a half.
        #[test]
        fn any_text_names_a_sane_period_or_none(
            text in proptest::prop_oneof![chat_text(), "\\PC{0,40}"],
            at in -2_000_000_000_000_i64..8_000_000_000_000,
        ) {
            let now = Timestamp::from_millis(at);
            if let Some(p) = Period::parse(&text, now) {
                proptest::prop_assert!(p.start < p.end, "{text:?}: {p:?}");
                let span = p.end.as_millis() - p.start.as_millis();
                proptest::prop_assert!(span <= 550 * DAY_MS, "{text:?}: {p:?}");
            }
        }
    }

    #[test]
    fn words_that_only_look_like_dates_name_no_period() {
        for text in [
            "You may be right",
            "we will march on",
            "where does Ada live?",
            "the 2026-02-30 meeting",
            "call me at 12-05-2026x",
            "",
        ] {
            assert_eq!(span(text), None, "{text}");
        }
    }
}
