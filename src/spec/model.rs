//! The normalized resource model: what a document means once aliases are
//! resolved and defaults applied. Pure data; no IO.
//!
//! Specs are deserialized from a `serde_json::Value` that already passed the
//! JSON Schema in `schemas/`, so the serde attributes here only supply
//! defaults and names; the schema is what rejects bad input with a position.

pub use super::actions::*;
pub use super::notice::{NoticeKind, NoticeRule};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::calendar::schedule::{
    DstGap, DstOverlap, DstPolicy, Misfire, Schedule, default_catchup_window_sec,
    default_max_catchup_runs,
};

/// The document kinds of a config directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Job,
    Flow,
    Connector,
    Skill,
    Trigger,
    Defaults,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Job,
        Kind::Flow,
        Kind::Connector,
        Kind::Skill,
        Kind::Trigger,
        Kind::Defaults,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Flow => "Flow",
            Kind::Connector => "Connector",
            Kind::Skill => "Skill",
            Kind::Trigger => "Trigger",
            Kind::Defaults => "Defaults",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// File name stem of this kind's schema in `schemas/`.
    pub fn schema_name(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Flow => "flow",
            Kind::Connector => "connector",
            Kind::Skill => "skill",
            Kind::Trigger => "trigger",
            Kind::Defaults => "defaults",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `inputs` of an `http.request` job that make its one request: the
/// fields of an `http` step, rendered the same way.
pub const HTTP_REQUEST_FIELDS: [&str; 9] = [
    "connector",
    "method",
    "url",
    "path",
    "query",
    "headers",
    "json",
    "body",
    "expect_status",
];

/// Job types the runtime knows (SPEC section 4).
pub const JOB_TYPES: [&str; 8] = [
    "agent.workflow",
    "http.request",
    "monitor.channel",
    "report.daily",
    "backup.export",
    "command",
    "simulation.heavy",
    "noop",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The worker group whose workers alone may run it (Redis: `multijob
    /// worker --group NAME`); `None`: any worker. The embedded daemon's
    /// pool serves every group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    /// `None` means: the flow's priority, else `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub failure_memory: FailureMemory,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default, skip_serializing_if = "ToolPolicy::is_empty")]
    pub tools: ToolPolicy,
    /// The agent's `command` tool: what it may run (absent: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandPolicy>,
    #[serde(default)]
    pub limits: Limits,
    /// Daily budgets (scope `job:<id>`); left out of the JSON (and the
    /// spec hash) when none is set.
    #[serde(default, skip_serializing_if = "Budgets::is_empty")]
    pub budgets: Budgets,
    /// What must hold of its runs, checked by the daemon and `multijob
    /// check` (see `run::expectation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub inputs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Notices on state changes; empty: the flow's list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NoticeRule>,
    /// A run still unfinished this long after its slot raises `deadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_sec: Option<u64>,
}

impl Job {
    /// The job's notices: its own list, else its flow's, else the
    /// directory's Defaults document's (the most specific non-empty list
    /// replaces the others, it does not add to them).
    pub fn notice_rules<'a>(
        &'a self,
        flow: Option<&'a Flow>,
        defaults: Option<&'a Defaults>,
    ) -> &'a [NoticeRule] {
        [
            Some(self.notify.as_slice()),
            flow.map(|f| f.notify.as_slice()),
            defaults.map(|d| d.notify.as_slice()),
        ]
        .into_iter()
        .flatten()
        .find(|rules| !rules.is_empty())
        .unwrap_or_default()
    }
}

fn default_true() -> bool {
    true
}

pub(crate) fn default_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    #[serde(default)]
    pub max_retry: u32,
    /// Seconds before each retry; the last entry repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backoff_sec: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the slot while a run is active.
    #[default]
    Forbid,
    Allow,
    /// Cancel the active run and start the new one.
    Replace,
    /// Run once more right after the active run.
    BufferOne,
}

/// `expect: {success_within: 2h}`: a job that has had no succeeded run
/// for that long (counting from when it was first seen with this
/// expectation when it never succeeded) is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// A duration as `every:` writes it: `30s`, `5m`, `2h`, `1d`.
    pub success_within: String,
}

impl Expect {
    /// `success_within` in whole seconds, or why it does not read.
    pub fn within_secs(&self) -> Result<u64, String> {
        let nanos = crate::calendar::slots::parse_duration_nanos(&self.success_within)?;
        u64::try_from(nanos / 1_000_000_000)
            .map_err(|_| format!("'{}' is too long", self.success_within))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureMemory {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_failure_threshold")]
    pub threshold: u32,
    #[serde(default = "default_cooldown_sec")]
    pub cooldown_sec: u64,
    #[serde(default = "default_cooldown_max_sec")]
    pub cooldown_max_sec: u64,
}

impl Default for FailureMemory {
    fn default() -> Self {
        FailureMemory {
            enabled: true,
            threshold: default_failure_threshold(),
            cooldown_sec: default_cooldown_sec(),
            cooldown_max_sec: default_cooldown_max_sec(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    3
}

fn default_cooldown_sec() -> u64 {
    120
}

fn default_cooldown_max_sec() -> u64 {
    3600
}

/// Narrows a job type's default tool allowlist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl ToolPolicy {
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// What an agent's `command` tool may run: argv prefixes matched element
/// by element (`approve` ones wait for an operator), the child's
/// environment by reference only, its directory inside the data dir.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approve: Vec<Vec<String>>,
    /// Names to secret references (`${env:X}`, `${file:P}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Relative to the data dir (default: `command/<job id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// Per-run budgets; exceeding one fails the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(default = "default_chain_depth")]
    pub chain_depth: u32,
    /// `schedule_job` calls one attempt of a run may make (steps, foreach
    /// items and agent tool calls together): `chain_depth` bounds how deep
    /// follow-ups go, this how wide. Left out of the JSON (and the spec
    /// hash) at its default, so specs written before it keep their hash.
    #[serde(
        default = "default_follow_ups",
        skip_serializing_if = "is_default_follow_ups"
    )]
    pub follow_ups: u32,
    /// Runs of this job created by follow-ups that may wait to start at
    /// once (queued, delayed or awaiting approval, before their first
    /// attempt); a `schedule_job` of this job beyond it fails its step.
    #[serde(
        default = "default_queued_follow_ups",
        skip_serializing_if = "is_default_queued_follow_ups"
    )]
    pub queued_follow_ups: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            llm_tokens: None,
            http_calls: None,
            messages: None,
            chain_depth: default_chain_depth(),
            follow_ups: default_follow_ups(),
            queued_follow_ups: default_queued_follow_ups(),
        }
    }
}

fn default_chain_depth() -> u32 {
    10
}

fn default_follow_ups() -> u32 {
    100
}

fn is_default_follow_ups(n: &u32) -> bool {
    *n == default_follow_ups()
}

fn default_queued_follow_ups() -> u32 {
    1000
}

fn is_default_queued_follow_ups(n: &u32) -> bool {
    *n == default_queued_follow_ups()
}

/// A concurrency lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: String,
    /// Runs of this lane's jobs active at once; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_runs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// True for a lane no Flow document declares (seed behaviour).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit: bool,
    /// Daily budgets shared by the lane's jobs (scope `flow:<id>`).
    #[serde(default, skip_serializing_if = "Budgets::is_empty")]
    pub budgets: Budgets,
    /// The notices of the lane's jobs that have no `notify:` of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NoticeRule>,
}

/// The directory's defaults (`kind: Defaults`, at most one per config
/// directory): what a job falls back to when neither it nor its flow says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// Optional in the document; `defaults` when left out.
    #[serde(default = "default_defaults_id")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The notices of jobs that have no `notify:` and whose flow has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NoticeRule>,
}

/// The id of a Defaults document that names none.
pub const DEFAULTS_ID: &str = "defaults";

fn default_defaults_id() -> String {
    DEFAULTS_ID.to_string()
}

/// Daily budgets of a job or a flow: calls counted in the store per
/// calendar day, across runs and processes (see `store::budgets`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_tokens_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_calls_per_day: Option<u64>,
}

impl Budgets {
    pub fn is_empty(&self) -> bool {
        self.llm_tokens_per_day.is_none()
            && self.messages_per_day.is_none()
            && self.http_calls_per_day.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Telegram,
    Slack,
    Webhook,
    Smtp,
    Whatsapp,
    Sms,
    Http,
    Openai,
    /// A Model Context Protocol server (stdio child or streamable HTTP).
    Mcp,
}

impl Provider {
    /// The providers a `message` step (and a message connector call) may
    /// use: the ones that deliver a message.
    pub const MESSAGING: [Provider; 6] = [
        Provider::Telegram,
        Provider::Slack,
        Provider::Webhook,
        Provider::Smtp,
        Provider::Whatsapp,
        Provider::Sms,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    pub id: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Secret references (`${env:NAME}`, `${file:PATH}`), never values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A telegram connector's chat bridge: commands from allowed chats,
    /// read by long-polling `getUpdates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Bridge>,
    /// An MCP server's settings (`provider: mcp`), at the top level.
    #[serde(flatten)]
    pub mcp: McpServer,
}

/// How an MCP server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpTransport {
    /// A child process speaking line-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP: JSON-RPC POSTed to `base_url`.
    Http,
}

/// The `provider: mcp` fields of a connector. Every value in `env` and
/// `headers`, and `token`, is a secret reference, never a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<McpTransport>,
    /// stdio: the argv to start (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// stdio: the child's whole environment besides PATH, by reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// stdio: working directory, relative to the daemon's data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// http: bearer token, by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// http: extra request headers, by reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per call limit (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Largest answer accepted (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// A chat bridge (`bridge:` on a telegram connector). Only chats on
/// `allowed_chat_ids` are answered; an empty list answers no one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    #[serde(default)]
    pub allowed_chat_ids: Vec<ChatId>,
    /// The commands it accepts (default: all but `new` and `apply`).
    #[serde(default = "BridgeCommand::all")]
    pub commands: Vec<BridgeCommand>,
}

/// A Telegram chat id: an integer (groups and channels are negative),
/// written in YAML as a number or a string of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ChatIdForm", into = "i64")]
pub struct ChatId(pub i64);

#[derive(Deserialize)]
#[serde(untagged)]
enum ChatIdForm {
    Number(i64),
    Text(String),
}

impl TryFrom<ChatIdForm> for ChatId {
    type Error = String;

    fn try_from(form: ChatIdForm) -> Result<Self, Self::Error> {
        match form {
            ChatIdForm::Number(n) => Ok(ChatId(n)),
            ChatIdForm::Text(t) => t
                .trim()
                .parse()
                .map(ChatId)
                .map_err(|_| format!("chat id `{t}` is not an integer")),
        }
    }
}

impl From<ChatId> for i64 {
    fn from(id: ChatId) -> i64 {
        id.0
    }
}

/// A command a chat bridge can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeCommand {
    Help,
    Jobs,
    Status,
    Run,
    Approve,
    Reject,
    /// `/new <sentence>`: plan jobs from a sentence (opt-in).
    New,
    /// `/apply`: write and commit the chat's `/new` draft (opt-in).
    Apply,
}

impl BridgeCommand {
    pub const ALL: [BridgeCommand; 8] = [
        BridgeCommand::Help,
        BridgeCommand::Jobs,
        BridgeCommand::Status,
        BridgeCommand::Run,
        BridgeCommand::Approve,
        BridgeCommand::Reject,
        BridgeCommand::New,
        BridgeCommand::Apply,
    ];

    /// What a bridge accepts when it lists no `commands`: all but `new`
    /// and `apply`, which write to the config directory and are taken
    /// only when listed.
    pub fn all() -> Vec<BridgeCommand> {
        Self::ALL[..6].to_vec()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BridgeCommand::Help => "help",
            BridgeCommand::Jobs => "jobs",
            BridgeCommand::Status => "status",
            BridgeCommand::Run => "run",
            BridgeCommand::Approve => "approve",
            BridgeCommand::Reject => "reject",
            BridgeCommand::New => "new",
            BridgeCommand::Apply => "apply",
        }
    }

    /// The command named `name` (without the slash).
    pub fn named(name: &str) -> Option<BridgeCommand> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_minute: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

/// The id of the derived job a skill's one-off runs (an inbound trigger's
/// `skill:`, a chat bridge's `command_prefix`) are runs of. `:` is not
/// allowed in a job id, so it never names a job of the config directory.
pub fn skill_job_id(skill_id: &str) -> String {
    format!("skill:{skill_id}")
}

/// An inbound trigger (`kind: Trigger`): a signed request from outside
/// (`POST /hooks/{id}` on the inbound listener) that starts a job or a
/// skill, or (`action: sync`, GitHub only) makes `run --git` fetch at
/// once. Only `inputs` comes from the request; everything else is git's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whose signature scheme the request carries.
    pub source: TriggerSource,
    /// The job to run; exactly one of `job`, `skill` and `action` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The skill to run as a one-off run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// What the daemon does itself instead of a run (`sync`: fetch the
    /// config repository now; `source: github` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<TriggerAction>,
    /// Secret reference (`${env:NAME}`, `${file:PATH}`), never a value.
    pub secret: String,
    /// The run's inputs: templates over `payload`, `headers`, `source`
    /// and `now` only.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    /// Each run waits for an approval before it starts.
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// A trigger's own action, done by the daemon instead of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerAction {
    /// A GitHub `push` to the pulled branch makes `run --git` fetch now.
    Sync,
}

impl TriggerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerAction::Sync => "sync",
        }
    }
}

/// The signature scheme (and delivery id) an inbound trigger expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerSource {
    /// `X-Multijob-Signature: t=<unix>,v1=<hex>` (the webhook connector's).
    Webhook,
    /// `X-Hub-Signature-256`, delivery `X-GitHub-Delivery`.
    Github,
    /// Slack's signing secret `v0`, delivery `event_id`.
    Slack,
    /// Telegram webhook mode's secret token, delivery `update_id`.
    Telegram,
    /// Twilio's `X-Twilio-Signature`, delivery `MessageSid`.
    Sms,
}

impl TriggerSource {
    pub const ALL: [TriggerSource; 5] = [
        TriggerSource::Webhook,
        TriggerSource::Github,
        TriggerSource::Slack,
        TriggerSource::Telegram,
        TriggerSource::Sms,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerSource::Webhook => "webhook",
            TriggerSource::Github => "github",
            TriggerSource::Slack => "slack",
            TriggerSource::Telegram => "telegram",
            TriggerSource::Sms => "sms",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub default_inputs: Map<String, Value>,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default)]
    pub sensitive: bool,
    /// JSON Schema of a caller's `with`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}
