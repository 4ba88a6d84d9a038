//! A telegram connector's `bridge:` beyond the schema: only a telegram
//! connector polls for commands, it needs the bot token and a base URL to
//! poll, and an allow-list that names no chat answers no one (a warning:
//! the seeds let an empty list mean everyone).

use super::Checker;
use crate::spec::model::{Connector, Provider};

pub(super) fn check_bridge(connector: &Connector, c: &mut Checker) {
    let Some(bridge) = &connector.bridge else {
        return;
    };
    if connector.provider != Provider::Telegram {
        c.error(
            "/bridge",
            "bridge",
            format!(
                "`bridge` reads chat commands from Telegram only, and this connector's provider is {}; move it to a connector with `provider: telegram`",
                format!("{:?}", connector.provider).to_lowercase()
            ),
        );
        return;
    }
    if !connector.secrets.contains_key("bot_token") {
        c.error(
            "/bridge",
            "bridge",
            "a bridge polls with the bot's token: add `secrets: {bot_token: ${env:TELEGRAM_BOT_TOKEN}}`"
                .to_string(),
        );
    }
    if connector.base_url.is_none() {
        c.error(
            "/bridge",
            "bridge",
            "a bridge needs `base_url` to poll, e.g. `base_url: https://api.telegram.org`"
                .to_string(),
        );
    }
    if bridge.allowed_chat_ids.is_empty() {
        c.warn(
            "/bridge/allowed_chat_ids",
            "bridge-nobody",
            "the bridge answers no one: `allowed_chat_ids` is empty or missing; list the chat ids allowed to send commands"
                .to_string(),
        );
    }
}
