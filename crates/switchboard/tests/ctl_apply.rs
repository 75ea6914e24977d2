//! `switchboard ctl apply` refuses, before writing anything, every workspace file the cluster
//! would refuse, and orders its writes so that a refusal only the cluster can make (a team
//! that still has conversations) leaves every team of the file in place (issue 10).

mod support;

use std::process::Command;
use support::{TestCluster, opened};
use switchboard_client::{Client, pb};

const BASE: &str = include_str!("fixtures/acme.yaml");

struct Ctl {
    nodes: String,
    dir: tempfile::TempDir,
}

impl Ctl {
    /// Writes `text` to a file and runs `ctl apply -f` on it with `flags`; (success, output).
    fn apply(&self, text: &str, flags: &[&str]) -> (bool, String) {
        let path = self.dir.path().join("workspace.yaml");
        std::fs::write(&path, text).expect("write");
        let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["ctl", "--nodes", &self.nodes, "apply", "-f"])
            .arg(&path)
            .args(flags)
            .output()
            .expect("switchboard runs");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }
}

/// The workspace's configuration as the cluster has it (without the index it was read at).
async fn configuration(client: &Client) -> pb::WorkspaceConfig {
    let mut config = client
        .get_workspace(pb::GetWorkspaceRequest { workspace: "acme".into(), ..Default::default() })
        .await
        .expect("workspace");
    config.applied_index = 0;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mistake_is_refused_before_any_write() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let ctl = Ctl { nodes: cluster.api_addrs.join(","), dir: tempfile::tempdir().expect("dir") };
    let (ok, out) = ctl.apply(BASE, &[]);
    assert!(ok && out.contains("applied"), "{out}");
    let before = configuration(&client).await;
    assert_eq!(before.teams.len(), 3);

    // Each mistake alone, in a file that is otherwise a change (new agent li, new team vip)
    // so that a half-applied file would show.
    let changed = BASE
        .replace(
            "  - {id: ana, name: Ana, languages: [es]}\n",
            "  - {id: ana, name: Ana, languages: [es]}\n  - {id: li, name: Li}\n",
        )
        .replace("rules:\n", "  - {id: vip, strategy: ordered, members: [li, mary]}\nrules:\n");
    assert!(ctl.apply(&changed, &["--dry-run"]).0, "the changed file itself is correct");
    let mistakes: [(&str, &str, &[&str]); 14] = [
        ("members: [mary, john]", "members: [mary, zoe]", &["teams[0] (support)", "unknown agent zoe"]),
        ("members: [mary, john]", "members: [mary, john, mary]", &["teams[0] (support)", "agent mary is listed twice"]),
        ("America/Sao_Paulo", "America/Atlantis", &["teams[1] (soporte)", "unknown IANA timezone"]),
        ("2026-12-25", "2026-02-30", &["teams[2] (sales)", "business_hours.holidays", "2026-02-30"]),
        (
            "max_open: 2,",
            "max_open: 10001,",
            &["agents[0] (mary)", "10001 conversations is outside 0..=10000 conversations"],
        ),
        ("refunds: 3", "refunds: 3, refunds: 5", &["agents[0]", "\"refunds\" is given twice"]),
        ("refunds: 3", "refunds: 7", &["agents[0] (mary)", "level 7 is not between 1 and 5"]),
        (
            "{id: john, name: John}",
            "{id: mary, name: John}",
            &["agents[1]: agent id \"mary\" is already used by agents[0]"],
        ),
        ("  - id: sales\n", "  - id: support\n", &["teams[2]: team id \"support\" is already used by teams[0]"]),
        ("{id: buying,", "{id: spanish,", &["rules[1]: rule id \"spanish\" is already used by rules[0]"]),
        ("team: sales}", "team: marketing}", &["rules[1] (buying)", "unknown team marketing"]),
        ("default_team: support", "default_team: marketing", &["settings", "unknown team marketing"]),
        ("[mon, tue]", "[mon, someday]", &["teams[2] (sales).business_hours.weekly[0].days", "someday"]),
        ("strategy: weighted", "strategy: loudest", &["teams[2] (sales).strategy", "loudest"]),
    ];
    for (from, to, expected) in mistakes {
        assert!(changed.contains(from), "{from}");
        let (ok, out) = ctl.apply(&changed.replacen(from, to, 1), &[]);
        assert!(!ok, "{to:?} was accepted:\n{out}");
        for words in expected {
            assert!(out.contains(words), "{to:?}: {words:?} missing in:\n{out}");
        }
        assert!(!out.contains("applied\n"), "{out}");
        assert_eq!(configuration(&client).await, before, "{to:?} changed the workspace:\n{out}");
    }

    // Pruning an agent that a team of the file still lists.
    let (ok, out) = ctl.apply(&BASE.replace("  - {id: ana, name: Ana, languages: [es]}\n", ""), &["--prune"]);
    assert!(!ok && out.contains("teams[1] (soporte): member ana is not an agent of the file"), "{out}");
    assert_eq!(configuration(&client).await, before);

    // A file nested 60,000 levels deep is refused at once, with the reason.
    let deep = format!("workspace: acme\nagents: {}{}\n", "[".repeat(60_000), "]".repeat(60_000));
    let (ok, out) = ctl.apply(&deep, &[]);
    assert!(!ok && out.contains("nested deeper than 32 levels (workspace_file_depth_max)"), "{out}");
    assert_eq!(configuration(&client).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_only_the_cluster_can_make_leaves_every_team_of_the_file_in_place() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let ctl = Ctl { nodes: cluster.api_addrs.join(","), dir: tempfile::tempdir().expect("dir") };
    let old = BASE.replace("default_team: support", "default_team: sales");
    let (ok, out) = ctl.apply(&old, &[]);
    assert!(ok, "{out}");
    // `sales` (the default team) gets a conversation: the cluster will refuse to remove it.
    client.publish(pb::PublishRequest { event: Some(opened("acme", "c-1")) }).await.expect("published");

    // A file that replaces `sales` by `shop` as the default team and as the rule's target.
    let new = BASE.replace("  - id: sales\n", "  - id: shop\n").replace("team: sales}", "team: shop}");
    let (ok, out) = ctl.apply(&new, &["--prune"]);
    assert!(!ok && out.contains("- team sales") && out.contains("open conversation c-1"), "{out}");
    // Everything the file describes was applied before the removal was tried.
    let config = configuration(&client).await;
    let teams: Vec<&str> = config.teams.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(teams, ["sales", "shop", "soporte", "support"]);
    assert_eq!(config.settings.expect("settings").default_team, "support");
    let targets: Vec<String> = config
        .rules
        .iter()
        .map(|r| match r.target.as_ref().and_then(|t| t.target.as_ref()) {
            Some(pb::rule_target::Target::Team(team)) => team.team.clone(),
            Some(pb::rule_target::Target::Agent(agent)) => format!("agent {agent}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(targets, ["soporte", "shop", "agent mary"]);
}
