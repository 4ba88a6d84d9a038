//! A skill's `command_prefix` beyond its schema (which checks its shape
//! and `channel`'s values): one skill per command on a channel, and none
//! taking a command the chat bridge keeps for itself. What the bridge's
//! lookup ([`skill_for_command`](crate::spec::commands::skill_for_command))
//! relies on.

use std::collections::HashMap;

use super::Checker;
use crate::spec::commands::{BUILTIN_COMMANDS, skill_channel};
use crate::spec::model::Skill;
use crate::spec::snapshot::{Resource, Snapshot};

/// Who owns each command on each channel: the skill with the first id.
pub(super) struct Commands<'a> {
    owners: HashMap<(&'a str, &'a str), &'a Resource<Skill>>,
}

impl<'a> Commands<'a> {
    pub(super) fn of(snapshot: &'a Snapshot) -> Self {
        let mut owners = HashMap::new();
        for skill in snapshot.skills.values() {
            if let (Some(channel), Some(prefix)) = (
                skill_channel(&skill.spec),
                skill.spec.command_prefix.as_deref(),
            ) {
                owners.entry((channel, prefix)).or_insert(skill);
            }
        }
        Commands { owners }
    }

    /// Findings about `skill`'s `command_prefix`.
    pub(super) fn check(&self, skill: &Skill, c: &mut Checker) {
        let Some(prefix) = skill.command_prefix.as_deref() else {
            return;
        };
        let channel = skill_channel(skill).unwrap_or_default();
        if BUILTIN_COMMANDS.contains(&prefix) {
            c.error(
                "/command_prefix",
                "command",
                format!(
                    "`{prefix}` is one of the chat bridge's own commands ({}): give this skill another command_prefix",
                    BUILTIN_COMMANDS.join(", ")
                ),
            );
            return;
        }
        if let Some(owner) = self.owners.get(&(channel, prefix))
            && owner.spec.id != skill.id
        {
            c.error(
                "/command_prefix",
                "command",
                format!(
                    "`{prefix}` on {channel} already runs skill `{}` ({}:{}): one command runs one skill; give one of them another command_prefix",
                    owner.spec.id, owner.file, owner.line
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{SourceFile, build};

    /// Every finding on skills.d/s.yaml holding `skills` (documents
    /// separated by `---`), each given a one-step body.
    fn findings(skills: &[&str]) -> Vec<String> {
        let text = skills
            .iter()
            .map(|s| format!("{s}steps: [{{id: s, set: {{}}}}]\n"))
            .collect::<Vec<_>>()
            .join("---\n");
        let files = [SourceFile {
            path: "skills.d/s.yaml".into(),
            text,
        }];
        build(&files)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn commands_on_different_channels_do_not_collide() {
        let found = findings(&[
            "id: a\nchannel: telegram\ncommand_prefix: /brief\n",
            "id: b\nchannel: slack\ncommand_prefix: /brief\n",
            "id: c\ncommand_prefix: /summary_2\n",
            "id: d\nchannel: sms\n",
        ]);
        assert_eq!(found, Vec::<String>::new());
    }

    #[test]
    fn a_command_runs_one_skill_per_channel() {
        // `b` has no channel: its command is a telegram one, like `a`'s.
        let found = findings(&[
            "id: a\nchannel: telegram\ncommand_prefix: /brief\n",
            "id: b\ncommand_prefix: /brief\n",
        ]);
        assert_eq!(
            found,
            [
                "skills.d/s.yaml:7:17: error[command] Skill b: `/brief` on telegram already runs skill `a` (skills.d/s.yaml:1): one command runs one skill; give one of them another command_prefix"
            ]
        );
    }

    #[test]
    fn the_bridge_commands_are_its_own() {
        for builtin in ["/help", "/jobs", "/status", "/run", "/approve", "/reject"] {
            let found = findings(&[&format!("id: a\ncommand_prefix: {builtin}\n")]);
            assert_eq!(
                found,
                [format!(
                    "skills.d/s.yaml:2:17: error[command] Skill a: `{builtin}` is one of the chat bridge's own commands (/help, /jobs, /status, /run, /approve, /reject): give this skill another command_prefix"
                )]
            );
        }
    }

    #[test]
    fn a_command_looks_like_a_chat_command() {
        for bad in [
            "brief",
            "/Brief",
            "/",
            "/9lives",
            "/brief me",
            "/a-b",
            "/abcdefghijklmnopqrstuvwxyz0123456",
        ] {
            let found = findings(&[&format!("id: a\ncommand_prefix: \"{bad}\"\n")]);
            assert_eq!(found.len(), 1, "{bad}: {found:#?}");
            assert!(
                found[0].starts_with("skills.d/s.yaml:2:17: error[schema] Skill a: command_prefix ")
                    && found[0].ends_with("a chat command is `/`, a lowercase letter, then at most 31 lowercase letters, digits or `_`, like `/brief`"),
                "{bad}: {found:#?}"
            );
        }
    }

    #[test]
    fn a_channel_is_one_the_inbound_side_knows() {
        let found = findings(&["id: a\nchannel: telgram\n"]);
        assert_eq!(
            found,
            [
                "skills.d/s.yaml:2:10: error[schema] Skill a: \"telgram\" is not one of: telegram, slack, webhook, sms (did you mean `telegram`?)"
            ]
        );
        let found = findings(&["id: a\nchannel: whatsapp\n"]);
        assert_eq!(found.len(), 1, "{found:#?}");
    }
}
