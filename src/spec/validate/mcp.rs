//! An MCP connector's fields beyond the schema: which fields go with which
//! transport, a non-empty argv, and a `cwd` that stays inside the daemon's
//! data dir (relative, no `..`). Literal values in `env`, `headers` and
//! `token` are reported by the schema check, without the value.

use std::path::{Component, Path};

use super::Checker;
use crate::spec::model::{Connector, McpServer, McpTransport, Provider};

pub(super) fn check_mcp(connector: &Connector, c: &mut Checker) {
    let mcp = &connector.mcp;
    if connector.provider != Provider::Mcp {
        if let Some(field) = mcp_fields_set(mcp).first() {
            c.error(
                &format!("/{field}"),
                "mcp",
                format!("`{field}` belongs to MCP connectors; set `provider: mcp` or remove it"),
            );
        }
        return;
    }
    match mcp.transport {
        None => c.error(
            "/provider",
            "mcp",
            "an MCP connector needs `transport: stdio` (with `command`) or `transport: http` \
             (with `base_url`)"
                .to_string(),
        ),
        Some(McpTransport::Stdio) => check_stdio(connector, c),
        Some(McpTransport::Http) => check_http(connector, c),
    }
}

/// The MCP fields written on this connector, in document order of the schema.
fn mcp_fields_set(mcp: &McpServer) -> Vec<&'static str> {
    let set = [
        ("transport", mcp.transport.is_some()),
        ("command", !mcp.command.is_empty()),
        ("env", !mcp.env.is_empty()),
        ("cwd", mcp.cwd.is_some()),
        ("token", mcp.token.is_some()),
        ("headers", !mcp.headers.is_empty()),
        ("timeout_ms", mcp.timeout_ms.is_some()),
        ("max_output_bytes", mcp.max_output_bytes.is_some()),
    ];
    set.iter().filter(|(_, on)| *on).map(|(f, _)| *f).collect()
}

fn check_stdio(connector: &Connector, c: &mut Checker) {
    let mcp = &connector.mcp;
    if mcp.command.first().is_none_or(|p| p.trim().is_empty()) {
        c.error(
            "/transport",
            "mcp",
            "a stdio MCP server needs `command`: its argv, run without a shell, e.g. \
             `command: [python3, servers/fs.py]`"
                .to_string(),
        );
    }
    for field in ["token", "headers", "base_url"] {
        let set = match field {
            "token" => mcp.token.is_some(),
            "headers" => !mcp.headers.is_empty(),
            _ => connector.base_url.is_some(),
        };
        if set {
            c.error(
                &format!("/{field}"),
                "mcp",
                format!("`{field}` is for `transport: http`; a stdio server gets `env` instead"),
            );
        }
    }
    for name in mcp.env.keys() {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            c.error(
                &format!("/env/{}", name.replace('~', "~0").replace('/', "~1")),
                "mcp",
                format!("env name `{name}` is not a variable name; use letters, digits and `_`, like `GITHUB_TOKEN`"),
            );
        }
    }
    if let Some(cwd) = &mcp.cwd
        && let Err(why) = inside_data_dir(cwd)
    {
        c.error(
            "/cwd",
            "mcp-cwd",
            format!(
                "cwd `{cwd}` {why}; write a path relative to the daemon's data dir, like `mcp/fs`"
            ),
        );
    }
}

fn check_http(connector: &Connector, c: &mut Checker) {
    let mcp = &connector.mcp;
    if connector.base_url.is_none() {
        c.error(
            "/transport",
            "mcp",
            "an http MCP server needs `base_url`, the endpoint JSON-RPC is POSTed to, e.g. \
             `base_url: https://mcp.example.com/mcp`"
                .to_string(),
        );
    }
    for (field, set) in [
        ("command", !mcp.command.is_empty()),
        ("env", !mcp.env.is_empty()),
        ("cwd", mcp.cwd.is_some()),
    ] {
        if set {
            c.error(
                &format!("/{field}"),
                "mcp",
                format!(
                    "`{field}` is for `transport: stdio`; an http server gets `token` and `headers`"
                ),
            );
        }
    }
}

/// `Ok` for a relative path that cannot climb out of the directory it is
/// joined to; else why not.
pub fn inside_data_dir(cwd: &str) -> Result<(), &'static str> {
    let path = Path::new(cwd);
    if path.is_absolute() {
        return Err("is absolute");
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("climbs out with `..`");
    }
    Ok(())
}
