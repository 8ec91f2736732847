//! `tapedeck admin`: the operator's command line over the HTTP API of a running deployment
//! (docs/admin-api.md), so it works from wherever the API is reachable. Tenants and their
//! limits, usage, and the plugin registry; tables for people, the server's own JSON with
//! `--json` for scripts.
//!
//! Bodies the gateway also uses come from `tapedeck_model::api` (tenants, limits, users,
//! canaries): requests are built as those structs and answers read into them, so a field
//! the server adds or renames is a compile error here, not a silently missing flag or an
//! empty cell. The limit flags come from the one table of limits
//! (`tapedeck_model::tenant::LIMITS`).
//!
//! Errors: what the server refused is printed as `error: MESSAGE (CODE)` and exits 1;
//! usage errors exit 2, as clap's do.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand, ValueEnum};
use comfy_table::{CellAlignment, Table, presets};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tapedeck_gateway::jobs::JobPage;
use tapedeck_gateway::ops::{DeadLetters, Replayed};
use tapedeck_gateway::registry::{
    ActiveEnvelope, ActivePlugins, CanaryEnvelope, CanaryList, Ended, History, PluginEnvelope,
    PluginList,
};
use tapedeck_gateway::tenants::UsageList;
use tapedeck_model::api::{
    CanaryRequest, Deleting, LimitsView, NewTenant, Role, TenantChange, TenantEnvelope, TenantList,
    TenantView, UserEnvelope,
};
use tapedeck_model::canary::Sticky;
use tapedeck_model::tenant::{LIMITS, Limit, TenantLimits, Unit};
use tapedeck_store::canary::CanaryStatus;
use tapedeck_store::queue::DeadLetter;
use tapedeck_store::registry::{Active, Change, Plugin};
use tapedeck_store::usage::{JobCounts, Period, Usage};
use url::Url;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the deployment's API.
    #[arg(
        long,
        global = true,
        env = "TAPEDECK_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        value_parser = parse_server
    )]
    server: Url,
    /// The operator token: `--admin-token` of the server, or the `operator token: tdop_...`
    /// it printed on its first start.
    #[arg(
        long,
        global = true,
        env = "TAPEDECK_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Print the server's JSON answer instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create, list, show, change and delete tenants; show and set their limits.
    #[command(subcommand)]
    Tenant(Box<TenantCommand>),
    /// Jobs, stored bytes and recent activity of one tenant, or of every tenant.
    Usage {
        /// The tenant (default: every tenant).
        name: Option<String>,
    },
    /// Publish plugin components, and choose which one a stage runs, for everyone or for
    /// one tenant.
    #[command(subcommand)]
    Plugin(Box<PluginCommand>),
    /// Jobs of any tenant: list, show, retry a failed one, the dead letters.
    #[command(subcommand)]
    Jobs(Box<JobsCommand>),
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// A tenant's jobs, newest first.
    List {
        #[arg(long)]
        tenant: String,
        /// How many (1..=100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The `next` cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One job, whole.
    Show { tenant: String, id: String },
    /// Put a failed job back on the queue (attempts start over, its dead letter goes).
    Retry { tenant: String, id: String },
    /// Dead letters of conversions, newest first (one tenant's, or every tenant's).
    Dlq {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Upload a component (`.wasm`, at most 64 MiB); the server checks it before it is
    /// accepted. Publishing does not activate it.
    Publish {
        /// The component file.
        file: PathBuf,
        /// The stage it is for.
        #[arg(long)]
        stage: Stage,
        /// Publish it as a release: its name (lowercase letters, digits, `-`)...
        #[arg(long, requires = "version")]
        name: Option<String>,
        /// ...and version (semver); then `activate NAME@VERSION` finds it.
        #[arg(long, requires = "name")]
        version: Option<String>,
    },
    /// List the published plugins, newest first.
    List {
        /// Only this stage's.
        #[arg(long)]
        stage: Option<Stage>,
    },
    /// Make a published plugin the one a stage runs, for every tenant or for one.
    Activate {
        /// The plugin's digest (all 64 hex digits, or the start of it as tables show
        /// it), or the release it was published as, NAME@VERSION.
        #[arg(value_parser = parse_digest_or_release)]
        digest: String,
        /// The stage.
        #[arg(long)]
        stage: Stage,
        /// Only for this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Go back to the activation before the current one (possibly the component the
    /// service was started with).
    Rollback {
        /// The stage.
        #[arg(long)]
        stage: Stage,
        /// The tenant whose activation is undone (default: the one for every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Which plugin each stage runs, for every tenant and per tenant.
    Active,
    /// Publications, activations and rollbacks, newest first.
    History {
        /// Only this stage's.
        #[arg(long)]
        stage: Option<Stage>,
    },
    /// Run a published converter on a share of new jobs beside the active one; its
    /// analysis rolls it back by itself on a breach (thresholds: README, "Canaries").
    Canary(Box<CanaryArgs>),
    /// Make the running canary the active component of its scope.
    Promote {
        #[arg(long)]
        stage: Stage,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Stop the running canary of a scope; nothing else changes.
    Abort {
        #[arg(long)]
        stage: Stage,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The running canaries and their analysis so far.
    Canaries,
}

#[derive(Debug, clap::Args)]
struct CanaryArgs {
    /// The plugin's digest (or its start, as tables show it).
    #[arg(value_parser = parse_digest)]
    digest: String,
    #[arg(long)]
    stage: Stage,
    /// Only this tenant's jobs (default: every tenant without its own component).
    #[arg(long)]
    tenant: Option<String>,
    /// Share of new jobs that run the canary, more than 0 and at most 100.
    #[arg(long)]
    percent: f64,
    /// What keeps a job on the same side: tenant, user or job.
    #[arg(long, default_value = "job", value_parser = parse_sticky)]
    sticky: Sticky,
    /// Promote by itself after this many canary runs with no breach.
    #[arg(long)]
    promote_after: Option<u32>,
    /// Canary runs before any verdict [default: 10].
    #[arg(long)]
    min_jobs: Option<u32>,
    /// Runs per side the analysis looks at [default: 50].
    #[arg(long)]
    window: Option<u32>,
    /// How much the canary's failure share may exceed stable's, 0..1 [default: 0.10].
    #[arg(long)]
    max_failure_delta: Option<f64>,
    /// Same for invalid outputs [default: 0.10].
    #[arg(long)]
    max_invalid_delta: Option<f64>,
    /// The canary's p95 run time may be this many times stable's... [default: 1.5]
    #[arg(long)]
    max_p95_ratio: Option<f64>,
    /// ...plus this many milliseconds [default: 500].
    #[arg(long)]
    p95_slack_ms: Option<u64>,
    /// A canary run's deadline: this many times stable's p95 on inputs of similar
    /// length... [default: 3]
    #[arg(long)]
    deadline_factor: Option<f64>,
    /// ...plus this many milliseconds [default: 2000].
    #[arg(long)]
    deadline_floor_ms: Option<u64>,
}

/// A stage a plugin can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    Converter,
    Notifier,
    Auth,
}

impl Stage {
    /// The stage as the API names it.
    fn as_str(self) -> &'static str {
        match self {
            Stage::Converter => "converter",
            Stage::Notifier => "notifier",
            Stage::Auth => "auth",
        }
    }
}

/// Hex digits of a SHA-256 digest.
const DIGEST_LEN: usize = 64;

/// The fewest digits a digest may be abbreviated to on the command line.
const MIN_DIGEST_PREFIX: usize = 4;

/// Digits of a digest that tables show.
const SHORT_DIGEST: usize = 12;

/// The largest component the server takes (docs/admin-api.md), refused before uploading.
const MAX_PLUGIN_BYTES: u64 = 64 * 1024 * 1024;

/// How long an upload may take: up to 64 MiB, then the server compiles it.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant, with limits of its own.
    Create {
        /// The tenant's name.
        name: String,
        /// Let people register accounts in this tenant themselves.
        #[arg(long)]
        self_register: bool,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// List the tenants with their effective limits.
    List,
    /// Show a tenant and its limits.
    Show {
        /// The tenant's name.
        name: String,
    },
    /// Change a tenant's settings (at least one of them).
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        /// The tenant's name.
        name: String,
        /// Let people register accounts in this tenant themselves.
        #[arg(long, action = ArgAction::Set, value_name = "true|false", group = "change")]
        self_register: Option<bool>,
        /// Let the tenant's admins publish and activate components of their own; `false`
        /// also takes the tenant's own components off its stages.
        #[arg(long, action = ArgAction::Set, value_name = "true|false", group = "change")]
        allow_plugins: Option<bool>,
    },
    /// Create a tenant's admin account (the first one, say: later ones its admins can
    /// create themselves).
    AdminCreate {
        /// The tenant's name.
        name: String,
        /// The admin's e-mail address.
        email: String,
        /// Read the password from the first line of standard input (default: a random
        /// one, printed once).
        #[arg(long)]
        password_stdin: bool,
        /// The password, once chosen (not a flag: never on a command line).
        #[arg(skip)]
        password: Option<String>,
    },
    /// Delete a tenant: its users, jobs and files are removed in the background.
    Delete {
        /// The tenant's name.
        name: String,
    },
    /// Show a tenant's limits (tenant, server default, effective); with flags, set them
    /// first.
    Limits {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
    },
}

/// A limit flag's value: a number, or `none` (JSON `null`: the tenant has no limit of
/// its own, the server's default applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LimitValue(Option<u64>);

/// The limit flags given, one per [`LIMITS`] entry (its `flag`, `flag_value` and help),
/// each a number or `none` to clear it; values in the API's units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LimitFlags(Vec<(&'static Limit, LimitValue)>);

impl Args for LimitFlags {
    fn augment_args(command: clap::Command) -> clap::Command {
        command
            .next_help_heading("Limits (a number, or `none` to clear)")
            .args(LIMITS.iter().map(|limit| {
                let exponent = limit.flag_exponent;
                clap::Arg::new(limit.name)
                    .long(limit.flag)
                    .value_name(limit.flag_value)
                    .help(limit.flag_help())
                    .action(ArgAction::Set)
                    .value_parser(move |s: &str| scaled(s, exponent))
            }))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for LimitFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(LimitFlags(
            LIMITS
                .iter()
                .filter_map(|limit| Some((limit, *matches.get_one::<LimitValue>(limit.name)?)))
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl LimitFlags {
    /// The limits given a number (`none` leaves one unset).
    fn limits(&self) -> TenantLimits {
        let mut limits = TenantLimits::default();
        for (limit, LimitValue(value)) in &self.0 {
            limits.set(limit.name, *value);
        }
        limits
    }

    /// The LIMITS object of the flags given: a number, or `null` for `none`.
    fn body(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(limit, LimitValue(v))| {
                (limit.name.to_owned(), v.map_or(Value::Null, Value::from))
            })
            .collect()
    }
}

fn parse_server(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the server URL must start with http:// or https://".into());
    }
    Ok(url)
}

/// `tenant`, `user` or `job`, as the API names them.
fn parse_sticky(s: &str) -> Result<Sticky, String> {
    Sticky::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
        .map_err(|_| format!("`{s}` is not one of: tenant, user, job"))
}

/// A digest, or the start of one (at least [`MIN_DIGEST_PREFIX`] hex digits); lowercased.
/// A digest (as [`parse_digest`]) or a release, `NAME@VERSION`, kept as given.
fn parse_digest_or_release(s: &str) -> Result<String, String> {
    match s.split_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok(s.to_owned()),
        _ => parse_digest(s),
    }
}

fn parse_digest(s: &str) -> Result<String, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{s}` is not a digest: it has hex digits only"));
    }
    if s.len() > DIGEST_LEN {
        return Err(format!(
            "`{s}` is not a digest: a SHA-256 digest has {DIGEST_LEN} hex digits"
        ));
    }
    if s.len() < MIN_DIGEST_PREFIX {
        return Err(format!(
            "`{s}` is too short: give at least {MIN_DIGEST_PREFIX} digits of the digest"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// `none`, or a decimal number times 10^`exponent` that comes out whole (`1.5` MB is
/// 1,500,000 bytes; a count takes whole numbers only).
fn scaled(s: &str, exponent: u32) -> Result<LimitValue, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(LimitValue(None));
    }
    let invalid = || {
        if exponent == 0 {
            format!("`{s}` is neither a whole number nor `none`")
        } else {
            format!("`{s}` is neither a number nor `none`")
        }
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(invalid());
    }
    let too_large = || format!("`{s}` is too large");
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > exponent as usize {
        return Err(if exponent == 0 {
            invalid()
        } else {
            format!("`{s}` has more decimals than whole bytes allow")
        });
    }
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        // At most 9 digits: fits.
        fraction.parse::<u64>().map_err(|_| invalid())?
            * 10u64.pow(exponent - fraction.len() as u32)
    };
    whole
        .checked_mul(10u64.pow(exponent))
        .and_then(|v| v.checked_add(fraction))
        .map(|v| LimitValue(Some(v)))
        .ok_or_else(too_large)
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    /// The server refused: `{"error":{"code","message"}}`.
    Api { code: String, message: String },
    /// Anything else: no connection, no answer in time, an answer that is not the API's.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api { code, message } => write!(f, "{message} ({code})"),
            Failure::Other(message) => f.write_str(message),
        }
    }
}

/// The operator API of one deployment.
struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Client {
    fn new(base: Url, token: String) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("tapedeck-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Other(format!("cannot set up an HTTP client: {}", cause(&e))))?;
        Ok(Client { http, base, token })
    }

    /// The server as the operator named it (for messages).
    fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The base URL with `segments` appended, each percent-encoded (a tenant's name
    /// cannot leave its path segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends `request`; the answer's status and JSON.
    async fn send(&self, request: &Request) -> Result<(u16, Value), Failure> {
        let segments: Vec<&str> = request.path.iter().map(String::as_str).collect();
        let mut url = self.url(&segments);
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        let mut builder = self
            .http
            .request(request.method.clone(), url.clone())
            .bearer_auth(&self.token)
            .header(ACCEPT, "application/json");
        if let Some(file) = &request.upload {
            builder = builder
                .multipart(upload_form(file, request.body.as_ref())?)
                .timeout(UPLOAD_TIMEOUT);
        } else if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = builder.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
        answer(status, &bytes, &url).map(|value| (status, value))
    }

    fn transport(&self, error: &reqwest::Error) -> Failure {
        let server = self.server();
        Failure::Other(if error.is_connect() {
            format!(
                "cannot connect to the server at {server}: {} (set --server or TAPEDECK_SERVER)",
                cause(error)
            )
        } else if error.is_timeout() {
            format!("the server at {server} did not answer in time")
        } else {
            format!("the request to {server} failed: {}", cause(error))
        })
    }
}

/// A component file's bytes, refused before anything is sent when it is larger than the
/// server takes. Read through a bound: a file that grows meanwhile cannot exhaust memory.
fn read_plugin(path: &Path) -> Result<Vec<u8>, Failure> {
    let shown = path.display();
    let cannot = |e: std::io::Error| Failure::Other(format!("cannot read {shown}: {e}"));
    let file = File::open(path).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if metadata.is_dir() {
        return Err(Failure::Other(format!(
            "{shown} is a directory, not a component file"
        )));
    }
    let too_large = |len: u64| {
        Failure::Other(format!(
            "{shown} is {} ({len} bytes): the server takes components of at most 64 MiB \
             ({MAX_PLUGIN_BYTES} bytes)",
            human_bytes(len)
        ))
    };
    if metadata.len() > MAX_PLUGIN_BYTES {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The `multipart/form-data` of a publication: the text fields of `fields` (`stage`)
/// first, then the component as `file`.
fn upload_form(path: &Path, fields: Option<&Value>) -> Result<reqwest::multipart::Form, Failure> {
    let bytes = read_plugin(path)?;
    let mut form = reqwest::multipart::Form::new();
    if let Some(fields) = fields.and_then(Value::as_object) {
        for (name, value) in fields {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            form = form.text(name.clone(), text);
        }
    }
    let name = path.file_name().map_or_else(
        || "plugin.wasm".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name)
        .mime_str("application/wasm")
        .map_err(|e| Failure::Other(format!("cannot build the upload: {}", cause(&e))))?;
    Ok(form.part("file", part))
}

/// The innermost cause of an error (reqwest's own message only names the URL).
fn cause(error: &dyn std::error::Error) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// The JSON of a successful answer, or why it failed.
fn answer(status: u16, body: &[u8], url: &Url) -> Result<Value, Failure> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return match parsed {
            Some(value) => Ok(value),
            None if body.is_empty() => Ok(Value::Null),
            None => Err(Failure::Other(format!(
                "the server answered {status} with something other than JSON ({url})"
            ))),
        };
    }
    if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
        let code = error["code"].as_str().unwrap_or("unknown").to_owned();
        let message = error["message"].as_str().unwrap_or(&code).to_owned();
        return Err(Failure::Api { code, message });
    }
    let text = String::from_utf8_lossy(body);
    let first: String = text
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    Err(Failure::Other(if first.is_empty() {
        format!("HTTP {status} from {url}")
    } else {
        format!("HTTP {status} from {url}: {first}")
    }))
}

/// What an answer is, to show it as a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    /// `{"tenant": TENANT}`
    Tenant,
    /// `{"tenants": [TENANT...]}`
    Tenants,
    /// `{"limits", "server", "effective"}`
    Limits,
    /// `{"deleting": NAME}`
    Deleted,
    /// USAGE
    Usage,
    /// `{"tenants": [USAGE...]}`
    UsageAll,
    /// `{"plugin": PLUGIN}`, answered 201: newly published.
    Published,
    /// `{"plugin": PLUGIN}`, answered 200: that digest was published before.
    AlreadyPublished,
    /// `{"plugins": [PLUGIN...]}`
    Plugins,
    /// `{"active": ACTIVE}`: after an activation or a rollback.
    Active,
    /// `{"active": [ACTIVE...]}`
    ActiveAll,
    /// `{"history": [EVENT...]}`
    History,
    /// `{"canary": STATUS}` or `{"canaries": [STATUS...]}`
    Canaries,
    /// `{"ended", "digest", "stage", "tenant"}`
    CanaryEnded,
    /// `{"jobs": [JOB...], "next_cursor"}`
    Jobs,
    /// JOB
    Job,
    /// `{"replayed": {"tenant", "job_id"}}`
    Replayed,
    /// `{"entries": [DEAD...]}`
    Dead,
    /// `{"user": USER}`
    User,
}

/// Runs `tapedeck admin`; the exit code says whether it worked.
pub fn run(mut args: AdminArgs) -> ExitCode {
    let Some(token) = args.token.clone().filter(|t| !t.trim().is_empty()) else {
        eprintln!("error: no operator token: pass --token or set TAPEDECK_ADMIN_TOKEN");
        return ExitCode::from(2);
    };
    if let AdminCommand::Tenant(command) = &mut args.command
        && let TenantCommand::AdminCreate {
            password,
            password_stdin,
            ..
        } = command.as_mut()
    {
        match new_password(*password_stdin) {
            Ok(p) => *password = Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let outcome = Client::new(args.server.clone(), token).and_then(|client| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(execute(&client, &args.command))
    });
    match outcome {
        Ok((kind, value)) => {
            let text = if args.json {
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
            } else {
                match render(kind, &value) {
                    Ok(text) => text,
                    Err(failure) => {
                        eprintln!("error: {failure}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            // A closed pipe (`| head`) is not an error of the command.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// The password of a new admin account: the first line of standard input, or a random
/// one (24 characters from 144 random bits), printed once on standard error.
fn new_password(from_stdin: bool) -> Result<String, String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Err("no password on standard input".into());
        }
        return Ok(line);
    }
    let mut bytes = [0u8; 18];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot make a random password: {e}"))?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // 18 bytes = 144 bits = 24 six-bit characters.
    let mut password = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            password.push(ALPHABET[(n >> shift) as usize & 63] as char);
        }
    }
    eprintln!("password (shown once): {password}");
    Ok(password)
}

/// The body of `POST /v1/admin/tenants` (a limit given as `none` is left unset).
fn create_body(name: &str, self_register: bool, limits: &LimitFlags) -> Value {
    to_json(&NewTenant {
        name: name.to_owned(),
        self_register,
        limits: limits.limits(),
    })
}

/// A request body as JSON.
fn to_json(body: &impl serde::Serialize) -> Value {
    // Plain structs of strings, numbers and booleans: serializing cannot fail.
    serde_json::to_value(body).unwrap_or_default()
}

/// A command's request: method, path segments, query, body; and how to show the answer.
#[derive(Debug)]
struct Request {
    method: Method,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    /// A file to upload: the request is then `multipart/form-data`, with the body's
    /// fields as its text fields and the file as its `file` part.
    upload: Option<PathBuf>,
    render: Render,
}

impl Request {
    /// A request to `/v1/admin/{parts...}`.
    fn new(method: Method, parts: &[&str], body: Option<Value>, render: Render) -> Self {
        Request {
            method,
            path: ["v1", "admin"]
                .iter()
                .chain(parts)
                .map(|p| (*p).to_owned())
                .collect(),
            query: Vec::new(),
            body,
            upload: None,
            render,
        }
    }

    /// With `?stage=S` when a stage is given.
    fn stage_filter(mut self, stage: Option<Stage>) -> Self {
        if let Some(stage) = stage {
            self.query.push(("stage", stage.as_str().to_owned()));
        }
        self
    }
}

/// The body of an activation or a rollback: the stage, and the tenant when one is named.
fn activation_body(stage: Stage, tenant: Option<&str>) -> Value {
    let mut body = json!({"stage": stage.as_str()});
    if let Some(tenant) = tenant {
        body["tenant"] = json!(tenant);
    }
    body
}

/// `POST /v1/admin/plugins/{digest}/activate` (`digest` in full).
fn activate_request(digest: &str, stage: Stage, tenant: Option<&str>) -> Request {
    Request::new(
        Method::POST,
        &["plugins", digest, "activate"],
        Some(activation_body(stage, tenant)),
        Render::Active,
    )
}

/// `POST /v1/admin/plugins/{digest}/canary` (`digest` in full).
fn canary_request(digest: &str, a: &CanaryArgs) -> Request {
    let body = CanaryRequest {
        stage: a.stage.as_str().to_owned(),
        tenant: a.tenant.clone(),
        percent: a.percent,
        sticky: Some(a.sticky),
        promote_after: a.promote_after,
        min_jobs: a.min_jobs,
        window: a.window,
        max_failure_delta: a.max_failure_delta,
        max_invalid_delta: a.max_invalid_delta,
        max_p95_ratio: a.max_p95_ratio,
        p95_slack_ms: a.p95_slack_ms,
        deadline_factor: a.deadline_factor,
        deadline_floor_ms: a.deadline_floor_ms,
    };
    Request::new(
        Method::POST,
        &["plugins", digest, "canary"],
        Some(to_json(&body)),
        Render::Canaries,
    )
}

fn request(command: &AdminCommand) -> Request {
    match command {
        AdminCommand::Jobs(command) => match command.as_ref() {
            JobsCommand::List {
                tenant,
                limit,
                cursor,
            } => {
                let mut r = Request::new(Method::GET, &["jobs"], None, Render::Jobs);
                r.query.push(("tenant", tenant.clone()));
                r.query.push(("limit", limit.to_string()));
                if let Some(c) = cursor {
                    r.query.push(("cursor", c.clone()));
                }
                r
            }
            JobsCommand::Show { tenant, id } => {
                Request::new(Method::GET, &["jobs", tenant, id], None, Render::Job)
            }
            JobsCommand::Retry { tenant, id } => Request::new(
                Method::POST,
                &["dead", "replay"],
                Some(json!({"tenant": tenant, "job_id": id})),
                Render::Replayed,
            ),
            JobsCommand::Dlq { tenant, limit } => {
                let mut r = Request::new(Method::GET, &["dead"], None, Render::Dead);
                if let Some(t) = tenant {
                    r.query.push(("tenant", t.clone()));
                }
                r.query.push(("limit", limit.to_string()));
                r
            }
        },
        AdminCommand::Tenant(command) => match command.as_ref() {
            TenantCommand::Create {
                name,
                self_register,
                limits,
            } => Request::new(
                Method::POST,
                &["tenants"],
                Some(create_body(name, *self_register, limits)),
                Render::Tenant,
            ),
            TenantCommand::List => Request::new(Method::GET, &["tenants"], None, Render::Tenants),
            TenantCommand::Show { name } => {
                Request::new(Method::GET, &["tenants", name], None, Render::Tenant)
            }
            TenantCommand::Update {
                name,
                self_register,
                allow_plugins,
            } => {
                let change = TenantChange {
                    self_register: *self_register,
                    allow_plugins: *allow_plugins,
                };
                Request::new(
                    Method::PATCH,
                    &["tenants", name],
                    Some(to_json(&change)),
                    Render::Tenant,
                )
            }
            TenantCommand::AdminCreate {
                name,
                email,
                password,
                ..
            } => Request::new(
                Method::POST,
                &["tenants", name, "users"],
                Some(json!({
                    "email": email,
                    "password": password.as_deref().unwrap_or_default(),
                    "role": Role::Admin,
                })),
                Render::User,
            ),
            TenantCommand::Delete { name } => {
                Request::new(Method::DELETE, &["tenants", name], None, Render::Deleted)
            }
            TenantCommand::Limits { name, limits } => {
                let body = limits.body();
                let (method, body) = if body.is_empty() {
                    (Method::GET, None)
                } else {
                    (Method::PATCH, Some(Value::Object(body)))
                };
                Request::new(method, &["tenants", name, "limits"], body, Render::Limits)
            }
        },
        AdminCommand::Usage { name: Some(name) } => Request::new(
            Method::GET,
            &["tenants", name, "usage"],
            None,
            Render::Usage,
        ),
        AdminCommand::Usage { name: None } => {
            Request::new(Method::GET, &["usage"], None, Render::UsageAll)
        }
        AdminCommand::Plugin(command) => match command.as_ref() {
            PluginCommand::Publish {
                file,
                stage,
                name,
                version,
            } => {
                let mut fields = json!({"stage": stage.as_str()});
                if let (Some(name), Some(version)) = (name, version) {
                    fields["name"] = json!(name);
                    fields["version"] = json!(version);
                }
                Request {
                    upload: Some(file.clone()),
                    ..Request::new(Method::POST, &["plugins"], Some(fields), Render::Published)
                }
            }
            PluginCommand::List { stage } => {
                Request::new(Method::GET, &["plugins"], None, Render::Plugins).stage_filter(*stage)
            }
            PluginCommand::Activate {
                digest,
                stage,
                tenant,
            } => activate_request(digest, *stage, tenant.as_deref()),
            PluginCommand::Rollback { stage, tenant } => Request::new(
                Method::POST,
                &["plugins", "rollback"],
                Some(activation_body(*stage, tenant.as_deref())),
                Render::Active,
            ),
            PluginCommand::Active => {
                Request::new(Method::GET, &["plugins", "active"], None, Render::ActiveAll)
            }
            PluginCommand::History { stage } => {
                Request::new(Method::GET, &["plugins", "history"], None, Render::History)
                    .stage_filter(*stage)
            }
            PluginCommand::Canary(args) => canary_request(&args.digest, args),
            PluginCommand::Promote { stage, tenant } => Request::new(
                Method::POST,
                &["plugins", "canary", "promote"],
                Some(activation_body(*stage, tenant.as_deref())),
                Render::CanaryEnded,
            ),
            PluginCommand::Abort { stage, tenant } => Request::new(
                Method::POST,
                &["plugins", "canary", "abort"],
                Some(activation_body(*stage, tenant.as_deref())),
                Render::CanaryEnded,
            ),
            PluginCommand::Canaries => Request::new(
                Method::GET,
                &["plugins", "canaries"],
                None,
                Render::Canaries,
            ),
        },
    }
}

/// The full digest of the one published plugin of `stage` whose digest starts with
/// `prefix`.
fn resolve_digest(prefix: &str, stage: Stage, plugins: &[Plugin]) -> Result<String, Failure> {
    if let Some((name, version)) = prefix.split_once('@') {
        let found = plugins.iter().find(|p| {
            p.stage == stage.as_str()
                && p.name.as_deref() == Some(name)
                && p.version.as_deref() == Some(version)
        });
        return found.map(|p| p.digest.clone()).ok_or_else(|| {
            Failure::Other(format!(
                "no published {} plugin is the release {prefix} (see tapedeck admin plugin \
                 list --stage {})",
                stage.as_str(),
                stage.as_str()
            ))
        });
    }
    let matches: Vec<&str> = plugins
        .iter()
        .filter(|p| p.stage == stage.as_str())
        .map(|p| p.digest.as_str())
        .filter(|d| d.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [digest] => Ok((*digest).to_owned()),
        [] => Err(Failure::Other(format!(
            "no published {} plugin has a digest starting with {prefix} \
             (see tapedeck admin plugin list --stage {})",
            stage.as_str(),
            stage.as_str()
        ))),
        several => Err(Failure::Other(format!(
            "{prefix} is the start of {} {} plugins' digests: give more of the digest",
            several.len(),
            stage.as_str()
        ))),
    }
}

async fn execute(client: &Client, command: &AdminCommand) -> Result<(Render, Value), Failure> {
    let mut request = request(command);
    // An abbreviated digest (as tables show it) is looked up among the stage's plugins.
    if let AdminCommand::Plugin(plugin) = command {
        let short = match plugin.as_ref() {
            PluginCommand::Activate { digest, stage, .. } => Some((digest, *stage)),
            PluginCommand::Canary(a) => Some((&a.digest, a.stage)),
            _ => None,
        };
        if let Some((digest, stage)) =
            short.filter(|(d, _)| d.len() < DIGEST_LEN || d.contains('@'))
        {
            let list = Request::new(Method::GET, &["plugins"], None, Render::Plugins)
                .stage_filter(Some(stage));
            let (_, plugins) = client.send(&list).await?;
            let digest = resolve_digest(digest, stage, &typed::<PluginList>(&plugins)?.plugins)?;
            request = match plugin.as_ref() {
                PluginCommand::Canary(a) => canary_request(&digest, a),
                PluginCommand::Activate { tenant, .. } => {
                    activate_request(&digest, stage, tenant.as_deref())
                }
                _ => request,
            };
        }
    }
    let (status, value) = client.send(&request).await?;
    let render = match request.render {
        // 201 is a new publication; 200 names one that was there already.
        Render::Published if status != 201 => Render::AlreadyPublished,
        render => render,
    };
    Ok((render, value))
}

/// `tapedeck plugin dev`'s round trip: publishes `file` for `stage` and activates it for
/// `tenant` (none: everyone), with the requests of `tapedeck admin plugin publish` and
/// `activate`; then waits (up to `applied_within`) until every process runs the
/// registry's new version. Returns the digest.
pub(crate) fn publish_and_activate(
    server: &Url,
    token: &str,
    file: &Path,
    stage: &str,
    tenant: Option<&str>,
    applied_within: Duration,
) -> Result<String, String> {
    let stage = <Stage as ValueEnum>::from_str(stage, false)?;
    let client = Client::new(server.clone(), token.to_owned()).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let publish = AdminCommand::Plugin(Box::new(PluginCommand::Publish {
            file: file.to_owned(),
            stage,
            name: None,
            version: None,
        }));
        let (_, published) = execute(&client, &publish)
            .await
            .map_err(|e| e.to_string())?;
        let digest = typed::<PluginEnvelope>(&published)
            .map_err(|e| e.to_string())?
            .plugin
            .digest;
        let activate = AdminCommand::Plugin(Box::new(PluginCommand::Activate {
            digest: digest.clone(),
            stage,
            tenant: tenant.map(str::to_owned),
        }));
        execute(&client, &activate)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + applied_within;
        let active = Request::new(Method::GET, &["plugins", "active"], None, Render::ActiveAll);
        loop {
            let (_, value) = client.send(&active).await.map_err(|e| e.to_string())?;
            let version = &value["version"];
            let processes = value["processes"].as_array().cloned().unwrap_or_default();
            if !processes.is_empty() && processes.iter().all(|p| &p["version"] == version) {
                return Ok(digest);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "activated {digest}, but not every process runs it after {} s",
                    applied_within.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// An answer as people read it.
fn render(kind: Render, value: &Value) -> Result<String, Failure> {
    Ok(match kind {
        Render::Tenant => render_tenant(&typed::<TenantEnvelope>(value)?.tenant),
        Render::Tenants => render_tenants(&typed::<TenantList>(value)?.tenants),
        Render::Limits => {
            let view: LimitsView = typed(value)?;
            limits_table(&view.limits, Some(&view.server), &view.effective).to_string()
        }
        Render::Deleted => format!(
            "deleting tenant {}: its users, jobs and files are removed in the background",
            typed::<Deleting>(value)?.deleting
        ),
        Render::Usage => render_usage(&typed(value)?),
        Render::UsageAll => {
            let UsageList { tenants } = typed(value)?;
            if tenants.is_empty() {
                "no tenants".to_owned()
            } else {
                usage_table(&tenants).to_string()
            }
        }
        Render::Published => render_published(&typed::<PluginEnvelope>(value)?.plugin, false),
        Render::AlreadyPublished => render_published(&typed::<PluginEnvelope>(value)?.plugin, true),
        Render::Plugins => render_plugins(&typed::<PluginList>(value)?.plugins),
        // A started canary answers `{"canary"}`, the list `{"canaries"}`.
        Render::Canaries => render_canaries(&match value.get("canary") {
            Some(_) => vec![typed::<CanaryEnvelope>(value)?.canary],
            None => typed::<CanaryList>(value)?.canaries,
        }),
        Render::Jobs => render_jobs(&typed(value)?),
        Render::Job => serde_json::to_string_pretty(value).unwrap_or_default(),
        Render::Replayed => {
            let Replayed { replayed } = typed(value)?;
            format!(
                "job {} of {} is queued again",
                replayed.job_id, replayed.tenant
            )
        }
        Render::Dead => render_dead(&typed::<DeadLetters>(value)?.entries),
        Render::User => {
            let UserEnvelope { user } = typed(value)?;
            format!("created {} {} (id {})", user.role, user.email, user.id)
        }
        Render::CanaryEnded => {
            let ended: Ended = typed(value)?;
            let mut text = format!(
                "{}: {} {} for {}",
                ended.ended.replace("canary-", "canary "),
                ended.stage,
                short_digest(Some(&ended.digest)),
                tenant_cell(ended.tenant.as_deref())
            );
            for failure in &ended.failures {
                text.push_str(&format!("\n  recorded at publish: FAIL {failure}"));
            }
            text
        }
        Render::Active => render_activation(&typed::<ActiveEnvelope>(value)?.active),
        Render::ActiveAll => {
            let all = typed::<ActivePlugins>(value)?;
            let mut text = render_active(&all.active);
            // What processes run from `serve --watch` instead, for everyone.
            for process in &all.processes {
                for watched in &process.watched {
                    let (stage, digest) = watched.split_once('=').unwrap_or((watched, ""));
                    text.push_str(&format!(
                        "\nwatched: process {} runs {stage} {} from its --watch folder",
                        process.process,
                        short_digest(Some(digest))
                    ));
                }
            }
            text
        }
        Render::History => render_history(&typed::<History>(value)?.history),
    })
}

/// An answer as the API's type says it is; a server that answers something else (another
/// version, say) is named, and `--json` still shows what it said.
fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, Failure> {
    T::deserialize(value).map_err(|e| {
        Failure::Other(format!(
            "the server's answer is not what this tapedeck admin reads ({e}); --json shows it"
        ))
    })
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
}

fn align_right(table: &mut Table, columns: impl IntoIterator<Item = usize>) {
    for index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn render_tenant(tenant: &TenantView) -> String {
    format!(
        "tenant {} (self-register: {}, plugins: {})\n{}",
        tenant.name,
        yes_no(tenant.self_register),
        yes_no(tenant.allow_plugins),
        limits_table(&tenant.limits, None, &tenant.effective)
    )
}

fn render_tenants(tenants: &[TenantView]) -> String {
    if tenants.is_empty() {
        return "no tenants".to_owned();
    }
    let mut table = table(&["tenant", "self-register", "effective limits"]);
    for tenant in tenants {
        table.add_row(vec![
            tenant.name.clone(),
            yes_no(tenant.self_register).to_owned(),
            compact_limits(&tenant.effective),
        ]);
    }
    table.to_string()
}

/// `jobs_per_minute=60 max_running=2 quota_bytes=10GB`: the limits that are set.
fn compact_limits(limits: &TenantLimits) -> String {
    let set: Vec<String> = LIMITS
        .iter()
        .filter_map(|limit| {
            let value = limits.get(limit.name)?;
            Some(format!(
                "{}={}",
                limit.name,
                show_limit(limit.unit, Some(value)).replace(' ', "")
            ))
        })
        .collect();
    if set.is_empty() {
        "-".to_owned()
    } else {
        set.join(" ")
    }
}

/// One row per limit: the tenant's value, the server's default (when known), the
/// effective one.
fn limits_table(
    tenant: &TenantLimits,
    server: Option<&TenantLimits>,
    effective: &TenantLimits,
) -> Table {
    let mut header = vec!["limit", "flag", "tenant"];
    if server.is_some() {
        header.push("server default");
    }
    header.push("effective");
    let mut table = table(&header);
    for limit in LIMITS {
        let mut row = vec![
            limit.name.to_owned(),
            format!("--{}", limit.flag),
            show_limit(limit.unit, tenant.get(limit.name)),
        ];
        if let Some(server) = server {
            row.push(show_limit(limit.unit, server.get(limit.name)));
        }
        row.push(show_limit(limit.unit, effective.get(limit.name)));
        table.add_row(row);
    }
    align_right(&mut table, 2..header.len());
    table
}

/// A limit's value in its unit; `-` when not set.
fn show_limit(unit: Unit, value: Option<u64>) -> String {
    match (value, unit) {
        (None, _) => "-".to_owned(),
        (Some(n), Unit::Count) => n.to_string(),
        (Some(n), Unit::Bytes) => human_bytes(n),
        (Some(n), Unit::Mib) => format!("{n} MiB"),
    }
}

/// Bytes in decimal units, as the flags take them: `1.5 MB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 999.95 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!(
        "{} {}",
        text.strip_suffix(".0").unwrap_or(&text),
        UNITS[unit]
    )
}

/// The job states in the order a job goes through them.
const STATES: [&str; 5] = ["queued", "converting", "done", "failed", "expired"];

/// A tenant's jobs by state, in the order of [`STATES`].
fn by_state(jobs: &JobCounts) -> [u64; 5] {
    [
        jobs.queued,
        jobs.converting,
        jobs.done,
        jobs.failed,
        jobs.expired,
    ]
}

fn total_jobs(periods: &[Period]) -> u64 {
    periods.iter().map(|p| p.jobs).sum()
}

fn total_cpu(periods: &[Period]) -> f64 {
    // Not `sum()`: an empty f64 sum is -0.0.
    periods.iter().fold(0.0, |total, p| total + p.cpu_seconds)
}

fn seconds(value: f64) -> String {
    format!("{value:.2}")
}

/// One row per tenant: jobs by state, running, stored, and the last 24 hours and 30 days.
fn usage_table(usages: &[Usage]) -> Table {
    let mut header = vec!["tenant"];
    header.extend(STATES);
    header.extend([
        "running",
        "stored",
        "jobs 24h",
        "CPU s 24h",
        "jobs 30d",
        "CPU s 30d",
    ]);
    let mut table = table(&header);
    for usage in usages {
        let mut row = vec![usage.tenant.clone()];
        row.extend(by_state(&usage.jobs).map(|n| n.to_string()));
        row.extend([
            usage.running.to_string(),
            human_bytes(usage.stored_bytes),
            total_jobs(&usage.hours).to_string(),
            seconds(total_cpu(&usage.hours)),
            total_jobs(&usage.days).to_string(),
            seconds(total_cpu(&usage.days)),
        ]);
        table.add_row(row);
    }
    align_right(&mut table, 1..header.len());
    table
}

/// One tenant's usage: the totals, then one row per active hour and day.
fn render_usage(usage: &Usage) -> String {
    let totals = usage_table(std::slice::from_ref(usage));
    let mut periods = table(&[
        "period",
        "start (UTC)",
        "jobs",
        "done",
        "failed",
        "CPU s",
        "in",
        "out",
    ]);
    for (kind, list, precision) in [
        ("hour", &usage.hours, Precision::Minute),
        ("day", &usage.days, Precision::Day),
    ] {
        for period in list {
            periods.add_row(vec![
                kind.to_owned(),
                utc(period.start, precision),
                period.jobs.to_string(),
                period.done.to_string(),
                period.failed.to_string(),
                seconds(period.cpu_seconds),
                human_bytes(period.bytes_in),
                human_bytes(period.bytes_out),
            ]);
        }
    }
    if periods.row_count() == 0 {
        return format!("{totals}\nno activity in the last 30 days");
    }
    align_right(&mut periods, 2..8);
    format!("{totals}\n{periods}")
}

/// A digest as tables show it: its first [`SHORT_DIGEST`] digits; `default` for none
/// (the component the service was started with).
fn short_digest(digest: Option<&str>) -> String {
    match digest {
        None => "default".to_owned(),
        Some(digest) => digest.chars().take(SHORT_DIGEST).collect(),
    }
}

/// Unix seconds as a UTC time to the second.
fn utc_seconds(secs: u64) -> String {
    utc(secs, Precision::Second)
}

/// A published plugin, in full (its whole digest, to activate it by).
fn render_published(plugin: &Plugin, already: bool) -> String {
    let Plugin { stage, digest, .. } = plugin;
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    for (field, value) in [
        ("digest", digest.clone()),
        ("stage", stage.clone()),
        (
            "size",
            format!("{} ({} bytes)", human_bytes(plugin.bytes), plugin.bytes),
        ),
        ("published (UTC)", utc_seconds(plugin.published_at)),
        ("compile", format!("{} ms", plugin.compile_ms)),
        ("release", release_cell(plugin)),
        ("check", check_cell(plugin)),
    ] {
        table.add_row(vec![field.to_owned(), value]);
    }
    for failure in &plugin.failures {
        table.add_row(vec!["failed".to_owned(), failure.clone()]);
    }
    let headline = if already {
        format!("already published: the registry has this {stage} plugin (nothing changed)")
    } else {
        format!("published {stage} plugin")
    };
    format!(
        "{headline}\n{table}\nactivate it: tapedeck admin plugin activate {digest} --stage {stage} \
         [--tenant NAME]"
    )
}

fn render_plugins(plugins: &[Plugin]) -> String {
    if plugins.is_empty() {
        return "no plugins published".to_owned();
    }
    let mut table = table(&[
        "digest",
        "release",
        "stage",
        "size",
        "published (UTC)",
        "compile ms",
        "check",
    ]);
    for plugin in plugins {
        table.add_row(vec![
            short_digest(Some(&plugin.digest)),
            release_cell(plugin),
            plugin.stage.clone(),
            human_bytes(plugin.bytes),
            utc_seconds(plugin.published_at),
            plugin.compile_ms.to_string(),
            check_cell(plugin),
        ]);
    }
    align_right(&mut table, [3, 5]);
    table.to_string()
}

/// `NAME@VERSION`, or `-` for a plugin published without one.
fn release_cell(plugin: &Plugin) -> String {
    match (&plugin.name, &plugin.version) {
        (Some(name), Some(version)) => format!("{name}@{version}"),
        _ => "-".to_owned(),
    }
}

/// What the publish check recorded: `passed`, or how many cases failed and the first.
fn check_cell(plugin: &Plugin) -> String {
    match plugin.failures.as_slice() {
        [] => "passed".to_owned(),
        [one] => format!("1 failed: {one}"),
        [first, rest @ ..] => format!("{} failed: {first}, ...", rest.len() + 1),
    }
}

/// Whom an activation is for: a tenant's name, or `all` (none).
fn tenant_cell(tenant: Option<&str>) -> String {
    tenant.unwrap_or("all").to_owned()
}

/// What a stage runs now, after an activation or a rollback (the digest in full).
fn render_activation(active: &Active) -> String {
    let whom = match &active.tenant {
        Some(tenant) => format!("tenant {tenant}"),
        None => "all tenants".to_owned(),
    };
    let what = match &active.digest {
        Some(digest) => format!("plugin {digest}"),
        None => "the default component (the one the service was started with)".to_owned(),
    };
    format!("{} for {whom}: {what}", active.stage)
}

fn render_active(active: &[Active]) -> String {
    if active.is_empty() {
        return "nothing activated: every stage runs the component the service was started with"
            .to_owned();
    }
    let mut table = table(&["stage", "tenant", "digest"]);
    for entry in active {
        table.add_row(vec![
            entry.stage.clone(),
            tenant_cell(entry.tenant.as_deref()),
            short_digest(entry.digest.as_deref()),
        ]);
    }
    if active.iter().any(|entry| entry.digest.is_none()) {
        format!("{table}\ndefault: the component the service was started with")
    } else {
        table.to_string()
    }
}

/// The first `n` characters of a message, for a table cell.
fn clipped(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

fn render_jobs(page: &JobPage) -> String {
    if page.jobs.is_empty() {
        return "no jobs".to_owned();
    }
    let mut table = table(&[
        "id",
        "status",
        "created (UTC)",
        "input",
        "attempts",
        "error",
    ]);
    for job in &page.jobs {
        table.add_row(vec![
            job.id.clone(),
            job.status.as_str().to_owned(),
            utc_seconds(job.created_at),
            job.input.name.clone(),
            job.attempts.to_string(),
            clipped(job.error.as_deref().unwrap_or(""), 60),
        ]);
    }
    match &page.next_cursor {
        Some(next) => format!("{table}\nmore: --cursor {next}"),
        None => table.to_string(),
    }
}

fn render_dead(entries: &[DeadLetter]) -> String {
    if entries.is_empty() {
        return "no dead letters".to_owned();
    }
    let mut table = table(&["at (UTC)", "tenant", "job", "attempts", "reason"]);
    for e in entries {
        table.add_row(vec![
            utc_seconds(e.at),
            e.tenant.clone(),
            e.job_id.clone(),
            e.attempts.to_string(),
            clipped(&e.reason, 80),
        ]);
    }
    table.to_string()
}

fn render_canaries(list: &[CanaryStatus]) -> String {
    if list.is_empty() {
        return "no canary running".to_owned();
    }
    let mut table = table(&[
        "stage",
        "tenant",
        "digest",
        "share",
        "state",
        "canary runs",
        "fail",
        "invalid",
        "p95 ms",
        "stable runs",
        "fail",
        "invalid",
        "p95 ms",
    ]);
    for c in list {
        let s = &c.settings;
        let mut row = vec![
            s.stage.clone(),
            tenant_cell(s.tenant.as_deref()),
            short_digest(Some(&s.digest)),
            format!("{}% by {}", s.percent, s.sticky.as_str()),
            c.state.as_str().to_owned(),
        ];
        for arm in [&c.canary, &c.stable] {
            row.extend([
                arm.jobs.to_string(),
                arm.failures.to_string(),
                arm.invalid.to_string(),
                arm.p95_ms.to_string(),
            ]);
        }
        table.add_row(row);
    }
    let mut text = table.to_string();
    for c in list {
        if let Some(held) = &c.promotion_held {
            text.push_str(&format!(
                "\n{} {}: {held}",
                c.settings.stage,
                short_digest(Some(&c.settings.digest))
            ));
        }
    }
    text
}

fn render_history(history: &[Change]) -> String {
    if history.is_empty() {
        return "no plugin history".to_owned();
    }
    // The `why` column only when some change has a reason (canaries).
    let why = history.iter().any(|e| e.reason.is_some());
    let mut headers = vec!["at (UTC)", "action", "stage", "tenant", "digest"];
    if why {
        headers.push("why");
    }
    let mut table = table(&headers);
    for event in history {
        // A publication is for no tenant; an activation for none is for all.
        let tenant = if event.action == "publish" && event.tenant.is_none() {
            "-".to_owned()
        } else {
            tenant_cell(event.tenant.as_deref())
        };
        let mut row = vec![
            utc_seconds(event.at),
            event.action.clone(),
            event.stage.clone(),
            tenant,
            match &event.release {
                Some(release) => format!("{} {release}", short_digest(event.digest.as_deref())),
                None => short_digest(event.digest.as_deref()),
            },
        ];
        if why {
            row.push(event.reason.clone().unwrap_or_default());
        }
        table.add_row(row);
    }
    table.to_string()
}

/// How [`utc`] shows a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// `2026-11-29`
    Day,
    /// `2026-11-29 20:00`
    Minute,
    /// `2026-11-29 20:00:59`
    Second,
}

/// Unix seconds as a UTC time; the number itself when it is past what a date can hold.
fn utc(secs: u64, precision: Precision) -> String {
    let format = match precision {
        Precision::Day => "%Y-%m-%d",
        Precision::Minute => "%Y-%m-%d %H:%M",
        Precision::Second => "%Y-%m-%d %H:%M:%S",
    };
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| secs.to_string(), |t| t.strftime(format).to_string())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    /// The text of an answer of the API's shape.
    fn render(kind: Render, value: &Value) -> String {
        super::render(kind, value).unwrap()
    }

    fn parse(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        let command = AdminArgs::augment_args(clap::Command::new("admin"));
        let matches = command.try_get_matches_from([&["admin"], args].concat())?;
        AdminArgs::from_arg_matches(&matches)
    }

    fn tenant_command(args: &[&str]) -> TenantCommand {
        match parse(&[&["tenant"], args].concat()).unwrap().command {
            AdminCommand::Tenant(command) => *command,
            other => panic!("parsed {other:?}"),
        }
    }

    fn limit_flags(args: &[&str]) -> LimitFlags {
        match tenant_command(&[&["limits", "acme"], args].concat()) {
            TenantCommand::Limits { limits, .. } => limits,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn the_admin_command_is_part_of_the_cli() {
        crate::cli::Cli::command().debug_assert();
        let cli = crate::cli::Cli::try_parse_from([
            "tapedeck", "admin", "--token", "t", "tenant", "list", "--json",
        ]);
        assert!(cli.is_ok(), "{cli:?}");
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let args = parse(&[
            "tenant",
            "list",
            "--json",
            "--server",
            "https://tapedeck.example/api/",
            "--token",
            "tok",
        ])
        .unwrap();
        assert!(args.json);
        assert_eq!(args.token.as_deref(), Some("tok"));
        assert_eq!(args.server.as_str(), "https://tapedeck.example/api/");
        let args = parse(&["--json", "usage"]).unwrap();
        assert!(args.json);
        assert!(matches!(args.command, AdminCommand::Usage { name: None }));
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        for args in [
            &["tenant", "update", "acme"][..],
            &["tenant", "update", "acme", "--self-register", "maybe"],
            &["tenant", "limits", "acme", "--max-queued", "lots"],
            &["tenant", "limits", "acme", "--max-queued", "1.5"],
            &["tenant", "create", "acme", "--quota-gb", "99999999999"],
            &["--server", "ftp://host", "tenant", "list"],
            &["tenant", "frobnicate"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn limit_flags_map_to_the_api_fields_and_units() {
        let flags = limit_flags(&[
            "--max-upload-mb",
            "1",
            "--jobs-per-minute",
            "60",
            "--max-queued",
            "none",
            "--max-running",
            "2",
            "--quota-gb",
            "1.5",
            "--retention-days",
            "7",
            "--max-memory-mb",
            "256",
            "--cpu-per-audio-minute",
            "5",
            "--max-output-mb",
            "50",
            "--max-input-minutes",
            "90",
            "--cpu-seconds-per-hour",
            "3600",
            "--notifications-per-hour",
            "100",
            "--weight",
            "3",
        ]);
        assert_eq!(
            Value::Object(flags.body()),
            json!({
                "max_upload_bytes": 1_000_000,
                "jobs_per_minute": 60,
                "max_queued": null,
                "max_running": 2,
                "quota_bytes": 1_500_000_000u64,
                "retention_days": 7,
                "max_memory_mib": 256,
                "cpu_per_audio_minute": 5,
                "max_output_mib": 50,
                "max_input_minutes": 90,
                "cpu_seconds_per_hour": 3600,
                "notifications_per_hour": 100,
                "weight": 3,
            })
        );
        assert!(limit_flags(&[]).body().is_empty());
        assert_eq!(
            Value::Object(limit_flags(&["--weight", "NONE"]).body()),
            json!({"weight": null})
        );
    }

    #[test]
    fn every_limit_has_one_flag_with_its_help() {
        let command = LimitFlags::augment_args(clap::Command::new("limits"));
        for limit in LIMITS {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(limit.flag))
                .unwrap_or_else(|| panic!("no --{}", limit.flag));
            assert_eq!(
                arg.get_help().map(ToString::to_string),
                Some(limit.flag_help())
            );
            assert_eq!(
                arg.get_help_heading(),
                Some("Limits (a number, or `none` to clear)")
            );
        }
        assert_eq!(command.get_arguments().count(), LIMITS.len());
        let flags = limit_flags(&["--quota-gb", "2", "--max-queued", "none"]);
        let expected = TenantLimits {
            quota_bytes: Some(2_000_000_000),
            ..TenantLimits::default()
        };
        assert_eq!(flags.limits(), expected, "none leaves a limit unset");
    }

    fn parse_count(s: &str) -> Result<LimitValue, String> {
        scaled(s, 0)
    }

    fn parse_mb(s: &str) -> Result<LimitValue, String> {
        scaled(s, 6)
    }

    fn parse_gb(s: &str) -> Result<LimitValue, String> {
        scaled(s, 9)
    }

    #[test]
    fn numbers_scale_exactly_to_whole_units() {
        assert_eq!(parse_mb("1"), Ok(LimitValue(Some(1_000_000))));
        assert_eq!(parse_mb("1.5"), Ok(LimitValue(Some(1_500_000))));
        assert_eq!(parse_mb(".25"), Ok(LimitValue(Some(250_000))));
        assert_eq!(parse_mb("2."), Ok(LimitValue(Some(2_000_000))));
        assert_eq!(parse_mb("0.000001"), Ok(LimitValue(Some(1))));
        assert!(parse_mb("0.0000001").is_err(), "a tenth of a byte");
        assert_eq!(parse_gb("10"), Ok(LimitValue(Some(10_000_000_000))));
        assert_eq!(parse_gb("0.1"), Ok(LimitValue(Some(100_000_000))));
        assert_eq!(parse_count("42"), Ok(LimitValue(Some(42))));
        assert_eq!(parse_count("42.0"), Ok(LimitValue(Some(42))));
        assert_eq!(parse_count("none"), Ok(LimitValue(None)));
        assert_eq!(parse_gb("None"), Ok(LimitValue(None)));
        for bad in ["", ".", "-1", "+1", "1e3", "1,5", "one", " 1", "0x10"] {
            assert!(parse_count(bad).is_err(), "{bad:?}");
            assert!(parse_mb(bad).is_err(), "{bad:?}");
        }
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("18446744073709551615").is_ok());
        assert!(parse_count("18446744073709551616").is_err());
        assert!(parse_gb("18446744074").is_err(), "overflows u64 bytes");
        assert!(parse_gb("18446744073").is_ok());
    }

    #[test]
    fn create_sends_name_self_register_and_limits() {
        let TenantCommand::Create {
            name,
            self_register,
            limits,
        } = tenant_command(&[
            "create",
            "acme",
            "--self-register",
            "--jobs-per-minute",
            "2",
            "--max-upload-mb",
            "1",
        ])
        else {
            panic!("not a create")
        };
        assert_eq!(
            create_body(&name, self_register, &limits),
            json!({
                "name": "acme",
                "self_register": true,
                "limits": {"jobs_per_minute": 2, "max_upload_bytes": 1_000_000},
            })
        );
        assert_eq!(
            create_body("solo", false, &LimitFlags::default()),
            json!({"name": "solo", "self_register": false})
        );
    }

    #[test]
    fn update_takes_true_or_false() {
        assert!(matches!(
            tenant_command(&["update", "acme", "--self-register", "false"]),
            TenantCommand::Update {
                self_register: Some(false),
                allow_plugins: None,
                ..
            }
        ));
        assert!(matches!(
            tenant_command(&["update", "acme", "--self-register", "true"]),
            TenantCommand::Update {
                self_register: Some(true),
                ..
            }
        ));
        assert!(matches!(
            tenant_command(&["update", "acme", "--allow-plugins", "false"]),
            TenantCommand::Update {
                self_register: None,
                allow_plugins: Some(false),
                ..
            }
        ));
        assert!(
            parse(&["tenant", "update", "acme"]).is_err(),
            "nothing to change"
        );
    }

    #[test]
    fn admin_create_posts_an_admin_account_of_the_tenant() {
        let mut command = parse(&["tenant", "admin-create", "acme", "ann@acme.example"])
            .unwrap()
            .command;
        if let AdminCommand::Tenant(t) = &mut command
            && let TenantCommand::AdminCreate { password, .. } = t.as_mut()
        {
            *password = Some(new_password(false).unwrap());
        }
        let r = request(&command);
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path.join("/"), "v1/admin/tenants/acme/users");
        let body = r.body.unwrap();
        assert_eq!(body["email"], "ann@acme.example");
        assert_eq!(body["role"], "admin");
        let password = body["password"].as_str().unwrap();
        assert_eq!(password.len(), 24);
        assert_ne!(password, new_password(false).unwrap(), "random each time");
        let r = request(
            &parse(&["tenant", "update", "acme", "--allow-plugins", "true"])
                .unwrap()
                .command,
        );
        assert_eq!(r.body, Some(json!({"allow_plugins": true})));
    }

    /// Arguments, and the request they make: method, path under `/v1/admin/`, body, and
    /// how the answer is shown.
    type Case<'a> = (&'a [&'a str], Method, &'a str, Option<Value>, Render);

    #[test]
    fn commands_map_to_the_contracts_requests() {
        let cases: [Case; 9] = [
            (
                &["tenant", "create", "acme"],
                Method::POST,
                "tenants",
                Some(json!({"name": "acme", "self_register": false})),
                Render::Tenant,
            ),
            (
                &["tenant", "list"],
                Method::GET,
                "tenants",
                None,
                Render::Tenants,
            ),
            (
                &["tenant", "show", "acme"],
                Method::GET,
                "tenants/acme",
                None,
                Render::Tenant,
            ),
            (
                &["tenant", "update", "acme", "--self-register", "true"],
                Method::PATCH,
                "tenants/acme",
                Some(json!({"self_register": true})),
                Render::Tenant,
            ),
            (
                &["tenant", "delete", "acme"],
                Method::DELETE,
                "tenants/acme",
                None,
                Render::Deleted,
            ),
            (
                &["tenant", "limits", "acme"],
                Method::GET,
                "tenants/acme/limits",
                None,
                Render::Limits,
            ),
            (
                &["tenant", "limits", "acme", "--max-queued", "none"],
                Method::PATCH,
                "tenants/acme/limits",
                Some(json!({"max_queued": null})),
                Render::Limits,
            ),
            (
                &["usage", "acme"],
                Method::GET,
                "tenants/acme/usage",
                None,
                Render::Usage,
            ),
            (&["usage"], Method::GET, "usage", None, Render::UsageAll),
        ];
        for (args, method, path, body, render) in cases {
            let request = request(&parse(args).unwrap().command);
            assert_eq!(request.method, method, "{args:?}");
            assert_eq!(
                request.path.join("/"),
                format!("v1/admin/{path}"),
                "{args:?}"
            );
            assert_eq!(request.body, body, "{args:?}");
            assert_eq!(request.render, render, "{args:?}");
            assert!(request.query.is_empty() && request.upload.is_none());
        }
    }

    /// The request's path under `/v1/admin/`, with its query.
    fn target(request: &Request) -> String {
        let path = request.path.join("/");
        let path = path.strip_prefix("v1/admin/").unwrap_or(&path).to_owned();
        let query: Vec<String> = request
            .query
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn plugin_commands_map_to_the_contracts_requests() {
        let cases: [Case; 10] = [
            (
                &["plugin", "list"],
                Method::GET,
                "plugins",
                None,
                Render::Plugins,
            ),
            (
                &["plugin", "list", "--stage", "notifier"],
                Method::GET,
                "plugins?stage=notifier",
                None,
                Render::Plugins,
            ),
            (
                &["plugin", "activate", DIGEST, "--stage", "converter"],
                Method::POST,
                &format!("plugins/{DIGEST}/activate"),
                Some(json!({"stage": "converter"})),
                Render::Active,
            ),
            (
                &[
                    "plugin",
                    "activate",
                    &DIGEST.to_uppercase(),
                    "--stage",
                    "converter",
                    "--tenant",
                    "acme",
                ],
                Method::POST,
                &format!("plugins/{DIGEST}/activate"),
                Some(json!({"stage": "converter", "tenant": "acme"})),
                Render::Active,
            ),
            (
                &["plugin", "rollback", "--stage", "converter"],
                Method::POST,
                "plugins/rollback",
                Some(json!({"stage": "converter"})),
                Render::Active,
            ),
            (
                &[
                    "plugin", "rollback", "--stage", "notifier", "--tenant", "acme",
                ],
                Method::POST,
                "plugins/rollback",
                Some(json!({"stage": "notifier", "tenant": "acme"})),
                Render::Active,
            ),
            (
                &["plugin", "active"],
                Method::GET,
                "plugins/active",
                None,
                Render::ActiveAll,
            ),
            (
                &["plugin", "history"],
                Method::GET,
                "plugins/history",
                None,
                Render::History,
            ),
            (
                &["plugin", "history", "--stage", "converter"],
                Method::GET,
                "plugins/history?stage=converter",
                None,
                Render::History,
            ),
            (
                &["plugin", "publish", "conv.wasm", "--stage", "converter"],
                Method::POST,
                "plugins",
                Some(json!({"stage": "converter"})),
                Render::Published,
            ),
        ];
        for (args, method, path, body, render) in cases {
            let request = request(&parse(args).unwrap().command);
            assert_eq!(request.method, method, "{args:?}");
            assert_eq!(target(&request), path, "{args:?}");
            assert_eq!(request.body, body, "{args:?}");
            assert_eq!(request.render, render, "{args:?}");
            let upload = (args[1] == "publish").then(|| PathBuf::from("conv.wasm"));
            assert_eq!(request.upload, upload, "{args:?}");
        }
        // An abbreviated digest is kept as given (it is looked up before the request).
        let request = request(
            &parse(&["plugin", "activate", "0123456789AB", "--stage", "converter"])
                .unwrap()
                .command,
        );
        assert_eq!(target(&request), "plugins/0123456789ab/activate");
    }

    #[test]
    fn a_canary_sends_its_scope_share_and_the_thresholds_given() {
        let args = [
            "plugin",
            "canary",
            DIGEST,
            "--stage",
            "converter",
            "--tenant",
            "acme",
            "--percent",
            "25",
            "--sticky",
            "user",
            "--window",
            "20",
            "--deadline-factor",
            "4",
            "--deadline-floor-ms",
            "1500",
        ];
        let sent = request(&parse(&args).unwrap().command);
        assert_eq!(target(&sent), format!("plugins/{DIGEST}/canary"));
        assert_eq!(
            sent.body,
            Some(
                json!({"stage": "converter", "tenant": "acme", "percent": 25.0,
                        "sticky": "user", "window": 20, "deadline_factor": 4.0,
                        "deadline_floor_ms": 1500})
            )
        );
        let args = [
            "plugin",
            "canary",
            DIGEST,
            "--stage",
            "converter",
            "--percent",
            "5",
        ];
        let sent = request(&parse(&args).unwrap().command);
        assert_eq!(
            sent.body,
            Some(json!({"stage": "converter", "percent": 5.0, "sticky": "job"}))
        );
        let args = [
            "plugin",
            "canary",
            DIGEST,
            "--stage",
            "converter",
            "--percent",
            "5",
            "--sticky",
            "moon",
        ];
        assert_eq!(parse(&args).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn plugin_usage_errors_are_clap_errors() {
        let long = format!("{DIGEST}0");
        for args in [
            &["plugin", "publish", "conv.wasm"][..],
            &["plugin", "publish", "conv.wasm", "--stage", "storage"],
            &["plugin", "publish", "--stage", "converter"],
            &["plugin", "activate", DIGEST],
            &["plugin", "activate", "--stage", "converter"],
            &["plugin", "activate", "xyz0123", "--stage", "converter"],
            &["plugin", "activate", "abc", "--stage", "converter"],
            &["plugin", "activate", &long, "--stage", "converter"],
            &["plugin", "rollback"],
            &["plugin", "rollback", "--stage", "converter", "--tenant"],
            &["plugin", "list", "--stage", "everything"],
            &["plugin", "active", "extra"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
        assert_eq!(parse_digest("ABCD"), Ok("abcd".to_owned()));
        assert_eq!(parse_digest(DIGEST), Ok(DIGEST.to_owned()));
    }

    #[test]
    fn abbreviated_digests_resolve_among_the_stages_plugins() {
        let other = format!("0123{}", &DIGEST[4..].replace('a', "f"));
        let plugin = |digest: &str, stage: &str| Plugin {
            digest: digest.to_owned(),
            stage: stage.to_owned(),
            bytes: 1,
            published_at: 0,
            compile_ms: 0,
            owner: None,
            by: String::new(),
            world: String::new(),
            smoke: String::new(),
            smoke_ms: 0,
            failures: Vec::new(),
            name: None,
            version: None,
        };
        let plugins = [
            plugin(DIGEST, "converter"),
            plugin(&other, "converter"),
            plugin(
                "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
                "notifier",
            ),
        ];
        assert_eq!(
            resolve_digest("0123456789a", Stage::Converter, &plugins).unwrap(),
            DIGEST
        );
        let failure = |given: &str, stage: Stage, plugins: &[Plugin]| {
            resolve_digest(given, stage, plugins)
                .unwrap_err()
                .to_string()
        };
        let several = failure("0123", Stage::Converter, &plugins);
        assert!(several.contains("give more of the digest"), "{several}");
        let none = failure("fedc", Stage::Converter, &plugins);
        assert!(
            none.starts_with("no published converter plugin has a digest starting with fedc"),
            "{none}"
        );
        assert!(resolve_digest("fedc", Stage::Notifier, &plugins).is_ok());
        // A release, NAME@VERSION, names its digest among the stage's plugins.
        let mut released = plugin(&other, "converter");
        released.name = Some("speech".into());
        released.version = Some("1.0.0".into());
        let plugins = [plugin(DIGEST, "converter"), released];
        assert_eq!(
            resolve_digest("speech@1.0.0", Stage::Converter, &plugins).unwrap(),
            other
        );
        let missing = failure("speech@2.0.0", Stage::Converter, &plugins);
        assert!(
            missing.starts_with("no published converter plugin is the release speech@2.0.0"),
            "{missing}"
        );
        assert!(resolve_digest("speech@1.0.0", Stage::Notifier, &plugins).is_err());
        assert_eq!(
            parse_digest_or_release("speech@1.0.0"),
            Ok("speech@1.0.0".to_owned())
        );
        assert!(parse_digest_or_release("@1.0").is_err());
    }

    #[test]
    fn component_files_are_read_within_the_servers_limit() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.wasm");
        std::fs::write(&small, b"\0asm\x0d\0\x01\0").unwrap();
        assert_eq!(read_plugin(&small).unwrap(), b"\0asm\x0d\0\x01\0");

        // Sparse: nothing is written, the size alone is refused.
        let large = dir.path().join("large.wasm");
        File::create(&large)
            .unwrap()
            .set_len(MAX_PLUGIN_BYTES + 1)
            .unwrap();
        let error = read_plugin(&large).unwrap_err().to_string();
        assert!(
            error.contains("large.wasm is 67.1 MB (67108865 bytes)")
                && error.contains("at most 64 MiB"),
            "{error}"
        );
        let exact = dir.path().join("exact.wasm");
        File::create(&exact)
            .unwrap()
            .set_len(MAX_PLUGIN_BYTES)
            .unwrap();
        assert_eq!(read_plugin(&exact).unwrap().len() as u64, MAX_PLUGIN_BYTES);

        let missing = read_plugin(&dir.path().join("missing.wasm"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read ") && missing.contains("missing.wasm"),
            "{missing}"
        );
        let directory = read_plugin(dir.path()).unwrap_err().to_string();
        assert!(directory.contains("is a directory"), "{directory}");
    }

    /// A one-shot HTTP server on loopback: answers `status` with `body` and hands back the
    /// request it read (head and body).
    fn one_shot_server(
        status: &'static str,
        body: &'static str,
    ) -> (String, std::thread::JoinHandle<(String, Vec<u8>)>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            let head_end = loop {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the client closed before its request was complete");
                received.extend_from_slice(&chunk[..n]);
                if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("the upload has a content-length");
            while received.len() < head_end + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the client closed before its body was complete");
                received.extend_from_slice(&chunk[..n]);
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
            (head, received[head_end..].to_vec())
        });
        (base, server)
    }

    #[tokio::test]
    async fn publish_uploads_the_stage_and_the_file_as_multipart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conv.wasm");
        let component = b"\0asm\x0d\0\x01\0component bytes";
        std::fs::write(&file, component).unwrap();
        let command = parse(&[
            "plugin",
            "publish",
            file.to_str().unwrap(),
            "--stage",
            "converter",
        ])
        .unwrap()
        .command;
        for (status, render) in [
            ("201 Created", Render::Published),
            ("200 OK", Render::AlreadyPublished),
        ] {
            let (base, server) = one_shot_server(status, r#"{"plugin":{"stage":"converter"}}"#);
            let client = Client::new(Url::parse(&base).unwrap(), "tok".into()).unwrap();
            let (shown, value) = execute(&client, &command).await.unwrap();
            assert_eq!(shown, render, "{status}");
            assert_eq!(value, json!({"plugin": {"stage": "converter"}}));
            let (head, body) = server.join().unwrap();
            let head = head.to_ascii_lowercase();
            assert!(
                head.starts_with("post /v1/admin/plugins http/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains("authorization: bearer tok\r\n"), "{head}");
            let boundary = head
                .lines()
                .find_map(|l| l.strip_prefix("content-type: multipart/form-data; boundary="))
                .unwrap_or_else(|| panic!("not multipart: {head}"))
                .to_owned();
            let body = String::from_utf8_lossy(&body).into_owned();
            let stage = body
                .find("content-disposition: form-data; name=\"stage\"\r\n\r\nconverter\r\n")
                .or_else(|| {
                    body.to_ascii_lowercase()
                        .find("content-disposition: form-data; name=\"stage\"\r\n\r\nconverter\r\n")
                })
                .unwrap_or_else(|| panic!("no stage field: {body}"));
            let lower = body.to_ascii_lowercase();
            let part = lower
                .find("content-disposition: form-data; name=\"file\"; filename=\"conv.wasm\"")
                .unwrap_or_else(|| panic!("no file part: {body}"));
            assert!(stage < part, "the stage comes before the file: {body}");
            assert!(
                lower[part..].contains("content-type: application/wasm\r\n"),
                "{body}"
            );
            assert!(
                body.contains(&format!(
                    "\r\n\r\n{}\r\n--{boundary}--",
                    String::from_utf8_lossy(component)
                )),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn a_file_too_large_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("huge.wasm");
        File::create(&file)
            .unwrap()
            .set_len(MAX_PLUGIN_BYTES + 1)
            .unwrap();
        // Nothing listens there: a connection attempt would say so instead.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let client = Client::new(
            Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            "t".into(),
        )
        .unwrap();
        let command = parse(&[
            "plugin",
            "publish",
            file.to_str().unwrap(),
            "--stage",
            "notifier",
        ])
        .unwrap()
        .command;
        let error = execute(&client, &command).await.unwrap_err().to_string();
        assert!(error.contains("at most 64 MiB"), "{error}");
    }

    fn sample_plugin() -> Value {
        json!({"digest": DIGEST, "stage": "converter", "bytes": 1_234_567,
               "published_at": 1_795_990_000u64, "compile_ms": 812})
    }

    #[test]
    fn a_publication_shows_the_whole_digest() {
        let text = render(Render::Published, &json!({ "plugin": sample_plugin() }));
        assert!(text.starts_with("published converter plugin\n"), "{text}");
        assert_eq!(row(&text, "digest"), ["digest", DIGEST], "{text}");
        assert_eq!(row(&text, "stage"), ["stage", "converter"]);
        assert_eq!(row(&text, "size"), ["size", "1.2 MB (1234567 bytes)"]);
        assert_eq!(
            row(&text, "published (UTC)"),
            ["published (UTC)", "2026-11-29 22:06:40"]
        );
        assert_eq!(row(&text, "compile"), ["compile", "812 ms"]);
        assert_eq!(row(&text, "check"), ["check", "passed"]);
        let mut failing = sample_plugin();
        failing["failures"] = json!(["option: mono: the MP3 is stereo", "deterministic: differ"]);
        let text = render(Render::Published, &json!({ "plugin": failing }));
        assert_eq!(
            row(&text, "check"),
            ["check", "2 failed: option: mono: the MP3 is stereo, ..."]
        );
        let failed: Vec<&str> = text.lines().filter(|l| l.contains("failed ")).collect();
        assert_eq!(failed.len(), 2, "each failure on a row of its own: {text}");
        assert!(
            text.ends_with(&format!(
                "activate it: tapedeck admin plugin activate {DIGEST} --stage converter \
                 [--tenant NAME]"
            )),
            "{text}"
        );
        let again = render(
            Render::AlreadyPublished,
            &json!({ "plugin": sample_plugin() }),
        );
        assert!(again.starts_with("already published: "), "{again}");
        assert_eq!(row(&again, "digest"), ["digest", DIGEST]);
    }

    #[test]
    fn plugin_lists_abbreviate_digests() {
        let mut notifier = sample_plugin();
        notifier["digest"] =
            json!("fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210");
        notifier["stage"] = json!("notifier");
        notifier["compile_ms"] = json!(40);
        notifier["failures"] = json!(["deterministic: the same messages every time: differ"]);
        notifier["name"] = json!("shouty");
        notifier["version"] = json!("1.2.0");
        let text = render(
            Render::Plugins,
            &json!({"plugins": [sample_plugin(), notifier]}),
        );
        assert_eq!(
            row(&text, "digest"),
            [
                "digest",
                "release",
                "stage",
                "size",
                "published (UTC)",
                "compile ms",
                "check"
            ],
            "{text}"
        );
        assert_eq!(
            row(&text, "0123456789ab"),
            [
                "0123456789ab",
                "-",
                "converter",
                "1.2 MB",
                "2026-11-29 22:06:40",
                "812",
                "passed"
            ]
        );
        assert_eq!(row(&text, "fedcba987654")[1], "shouty@1.2.0");
        assert_eq!(row(&text, "fedcba987654")[2], "notifier");
        assert_eq!(
            row(&text, "fedcba987654")[6],
            "1 failed: deterministic: the same messages every time: differ"
        );
        assert!(!text.contains(DIGEST), "{text}");
        assert_eq!(
            render(Render::Plugins, &json!({"plugins": []})),
            "no plugins published"
        );
    }

    #[test]
    fn activations_say_what_a_stage_runs() {
        assert_eq!(
            render(
                Render::Active,
                &json!({"active": {"stage": "converter", "tenant": "acme", "digest": DIGEST}})
            ),
            format!("converter for tenant acme: plugin {DIGEST}")
        );
        assert_eq!(
            render(
                Render::Active,
                &json!({"active": {"stage": "notifier", "tenant": null, "digest": null}})
            ),
            "notifier for all tenants: the default component (the one the service was started \
             with)"
        );

        let text = render(
            Render::ActiveAll,
            &json!({"active": [
                {"stage": "converter", "tenant": null, "digest": DIGEST},
                {"stage": "converter", "tenant": "acme", "digest": null},
            ], "version": 3, "processes": []}),
        );
        assert_eq!(row(&text, "stage"), ["stage", "tenant", "digest"], "{text}");
        assert_eq!(
            row(&text, "converter"),
            ["converter", "all", "0123456789ab"]
        );
        assert!(text.contains(" acme "), "{text}");
        assert!(
            text.ends_with("\ndefault: the component the service was started with"),
            "{text}"
        );
        let only = render(
            Render::ActiveAll,
            &json!({"active": [{"stage": "converter", "tenant": null, "digest": DIGEST}],
                    "version": 1, "processes": []}),
        );
        assert!(!only.contains("default"), "{only}");
        assert!(
            render(
                Render::ActiveAll,
                &json!({"active": [], "version": 0, "processes": []})
            )
            .starts_with("nothing activated")
        );
    }

    #[test]
    fn history_lists_every_action() {
        let text = render(
            Render::History,
            &json!({"history": [
                {"at": 1_795_990_060u64, "action": "rollback", "stage": "converter",
                 "tenant": "acme", "digest": null},
                {"at": 1_795_990_030u64, "action": "activate", "stage": "converter",
                 "tenant": null, "digest": DIGEST},
                {"at": 1_795_990_000u64, "action": "publish", "stage": "converter",
                 "tenant": null, "digest": DIGEST},
            ]}),
        );
        assert_eq!(
            row(&text, "at"),
            ["at (UTC)", "action", "stage", "tenant", "digest"],
            "{text}"
        );
        assert_eq!(
            row(&text, "2026-11-29 22:07:40"),
            [
                "2026-11-29 22:07:40",
                "rollback",
                "converter",
                "acme",
                "default"
            ]
        );
        assert_eq!(
            row(&text, "2026-11-29 22:07:10"),
            [
                "2026-11-29 22:07:10",
                "activate",
                "converter",
                "all",
                "0123456789ab"
            ]
        );
        assert_eq!(
            row(&text, "2026-11-29 22:06:40"),
            [
                "2026-11-29 22:06:40",
                "publish",
                "converter",
                "-",
                "0123456789ab"
            ]
        );
        assert_eq!(
            render(Render::History, &json!({"history": []})),
            "no plugin history"
        );
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_names() {
        let client = Client::new(
            Url::parse("http://tapedeck.example:8080/prefix/?q=1").unwrap(),
            "t".into(),
        )
        .unwrap();
        assert_eq!(
            client
                .url(&["v1", "admin", "tenants", "a b/../c", "limits"])
                .as_str(),
            "http://tapedeck.example:8080/prefix/v1/admin/tenants/a%20b%2F..%2Fc/limits"
        );
        let client = Client::new(Url::parse("http://127.0.0.1:8080").unwrap(), "t".into()).unwrap();
        assert_eq!(
            client.url(&["v1", "admin", "usage"]).as_str(),
            "http://127.0.0.1:8080/v1/admin/usage"
        );
        assert_eq!(client.server(), "http://127.0.0.1:8080");
    }

    #[test]
    fn answers_become_json_or_the_servers_error() {
        let url = Url::parse("http://h/v1/admin/tenants/acme").unwrap();
        assert_eq!(
            answer(200, br#"{"tenant":{"name":"acme"}}"#, &url).unwrap(),
            json!({"tenant": {"name": "acme"}})
        );
        assert_eq!(answer(204, b"", &url).unwrap(), Value::Null);
        let error = answer(
            404,
            br#"{"error":{"code":"not_found","message":"no tenant acme"}}"#,
            &url,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "no tenant acme (not_found)");
        let error = answer(
            429,
            br#"{"error":{"code":"limit_exceeded","message":"too many","limit":"max_queued","value":5,"layer":"tenant"}}"#,
            &url,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "too many (limit_exceeded)");
        let error = answer(502, b"<html>Bad Gateway</html>\n", &url).unwrap_err();
        assert_eq!(
            error.to_string(),
            "HTTP 502 from http://h/v1/admin/tenants/acme: <html>Bad Gateway</html>"
        );
        assert!(answer(200, b"not json", &url).is_err());
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_named() {
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let server = format!("http://127.0.0.1:{port}");
        let client = Client::new(Url::parse(&server).unwrap(), "t".into()).unwrap();
        let error = client
            .send(&Request::new(
                Method::GET,
                &["tenants"],
                None,
                Render::Tenants,
            ))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot connect to the server at {server}: ")),
            "{message}"
        );
    }

    fn sample_limits() -> Value {
        json!({
            "limits": {"jobs_per_minute": 2, "max_upload_bytes": 1_000_000},
            "server": {"jobs_per_minute": 60, "max_running": 4, "quota_bytes": 10_000_000_000u64,
                       "max_memory_mib": 256, "weight": 1},
            "effective": {"jobs_per_minute": 2, "max_upload_bytes": 1_000_000, "max_running": 4,
                          "quota_bytes": 10_000_000_000u64, "max_memory_mib": 256, "weight": 1},
        })
    }

    fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
        let line = text
            .lines()
            .find(|l| l.trim_start_matches('│').trim_start().starts_with(first))
            .unwrap_or_else(|| panic!("no row {first} in\n{text}"));
        line.split(['│', '┆'])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn the_limits_table_has_a_row_per_limit() {
        let text = render(Render::Limits, &sample_limits());
        assert!(
            row(&text, "limit").ends_with(&["tenant", "server default", "effective"]),
            "{text}"
        );
        assert_eq!(
            row(&text, "jobs_per_minute"),
            ["jobs_per_minute", "--jobs-per-minute", "2", "60", "2"]
        );
        assert_eq!(
            row(&text, "max_upload_bytes"),
            ["max_upload_bytes", "--max-upload-mb", "1 MB", "-", "1 MB"]
        );
        assert_eq!(
            row(&text, "quota_bytes"),
            ["quota_bytes", "--quota-gb", "-", "10 GB", "10 GB"]
        );
        assert_eq!(
            row(&text, "max_memory_mib"),
            [
                "max_memory_mib",
                "--max-memory-mb",
                "-",
                "256 MiB",
                "256 MiB"
            ]
        );
        assert_eq!(
            row(&text, "max_queued"),
            ["max_queued", "--max-queued", "-", "-", "-"]
        );
        for limit in LIMITS {
            row(&text, limit.name);
        }
    }

    #[test]
    fn tenants_list_compactly_and_show_in_full() {
        let sample = sample_limits();
        let tenant = json!({"name": "acme", "self_register": false, "allow_plugins": false,
                            "limits": sample["limits"], "effective": sample["effective"],
                            "deleting": false});
        let list = render(
            Render::Tenants,
            &json!({"tenants": [tenant, {"name": "open", "self_register": true,
                                          "allow_plugins": true, "limits": {},
                                          "effective": {}, "deleting": false}]}),
        );
        assert_eq!(
            row(&list, "acme"),
            [
                "acme",
                "no",
                "max_upload_bytes=1MB jobs_per_minute=2 max_running=4 quota_bytes=10GB \
                 max_memory_mib=256MiB weight=1"
            ],
            "{list}"
        );
        assert_eq!(row(&list, "open"), ["open", "yes", "-"]);
        assert_eq!(
            render(Render::Tenants, &json!({"tenants": []})),
            "no tenants"
        );

        let shown = render(Render::Tenant, &json!({ "tenant": tenant }));
        assert!(
            shown.starts_with("tenant acme (self-register: no, plugins: no)\n"),
            "{shown}"
        );
        assert_eq!(
            row(&shown, "limit"),
            ["limit", "flag", "tenant", "effective"]
        );
        assert_eq!(
            row(&shown, "max_running"),
            ["max_running", "--max-running", "-", "4"]
        );
        assert_eq!(
            render(Render::Deleted, &json!({"deleting": "acme"})),
            "deleting tenant acme: its users, jobs and files are removed in the background"
        );
    }

    fn sample_usage() -> Value {
        json!({"tenant": "acme",
         "jobs": {"queued": 1, "converting": 0, "done": 5, "failed": 1, "expired": 0},
         "running": 0, "stored_bytes": 123_456,
         "hours": [{"start": 1_795_982_400u64, "jobs": 3, "done": 3, "failed": 0,
                    "cpu_seconds": 1.25, "bytes_in": 1000, "bytes_out": 900}],
         "days": [{"start": 1_795_910_400u64, "jobs": 7, "done": 6, "failed": 1,
                   "cpu_seconds": 2.5, "bytes_in": 5000, "bytes_out": 4000}]})
    }

    #[test]
    fn usage_shows_states_storage_and_periods() {
        let text = render(Render::Usage, &sample_usage());
        assert_eq!(
            row(&text, "tenant"),
            [
                "tenant",
                "queued",
                "converting",
                "done",
                "failed",
                "expired",
                "running",
                "stored",
                "jobs 24h",
                "CPU s 24h",
                "jobs 30d",
                "CPU s 30d"
            ],
            "{text}"
        );
        assert_eq!(
            row(&text, "acme"),
            [
                "acme", "1", "0", "5", "1", "0", "0", "123.5 kB", "3", "1.25", "7", "2.50"
            ]
        );
        assert_eq!(
            row(&text, "hour"),
            [
                "hour",
                "2026-11-29 20:00",
                "3",
                "3",
                "0",
                "1.25",
                "1 kB",
                "900 B"
            ]
        );
        assert_eq!(
            row(&text, "day"),
            ["day", "2026-11-29", "7", "6", "1", "2.50", "5 kB", "4 kB"]
        );

        let mut quiet = sample_usage();
        quiet["tenant"] = json!("quiet");
        quiet["hours"] = json!([]);
        quiet["days"] = json!([]);
        let text = render(Render::Usage, &quiet);
        assert!(
            text.ends_with("\nno activity in the last 30 days"),
            "{text}"
        );

        let all = render(
            Render::UsageAll,
            &json!({"tenants": [sample_usage(), quiet]}),
        );
        assert_eq!(row(&all, "acme")[1..5], ["1", "0", "5", "1"]);
        let quiet = row(&all, "quiet");
        assert_eq!(
            quiet[quiet.len() - 4..],
            ["0", "0.00", "0", "0.00"],
            "{all}"
        );
        assert_eq!(
            render(Render::UsageAll, &json!({"tenants": []})),
            "no tenants"
        );
    }

    #[test]
    fn sizes_and_dates_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1 kB");
        assert_eq!(human_bytes(123_456), "123.5 kB");
        assert_eq!(human_bytes(999_960), "1 MB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(10_000_000_000), "10 GB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
        assert_eq!(utc(0, Precision::Minute), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400, Precision::Day), "2000-02-29");
        assert_eq!(
            utc(1_795_982_400 + 59 * 60 + 59, Precision::Minute),
            "2026-11-29 20:59"
        );
        assert_eq!(
            utc(1_795_982_400 + 59 * 60 + 59, Precision::Second),
            "2026-11-29 20:59:59"
        );
        assert_eq!(utc(4_102_444_800, Precision::Day), "2100-01-01");
        assert_eq!(utc(u64::MAX, Precision::Day), u64::MAX.to_string());
    }
}
