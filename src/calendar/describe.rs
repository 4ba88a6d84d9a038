//! A cron expression in plain English, for `multijob cron` and wherever a
//! person reads a schedule: `0 7 * * MON-FRI` is "at 07:00, Monday to
//! Friday", `*/5 * * * *` is "every 5 minutes".
//!
//! PURE. It reads the grammar `cron_fields` accepts and is only called on
//! an expression that check passed, so every field here is well formed;
//! a shape it has no phrase for is quoted as written rather than guessed.
//! A day matches its day of month OR its weekday when both are set (POSIX,
//! as the slot math reads it), and the phrase says "or".

use super::cron_fields;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTH_ABBR: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const DAY_ABBR: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The expression in words; the field checker's message when it is invalid.
pub fn describe(expr: &str) -> Result<String, String> {
    cron_fields::check(expr)?;
    let expr = expr.trim();
    if let Some(phrase) = alias(expr) {
        return Ok(phrase.to_string());
    }
    let parts: Vec<String> = expr
        .split_whitespace()
        .map(|p| p.to_ascii_uppercase())
        .collect();
    let (second, rest) = if parts.len() == 6 {
        (parts[0].as_str(), &parts[1..])
    } else {
        ("0", &parts[..])
    };
    let time = time_phrase(second, &rest[0], &rest[1]);
    let days = day_phrase(&rest[2], &rest[4]);
    let months = month_phrase(&rest[3]);
    let mut out = time;
    match days {
        Some(d) if d.starts_with("on ") => out = format!("{out} {d}"),
        Some(d) => out = format!("{out}, {d}"),
        None if months.is_none() && out.starts_with("at ") && !out.contains("minute") => {
            out.push_str(", every day");
        }
        None => {}
    }
    if let Some(m) = months {
        out = format!("{out}, {m}");
    }
    Ok(out)
}

fn alias(expr: &str) -> Option<&'static str> {
    Some(match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "at 00:00 on day 1 of the month, in January",
        "@monthly" => "at 00:00 on day 1 of the month",
        "@weekly" => "at 00:00 on Sunday",
        "@daily" => "at 00:00, every day",
        "@hourly" => "at minute 0 past every hour",
        _ => return None,
    })
}

/// One item of a list.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    One(u32),
    Range(u32, u32),
}

/// A field as written, read as one of the shapes a phrase exists for.
#[derive(Debug, PartialEq)]
enum Shape {
    Every,
    Step(u32),
    One(u32),
    Range(u32, u32),
    RangeStep(u32, u32, u32),
    /// Single values and ranges, e.g. `0-10,30`.
    List(Vec<Item>),
    /// `L`, `W`, `#` or a list mixing shapes: phrased by the caller or quoted.
    Other,
}

fn shape(text: &str, names: &[&str], first_named: u32) -> Shape {
    let value = |t: &str| -> Option<u32> {
        t.parse().ok().or_else(|| {
            names
                .iter()
                .position(|n| *n == t)
                .map(|i| first_named + i as u32)
        })
    };
    let range = |t: &str| -> Option<(u32, u32)> {
        let (a, b) = t.split_once('-')?;
        let hi = value(b)?;
        // `FRI-SUN`: SUN closing a range means 7.
        let hi = if hi == 0 && !names.is_empty() && first_named == 0 {
            7
        } else {
            hi
        };
        Some((value(a)?, hi))
    };
    if text == "*" || text == "?" {
        return Shape::Every;
    }
    if let Some((base, step)) = text.split_once('/') {
        let Ok(step) = step.parse() else {
            return Shape::Other;
        };
        return match (base, range(base)) {
            ("*", _) => Shape::Step(step),
            (_, Some((a, b))) => Shape::RangeStep(a, b, step),
            _ => Shape::Other,
        };
    }
    if text.contains(',') {
        let item = |t: &str| match range(t) {
            Some((a, b)) => Some(Item::Range(a, b)),
            None => value(t).map(Item::One),
        };
        let items: Option<Vec<Item>> = text.split(',').map(item).collect();
        return items.map_or(Shape::Other, Shape::List);
    }
    if let Some((a, b)) = range(text) {
        return Shape::Range(a, b);
    }
    value(text).map_or(Shape::Other, Shape::One)
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `a`, `a and b`, `a, b and c`.
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A list's items, each value named by `name`: `0 through 10 and 30`,
/// `Monday to Friday and Sunday`.
fn items(values: &[Item], name: impl Fn(u32) -> String, through: &str) -> String {
    let words: Vec<String> = values
        .iter()
        .map(|i| match i {
            Item::One(v) => name(*v),
            Item::Range(a, b) => format!("{} {through} {}", name(*a), name(*b)),
        })
        .collect();
    join(&words)
}

fn numbers(values: &[Item]) -> String {
    items(values, |v| v.to_string(), "through")
}

/// The values of a list of single values only.
fn singles(values: &[Item]) -> Option<Vec<u32>> {
    values
        .iter()
        .map(|i| match i {
            Item::One(v) => Some(*v),
            Item::Range(..) => None,
        })
        .collect()
}

/// Seconds, minutes and hours together.
fn time_phrase(second: &str, minute: &str, hour: &str) -> String {
    let (s, m, h) = (
        shape(second, &[], 0),
        shape(minute, &[], 0),
        shape(hour, &[], 0),
    );
    let at_seconds = match s {
        Shape::One(0) => None,
        Shape::One(n) => Some(n),
        _ => {
            let unit = unit_phrase(&s, second, "second");
            if m == Shape::Every && h == Shape::Every {
                return unit;
            }
            return match (&m, &h) {
                (Shape::One(mm), Shape::One(hh)) => format!("{unit}, at {hh:02}:{mm:02}"),
                _ => format!("{unit}, {}", minute_hour(&m, minute, &h, hour)),
            };
        }
    };
    match (&m, &h, at_seconds) {
        (Shape::One(mm), Shape::One(hh), None) => format!("at {hh:02}:{mm:02}"),
        (Shape::One(mm), Shape::One(hh), Some(ss)) => format!("at {hh:02}:{mm:02}:{ss:02}"),
        (Shape::One(mm), Shape::List(hours), None) if singles(hours).is_some() => {
            let hours = singles(hours).unwrap_or_default();
            let times: Vec<String> = hours.iter().map(|hh| format!("{hh:02}:{mm:02}")).collect();
            format!("at {}", join(&times))
        }
        (_, _, Some(ss)) => format!("at second {ss}, {}", minute_hour(&m, minute, &h, hour)),
        _ => minute_hour(&m, minute, &h, hour),
    }
}

/// "every 5 minutes", "at minute 0 past every 2nd hour", "every minute
/// from 09:00 to 17:59".
fn minute_hour(m: &Shape, minute: &str, h: &Shape, hour: &str) -> String {
    let unit = unit_phrase(m, minute, "minute");
    let at_minute = matches!(m, Shape::One(_) | Shape::List(_));
    match h {
        Shape::Every if at_minute => format!("{unit} past every hour"),
        Shape::Every => unit,
        Shape::Step(n) => format!("{unit} past every {} hour", ordinal(*n)),
        Shape::One(hh) if at_minute => format!("{unit} past hour {hh}"),
        Shape::One(hh) => format!("{unit} from {hh:02}:00 to {hh:02}:59"),
        Shape::Range(a, b) if at_minute => format!("{unit} past every hour from {a} through {b}"),
        Shape::Range(a, b) => format!("{unit} from {a:02}:00 to {b:02}:59"),
        Shape::RangeStep(a, b, n) => {
            format!(
                "{unit} past every {} hour from {a} through {b}",
                ordinal(*n)
            )
        }
        Shape::List(hours) => format!("{unit} past hours {}", numbers(hours)),
        Shape::Other => format!("{unit} past hours {hour}"),
    }
}

/// One time unit (second or minute) on its own.
fn unit_phrase(s: &Shape, text: &str, unit: &str) -> String {
    match s {
        Shape::Every => format!("every {unit}"),
        Shape::Step(1) => format!("every {unit}"),
        Shape::Step(n) => format!("every {n} {unit}s"),
        Shape::One(n) => format!("at {unit} {n}"),
        Shape::Range(a, b) => format!("every {unit} from {a} through {b}"),
        Shape::RangeStep(a, b, n) => format!("every {n} {unit}s from {a} through {b}"),
        Shape::List(v) => format!("at {unit}s {}", numbers(v)),
        Shape::Other => format!("at {unit} {text}"),
    }
}

/// Day of month and weekday; `None` when both are `*`.
fn day_phrase(dom: &str, dow: &str) -> Option<String> {
    let month_day = match shape(dom, &[], 0) {
        Shape::Every => None,
        other => Some(dom_phrase(&other, dom)),
    };
    let week_day = match shape(dow, &DAY_ABBR, 0) {
        Shape::Every => None,
        other => Some(dow_phrase(&other, dow)),
    };
    match (month_day, week_day) {
        (None, None) => None,
        (Some(d), None) | (None, Some(d)) => Some(d),
        (Some(d), Some(w)) if w.starts_with("on ") => Some(format!("{d} or {w}")),
        (Some(d), Some(w)) => Some(format!("{d} or {w}")),
    }
}

fn dom_phrase(s: &Shape, text: &str) -> String {
    match s {
        Shape::One(d) => format!("on day {d} of the month"),
        Shape::Range(a, b) => format!("on days {a} through {b} of the month"),
        Shape::List(v) => format!("on days {} of the month", numbers(v)),
        Shape::Step(n) => format!("on every {} day of the month", ordinal(*n)),
        Shape::RangeStep(a, b, n) => {
            format!(
                "on every {} day of the month from {a} through {b}",
                ordinal(*n)
            )
        }
        Shape::Every => String::new(),
        Shape::Other => match text {
            "L" => "on the last day of the month".to_string(),
            "LW" => "on the last weekday of the month".to_string(),
            t => match t.strip_suffix('W') {
                Some(d) if !d.contains(',') => format!("on the weekday nearest day {d}"),
                _ => format!("on day-of-month {t}"),
            },
        },
    }
}

fn day_name(n: u32) -> &'static str {
    DAYS[(n % 7) as usize]
}

fn dow_phrase(s: &Shape, text: &str) -> String {
    match s {
        Shape::One(d) => format!("on {}", day_name(*d)),
        Shape::Range(a, b) => format!("{} to {}", day_name(*a), day_name(*b)),
        Shape::List(v) => format!("on {}", items(v, |d| day_name(d).to_string(), "to")),
        Shape::Step(n) => format!("on every {} day of the week from Sunday", ordinal(*n)),
        Shape::RangeStep(a, b, n) => format!(
            "on every {} day of the week from {} to {}",
            ordinal(*n),
            day_name(*a),
            day_name(*b)
        ),
        Shape::Every => String::new(),
        Shape::Other => nth_weekday(text).unwrap_or_else(|| format!("on day-of-week {text}")),
    }
}

/// `5#2` (the second Friday) and `5L` (the last Friday).
fn nth_weekday(text: &str) -> Option<String> {
    let day = |t: &str| -> Option<u32> {
        t.parse()
            .ok()
            .or_else(|| DAY_ABBR.iter().position(|n| *n == t).map(|i| i as u32))
    };
    if let Some((d, nth)) = text.split_once('#') {
        let nth: u32 = nth.parse().ok()?;
        let word = ["first", "second", "third", "fourth", "fifth"].get(nth as usize - 1)?;
        return Some(format!("on the {word} {} of the month", day_name(day(d)?)));
    }
    let d = text.strip_suffix('L')?;
    Some(format!("on the last {} of the month", day_name(day(d)?)))
}

fn month_name(n: u32) -> &'static str {
    MONTHS[(n.clamp(1, 12) - 1) as usize]
}

fn month_phrase(text: &str) -> Option<String> {
    Some(match shape(text, &MONTH_ABBR, 1) {
        Shape::Every => return None,
        Shape::One(m) => format!("in {}", month_name(m)),
        Shape::Range(a, b) => format!("{} to {}", month_name(a), month_name(b)),
        Shape::List(v) => format!("in {}", items(&v, |m| month_name(m).to_string(), "to")),
        Shape::Step(n) => format!("every {} month", ordinal(n)),
        Shape::RangeStep(a, b, n) => format!(
            "every {} month from {} to {}",
            ordinal(n),
            month_name(a),
            month_name(b)
        ),
        Shape::Other => format!("in months {text}"),
    })
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn expressions_in_plain_english() {
        let cases = [
            ("0 7 * * MON-FRI", "at 07:00, Monday to Friday"),
            ("0 7 * * 1-5", "at 07:00, Monday to Friday"),
            ("*/5 * * * *", "every 5 minutes"),
            ("* * * * *", "every minute"),
            ("0 */2 * * *", "at minute 0 past every 2nd hour"),
            ("30 9 1 * *", "at 09:30 on day 1 of the month"),
            ("30 2 * * *", "at 02:30, every day"),
            ("15 * * * *", "at minute 15 past every hour"),
            ("0,30 * * * *", "at minutes 0 and 30 past every hour"),
            ("0 7,12,19 * * *", "at 07:00, 12:00 and 19:00, every day"),
            (
                "*/15 9-17 * * MON-FRI",
                "every 15 minutes from 09:00 to 17:59, Monday to Friday",
            ),
            (
                "0 9 * * MON,WED,FRI",
                "at 09:00 on Monday, Wednesday and Friday",
            ),
            ("0 9 * * sun", "at 09:00 on Sunday"),
            ("0 9 * * 7", "at 09:00 on Sunday"),
            ("0 9 * * FRI-SUN", "at 09:00, Friday to Sunday"),
            ("0 0 L * *", "at 00:00 on the last day of the month"),
            ("0 0 LW * *", "at 00:00 on the last weekday of the month"),
            ("0 0 15W * *", "at 00:00 on the weekday nearest day 15"),
            ("0 0 * * 5L", "at 00:00 on the last Friday of the month"),
            ("0 0 * * 5#2", "at 00:00 on the second Friday of the month"),
            ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of the month"),
            ("0 0 1 1 *", "at 00:00 on day 1 of the month, in January"),
            ("0 0 * JAN-MAR *", "at 00:00, January to March"),
            (
                "0 0 1 */3 *",
                "at 00:00 on day 1 of the month, every 3rd month",
            ),
            (
                "0 12 1 * MON",
                "at 12:00 on day 1 of the month or on Monday",
            ),
            ("*/10 * * * * *", "every 10 seconds"),
            ("30 */5 * * * *", "at second 30, every 5 minutes"),
            ("30 0 7 * * *", "at 07:00:30, every day"),
            (
                "0-30/10 0 0 * * *",
                "every 10 seconds from 0 through 30, at 00:00",
            ),
            (
                "0 10-20/5 * * *",
                "at minute 0 past every 5th hour from 10 through 20",
            ),
            ("5 0 * 8 *", "at 00:05, in August"),
            ("@daily", "at 00:00, every day"),
            ("@hourly", "at minute 0 past every hour"),
            ("@weekly", "at 00:00 on Sunday"),
            ("@monthly", "at 00:00 on day 1 of the month"),
            ("@yearly", "at 00:00 on day 1 of the month, in January"),
            ("0 22 * * 1-5", "at 22:00, Monday to Friday"),
            (
                "0-10,30 * * * *",
                "at minutes 0 through 10 and 30 past every hour",
            ),
            (
                "0 0 1-5,10 * *",
                "at 00:00 on days 1 through 5 and 10 of the month",
            ),
            ("0 8 * * 1-5,SUN", "at 08:00 on Monday to Friday and Sunday"),
            (
                "0 0 1 JAN-MAR,DEC *",
                "at 00:00 on day 1 of the month, in January to March and December",
            ),
            (
                "*/20 8,12-14 * * *",
                "every 20 minutes past hours 8 and 12 through 14",
            ),
            (
                "23 0-20/2 * * *",
                "at minute 23 past every 2nd hour from 0 through 20",
            ),
        ];
        for (expr, words) in cases {
            assert_eq!(describe(expr).as_deref(), Ok(words), "{expr}");
        }
    }

    #[test]
    fn an_invalid_expression_gets_the_validate_message() {
        assert_eq!(
            describe("61 * * * *"),
            Err("minute 61 is out of range (0-59)".to_string())
        );
        assert_eq!(
            describe("0 9 * * 11-24"),
            Err("day-of-week 11-24 is out of range (0-7)".to_string())
        );
    }
}
