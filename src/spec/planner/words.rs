//! PURE. A sentence → tokens, and the planner's vocabulary: intent words,
//! channel aliases, weekday names (Indonesian and English).
//!
//! Tokens keep the word as typed (accounts keep their case) and its
//! lowercase form (for matching). `,` `;` `dan` `and` `&` are separators;
//! punctuation around a word is dropped, inside it kept (`07:00`,
//! `07.00`, `senin-jumat`, `bot_a01`).

use super::PlanError;

/// Longest sentence the planner reads, in bytes: a sentence, not a file.
pub const MAX_SENTENCE_BYTES: usize = 2000;

/// One word of the sentence, or a separator between intents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// As typed, punctuation around it removed.
    pub raw: String,
    pub lower: String,
    pub sep: bool,
}

/// Words that separate intents (`,` and `;` are separators too).
const SEPARATORS: [&str; 5] = ["dan", "and", "&", "serta", "lalu"];

/// The sentence's tokens; a sentence too long, with control characters
/// or with nothing in it is refused.
pub fn tokenize(sentence: &str) -> Result<Vec<Token>, PlanError> {
    if sentence.len() > MAX_SENTENCE_BYTES {
        return Err(PlanError::TooLong {
            bytes: sentence.len(),
        });
    }
    if let Some((at, c)) = sentence
        .char_indices()
        .find(|(_, c)| (c.is_control() && *c != '\t') || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(PlanError::Control { at, ch: c });
    }
    let mut out = Vec::new();
    for word in sentence.split_whitespace() {
        let trailing_sep = word.ends_with([',', ';']);
        let trimmed = word.trim_matches(|c: char| !c.is_alphanumeric() && !"_&:".contains(c));
        let trimmed = trimmed.trim_end_matches(':');
        if !trimmed.is_empty() {
            let lower = trimmed.to_lowercase();
            let sep = SEPARATORS.contains(&lower.as_str());
            out.push(Token {
                raw: trimmed.to_string(),
                lower,
                sep,
            });
        }
        if trailing_sep {
            out.push(Token {
                raw: ",".into(),
                lower: ",".into(),
                sep: true,
            });
        }
    }
    Ok(out)
}

/// What a part of the sentence asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Monitor,
    Report,
    Backup,
    Agent,
}

impl Intent {
    pub fn job_type(self) -> &'static str {
        match self {
            Intent::Monitor => "monitor.channel",
            Intent::Report => "report.daily",
            Intent::Backup => "backup.export",
            Intent::Agent => "agent.workflow",
        }
    }
}

/// The intent a word names.
pub fn intent(word: &str) -> Option<Intent> {
    Some(match word {
        "monitor" | "monitoring" | "pantau" | "memantau" | "pantauan" | "cek" | "check"
        | "status" | "heartbeat" | "koneksi" => Intent::Monitor,
        "laporan" | "report" | "ringkasan" | "rekap" | "summary" => Intent::Report,
        "backup" | "cadangan" | "cadangkan" | "ekspor" | "export" => Intent::Backup,
        "agent" | "workflow" | "otomasi" | "otomatis" | "integrasi" | "sinkron" | "sinkronkan"
        | "sync" | "hubungkan" | "automate" | "automation" | "integrate" => Intent::Agent,
        _ => return None,
    })
}

/// The channel a word names (aliases folded): `telegram`, `whatsapp`,
/// `email`, `slack`.
pub fn channel(word: &str) -> Option<&'static str> {
    Some(match word {
        "tg" | "telegram" => "telegram",
        "wa" | "whatsapp" => "whatsapp",
        "email" | "gmail" | "e-mail" | "mail" | "surel" => "email",
        "slack" => "slack",
        _ => return None,
    })
}

/// The cron weekday (0 = Sunday) a word names.
pub fn weekday(word: &str) -> Option<u8> {
    Some(match word {
        "minggu" | "ahad" | "sunday" | "sun" => 0,
        "senin" | "monday" | "mon" => 1,
        "selasa" | "tuesday" | "tue" => 2,
        "rabu" | "wednesday" | "wed" => 3,
        "kamis" | "thursday" | "thu" => 4,
        "jumat" | "jum'at" | "friday" | "fri" => 5,
        "sabtu" | "saturday" | "sat" => 6,
        _ => return None,
    })
}

/// Indonesian day names by cron weekday, for ids.
pub const HARI: [&str; 7] = [
    "minggu", "senin", "selasa", "rabu", "kamis", "jumat", "sabtu",
];
/// English day names by cron weekday, for ids.
pub const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// Words only an Indonesian sentence holds: ids follow its language.
pub fn is_indonesian(word: &str) -> bool {
    matches!(
        word,
        "tiap"
            | "setiap"
            | "jam"
            | "pukul"
            | "harian"
            | "laporan"
            | "pantau"
            | "akun"
            | "dan"
            | "buat"
            | "hari"
            | "detik"
            | "menit"
            | "cadangan"
            | "ekspor"
            | "ringkasan"
            | "rekap"
            | "pagi"
            | "siang"
            | "sore"
            | "malam"
            | "kirim"
            | "ke"
            | "lewat"
            | "cek"
            | "koneksi"
            | "otomasi"
            | "hubungkan"
            | "sinkron"
            | "kerja"
    ) || HARI.contains(&word)
}
