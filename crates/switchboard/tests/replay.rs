//! `switchboard export-events` and `switchboard replay` against a real cluster: a replay of a
//! recorded live run with the cluster's configuration makes exactly the cluster's assignments,
//! in the cluster's order, whether it reads an exported file or the stream itself.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::TestCluster;
use support::nats::NatsServer;
use switchboard_client::gateway::{Gateway, events};
use switchboard_client::pb;
use switchboard_nats::NatsConfig;
use tokio::time::Instant;

const WORKSPACE: &str = "replayed";

/// Strategies whose choices depend only on the order of events: least-open breaks ties by
/// who was assigned longest ago on the leader's clock, which a replay only approximates with
/// the stream's timestamps (the leader stamps a whole batch of events with one time), so its
/// ties may fall the other way (README, "What a replay assumes").
const CONFIG: &str = "workspace: replayed
settings:
  default_team: support
agents:
  - {id: a1, max_open: 2}
  - {id: a2, max_open: 2}
  - {id: a3, max_open: 1}
  - {id: a4, max_open: 3, languages: [es]}
teams:
  - {id: support, strategy: weighted, members: [a1, a2, a3]}
  - {id: sales, strategy: round_robin, members: [a2, a3, a4]}
  - {id: soporte, strategy: ordered, members: [a4, a1]}
rules:
  - {id: buying, when: {keywords: [price]}, team: sales}
  - {id: spanish, when: {languages: [es]}, team: soporte}
";

fn switchboard(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).output().expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A deterministic mixed workload: opens on three routes, messages, replies, closes (some of
/// conversations still waiting), reopening none.
fn workload() -> Vec<pb::GatewayEvent> {
    let mut list = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..400u32 {
        let roll = next() % 10;
        if roll < 4 || open.is_empty() {
            let conversation = format!("c{i}");
            let mut event = events::opened(
                &format!("{conversation}-open"),
                WORKSPACE,
                &conversation,
                &format!("k{}", i % 37),
                pb::Channel::Whatsapp,
            );
            if let Some(pb::gateway_event::Kind::ConversationOpened(opened)) = &mut event.kind {
                match next() % 4 {
                    0 => opened.first_message = "what is the price?".into(),
                    1 => opened.language = "es".into(),
                    _ => {}
                }
            }
            list.push(event);
            open.push(conversation);
        } else if roll < 8 {
            let index = usize::try_from(next() % open.len() as u64).expect("valid");
            let conversation = open.remove(index);
            list.push(events::closed(&format!("{conversation}-close"), WORKSPACE, &conversation));
        } else {
            let index = usize::try_from(next() % open.len() as u64).expect("valid");
            let conversation = &open[index];
            list.push(events::message_received(&format!("{conversation}-m{i}"), WORKSPACE, conversation));
        }
    }
    // The last event: its Closed effect marks the end of the run on the effects stream.
    list.push(events::opened("last-open", WORKSPACE, "last", "k-last", pb::Channel::Email));
    list.push(events::closed("last-close", WORKSPACE, "last"));
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_the_live_configuration_makes_the_clusters_assignments_in_order() {
    support::init_logging();
    let nats = NatsServer::start().await;
    let config = NatsConfig { url: nats.url(), ..NatsConfig::default() };
    let cluster = TestCluster::start_with_nats(3, support::unsupervised(), Some(config)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("live.yaml");
    std::fs::write(&file, CONFIG).expect("write");
    let nodes = cluster.api_addrs.join(",");
    let (ok, out, err) = switchboard(&["ctl", "--nodes", &nodes, "apply", "-f", file.to_str().expect("UTF-8 path")]);
    assert!(ok, "apply: {out}{err}");
    let client = cluster.client().await;
    for agent in ["a1", "a2", "a3", "a4"] {
        client
            .set_status(pb::SetStatusRequest {
                workspace: WORKSPACE.into(),
                agent: agent.into(),
                status: pb::AgentStatus::Online.into(),
                ..Default::default()
            })
            .await
            .expect("online");
    }

    let gateway = Gateway::connect(&nats.url()).await.expect("gateway");
    let mut effects = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match gateway.effects("replay-test", WORKSPACE).await {
                Ok(effects) => break effects,
                Err(error) => {
                    assert!(Instant::now() < deadline, "no effects stream: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    for event in workload() {
        gateway.publish(&event).await.expect("publish");
    }

    // The cluster's assignments, in log order, up to the last conversation's close.
    let mut seen: BTreeMap<(u64, u32), (String, String)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = false;
    while !done {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(!remaining.is_zero(), "the last conversation's close never arrived ({} assignments)", seen.len());
        let Ok(Some(delivery)) = tokio::time::timeout(remaining, effects.next()).await else { continue };
        let delivery = delivery.expect("effect");
        let effect = &delivery.effect;
        match &effect.kind {
            Some(pb::effect::Kind::Assigned(a)) => {
                seen.insert((effect.log_index, effect.sequence), (a.conversation.clone(), a.agent.clone()));
            }
            Some(pb::effect::Kind::Closed(c)) if c.conversation == "last" => done = true,
            _ => {}
        }
        delivery.ack().await.expect("ack");
    }
    let first_assignment_index = seen.keys().next().map(|(index, _)| *index);
    let live: Vec<(String, String)> = seen.into_values().collect();
    assert!(live.len() > 50, "too few assignments to compare: {}", live.len());

    let exported = dir.path().join("events.jsonl");
    let (ok, out, err) = switchboard(&[
        "export-events",
        "--nats",
        &nats.url(),
        "--workspace",
        WORKSPACE,
        "--out",
        exported.to_str().expect("UTF-8 path"),
    ]);
    assert!(ok, "export-events: {out}{err}");
    let lines = std::fs::read_to_string(&exported).expect("exported").lines().count();
    assert_eq!(lines, workload().len(), "{err}");

    let replayed = |source: &[&str], name: &str| -> Vec<(String, String)> {
        let json = dir.path().join(name);
        let mut args = vec![
            "replay",
            "--workspace-file",
            file.to_str().expect("UTF-8 path"),
            "--json",
            json.to_str().expect("UTF-8 path"),
        ];
        args.extend_from_slice(source);
        let (ok, out, err) = switchboard(&args);
        assert!(ok, "replay: {out}{err}");
        assert!(out.contains("support") && out.contains("all"), "{out}");
        let reports: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("parse");
        reports[0]["assignments"]
            .as_array()
            .expect("assignments")
            .iter()
            .map(|a| {
                (
                    a["conversation"].as_str().expect("a string").to_owned(),
                    a["agent"].as_str().expect("a string").to_owned(),
                )
            })
            .collect()
    };
    let from_file = replayed(&["--events", exported.to_str().expect("UTF-8 path")], "file.json");
    assert_eq!(from_file, live, "the replay of the exported events made other assignments than the cluster");
    let url = nats.url();
    let from_stream = replayed(&["--nats", &url], "stream.json");
    assert_eq!(from_stream, live, "the replay of the stream made other assignments than the cluster");

    // Why did the cluster's first assignment go where it went?
    let (conversation, agent) = &live[0];
    let (ok, out, err) = switchboard(&[
        "replay",
        "--events",
        exported.to_str().expect("UTF-8 path"),
        "--workspace-file",
        file.to_str().expect("UTF-8 path"),
        "--explain",
        conversation,
    ]);
    assert!(ok, "replay --explain: {out}{err}");
    assert!(out.contains(&format!("conversation {conversation}")) && out.contains("routed to team"), "{out}");
    assert!(out.contains(&format!("-> assigned to {agent} in ")), "the cluster gave {conversation} to {agent}: {out}");
    let chosen = out.lines().find(|line| line.trim_end().ends_with(" chosen")).expect("a chosen candidate");
    assert!(chosen.split_whitespace().any(|word| word == agent.as_str()), "{chosen} in {out}");

    // The cluster explains the same decision from its own snapshots and log, at the index the
    // effect carried.
    let index = first_assignment_index.expect("an assignment");
    let (ok, out, err) = switchboard(&["ctl", "--nodes", &nodes, "-w", WORKSPACE, "explain", conversation]);
    assert!(ok, "ctl explain: {out}{err}");
    assert!(out.contains(&format!("OpenConversation (log index {index}")), "opened at {index}: {out}");
    assert!(out.contains("routed to team"), "{out}");
    let chosen = out.lines().find(|line| line.trim_end().ends_with(" chosen")).expect("a chosen candidate");
    assert!(chosen.split_whitespace().any(|word| word == agent.as_str()), "{chosen} in {out}");
    assert!(out.contains(&format!("#{index:<6} assigned")), "{out}");
    let (ok, out, err) = switchboard(&["ctl", "--nodes", &nodes, "-w", WORKSPACE, "explain", "never-opened"]);
    assert!(!ok && err.contains("NotFound") && err.contains("never-opened"), "{out}{err}");
}

/// The browser for the report test: `SWITCHBOARD_CHROMIUM`, else `chromium` on the PATH
/// (`make test` installs Debian's package with tests/setup_chromium.sh).
fn chromium() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_CHROMIUM") {
        return path.into();
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file());
    found.expect("chromium is not installed: `bash tests/setup_chromium.sh` (or set SWITCHBOARD_CHROMIUM)")
}

/// Four hours of a small contact center: opens every 20 s on average, each closed 2–30
/// minutes later, a fifth of them in Spanish.
fn recorded_day(path: &std::path::Path) {
    use switchboard_core::{Channel, Command, Event, Language, OpenConversation, WorkspaceId};
    use switchboard_replay::{Recorded, events};
    let t0 = 1_795_428_000_000i64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut list = Vec::new();
    let mut at = t0;
    for n in 0..720u32 {
        at += 1_000 + i64::try_from(next() % 38_000).expect("small");
        let mut open = OpenConversation::new(format!("d{n}"), format!("+{}", next() % 400), Channel::WhatsApp);
        if next() % 5 == 0 {
            open.language = Some(Language::new("es"));
        }
        let event = |command| Event { workspace: WorkspaceId::new(WORKSPACE), event_id: None, command };
        list.push(Recorded { at_ms: at, sequence: 0, event: event(Command::OpenConversation(open)) });
        let close_at = at + 120_000 + i64::try_from(next() % 1_680_000).expect("small");
        let close = Command::CloseConversation { conversation: format!("d{n}").into() };
        list.push(Recorded { at_ms: close_at, sequence: 0, event: event(close) });
    }
    list.sort_by_key(|recorded| recorded.at_ms);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for recorded in &list {
        events::write(&mut file, recorded).expect("write");
    }
    std::io::Write::flush(&mut file).expect("flush");
}

#[test]
fn the_html_report_opens_in_headless_chromium_and_draws_its_charts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("day.jsonl");
    recorded_day(&events);
    let today = dir.path().join("today.yaml");
    std::fs::write(&today, CONFIG).expect("write");
    // What if support had two more agents and used round robin?
    let bigger = dir.path().join("two-more.yaml");
    let more = CONFIG
        .replace(
            "  - {id: a4, max_open: 3, languages: [es]}\n",
            "  - {id: a4, max_open: 3, languages: [es]}\n  - {id: a5, max_open: 2}\n  - {id: a6, max_open: 2}\n",
        )
        .replace(
            "{id: support, strategy: weighted, members: [a1, a2, a3]}",
            "{id: support, strategy: round_robin, members: [a1, a2, a3, a5, a6]}",
        );
    std::fs::write(&bigger, more).expect("write");
    let html = dir.path().join("report.html");
    let (ok, out, err) = switchboard(&[
        "replay",
        "--events",
        events.to_str().expect("UTF-8 path"),
        "--workspace-file",
        today.to_str().expect("UTF-8 path"),
        "--compare",
        bigger.to_str().expect("UTF-8 path"),
        "--html",
        html.to_str().expect("UTF-8 path"),
    ]);
    assert!(ok, "replay: {out}{err}");
    assert!(out.contains("today.yaml") && out.contains("two-more.yaml") && out.contains("difference"), "{out}");

    let page = std::fs::read_to_string(&html).expect("report");
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "self-contained");
    let url = format!("file://{}", html.display());
    let browser = chromium();
    let headless = |extra: &[&str]| {
        let output = std::process::Command::new(&browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0"])
            .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // The DOM the browser built: two columns, three charts each, with their lines and bars.
    let (dom, log) = headless(&["--dump-dom"]);
    assert!(!log.contains(":CONSOLE") && !log.contains("Uncaught"), "console errors: {log}");
    assert_eq!(dom.matches("<div class=\"col\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("<svg class=\"chart").count(), 6);
    assert!(dom.matches("<polyline").count() >= 6, "a queue-depth line per team and configuration");
    assert!(dom.matches("<rect").count() >= 20, "wait and load bars");
    // The rendered page: a screenshot of real pixels, not a blank page.
    let png = dir.path().join("report.png");
    let (_, log) = headless(&["--window-size=1300,1500", &format!("--screenshot={}", png.display())]);
    assert!(!log.contains(":CONSOLE") && !log.contains("Uncaught"), "console errors: {log}");
    // Each chart's solid colours are on the screen: the queue-depth lines and the wait bars
    // (#1f77b4) and the load bars (#2ca02c) of both configurations.
    let blue = pixels_of(&png, [0x1f, 0x77, 0xb4]);
    let green = pixels_of(&png, [0x2c, 0xa0, 0x2c]);
    assert!(blue > 2_000, "wait bars and depth lines: {blue} pixels");
    assert!(green > 5_000, "load bars: {green} pixels");
}

/// How many pixels of the PNG at `path` have exactly this colour.
fn pixels_of(path: &std::path::Path, rgb: [u8; 3]) -> usize {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).expect("screenshot")));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut buffer).expect("a frame");
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "a colour screenshot, got {:?}", frame.color_type);
    buffer[..frame.buffer_size()].chunks_exact(channels).filter(|pixel| pixel[..3] == rgb).count()
}
