//! Field-by-field check of a cron expression, before croner parses it.
//!
//! croner rejects `0 9 * * 11-24` with "Range out of bounds.", which names
//! neither the field nor the allowed values. This check walks the same
//! grammar croner accepts (5 fields, or 6 with seconds first; lists, ranges,
//! steps, names, `L`, `W`, `#`, `@daily`-style aliases) and says which field
//! is wrong and what it allows, in one line. croner stays the final judge.

/// One field of a cron expression.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for values `first_named..`, as in `JAN` or `SUN`.
    names: &'static [&'static str],
    first_named: u32,
}

const SECOND: Field = Field::numeric("second", 0, 59);
const MINUTE: Field = Field::numeric("minute", 0, 59);
const HOUR: Field = Field::numeric("hour", 0, 23);
const DAY_OF_MONTH: Field = Field::numeric("day-of-month", 1, 31);
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    first_named: 1,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    first_named: 0,
};

const ALIASES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

impl Field {
    const fn numeric(name: &'static str, min: u32, max: u32) -> Field {
        Field {
            name,
            min,
            max,
            names: &[],
            first_named: 0,
        }
    }

    /// A number or a name. `SUN` closing a range means 7, so `FRI-SUN` works.
    fn value(&self, text: &str, closes_range: bool) -> Option<u32> {
        if let Ok(n) = text.parse::<u32>() {
            return Some(n);
        }
        let index = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(text))?;
        let value = self.first_named + index as u32;
        Some(
            if closes_range && self.name == DAY_OF_WEEK.name && value == 0 {
                7
            } else {
                value
            },
        )
    }

    fn out_of_range(&self, item: &str) -> String {
        format!(
            "{} {item} is out of range ({}-{})",
            self.name, self.min, self.max
        )
    }

    fn in_range(&self, v: u32) -> bool {
        (self.min..=self.max).contains(&v)
    }

    /// `a` or `a-b`, each end a number or a name, inside the field's range.
    fn check_base(&self, base: &str, item: &str) -> Result<(), String> {
        let (low, high) = match base.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (base, None),
        };
        let Some(lo) = self.value(low, false) else {
            return Err(self.not_valid(item));
        };
        let Some(high) = high else {
            return if self.in_range(lo) {
                Ok(())
            } else {
                Err(self.out_of_range(item))
            };
        };
        let Some(hi) = self.value(high, true) else {
            return Err(self.not_valid(item));
        };
        if !self.in_range(lo) || !self.in_range(hi) {
            return Err(self.out_of_range(item));
        }
        if lo > hi {
            return Err(format!(
                "{} {item} is a reversed range; write the smaller value first",
                self.name
            ));
        }
        Ok(())
    }

    fn not_valid(&self, item: &str) -> String {
        let extra = match self.name {
            "day-of-month" => ", L (last day), LW or 15W (nearest weekday)",
            "day-of-week" => ", SUN-SAT, 5L (last Friday) or 5#2 (second Friday)",
            "month" => ", JAN-DEC",
            _ => "",
        };
        format!(
            "{} '{item}' is not valid: use a number, a range (1-5), a list (1,5), a step (*/5){extra}",
            self.name
        )
    }

    fn check_item(&self, item: &str) -> Result<(), String> {
        let upper = item.to_ascii_uppercase();
        let day_field = self.name == DAY_OF_MONTH.name || self.name == DAY_OF_WEEK.name;
        if upper == "*" || (day_field && upper == "?") {
            return Ok(());
        }
        if let Some((base, step)) = upper.split_once('/') {
            if !step.parse::<u32>().is_ok_and(|s| s >= 1) {
                return Err(format!(
                    "{} '{item}': the step after '/' must be a whole number of at least 1",
                    self.name
                ));
            }
            if base == "*" {
                return Ok(());
            }
            if !base.contains('-') {
                return Err(format!(
                    "{} '{item}': a step needs '*' or a range before it, e.g. '*/{step}' or '{base}-{}/{step}'",
                    self.name, self.max
                ));
            }
            return self.check_base(base, item);
        }
        if self.name == DAY_OF_MONTH.name {
            if upper == "L" || upper == "LW" {
                return Ok(());
            }
            if let Some(day) = upper.strip_suffix('W') {
                return match day.parse::<u32>() {
                    Ok(d) if self.in_range(d) => Ok(()),
                    Ok(_) => Err(self.out_of_range(item)),
                    Err(_) => Err(self.not_valid(item)),
                };
            }
        }
        if self.name == DAY_OF_WEEK.name {
            if let Some((day, nth)) = upper.split_once('#') {
                if !nth.parse::<u32>().is_ok_and(|n| (1..=5).contains(&n)) {
                    return Err(format!(
                        "day-of-week '{item}': the occurrence after '#' must be 1-5"
                    ));
                }
                return self.check_single(day, item);
            }
            if let Some(day) = upper.strip_suffix('L') {
                return self.check_single(day, item);
            }
        }
        self.check_base(&upper, item)
    }

    /// A single day of the week before `#` or `L`: no range allowed.
    fn check_single(&self, day: &str, item: &str) -> Result<(), String> {
        match self.value(day, false) {
            Some(d) if self.in_range(d) => Ok(()),
            Some(_) => Err(self.out_of_range(item)),
            None => Err(self.not_valid(item)),
        }
    }

    fn check(&self, text: &str) -> Result<(), String> {
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!(
                    "{} '{text}' has an empty item in its list",
                    self.name
                ));
            }
            self.check_item(item)?;
        }
        Ok(())
    }
}

/// Checks every field of `expr`; the error is one user-facing line.
pub(crate) fn check(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("the cron expression is empty".to_string());
    }
    if expr.starts_with('@') {
        return if ALIASES.iter().any(|a| a.eq_ignore_ascii_case(expr)) {
            Ok(())
        } else {
            Err(format!(
                "unknown alias '{expr}': use @yearly, @monthly, @weekly, @daily or @hourly"
            ))
        };
    }
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let fields: &[Field] = match parts.len() {
        5 => &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
        6 => &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found {n}"
            ));
        }
    };
    for (field, text) in fields.iter().zip(parts) {
        field.check(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_the_grammar_croner_accepts() {
        for ok in [
            "* * * * *",
            "0 7 * * *",
            "*/15 9-17 * * MON-FRI",
            "0 0 1,15 * *",
            "0 0 L * *",
            "0 0 LW * *",
            "0 0 15W * *",
            "0 0 * * 5L",
            "0 0 * * 5#2",
            "0 0 * * FRI-SUN",
            "0 0 * JAN-MAR,dec *",
            "0 0 ? * 7",
            "30 */5 * * * *",
            "0-30/10 0 0 * * *",
            "@hourly",
            "@Daily",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn black_friday_cron_names_the_day_of_week_field() {
        assert_eq!(
            check("0 9 * * 11-24"),
            Err("day-of-week 11-24 is out of range (0-7)".to_string())
        );
    }

    #[test]
    fn errors_name_the_field_and_its_range() {
        let cases = [
            ("61 * * * *", "minute 61 is out of range (0-59)"),
            ("0 24 * * *", "hour 24 is out of range (0-23)"),
            ("0 0 0 * *", "day-of-month 0 is out of range (1-31)"),
            ("0 0 32W * *", "day-of-month 32W is out of range (1-31)"),
            ("0 0 * 13 *", "month 13 is out of range (1-12)"),
            ("60 0 0 * * *", "second 60 is out of range (0-59)"),
            ("0 0 * * 8#1", "day-of-week 8#1 is out of range (0-7)"),
            (
                "0 5-1 * * *",
                "hour 5-1 is a reversed range; write the smaller value first",
            ),
            (
                "0 0 * * 5#6",
                "day-of-week '5#6': the occurrence after '#' must be 1-5",
            ),
            (
                "*/0 * * * *",
                "minute '*/0': the step after '/' must be a whole number of at least 1",
            ),
            (
                "5/15 * * * *",
                "minute '5/15': a step needs '*' or a range before it, e.g. '*/15' or '5-59/15'",
            ),
            (
                "1,,2 * * * *",
                "minute '1,,2' has an empty item in its list",
            ),
            (
                "0 0 * * *  *  *",
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found 7",
            ),
            (
                "@reboot",
                "unknown alias '@reboot': use @yearly, @monthly, @weekly, @daily or @hourly",
            ),
            ("", "the cron expression is empty"),
        ];
        for (expr, message) in cases {
            assert_eq!(check(expr), Err(message.to_string()), "{expr}");
        }
        let garbage = check("x * * * *").unwrap_err();
        assert!(garbage.starts_with("minute 'x' is not valid"), "{garbage}");
        let month = check("0 0 * FOO *").unwrap_err();
        assert!(month.contains("JAN-DEC"), "{month}");
    }
}
