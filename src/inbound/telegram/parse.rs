//! A chat message as a bridge command: `/name[@bot] args...`, the args
//! split into words (`"a b"`, `'a b'` and their curly forms keep spaces,
//! `\"` inside double quotes is a quote) and `/run`'s `key=value` inputs (`k="a b"`).
//!
//! Pure: text in, a command or the reason it is not one out. What a
//! message may be is capped before this runs (see `MAX_MESSAGE_BYTES`).

use serde_json::{Map, Value};

/// The longest message a bridge parses; a longer one is refused with a
/// reply (Telegram's own limit is 4096 characters).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Inputs one `/run` may set.
pub const MAX_INPUTS: usize = 32;
/// The longest input name.
pub const MAX_KEY_BYTES: usize = 64;

/// `/name@bot rest`: the command's name (lower-cased, without the slash
/// and the bot's name), the bot it names, and the text after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub name: String,
    pub bot: Option<String>,
    pub rest: String,
}

impl CommandLine {
    /// Whether the command is for the bot named `me` (unknown: it is):
    /// in a group, `/run@other_bot` is another bot's.
    pub fn is_for(&self, me: Option<&str>) -> bool {
        match (&self.bot, me) {
            (Some(to), Some(me)) => to.eq_ignore_ascii_case(me),
            _ => true,
        }
    }
}

/// The command a message starts with; `None` for a message that is not
/// one (plain chat in a group).
pub fn command_line(text: &str) -> Option<CommandLine> {
    let text = text.trim_start();
    let after = text.strip_prefix('/')?;
    let end = after.find(char::is_whitespace).unwrap_or(after.len());
    let (head, rest) = after.split_at(end);
    // `/run@my_bot` in a group names the bot it is for.
    let (name, bot) = match head.split_once('@') {
        Some((name, bot)) => (name, Some(bot.to_string())),
        None => (head, None),
    };
    if name.is_empty() {
        return None;
    }
    Some(CommandLine {
        name: name.to_lowercase(),
        bot,
        rest: rest.trim().to_string(),
    })
}

/// `rest` split into words, honouring quotes.
pub fn words(rest: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' | '\'' | '\u{201c}' | '\u{2018}' => {
                in_word = true;
                quoted(c, &mut chars, &mut word)?;
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// Reads up to the quote closing `open` into `word`. Chat apps turn
/// typed quotes into curly ones (“a b”, ‘a b’); those pair up too.
fn quoted(open: char, chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), String> {
    let (quote, close) = match open {
        '\u{201c}' => ('"', '\u{201d}'),
        '\u{2018}' => ('\'', '\u{2019}'),
        other => (other, other),
    };
    while let Some(c) = chars.next() {
        match c {
            c if c == close => return Ok(()),
            '\\' if quote == '"' => match chars.next() {
                Some(next @ ('"' | '\\')) => word.push(next),
                Some(next) => {
                    word.push('\\');
                    word.push(next);
                }
                None => break,
            },
            c => word.push(c),
        }
    }
    Err(format!("a {quote} quote is not closed"))
}

/// `key=value` words as run inputs (values are strings).
pub fn inputs(words: &[String]) -> Result<Map<String, Value>, String> {
    if words.len() > MAX_INPUTS {
        return Err(format!(
            "{} inputs; a command sets at most {MAX_INPUTS}",
            words.len()
        ));
    }
    let mut out = Map::new();
    for w in words {
        let Some((key, value)) = w.split_once('=') else {
            return Err(format!(
                "`{}` is not key=value; write inputs as name=value (quote a value with spaces: name=\"a b\")",
                shorten(w)
            ));
        };
        if !is_input_name(key) {
            return Err(format!(
                "`{}` is not an input name: letters, digits and _, starting with a letter or _, at most {MAX_KEY_BYTES} characters",
                shorten(key)
            ));
        }
        if out
            .insert(key.to_string(), Value::String(value.to_string()))
            .is_some()
        {
            return Err(format!("input `{key}` is given twice"));
        }
    }
    Ok(out)
}

fn is_input_name(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_KEY_BYTES
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// At most 40 characters of `s`, for quoting a user's text back.
pub fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(text: &str) -> (String, String) {
        let l = command_line(text).expect("a command");
        (l.name, l.rest)
    }

    #[test]
    fn a_command_is_its_name_and_the_rest() {
        assert_eq!(
            line("/run deploy  env=prod "),
            ("run".into(), "deploy  env=prod".into())
        );
        assert_eq!(line("/Help"), ("help".into(), String::new()));
        assert_eq!(
            line("/status@ops_bot nightly"),
            ("status".into(), "nightly".into())
        );
        assert_eq!(command_line("hello /run x"), None);
        assert_eq!(command_line("/"), None);
        assert_eq!(command_line("/@bot"), None);
    }

    #[test]
    fn a_command_naming_another_bot_is_not_for_this_one() {
        let to_ops = command_line("/run@Ops_Bot x").unwrap();
        assert_eq!(to_ops.bot.as_deref(), Some("Ops_Bot"));
        assert!(to_ops.is_for(Some("ops_bot")));
        assert!(!to_ops.is_for(Some("other_bot")));
        assert!(to_ops.is_for(None));
        assert!(command_line("/run x").unwrap().is_for(Some("ops_bot")));
    }

    #[test]
    fn quotes_keep_spaces_and_escapes() {
        assert_eq!(
            words(r#"job k="a b" q='c "d"' e="x\"y""#).unwrap(),
            vec!["job", "k=a b", r#"q=c "d""#, r#"e=x"y"#]
        );
        assert_eq!(words(r#"k="""#).unwrap(), vec!["k="]);
        assert_eq!(words("   ").unwrap(), Vec::<String>::new());
        assert!(words(r#"k="open"#).unwrap_err().contains("not closed"));
        assert_eq!(
            words("k=\u{201c}a b\u{201d} q=\u{2018}c d\u{2019}").unwrap(),
            vec!["k=a b", "q=c d"]
        );
    }

    #[test]
    fn inputs_are_named_strings_once_each() {
        let w = words(r#"k=v topic="x y" n=3 empty="#).unwrap();
        assert_eq!(
            Value::Object(inputs(&w).unwrap()),
            json!({"k": "v", "topic": "x y", "n": "3", "empty": ""})
        );
        assert!(inputs(&["k".into()]).unwrap_err().contains("key=value"));
        assert!(inputs(&["1k=v".into()]).unwrap_err().contains("input name"));
        assert!(
            inputs(&["k=1".into(), "k=2".into()])
                .unwrap_err()
                .contains("twice")
        );
        let many: Vec<String> = (0..=MAX_INPUTS).map(|i| format!("k{i}=v")).collect();
        assert!(inputs(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_long_word_is_shortened_when_quoted_back() {
        let long = "x".repeat(100);
        assert_eq!(shorten(&long).chars().count(), 41);
        assert_eq!(shorten("ok"), "ok");
    }
}
