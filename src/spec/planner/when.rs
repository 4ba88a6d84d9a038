//! PURE. When a part of the sentence fires: intervals (`tiap 30 detik`,
//! `every 5 minutes`), times of day (`jam 7 malam`, `pukul 07:30`,
//! `at 7pm`, `07:00`) and days (`harian`, `senin-jumat`, `weekdays`,
//! `setiap senin`, `sabtu dan minggu`) → a schedule, `every` or cron.
//!
//! Indonesian day parts: `pagi` is the morning as written (`12 pagi` is
//! 00:00), `siang` is 11:00–15:00 (`12 siang` 12:00, `2 siang` 14:00),
//! `sore` is the afternoon (`3 sore` 15:00), `malam` is the evening from
//! 18:00 (`7 malam` 19:00) and the small hours before 05:00 (`2 malam`
//! 02:00; `12 malam` 00:00).

use super::PlanError;
use super::words::{Token, weekday};

/// Every weekday, as a bit mask (bit 0 = Sunday).
pub const ALL_DAYS: u8 = 0b111_1111;

/// What a part says about time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    /// `(n, unit)`, unit one of `s`, `m`, `h`, `d`.
    pub every: Option<(u64, char)>,
    /// `(hour, minute)` in the job's zone.
    pub at: Option<(u8, u8)>,
    /// Weekdays, bit 0 = Sunday; `None` when the part names none.
    pub days: Option<u8>,
}

impl When {
    pub fn is_empty(&self) -> bool {
        *self == When::default()
    }
}

/// The schedule a planned job gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(String),
    Cron(String),
    /// Runs only when triggered.
    None,
}

fn unit(word: &str) -> Option<char> {
    Some(match word {
        "detik" | "second" | "seconds" | "sec" | "secs" | "s" => 's',
        "menit" | "minute" | "minutes" | "min" | "mins" | "m" => 'm',
        "jam" | "hour" | "hours" | "hr" | "hrs" | "h" => 'h',
        "hari" | "day" | "days" | "d" => 'd',
        _ => return None,
    })
}

/// `30s`, `5m`, `2h` written as one word.
fn compact_interval(word: &str) -> Option<(u64, char)> {
    let split = word.find(|c: char| !c.is_ascii_digit())?;
    let (n, u) = word.split_at(split);
    Some((n.parse().ok()?, unit(u)?))
}

/// Reads the part's interval, time and days.
pub fn read(tokens: &[Token], part: &str) -> Result<When, PlanError> {
    let mut when = When::default();
    let words: Vec<&str> = tokens.iter().map(|t| t.lower.as_str()).collect();
    let mut i = 0;
    while i < words.len() {
        i += read_at(&words, i, &mut when, part)?.max(1);
    }
    if let Some((n, u)) = when.every
        && n == 0
    {
        return Err(PlanError::Part {
            part: part.to_string(),
            message: format!("an interval of 0{u} never fires: give a positive number"),
        });
    }
    Ok(when)
}

/// Reads what starts at `words[i]`; returns how many words it took (0:
/// nothing there).
fn read_at(words: &[&str], i: usize, when: &mut When, part: &str) -> Result<usize, PlanError> {
    let w = words[i];
    let next = words.get(i + 1).copied().unwrap_or("");
    let after = words.get(i + 2).copied().unwrap_or("");
    let every_word = matches!(w, "tiap" | "setiap" | "per" | "every" | "each");
    if every_word {
        if !next.is_empty() && next.bytes().all(|b| b.is_ascii_digit()) && unit(after).is_some() {
            let n = next.parse::<u64>().unwrap_or(u64::MAX);
            let u = unit(after).unwrap_or('s');
            return set_every(when, (n, u), part).map(|_| 3);
        }
        if let Some(e) = compact_interval(next) {
            return set_every(when, e, part).map(|_| 2);
        }
        // `tiap jam 7` is a time; `tiap jam` alone is hourly.
        if let Some(u) = unit(next)
            && !(next == "jam" && after.starts_with(|c: char| c.is_ascii_digit()))
        {
            if u == 'd' {
                return set_days(when, ALL_DAYS).map(|_| 2);
            }
            return set_every(when, (1, u), part).map(|_| 2);
        }
        return Ok(1);
    }
    if let Some(taken) = read_days(words, i, when)? {
        return Ok(taken);
    }
    match (w, next) {
        ("midnight", _) | ("tengah", "malam") => {
            return set_at(when, (0, 0), part).map(|_| if w == "tengah" { 2 } else { 1 });
        }
        ("noon", _) | ("tengah", "hari" | "siang") => {
            return set_at(when, (12, 0), part).map(|_| if w == "tengah" { 2 } else { 1 });
        }
        _ => {}
    }
    match w {
        "hourly" => return set_every(when, (1, 'h'), part).map(|_| 1),
        "jam" | "pukul" | "at" => {
            if let Some((at, taken)) = time_at(words, i + 1, part)? {
                return set_at(when, at, part).map(|_| taken + 1);
            }
            return Ok(1);
        }
        _ => {}
    }
    if (w.contains(':') || w.ends_with("am") || w.ends_with("pm"))
        && let Some((at, taken)) = time_at(words, i, part)?
    {
        return set_at(when, at, part).map(|_| taken);
    }
    Ok(0)
}

/// Day words at `words[i]`: `harian`, `daily`, `setiap hari`, a weekday,
/// a range (`senin-jumat`, `senin sampai jumat`, `mon to fri`),
/// `weekdays`/`hari kerja`, `weekend`/`akhir pekan`.
fn read_days(words: &[&str], i: usize, when: &mut When) -> Result<Option<usize>, PlanError> {
    let w = words[i];
    let next = words.get(i + 1).copied().unwrap_or("");
    let (mask, taken) = match (w, next) {
        ("harian" | "daily" | "everyday", _) => (ALL_DAYS, 1),
        ("hari", "kerja") => (0b011_1110, 2),
        ("weekdays" | "weekday", _) => (0b011_1110, 1),
        ("akhir", "pekan") => (0b100_0001, 2),
        ("weekend" | "weekends", _) => (0b100_0001, 1),
        _ => match range(words, i) {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    set_days(when, mask)?;
    Ok(Some(taken))
}

/// A weekday or a range of them at `words[i]`.
fn range(words: &[&str], i: usize) -> Option<(u8, usize)> {
    let w = words[i];
    if let Some((a, b)) = w.split_once('-')
        && let (Some(a), Some(b)) = (weekday(a), weekday(b))
    {
        return Some((span(a, b), 1));
    }
    let a = weekday(w)?;
    let link = words.get(i + 1).copied().unwrap_or("");
    if matches!(link, "sampai" | "hingga" | "to" | "through" | "until" | "-")
        && let Some(b) = words.get(i + 2).and_then(|x| weekday(x))
    {
        return Some((span(a, b), 3));
    }
    Some((1 << a, 1))
}

/// Weekdays from `a` to `b`, wrapping past Saturday.
fn span(a: u8, b: u8) -> u8 {
    let mut mask = 0;
    let mut d = a;
    loop {
        mask |= 1 << d;
        if d == b {
            return mask;
        }
        d = (d + 1) % 7;
    }
}

/// Longest interval: a year, like the schema's `interval_sec`.
const MAX_EVERY_SECONDS: u64 = 31_622_400;

fn set_every(when: &mut When, every: (u64, char), part: &str) -> Result<(), PlanError> {
    let (n, u) = every;
    let scale = match u {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => 86_400,
    };
    if n.checked_mul(scale).is_none_or(|s| s > MAX_EVERY_SECONDS) {
        return Err(PlanError::Part {
            part: part.to_string(),
            message: format!(
                "every {n}{u} is longer than a year: give a shorter interval, or a day and time"
            ),
        });
    }
    if when.every.is_some_and(|e| e != every) {
        return Err(conflict(part, "two intervals"));
    }
    when.every = Some(every);
    Ok(())
}

fn set_at(when: &mut When, at: (u8, u8), part: &str) -> Result<(), PlanError> {
    if when.at.is_some_and(|a| a != at) {
        return Err(conflict(part, "two times of day"));
    }
    when.at = Some(at);
    Ok(())
}

/// `harian` beside `senin-jumat` narrows nothing: the days named win;
/// days named apart add up (`sabtu dan minggu`).
fn set_days(when: &mut When, mask: u8) -> Result<(), PlanError> {
    when.days = Some(match when.days {
        None | Some(ALL_DAYS) => mask,
        Some(d) if mask == ALL_DAYS => d,
        Some(d) => d | mask,
    });
    Ok(())
}

fn conflict(part: &str, what: &str) -> PlanError {
    PlanError::Part {
        part: part.to_string(),
        message: format!(
            "{what} in one part: split it with `dan`/`and` into one part per job, or keep one"
        ),
    }
}

/// `(hour, minute)`.
type Clock = (u8, u8);

/// A time of day at `words[i]` (`7`, `07:30`, `07.30`, `7pm`, `7 pm`,
/// `7 malam`); how many words it took.
fn time_at(words: &[&str], i: usize, part: &str) -> Result<Option<(Clock, usize)>, PlanError> {
    let Some(w) = words.get(i) else {
        return Ok(None);
    };
    let (clock, suffix) = match w.strip_suffix("am").or_else(|| w.strip_suffix("pm")) {
        Some(c) if !c.is_empty() => (c, &w[c.len()..]),
        _ => (*w, ""),
    };
    let (h, m) = match clock.split_once([':', '.']) {
        Some((h, m)) => (h, m),
        None => (clock, "00"),
    };
    let (Ok(h), Ok(m)) = (h.parse::<u32>(), m.parse::<u32>()) else {
        return Ok(None);
    };
    let bad = |message: String| PlanError::Part {
        part: part.to_string(),
        message,
    };
    if m > 59 {
        return Err(bad(format!("{w}: minutes run from 00 to 59")));
    }
    let mut taken = 1;
    let day_part = if suffix.is_empty() {
        let next = words.get(i + 1).copied().unwrap_or("");
        if matches!(next, "am" | "pm" | "pagi" | "siang" | "sore" | "malam") {
            taken = 2;
        }
        if taken == 2 { next } else { "" }
    } else {
        suffix
    };
    let hour = day_hour(h, day_part).ok_or_else(|| {
        bad(format!(
            "{w} {day_part}: not an hour of the day (0–23, or 1–12 with a day part)"
        ))
    })?;
    Ok(Some(((hour, m as u8), taken)))
}

/// The 24-hour clock hour of `h` in `day_part`.
fn day_hour(h: u32, day_part: &str) -> Option<u8> {
    let twelve = (1..=12).contains(&h);
    let hour = match day_part {
        "" if h <= 23 => h,
        "am" | "pagi" if twelve => h % 12,
        "pm" if twelve => h % 12 + 12,
        "siang" if (11..=12).contains(&h) => h,
        "siang" if (1..=3).contains(&h) => h + 12,
        "sore" if (1..=7).contains(&h) => h + 12,
        "sore" if (15..=19).contains(&h) => h,
        "malam" if h == 12 => 0,
        "malam" if (1..=4).contains(&h) => h,
        "malam" if (5..=11).contains(&h) => h + 12,
        "malam" if (17..=23).contains(&h) => h,
        "pagi" if h <= 11 => h,
        _ => return None,
    };
    u8::try_from(hour).ok()
}

/// `0,6` or `1-5`: cron's weekday field for a mask (`*` for every day).
pub fn weekday_field(mask: u8) -> String {
    if mask == ALL_DAYS {
        return "*".into();
    }
    let days: Vec<u8> = (0..7).filter(|d| mask & (1 << d) != 0).collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1] == days[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}-{}", days[i], days[j]));
        } else {
            parts.extend(days[i..=j].iter().map(u8::to_string));
        }
        i = j + 1;
    }
    parts.join(",")
}

/// The schedule of `when`; an interval on some days only becomes cron
/// when it divides an hour or a day evenly.
pub fn schedule(when: &When, part: &str) -> Result<Schedule, PlanError> {
    let days = when.days.unwrap_or(ALL_DAYS);
    let dow = weekday_field(days);
    match (when.every, when.at) {
        (Some(_), Some(_)) => Err(conflict(part, "an interval and a time of day")),
        (Some((n, u)), None) if days == ALL_DAYS => Ok(Schedule::Every(format!("{n}{u}"))),
        (Some((n, 'm')), None) if 60 % n == 0 => Ok(Schedule::Cron(if n == 1 {
            format!("* * * * {dow}")
        } else {
            format!("*/{n} * * * {dow}")
        })),
        (Some((n, 'h')), None) if 24 % n == 0 => Ok(Schedule::Cron(if n == 1 {
            format!("0 * * * {dow}")
        } else {
            format!("0 */{n} * * {dow}")
        })),
        (Some((n, u)), None) => Err(PlanError::Part {
            part: part.to_string(),
            message: format!(
                "every {n}{u} on some days only has no cron form: use minutes dividing 60 or hours dividing 24, or drop the days"
            ),
        }),
        (None, Some((h, m))) => Ok(Schedule::Cron(format!("{m} {h} * * {dow}"))),
        (None, None) => Ok(Schedule::None),
    }
}
