//! Chat commands: which skill a message like `/brief topic=x` on a channel
//! runs, and the commands a chat bridge keeps for itself. The bridge asks
//! [`skill_for_command`]; `validate` holds the skills to what it assumes
//! (one skill per command and channel, none shadowing a built-in).
//!
//! Pure; uses only `spec::model` and the snapshot.

use super::model::Skill;
use super::snapshot::{Resource, Snapshot};

/// The channels a skill can be invoked from (`channel:`).
pub const CHANNELS: [&str; 4] = ["telegram", "slack", "webhook", "sms"];

/// The channel of a skill that names a `command_prefix` and no `channel`.
pub const DEFAULT_CHANNEL: &str = "telegram";

/// The bridge's own commands: no skill may take one of these.
pub const BUILTIN_COMMANDS: [&str; 6] =
    ["/help", "/jobs", "/status", "/run", "/approve", "/reject"];

/// The channel a skill is invoked from: its `channel`, else telegram when
/// it has a `command_prefix`, else none (it is only called with `uses`).
pub fn skill_channel(skill: &Skill) -> Option<&str> {
    match (&skill.channel, &skill.command_prefix) {
        (Some(channel), _) => Some(channel),
        (None, Some(_)) => Some(DEFAULT_CHANNEL),
        (None, None) => None,
    }
}

/// The skill that `command` runs on `channel`: the one whose
/// `command_prefix` it is. `command` is the message's first word; a
/// Telegram group's `/brief@SomeBot` form names the same command. A
/// built-in command is never a skill's.
pub fn skill_for_command<'a>(
    snapshot: &'a Snapshot,
    channel: &str,
    command: &str,
) -> Option<&'a Resource<Skill>> {
    let command = command.split_once('@').map_or(command, |(c, _)| c);
    if BUILTIN_COMMANDS.contains(&command) {
        return None;
    }
    // Validation keeps one skill per command and channel; were there two
    // (a snapshot built without it), the first id wins, always the same.
    snapshot.skills.values().find(|r| {
        r.spec.command_prefix.as_deref() == Some(command) && skill_channel(&r.spec) == Some(channel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn skill(id: &str, extra: serde_json::Value) -> (String, Resource<Skill>) {
        let mut doc = json!({"id": id, "steps": [{"id": "s", "set": {}}]});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        let spec: Skill = serde_json::from_value(doc).unwrap();
        (
            id.to_string(),
            Resource::new(spec, format!("skills.d/{id}.yaml"), 1, 1),
        )
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.skills.extend([
            skill(
                "brief",
                json!({"channel": "telegram", "command_prefix": "/brief"}),
            ),
            skill("implicit", json!({"command_prefix": "/summary"})),
            skill(
                "on-slack",
                json!({"channel": "slack", "command_prefix": "/brief"}),
            ),
            skill("plain", json!({})),
            skill("shadow", json!({"command_prefix": "/help"})),
        ]);
        s
    }

    #[test]
    fn a_command_finds_the_skill_of_its_channel() {
        let s = snapshot();
        let id =
            |channel, command| skill_for_command(&s, channel, command).map(|r| r.spec.id.as_str());
        assert_eq!(id("telegram", "/brief"), Some("brief"));
        assert_eq!(id("slack", "/brief"), Some("on-slack"));
        assert_eq!(id("telegram", "/brief@ShopBot"), Some("brief"));
        assert_eq!(id("sms", "/brief"), None);
        assert_eq!(id("telegram", "/Brief"), None);
        assert_eq!(id("telegram", "brief"), None);
        assert_eq!(id("telegram", "/nope"), None);
    }

    #[test]
    fn a_command_prefix_without_channel_is_a_telegram_command() {
        let s = snapshot();
        assert_eq!(
            skill_for_command(&s, "telegram", "/summary").map(|r| r.spec.id.as_str()),
            Some("implicit")
        );
        assert_eq!(skill_for_command(&s, "slack", "/summary"), None);
        assert_eq!(skill_channel(&s.skills["plain"].spec), None);
        assert_eq!(skill_channel(&s.skills["on-slack"].spec), Some("slack"));
    }

    #[test]
    fn a_builtin_command_is_never_a_skill() {
        let s = snapshot();
        assert_eq!(skill_for_command(&s, "telegram", "/help"), None);
        assert_eq!(skill_for_command(&s, "telegram", "/help@ShopBot"), None);
    }
}
