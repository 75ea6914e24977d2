//! `switchboard export-events` and `switchboard replay`: record a time range of the events
//! stream to a file, and replay recorded events offline against a workspace file (or two, side
//! by side) with a report as text, JSON and a self-contained HTML page.

use crate::ctl::{apply, check, spec};
use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use clap::Args;
use futures::StreamExt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard_core::WorkspaceId;
use switchboard_replay::{Config, Recorded, Report, events};

/// Longest wait for the next message while reading the stream: an idle stream this long is
/// read to its end.
const STREAM_IDLE: Duration = Duration::from_secs(5);

/// Where recorded events come from, and which.
#[derive(Args, Debug, Clone)]
pub(crate) struct SourceArgs {
    /// Read the `SWITCHBOARD` stream of this NATS server (`nats://host:port`).
    #[arg(long, env = "SWITCHBOARD_NATS_URL")]
    nats: Option<String>,
    /// The events stream's name.
    #[arg(long, default_value = switchboard_nats::EVENTS_STREAM)]
    stream: String,
    /// First instant to read: RFC 3339 (`2026-12-02T00:00:00Z`), UTC milliseconds, or a time
    /// ago (`24h`, `90m`, `2d`). Default: the start of the stream.
    #[arg(long)]
    since: Option<String>,
    /// Last instant to read, in the same forms. Default: the end of the stream.
    #[arg(long)]
    until: Option<String>,
    /// Only this workspace's events.
    #[arg(long)]
    workspace: Option<String>,
}

/// `switchboard export-events`.
#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Write the events here (JSON lines); `-` for standard output.
    #[arg(long, default_value = "-")]
    out: PathBuf,
}

/// `switchboard replay`.
#[derive(Args, Debug)]
pub(crate) struct ReplayArgs {
    /// Read the events from this file (`switchboard export-events`) instead of NATS.
    #[arg(long, conflicts_with = "nats")]
    events: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
    /// The configuration to replay with (the format of `ctl apply`).
    #[arg(long)]
    workspace_file: PathBuf,
    /// A second configuration, replayed on the same events and reported side by side.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Also write the report as a self-contained HTML page with charts.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Also write the full report (every figure and every assignment, in order) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of the report, explain every decision about this conversation: the path that
    /// decided its opening, every candidate and why each was or was not chosen, and what
    /// happened to it after (with --compare, under both configurations).
    #[arg(long, value_name = "CONVERSATION")]
    explain: Option<String>,
}

/// Parses `--since`/`--until` into UTC milliseconds, `now_ms` being now.
pub(crate) fn instant_ms(text: &str, field: &str, now_ms: i64) -> Result<i64> {
    let text = text.trim();
    let at_ms = if let Ok(ms) = text.parse::<i64>() {
        ms
    } else if let Some((number, unit)) = text.find(|c: char| !c.is_ascii_digit()).map(|i| text.split_at(i)) {
        let scale: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                let parsed = async_nats::datetime::parse_rfc3339(text).map_err(|e| {
                    anyhow::anyhow!(
                        "{field}: {text:?} is neither RFC 3339, UTC milliseconds, nor a time ago like 24h ({e})"
                    )
                })?;
                let ms = parsed.unix_timestamp_nanos() / 1_000_000;
                return i64::try_from(ms).with_context(|| format!("{field}: {text:?} is out of range"));
            }
        };
        let number: i64 = number.parse().with_context(|| format!("{field}: {text:?}: the number is out of range"))?;
        now_ms.saturating_sub(number.saturating_mul(scale))
    } else {
        bail!("{field}: {text:?} is neither RFC 3339, UTC milliseconds, nor a time ago like 24h");
    };
    events::check_at_ms(at_ms).map_err(|reason| anyhow::anyhow!("{field}: {reason}"))?;
    Ok(at_ms)
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Reads the events stream from `since` to `until`, handing each valid event of the
/// workspace (if one is given) to `sink`. Messages the ingest would reject are counted and
/// skipped, as the cluster skipped them. Returns (read, skipped).
async fn read_stream(source: &SourceArgs, mut sink: impl FnMut(Recorded) -> Result<()>) -> Result<(u64, u64)> {
    let Some(url) = &source.nats else { bail!("--nats (or --events for replay) is required") };
    let now = now_ms();
    let since = source.since.as_deref().map(|t| instant_ms(t, "--since", now)).transpose()?;
    let until = source.until.as_deref().map(|t| instant_ms(t, "--until", now)).transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        bail!("--since ({since}) is after --until ({until})");
    }
    let client = async_nats::connect(url.as_str()).await.with_context(|| format!("cannot connect to NATS at {url}"))?;
    let js = jetstream::new(client);
    let mut stream =
        js.get_stream(&source.stream).await.with_context(|| format!("cannot open stream {}", source.stream))?;
    let info = stream.info().await.with_context(|| format!("cannot read stream {}", source.stream))?;
    let last_sequence = info.state.last_sequence;
    if info.state.messages == 0 {
        return Ok((0, 0));
    }
    let deliver_policy = match since {
        Some(ms) => jetstream::consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        },
        None => jetstream::consumer::DeliverPolicy::All,
    };
    let filter_subject = match &source.workspace {
        Some(workspace) => switchboard_nats::events_subject(workspace),
        None => "switchboard.events.>".to_owned(),
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            filter_subject,
            ..Default::default()
        })
        .await
        .context("cannot create a consumer to read the stream")?;
    let mut messages = consumer.messages().await.context("cannot read the stream")?;
    let (mut read, mut skipped) = (0u64, 0u64);
    loop {
        let message = match tokio::time::timeout(STREAM_IDLE, messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(message)) => message.context("reading the stream")?,
        };
        let info = message.info().map_err(|e| anyhow::anyhow!("a message without JetStream metadata: {e}"))?;
        let at_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if until.is_some_and(|until| at_ms > until) {
            break;
        }
        match switchboard_nats::decode_event(message.subject.as_str(), &message.payload, usize::MAX) {
            Ok((event, _)) => {
                read += 1;
                sink(Recorded { at_ms, sequence, event })?;
            }
            Err(_) => skipped += 1,
        }
        if pending == 0 || sequence >= last_sequence {
            break;
        }
    }
    Ok((read, skipped))
}

/// `switchboard export-events`.
pub(crate) async fn export(args: ExportArgs) -> Result<()> {
    let to_stdout = args.out.as_os_str() == "-";
    let writer: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?)
    };
    let mut writer = BufWriter::new(writer);
    // A file replay could not read is refused while it is written.
    let mut written = 0usize;
    let (read, skipped) = read_stream(&args.source, |recorded| {
        if written >= events::REPLAY_EVENTS_MAX {
            bail!(
                "more than replay_events_max ({}) events in the range; narrow --since/--until (what was written \
                 so far is incomplete)",
                events::REPLAY_EVENTS_MAX
            );
        }
        written += 1;
        events::write(&mut writer, &recorded).context("cannot write the events")
    })
    .await?;
    writer.flush().context("cannot write the events")?;
    eprintln!("exported {read} events ({skipped} the cluster rejected were skipped)");
    Ok(())
}

/// Reads a workspace file into the commands that build it, as `ctl apply` would send them to
/// an empty cluster.
pub(crate) fn config_of(path: &Path) -> Result<Config> {
    let text = spec::read_file(path)?;
    let source = path.display().to_string();
    let label = path.file_name().map_or_else(|| source.clone(), |name| name.to_string_lossy().into_owned());
    config_of_text(&text, &source, label)
}

/// [`config_of`] for a workspace file's text.
pub(crate) fn config_of_text(text: &str, source: &str, label: String) -> Result<Config> {
    let file = spec::WorkspaceFile::parse(text, source)?;
    file.validate().with_context(|| format!("{source} is not a valid workspace file"))?;
    let changes = apply::plan(&file, None, false)?;
    let setup = check::commands_of(&changes).map_err(|reason| anyhow::anyhow!("{source}: {reason}"))?;
    Ok(Config { label, workspace: WorkspaceId::new(&file.workspace), setup })
}

/// `switchboard replay`.
pub(crate) async fn replay(args: ReplayArgs) -> Result<()> {
    let config = config_of(&args.workspace_file)?;
    let other = args.compare.as_deref().map(config_of).transpose()?;
    if let Some(other) = &other
        && other.workspace != config.workspace
    {
        bail!(
            "--compare names workspace {} but --workspace-file names {}: compare configurations of one workspace",
            other.workspace,
            config.workspace
        );
    }
    let recorded = match &args.events {
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            events::read(std::io::BufReader::new(file)).with_context(|| path.display().to_string())?
        }
        None => {
            let mut source = args.source.clone();
            source.workspace.get_or_insert_with(|| config.workspace.as_str().to_owned());
            let mut recorded = Vec::new();
            read_stream(&source, |event| {
                if recorded.len() >= events::REPLAY_EVENTS_MAX {
                    bail!("more than replay_events_max ({}) events; narrow --since/--until", events::REPLAY_EVENTS_MAX);
                }
                recorded.push(event);
                Ok(())
            })
            .await?;
            recorded
        }
    };
    let explain = args
        .explain
        .as_deref()
        .map(|id| {
            if id.is_empty() || id.len() > switchboard_core::limits::ID_BYTES_MAX {
                bail!("--explain: a conversation id is 1 to {} bytes", switchboard_core::limits::ID_BYTES_MAX);
            }
            Ok(switchboard_core::ConversationId::new(id))
        })
        .transpose()?;
    let started = std::time::Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    let mut explained = String::new();
    for config in std::iter::once(&config).chain(other.as_ref()) {
        let (report, decisions) = switchboard_replay::replay_explaining(config, &recorded, explain.as_ref())?;
        if let Some(conversation) = &explain {
            explained.push_str(&format!("with {}: ", config.label));
            explained.push_str(&switchboard_replay::text::decisions(
                conversation.as_str(),
                report.from_ms,
                &decisions,
                "stream #",
            ));
        }
        reports.push(report);
    }
    let elapsed = started.elapsed();
    match reports.as_slice() {
        _ if explain.is_some() => print!("{explained}"),
        [a, b] => print!("{}", switchboard_replay::text::compare(a, b)),
        [a] => print!("{}", switchboard_replay::text::single(a)),
        _ => {}
    }
    eprintln!(
        "replayed {} events × {} configuration(s) in {:.0} ms",
        reports.first().map_or(0, |r| r.events),
        reports.len(),
        elapsed.as_secs_f64() * 1e3
    );
    if let Some(path) = &args.html {
        let title = format!("Switchboard replay: {}", config.workspace);
        std::fs::write(path, switchboard_replay::html::page(&title, &reports))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&reports).context("cannot encode the report")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_as_rfc3339_milliseconds_or_time_ago() {
        let now = 1_795_428_000_000;
        assert_eq!(instant_ms("2026-11-23T00:00:00Z", "--since", now).expect("valid"), 1_795_392_000_000);
        assert_eq!(instant_ms("1795428000000", "--since", now).expect("valid"), now);
        assert_eq!(instant_ms("24h", "--since", now).expect("valid"), now - 86_400_000);
        assert_eq!(instant_ms("90m", "--since", now).expect("valid"), now - 5_400_000);
        let error = instant_ms("yesterday", "--until", now).expect_err("refused").to_string();
        assert!(error.starts_with("--until: \"yesterday\""), "{error}");
        let error = instant_ms("-5", "--since", now).expect_err("refused").to_string();
        assert!(error.contains("at_ms"), "{error}");
    }
}
