//! An agent step's `mcp:<connector>.<tool>` and `skill:<id>` tools must
//! name what exists: an MCP connector, a skill. Globs (`mcp:*`,
//! `skill:*`, `mcp:fs.read_*`) are checked only where they are literal
//! (the connector of `mcp:fs.*`); a tool name is the server's to know.

use super::no_such;
use crate::spec::model::Provider;
use crate::spec::snapshot::Snapshot;

/// Why `tool` names nothing, or `None` when it does (or is a built-in).
pub(super) fn unknown_tool(tool: &str, snapshot: &Snapshot) -> Option<String> {
    let literal = |s: &str| !s.contains(['*', '?']);
    if let Some(rest) = tool.strip_prefix("mcp:") {
        let Some((connector, _)) = rest.split_once('.') else {
            return literal(rest).then(|| {
                format!("`{tool}` names no tool: write `mcp:{rest}.<tool>` or `mcp:{rest}.*`")
            });
        };
        if !literal(connector) {
            return None;
        }
        return match snapshot.connectors.get(connector) {
            None => Some(no_such("Connector", connector, &snapshot.connectors)),
            Some(c) if c.spec.provider != Provider::Mcp => Some(format!(
                "`{tool}`: connector `{connector}` is not an MCP server (its provider is not `mcp`)"
            )),
            Some(_) => None,
        };
    }
    let id = tool.strip_prefix("skill:")?;
    (literal(id) && !snapshot.skills.contains_key(id))
        .then(|| no_such("Skill", id, &snapshot.skills))
}
