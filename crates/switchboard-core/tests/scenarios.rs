//! Every routing behaviour of DESIGN.md §2, as the vendors' documentation tells it.
//! Each test names the case of the core issue it covers.

mod common;

use common::*;
use std::collections::BTreeMap;
use switchboard_core::*;

// 1. Round robin ----------------------------------------------------------------------------

#[test]
fn round_robin_over_three_agents_goes_a_b_c_a_b_c() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b", "c"]);
    let mut order = Vec::new();
    for i in 0..6 {
        order.extend(assigned_agents(&sim.open(&format!("c{i}"), &format!("k{i}"))));
    }
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn round_robin_skips_an_offline_agent_and_keeps_its_place() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b", "c"]);
    assert_eq!(assigned_agents(&sim.open("c0", "k0")), ["a"]);
    sim.status("b", AgentStatus::Offline);
    assert_eq!(assigned_agents(&sim.open("c1", "k1")), ["c"]);
    assert_eq!(assigned_agents(&sim.open("c2", "k2")), ["a"]);
    sim.status("b", AgentStatus::Online);
    // The cursor is after a: b is next again, then c.
    assert_eq!(assigned_agents(&sim.open("c3", "k3")), ["b"]);
    assert_eq!(assigned_agents(&sim.open("c4", "k4")), ["c"]);
}

#[test]
fn round_robin_skips_busy_and_away_by_default_and_includes_them_when_the_team_allows() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b", "c"]);
    sim.status("b", AgentStatus::Busy);
    sim.status("c", AgentStatus::Away);
    let mut order = Vec::new();
    for i in 0..3 {
        order.extend(assigned_agents(&sim.open(&format!("c{i}"), &format!("k{i}"))));
    }
    assert_eq!(order, ["a", "a", "a"]);

    let mut spec = TeamSpec::new("support", Strategy::RoundRobin, &["a", "b", "c"]);
    spec.options.allowed_statuses = StatusSet::of(&[AgentStatus::Online, AgentStatus::Busy, AgentStatus::Away]);
    spec.options.requeue_on_offline = false;
    sim.team(spec);
    let mut order = Vec::new();
    for i in 3..6 {
        order.extend(assigned_agents(&sim.open(&format!("c{i}"), &format!("k{i}"))));
    }
    assert_eq!(order, ["b", "c", "a"]);
}

// 2. Least open -------------------------------------------------------------------------------

#[test]
fn least_open_gives_to_the_fewest_open_and_breaks_ties_by_longest_idle() {
    let mut sim = team_of(Strategy::LeastOpen, &["a", "b", "c"]);
    // Nobody has been assigned: ties go by id.
    assert_eq!(assigned_agents(&sim.open("c1", "k1")), ["a"]);
    sim.advance(1000);
    assert_eq!(assigned_agents(&sim.open("c2", "k2")), ["b"]);
    sim.advance(1000);
    assert_eq!(assigned_agents(&sim.open("c3", "k3")), ["c"]);
    // Everyone has one; a was assigned longest ago.
    sim.advance(1000);
    assert_eq!(assigned_agents(&sim.open("c4", "k4")), ["a"]);
    // b closes: b has the fewest open conversations.
    sim.close("c2");
    assert_eq!(assigned_agents(&sim.open("c5", "k5")), ["b"]);
    // a: 2 open, b: 1, c: 1; c was assigned before b's last → c.
    assert_eq!(assigned_agents(&sim.open("c6", "k6")), ["c"]);
}

// 3. Weighted ----------------------------------------------------------------------------------

fn weighted_team(limits: &[(&str, u32)]) -> Sim {
    let mut sim = Sim::new();
    for (id, limit) in limits {
        let mut spec = AgentSpec::new(*id, *id);
        spec.daily_limit = *limit;
        spec.max_open = 10;
        sim.agent_spec(spec);
    }
    let members: Vec<&str> = limits.iter().map(|(id, _)| *id).collect();
    sim.team(TeamSpec::new("support", Strategy::Weighted, &members));
    sim.default_team("support");
    sim.online(&members);
    sim
}

#[test]
fn weighted_draws_follow_daily_limits_one_third_two_thirds_over_30000() {
    let mut sim = weighted_team(&[("a", 100), ("b", 200), ("none", 0)]);
    // 60,000 commands: walking every invariant after each would be quadratic.
    sim.check_invariants = false;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..30_000 {
        let id = format!("c{i}");
        for agent in assigned_agents(&sim.open(&id, "k")) {
            *counts.entry(agent).or_default() += 1;
        }
        sim.close(&id);
    }
    let a = f64::from(counts["a"]) / 30_000.0;
    let b = f64::from(counts["b"]) / 30_000.0;
    // Tolerance: ±0.015 absolute, about 5.5 standard deviations of a binomial share
    // (sd = sqrt(p(1-p)/n) ≈ 0.0027), so a correct draw fails with negligible probability
    // and is in any case deterministic for the pinned seed.
    assert!((a - 1.0 / 3.0).abs() < 0.015, "a received {a}");
    assert!((b - 2.0 / 3.0).abs() < 0.015, "b received {b}");
    // An agent with no reception right (daily limit 0) is never drawn.
    assert_eq!(counts.get("none"), None);
    assert_eq!(counts["a"] + counts["b"], 30_000);
}

#[test]
fn weighted_draw_sequence_is_pinned() {
    // If this changes, replicas running different builds would disagree: bump the snapshot
    // version and treat it as a protocol change.
    let mut sim = weighted_team(&[("a", 100), ("b", 200), ("c", 300)]);
    let mut order = Vec::new();
    for i in 0..16 {
        let id = format!("c{i}");
        order.extend(assigned_agents(&sim.open(&id, "k")));
        sim.close(&id);
    }
    assert_eq!(order, PINNED_WEIGHTED_SEQUENCE);
}

const PINNED_WEIGHTED_SEQUENCE: [&str; 16] =
    ["b", "c", "b", "a", "a", "c", "c", "b", "c", "c", "b", "b", "c", "a", "b", "b"];

#[test]
fn weighted_with_hard_cap_stops_drawing_an_agent_at_their_daily_limit() {
    let mut sim = weighted_team(&[("a", 2), ("b", 3)]);
    let mut spec = TeamSpec::new("support", Strategy::Weighted, &["a", "b"]);
    spec.options.daily_limit_hard_cap = true;
    sim.team(spec);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..5 {
        let id = format!("c{i}");
        for agent in assigned_agents(&sim.open(&id, "k")) {
            *counts.entry(agent).or_default() += 1;
        }
        sim.close(&id);
    }
    assert_eq!(counts["a"], 2);
    assert_eq!(counts["b"], 3);
    // The sixth waits for tomorrow.
    let effects = sim.open("c5", "k");
    assert!(matches!(&effects[..], [Effect::Queued { .. }]), "{effects:?}");
}

// 4. Ordered ---------------------------------------------------------------------------------------

#[test]
fn ordered_fills_the_first_member_until_full_then_the_next() {
    let mut sim = Sim::new();
    for id in ["a", "b"] {
        let mut spec = AgentSpec::new(id, id);
        spec.max_open = 2;
        sim.agent_spec(spec);
    }
    // Configured order b, a: b first.
    sim.team(TeamSpec::new("support", Strategy::Ordered, &["b", "a"]));
    sim.default_team("support");
    sim.online(&["a", "b"]);
    let mut order = Vec::new();
    for i in 0..4 {
        order.extend(assigned_agents(&sim.open(&format!("c{i}"), "k")));
    }
    assert_eq!(order, ["b", "b", "a", "a"]);
    sim.close("c0");
    assert_eq!(assigned_agents(&sim.open("c4", "k")), ["b"]);
}

// 5. Manual ----------------------------------------------------------------------------------------

#[test]
fn manual_conversations_wait_and_of_two_claims_one_wins() {
    let mut sim = team_of(Strategy::Manual, &["a", "b"]);
    let effects = sim.open("c1", "k1");
    assert_eq!(
        effects,
        vec![Effect::Queued {
            workspace: WorkspaceId::new(WS),
            conversation: ConversationId::new("c1"),
            team: TeamId::new("support"),
            position: 1,
            eta_ms: Some(150_000),
            waiting_for: None,
            message: None,
        }]
    );
    let claim = |agent: &str| Command::Claim { conversation: ConversationId::new("c1"), agent: AgentId::new(agent) };
    let first = sim.ok(claim("b"));
    assert_eq!(first, vec![assigned("c1", "k1", "support", "b", "b", 120_000, AssignReason::Claimed)]);
    let second = sim.err(claim("a"));
    assert_eq!(second, ApplyError::NotClaimable { conversation: ConversationId::new("c1"), state: "assigned" });
    assert_eq!(second.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(sim.assignee("c1").as_deref(), Some("b"));
}

// 6. Skills and language -----------------------------------------------------------------------------

#[test]
fn a_rule_sends_spanish_refunds_to_skilled_agents_and_the_default_team_takes_the_rest() {
    let mut sim = Sim::new();
    let mut ana = AgentSpec::new("ana", "Ana");
    ana.skills.insert(Skill::new("refunds"), 3);
    ana.languages = vec![Language::new("es")];
    let mut luis = AgentSpec::new("luis", "Luis");
    luis.languages = vec![Language::new("es")];
    let mut kate = AgentSpec::new("kate", "Kate");
    kate.skills.insert(Skill::new("refunds"), 5);
    kate.languages = vec![Language::new("en")];
    for spec in [ana, luis, kate] {
        sim.agent_spec(spec);
    }
    sim.agent("gus", "Gus");
    sim.team(TeamSpec::new("refunds", Strategy::RoundRobin, &["luis", "kate", "ana"]));
    sim.team(TeamSpec::new("general", Strategy::RoundRobin, &["gus"]));
    sim.default_team("general");
    sim.ok(Command::SetRoutingRules(vec![RoutingRule {
        id: RuleId::new("spanish-refunds"),
        conditions: RuleConditions {
            languages: vec![Language::new("es")],
            keywords: vec!["refund".into(), "reembolso".into()],
            ..RuleConditions::default()
        },
        target: RuleTarget::Team {
            team: TeamId::new("refunds"),
            required_skills: [(Skill::new("refunds"), 1)].into(),
            required_language: Some(Language::new("es")),
        },
    }]));
    sim.online(&["ana", "luis", "kate", "gus"]);

    let spanish_refund = |id: &str, text: &str| {
        let mut open = OpenConversation::new(id, "k", Channel::WhatsApp);
        open.language = Some(Language::new("es"));
        open.first_message = text.into();
        open
    };
    // Only Ana has the skill and the language, however often it arrives.
    for i in 0..3 {
        let effects = sim.open_with(spanish_refund(&format!("r{i}"), "Hola, quiero un REEMBOLSO por favor"));
        assert_eq!(assigned_agents(&effects), ["ana"]);
    }
    assert_eq!(sim.conversation("r0").team.as_str(), "refunds");
    // Spanish without the keyword, and English with it, go to the default team.
    assert_eq!(assigned_agents(&sim.open_with(spanish_refund("s1", "hola, una pregunta"))), ["gus"]);
    let mut english = OpenConversation::new("e1", "k2", Channel::Email);
    english.first_message = "I want a refund".into();
    assert_eq!(assigned_agents(&sim.open_with(english)), ["gus"]);
    // "refunded" is not the word "refund": keywords match whole words.
    assert_eq!(assigned_agents(&sim.open_with(spanish_refund("s2", "ya me refunded"))), ["gus"]);
    // When Ana is full, Spanish refunds wait for a qualified agent rather than go to Luis.
    for i in 3..5 {
        sim.open_with(spanish_refund(&format!("r{i}"), "reembolso"));
    }
    assert_eq!(sim.agent_view("ana").open, 5);
    let effects = sim.open_with(spanish_refund("r5", "reembolso"));
    assert!(matches!(&effects[..], [Effect::Queued { position: 1, .. }]), "{effects:?}");
    // And Ana closing one hands it to her in the same apply.
    let effects = sim.close("r0");
    assert_eq!(assigned_agents(&effects), ["ana"]);
    assert_eq!(sim.assignee("r5").as_deref(), Some("ana"));
}

// 7. Max open, queue, ETA ---------------------------------------------------------------------------

#[test]
fn max_open_queues_with_position_and_eta_and_a_close_assigns_the_head_in_the_same_apply() {
    let mut sim = Sim::new();
    for id in ["a", "b"] {
        let mut spec = AgentSpec::new(id, id);
        spec.max_open = 1;
        sim.agent_spec(spec);
    }
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a", "b"]);
    team.templates.overcapacity = Some("All our agents are busy".into());
    sim.team(team);
    sim.default_team("support");
    sim.online(&["a", "b"]);
    assert_eq!(assigned_agents(&sim.open("c1", "k1")), ["a"]);
    assert_eq!(assigned_agents(&sim.open("c2", "k2")), ["b"]);
    // Both full: queued third and fourth, ETA = position × 300 s handle time / 2 agents.
    let third = sim.open("c3", "k3");
    assert_eq!(
        third,
        vec![Effect::Queued {
            workspace: WorkspaceId::new(WS),
            conversation: ConversationId::new("c3"),
            team: TeamId::new("support"),
            position: 1,
            eta_ms: Some(150_000),
            waiting_for: None,
            message: Some("All our agents are busy".into()),
        }]
    );
    let fourth = sim.open("c4", "k4");
    assert!(matches!(&fourth[..], [Effect::Queued { position: 2, eta_ms: Some(300_000), .. }]), "{fourth:?}");
    // Positions stay queryable.
    assert_eq!(sim.conversation("c4").queue.map(|q| q.position), Some(2));
    let listing = sim.state.team_queue(&WorkspaceId::new(WS), &TeamId::new("support"), 0, 10).expect("team exists");
    assert_eq!(listing.iter().map(|q| q.conversation.as_str()).collect::<Vec<_>>(), ["c3", "c4"]);
    // Closing c1 frees a: the head, c3, goes to a within the same apply.
    sim.advance(60_000);
    let effects = sim.close("c1");
    assert_eq!(
        effects,
        vec![
            Effect::Closed {
                workspace: WorkspaceId::new(WS),
                conversation: ConversationId::new("c1"),
                team: TeamId::new("support"),
                agent: Some(AgentId::new("a"))
            },
            assigned("c3", "k3", "support", "a", "a", 120_000, AssignReason::Strategy(Strategy::RoundRobin)),
        ]
    );
    assert_eq!(sim.conversation("c4").queue.map(|q| q.position), Some(1));
    // The handle time of c1 (60 s) moved the team's average: 300 - (300-60)/8 = 270 s.
    assert_eq!(sim.conversation("c4").queue.and_then(|q| q.eta_ms), Some(135_000));
}

#[test]
fn higher_priority_is_served_before_earlier_arrivals() {
    let mut sim = Sim::new();
    let mut spec = AgentSpec::new("a", "a");
    spec.max_open = 1;
    sim.agent_spec(spec);
    sim.team(TeamSpec::new("support", Strategy::RoundRobin, &["a"]));
    sim.default_team("support");
    sim.online(&["a"]);
    sim.open("c0", "k");
    sim.open("low", "k1");
    let mut urgent = OpenConversation::new("urgent", "k2", Channel::Sms);
    urgent.priority = 5;
    let effects = sim.open_with(urgent);
    assert!(matches!(&effects[..], [Effect::Queued { position: 1, .. }]), "{effects:?}");
    assert_eq!(sim.conversation("low").queue.map(|q| q.position), Some(2));
    assert_eq!(assigned_agents(&sim.close("c0")), ["a"]);
    assert_eq!(sim.assignee("urgent").as_deref(), Some("a"));
}

#[test]
fn a_full_channel_does_not_block_another_channels_conversation() {
    let mut sim = Sim::new();
    let mut spec = AgentSpec::new("a", "a");
    spec.max_open = 3;
    spec.max_open_per_channel.insert(Channel::Email, 1);
    sim.agent_spec(spec);
    sim.team(TeamSpec::new("support", Strategy::RoundRobin, &["a"]));
    sim.default_team("support");
    sim.online(&["a"]);
    sim.open_with(OpenConversation::new("m1", "k1", Channel::Email));
    let effects = sim.open_with(OpenConversation::new("m2", "k2", Channel::Email));
    assert!(matches!(&effects[..], [Effect::Queued { .. }]), "{effects:?}");
    // A WhatsApp conversation behind it still gets the agent.
    assert_eq!(assigned_agents(&sim.open("w1", "k3")), ["a"]);
    // Closing the first e-mail lets the waiting e-mail in.
    assert_eq!(assigned_agents(&sim.close("m1")), ["a"]);
    assert_eq!(sim.assignee("m2").as_deref(), Some("a"));
}

/// One agent taking one conversation at a time, a team telling queued customers their new
/// position at most every `interval_s`, c1 assigned and c2..=c`queued+1` waiting.
fn position_team(interval_s: u32, queued: usize) -> Sim {
    let mut sim = Sim::new();
    let mut spec = AgentSpec::new("a", "a");
    spec.max_open = 1;
    sim.agent_spec(spec);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a"]);
    team.options.position_update_interval_s = interval_s;
    sim.team(team);
    sim.default_team("support");
    sim.online(&["a"]);
    for n in 1..=queued + 1 {
        sim.open(&format!("c{n}"), &format!("k{n}"));
    }
    sim
}

/// `(conversation, position)` of every position update among `effects`.
fn position_updates(effects: &[Effect]) -> Vec<(String, u32)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::QueuePosition { conversation, position, .. } => Some((conversation.to_string(), *position)),
            _ => None,
        })
        .collect()
}

#[test]
fn queued_customers_are_told_their_new_position_once_per_interval_when_the_queue_moves() {
    let mut sim = position_team(30, 4);
    assert_eq!(sim.conversation("c5").queue.map(|q| q.position), Some(4));
    // Two conversations leave the queue within five seconds: nobody is told yet (coalesced).
    sim.advance(5_000);
    assert_eq!(position_updates(&sim.close("c1")), []);
    sim.advance(5_000);
    assert_eq!(position_updates(&sim.close("c2")), []);
    // Thirty seconds after the first move, each waiting customer is told once, in queue order.
    assert_eq!(position_updates(&sim.advance(24_999)), []);
    let told = sim.advance(1);
    assert_eq!(position_updates(&told), [("c4".to_owned(), 1), ("c5".to_owned(), 2)]);
    assert!(
        matches!(&told[..], [Effect::QueuePosition { team, eta_ms: Some(_), waiting_for: None, .. }, _] if team.as_str() == "support"),
        "{told:?}"
    );
    // The queue stands still: nothing more, however long they wait.
    assert_eq!(position_updates(&sim.advance(3_600_000)), []);
    // A customer who just arrived at the tail moved nobody: still nothing.
    sim.open("c6", "k6");
    assert_eq!(position_updates(&sim.advance(60_000)), []);
    // Somebody urgent is queued ahead of everyone: all three move back one place.
    let mut urgent = OpenConversation::new("c7", "k7", Channel::WhatsApp);
    urgent.priority = 5;
    sim.open_with(urgent);
    assert_eq!(sim.conversation("c7").queue.map(|q| q.position), Some(1));
    assert_eq!(
        position_updates(&sim.advance(30_000)),
        [("c4".to_owned(), 2), ("c5".to_owned(), 3), ("c6".to_owned(), 4)]
    );
}

#[test]
fn a_customer_told_recently_is_told_again_only_after_the_interval() {
    let mut sim = position_team(30, 1); // c2 at 1, told at t0
    sim.advance(20_000);
    sim.open("c3", "k3"); // told "2" at t0+20 s
    sim.open("c4", "k4"); // told "3" at t0+20 s
    sim.advance(1_000);
    sim.close("c1"); // t0+21 s: c2 assigned; c3 -> 1, c4 -> 2; update due at t0+51 s
    assert_eq!(position_updates(&sim.advance(29_999)), []);
    assert_eq!(position_updates(&sim.advance(1)), [("c3".to_owned(), 1), ("c4".to_owned(), 2)]);
    sim.advance(4_000); // t0+55 s; c3, c4 told at t0+51 s
    sim.close("c2"); // c3 assigned; c4 -> 1; due at t0+85 s
    sim.advance(10_000);
    sim.open("c5", "k5"); // t0+65 s, told "2"
    sim.advance(5_000);
    sim.close("c3"); // t0+70 s: c4 assigned; c5 -> 1 (told at t0+65 s: may hear again at t0+95 s)
    assert_eq!(position_updates(&sim.advance(14_999)), [], "t0+85 s - 1 ms");
    // At t0+85 s the timer fires; c5 was told 20 s ago: it is told at t0+95 s instead.
    assert_eq!(position_updates(&sim.advance(1)), []);
    assert_eq!(position_updates(&sim.advance(9_999)), []);
    assert_eq!(position_updates(&sim.advance(1)), [("c5".to_owned(), 1)]);
}

#[test]
fn position_updates_are_off_unless_the_team_asks_for_them() {
    let mut sim = position_team(0, 3);
    sim.close("c1");
    sim.close("c2");
    assert_eq!(position_updates(&sim.advance(3_600_000)), []);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a"]);
    team.options.position_update_interval_s = 3;
    let error = sim.err(Command::UpsertTeam(team));
    assert!(error.to_string().contains("team.options.position_update_interval_s"), "{error}");
}

// 8. Returning customers ---------------------------------------------------------------------------------

#[test]
fn a_returning_customer_goes_back_to_their_previous_agent_when_eligible() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b", "c"]);
    let mut spec = TeamSpec::new("support", Strategy::RoundRobin, &["a", "b", "c"]);
    spec.options.keep_returning_customers = true;
    sim.team(spec);
    sim.open("c1", "alice"); // a
    sim.open("c2", "bob"); // b
    sim.close("c1");
    sim.close("c2");
    let effects = sim.open("c3", "alice");
    assert_eq!(effects, vec![assigned("c3", "alice", "support", "a", "a", 120_000, AssignReason::Returning)]);
    // If her agent is away, the strategy decides as for anyone.
    sim.close("c3");
    sim.status("a", AgentStatus::Away);
    assert_eq!(assigned_agents(&sim.open("c4", "alice")), ["c"]);
}

#[test]
fn without_the_option_a_returning_customer_follows_the_strategy() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b"]);
    sim.open("c1", "alice");
    sim.close("c1");
    assert_eq!(assigned_agents(&sim.open("c2", "alice")), ["b"]);
}

// 9. VIP --------------------------------------------------------------------------------------------------

fn vip_sim(settings: WorkspaceSettings) -> Sim {
    let mut sim = Sim::with_settings(settings.clone());
    for id in ["a", "b", "mary"] {
        let mut spec = AgentSpec::new(id, id);
        spec.max_open = 1;
        sim.agent_spec(spec);
    }
    sim.team(TeamSpec::new("support", Strategy::RoundRobin, &["a", "b"]));
    sim.ok(Command::ConfigureWorkspace(WorkspaceSettings { default_team: Some(TeamId::new("support")), ..settings }));
    sim.online(&["a", "b", "mary"]);
    sim.ok(Command::UpsertContact(ContactSpec {
        id: ContactId::new("vip"),
        tier: Some("vip".into()),
        dedicated_agent: Some(AgentId::new("mary")),
    }));
    sim
}

#[test]
fn a_vip_goes_to_their_dedicated_agent() {
    let mut sim = vip_sim(WorkspaceSettings::default());
    let effects = sim.open("v1", "vip");
    assert_eq!(effects, vec![assigned("v1", "vip", "support", "mary", "mary", 120_000, AssignReason::Dedicated)]);
}

#[test]
fn a_vip_whose_dedicated_agent_is_offline_or_full_is_routed_to_the_team_by_default() {
    let mut sim = vip_sim(WorkspaceSettings::default());
    sim.open("v1", "vip"); // mary is now full (max_open 1)
    assert_eq!(assigned_agents(&sim.open("v2", "vip")), ["a"]);
    sim.status("mary", AgentStatus::Offline);
    assert_eq!(assigned_agents(&sim.open("v3", "vip")), ["b"]);
}

#[test]
fn a_vip_waits_for_their_dedicated_agent_when_the_workspace_says_so() {
    let settings = WorkspaceSettings { vip_waits_for_dedicated_agent: true, ..WorkspaceSettings::default() };
    let mut sim = vip_sim(settings);
    sim.open("v1", "vip");
    let effects = sim.open("v2", "vip");
    assert!(
        matches!(&effects[..], [Effect::Queued { position: 1, waiting_for: Some(agent), .. }] if agent.as_str() == "mary"),
        "{effects:?}"
    );
    assert_eq!(assigned_agents(&sim.close("v1")), ["mary"]);
    assert_eq!(sim.assignee("v2").as_deref(), Some("mary"));
}

#[test]
fn a_dedicated_or_previous_agent_without_the_skill_a_rule_requires_is_passed_over() {
    let mut sim = vip_sim(WorkspaceSettings::default());
    let mut b = AgentSpec::new("b", "b");
    b.max_open = 1;
    b.skills.insert(Skill::new("refunds"), 4);
    sim.agent_spec(b);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a", "b", "mary"]);
    team.options.keep_returning_customers = true;
    sim.team(team);
    // k's first conversation goes to a; it closes.
    assert_eq!(assigned_agents(&sim.open("k1", "k")), ["a"]);
    sim.close("k1");
    sim.ok(Command::SetRoutingRules(vec![RoutingRule {
        id: RuleId::new("refunds"),
        conditions: RuleConditions { topics: vec!["refund".into()], ..RuleConditions::default() },
        target: RuleTarget::Team {
            team: TeamId::new("support"),
            required_skills: [(Skill::new("refunds"), 3)].into(),
            required_language: None,
        },
    }]));
    let refund = |conversation: &str, contact: &str| {
        let mut open = OpenConversation::new(conversation, contact, Channel::WhatsApp);
        open.topic = Some("refund".into());
        open
    };
    // Neither the VIP's dedicated agent (mary) nor k's previous agent (a) handles refunds.
    let effects = sim.open_with(refund("v1", "vip"));
    assert_eq!(
        effects,
        vec![assigned("v1", "vip", "support", "b", "b", 120_000, AssignReason::Strategy(Strategy::RoundRobin))]
    );
    sim.close("v1");
    let effects = sim.open_with(refund("k2", "k"));
    assert_eq!(
        effects,
        vec![assigned("k2", "k", "support", "b", "b", 120_000, AssignReason::Strategy(Strategy::RoundRobin))]
    );
}

// 10. Reopen (Callbell: John, William, Mary) ----------------------------------------------------------------

fn callbell(reassign: bool) -> Sim {
    let mut sim = team_of(Strategy::RoundRobin, &["john", "william", "mary"]);
    let mut spec = TeamSpec::new("support", Strategy::RoundRobin, &["john", "william", "mary"]);
    spec.options.reassign_reopened_if_unavailable = reassign;
    sim.team(spec);
    assert_eq!(assigned_agents(&sim.open("chat", "customer")), ["john"]);
    sim.close("chat");
    sim.status("john", AgentStatus::Away);
    sim.advance(7 * 86_400_000);
    sim
}

#[test]
fn reopened_chat_goes_to_william_or_mary_when_reassigning_unavailable_agents() {
    let mut sim = callbell(true);
    let effects = sim.ok(Command::CustomerMessage { conversation: ConversationId::new("chat") });
    assert_eq!(
        effects[0],
        Effect::Reopened {
            workspace: WorkspaceId::new(WS),
            conversation: ConversationId::new("chat"),
            team: TeamId::new("support")
        }
    );
    let agents = assigned_agents(&effects);
    assert!(agents == ["william"] || agents == ["mary"], "{agents:?}");
}

#[test]
fn reopened_chat_stays_with_john_when_not_reassigning() {
    let mut sim = callbell(false);
    let effects = sim.ok(Command::CustomerMessage { conversation: ConversationId::new("chat") });
    assert!(
        matches!(&effects[..], [Effect::Reopened { .. }, Effect::Queued { waiting_for: Some(agent), .. }] if agent.as_str() == "john"),
        "{effects:?}"
    );
    // Nobody else gets it, however many are free.
    sim.open("other", "k");
    assert_eq!(sim.conversation("chat").assignee, None);
    // John comes back: it is his in the same apply.
    let effects = sim.status("john", AgentStatus::Online);
    assert_eq!(assigned_agents(&effects), ["john"]);
    assert_eq!(sim.assignee("chat").as_deref(), Some("john"));
}

#[test]
fn reopened_chat_goes_straight_back_to_an_available_agent() {
    let mut sim = team_of(Strategy::RoundRobin, &["john", "william"]);
    sim.open("chat", "customer");
    sim.close("chat");
    let effects = sim.ok(Command::CustomerMessage { conversation: ConversationId::new("chat") });
    assert_eq!(
        effects,
        vec![
            Effect::Reopened {
                workspace: WorkspaceId::new(WS),
                conversation: ConversationId::new("chat"),
                team: TeamId::new("support")
            },
            assigned("chat", "customer", "support", "john", "john", 120_000, AssignReason::Reopened),
        ]
    );
}

// 11. Business hours, local midnight ------------------------------------------------------------------------

fn sao_paulo_team() -> Sim {
    let mut sim = Sim::new();
    sim.agent("a", "Ana");
    let mut spec = TeamSpec::new("support", Strategy::RoundRobin, &["a"]);
    spec.timezone = "America/Sao_Paulo".into();
    spec.business_hours = Some(BusinessHours {
        weekly: (0..5).map(|weekday| OpeningInterval { weekday, open_minute: 9 * 60, close_minute: 18 * 60 }).collect(),
        holidays: vec![],
    });
    spec.templates.away = Some("We open at 9:00".into());
    sim.team(spec);
    sim.default_team("support");
    sim.online(&["a"]);
    sim
}

#[test]
fn outside_business_hours_a_conversation_gets_an_away_effect_and_is_assigned_at_opening() {
    let mut sim = sao_paulo_team();
    // Monday 10:00 UTC is 07:00 in São Paulo: closed until 09:00 local = 12:00 UTC.
    let effects = sim.open("c1", "k1");
    assert_eq!(
        effects,
        vec![Effect::OutsideHours {
            workspace: WorkspaceId::new(WS),
            conversation: ConversationId::new("c1"),
            team: TeamId::new("support"),
            opens_at_ms: Some(MONDAY_10_UTC + 2 * 3_600_000),
            message: Some("We open at 9:00".into()),
        }]
    );
    assert_eq!(sim.conversation("c1").state, ConversationState::Queued);
    assert!(assigned_agents(&sim.advance(2 * 3_600_000 - 1)).is_empty());
    let effects = sim.advance(1);
    assert_eq!(
        effects,
        vec![assigned("c1", "k1", "support", "a", "Ana", 120_000, AssignReason::Strategy(Strategy::RoundRobin))]
    );
}

#[test]
fn daily_counts_reset_at_local_midnight_and_capped_queues_drain() {
    let mut sim = Sim::new();
    let mut spec = AgentSpec::new("a", "a");
    spec.daily_limit = 2;
    sim.agent_spec(spec);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a"]);
    team.timezone = "Asia/Tokyo".into();
    team.options.daily_limit_hard_cap = true;
    sim.team(team);
    sim.default_team("support");
    sim.online(&["a"]);
    for i in 0..3 {
        let id = format!("c{i}");
        sim.open(&id, "k");
        sim.close(&id);
    }
    let effects = sim.open("c3", "k");
    assert!(matches!(&effects[..], [Effect::Queued { .. }]), "{effects:?}");
    assert_eq!(sim.agent_view("a").received_today, 2);
    // Monday 10:00 UTC is 19:00 in Tokyo: midnight is 5 hours away.
    assert!(sim.advance(5 * 3_600_000 - 1).is_empty());
    let effects = sim.advance(1);
    assert_eq!(assigned_agents(&effects), ["a"]);
    assert_eq!(sim.agent_view("a").received_today, 1);
}

// 12. Offline requeue, no-reply timeout --------------------------------------------------------------------

#[test]
fn an_agent_going_offline_with_requeue_on_has_their_conversations_reassigned_or_queued() {
    let mut sim = Sim::new();
    for id in ["a", "b"] {
        let mut spec = AgentSpec::new(id, id);
        spec.max_open = 2;
        sim.agent_spec(spec);
    }
    let mut team = TeamSpec::new("support", Strategy::Ordered, &["a", "b"]);
    team.options.requeue_on_offline = true;
    sim.team(team);
    sim.default_team("support");
    sim.online(&["a", "b"]);
    sim.open("c1", "k1");
    sim.open("c2", "k2");
    sim.open("c3", "k3"); // b
    assert_eq!(sim.agent_view("a").open, 2);
    let effects = sim.status("a", AgentStatus::Offline);
    // b has room for one more: c1 moves to b, c2 waits at the head of the queue.
    assert_eq!(assigned_agents(&effects), ["b"]);
    assert_eq!(sim.assignee("c1").as_deref(), Some("b"));
    assert_eq!(sim.conversation("c2").queue.map(|q| q.position), Some(1));
    assert_eq!(sim.agent_view("a").open, 0);
    let unassigned =
        effects.iter().filter(|e| matches!(e, Effect::Unassigned { reason: UnassignReason::AgentOffline, .. })).count();
    assert_eq!(unassigned, 2);
}

#[test]
fn an_unanswered_conversation_moves_to_another_agent_after_the_no_reply_timeout() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b"]);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a", "b"]);
    team.options.no_reply_timeout_s = 60;
    sim.team(team);
    sim.open("c1", "k1"); // a
    sim.open("c2", "k2"); // b
    sim.advance(10_000);
    sim.ok(Command::AgentReplied { conversation: ConversationId::new("c2"), agent: AgentId::new("b") });
    let effects = sim.advance(50_000);
    // c1 was not answered: it leaves a for b. c2 was answered: it stays.
    assert_eq!(
        effects,
        vec![
            Effect::Unassigned {
                workspace: WorkspaceId::new(WS),
                conversation: ConversationId::new("c1"),
                team: TeamId::new("support"),
                agent: AgentId::new("a"),
                reason: UnassignReason::NoReply
            },
            assigned("c1", "k1", "support", "b", "b", 10_000, AssignReason::Strategy(Strategy::RoundRobin)),
        ]
    );
    assert_eq!(sim.assignee("c2").as_deref(), Some("b"));
}

// 13. What the customer is told -------------------------------------------------------------------------------

#[test]
fn assignment_effects_carry_the_display_name_and_the_learned_response_time() {
    let mut sim = Sim::new();
    sim.agent("m", "Mary");
    sim.team(TeamSpec::new("support", Strategy::RoundRobin, &["m"]));
    sim.default_team("support");
    sim.online(&["m"]);
    // No history: the team's default response time (120 s).
    assert_eq!(
        sim.open("c1", "k1"),
        vec![assigned("c1", "k1", "support", "m", "Mary", 120_000, AssignReason::Strategy(Strategy::RoundRobin))]
    );
    sim.advance(90_000);
    sim.ok(Command::AgentReplied { conversation: ConversationId::new("c1"), agent: AgentId::new("m") });
    // Mary answered in 90 s: that is what the next customer is told.
    assert_eq!(
        sim.open("c2", "k2"),
        vec![assigned("c2", "k2", "support", "m", "Mary", 90_000, AssignReason::Strategy(Strategy::RoundRobin))]
    );
}

#[test]
fn a_team_welcome_is_sent_when_a_conversation_opens() {
    let mut sim = team_of(Strategy::RoundRobin, &["a"]);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a"]);
    team.templates.welcome = Some("Hi! An agent will be with you shortly.".into());
    sim.team(team);
    let effects = sim.open("c1", "k1");
    assert_eq!(
        effects[0],
        Effect::Welcome {
            workspace: WorkspaceId::new(WS),
            conversation: ConversationId::new("c1"),
            team: TeamId::new("support"),
            message: "Hi! An agent will be with you shortly.".into(),
        }
    );
    assert_eq!(assigned_agents(&effects), ["a"]);
}

// 14. Duplicates ------------------------------------------------------------------------------------------------

#[test]
fn a_duplicate_event_id_has_no_effect_the_second_time() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b"]);
    let open = Command::OpenConversation(OpenConversation::new("c1", "k1", Channel::Telegram));
    let first = sim.run_with_id(Some("evt-1"), open.clone());
    assert_eq!(first.result, Ok(()));
    assert_eq!(assigned_agents(&first.effects), ["a"]);
    let digest = sim.state.state_digest();
    let again = sim.run_with_id(Some("evt-1"), open);
    assert_eq!(again.effects, vec![]);
    assert_eq!(again.result, Err(ApplyError::Duplicate { event_id: EventId::new("evt-1") }));
    // Nothing moved: the redelivery left the state byte for byte as it was.
    assert_eq!(sim.state.state_digest(), digest);
    let close = Command::CloseConversation { conversation: ConversationId::new("c1") };
    assert_eq!(sim.run_with_id(Some("evt-2"), close.clone()).result, Ok(()));
    assert!(matches!(sim.run_with_id(Some("evt-2"), close).result, Err(ApplyError::Duplicate { .. })));
}

// Other lifecycle rules -------------------------------------------------------------------------------------------

#[test]
fn delay_activation_keeps_a_conversation_claimable_then_assigns_it() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b"]);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a", "b"]);
    team.options.assign_delay_s = 30;
    sim.team(team);
    assert!(sim.open("c1", "k1").is_empty());
    assert!(sim.open("c2", "k2").is_empty());
    assert_eq!(sim.state.queue_depth(&WorkspaceId::new(WS), &TeamId::new("support")), Some(2));
    // b picks c2 during the delay.
    sim.ok(Command::Claim { conversation: ConversationId::new("c2"), agent: AgentId::new("b") });
    let effects = sim.advance(30_000);
    assert_eq!(assigned_agents(&effects), ["a"]);
    assert_eq!(sim.assignee("c2").as_deref(), Some("b"));
}

#[test]
fn supervisors_assign_and_transfer() {
    let mut sim = team_of(Strategy::Manual, &["a", "b"]);
    sim.agent("s", "Sam");
    sim.team(TeamSpec::new("sales", Strategy::RoundRobin, &["s"]));
    sim.online(&["s"]);
    sim.open("c1", "k1");
    sim.ok(Command::Assign { conversation: ConversationId::new("c1"), agent: AgentId::new("a") });
    assert_eq!(sim.assignee("c1").as_deref(), Some("a"));
    let error = sim.err(Command::Assign { conversation: ConversationId::new("c1"), agent: AgentId::new("b") });
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    sim.ok(Command::Transfer {
        conversation: ConversationId::new("c1"),
        target: TransferTarget::Agent(AgentId::new("b")),
    });
    assert_eq!(sim.assignee("c1").as_deref(), Some("b"));
    let effects = sim.ok(Command::Transfer {
        conversation: ConversationId::new("c1"),
        target: TransferTarget::Team(TeamId::new("sales")),
    });
    assert_eq!(assigned_agents(&effects), ["s"]);
    assert_eq!(sim.conversation("c1").team.as_str(), "sales");
    assert_eq!(sim.agent_view("b").open, 0);
}

/// Runs a command that must be refused and checks that the state is byte for byte what it was
/// (same digest) and that no effect left; returns the error.
fn refused(sim: &mut Sim, event_id: Option<&str>, command: Command) -> ApplyError {
    let before = sim.state.state_digest();
    let outcome = sim.run_with_id(event_id, command.clone());
    assert_eq!(sim.state.state_digest(), before, "refused {command:?} changed the state");
    assert_eq!(outcome.effects, vec![], "refused {command:?} produced effects");
    match outcome.result {
        Ok(()) => panic!("command {command:?} unexpectedly succeeded"),
        Err(error) => error,
    }
}

#[test]
fn bad_input_gets_an_error_naming_what_is_wrong_and_changes_nothing() {
    let mut sim = team_of(Strategy::RoundRobin, &["a"]);
    sim.open("c1", "k1");
    let unknown_agent = refused(
        &mut sim,
        Some("e1"),
        Command::SetAgentStatus { agent: AgentId::new("ghost"), status: AgentStatus::Online },
    );
    assert_eq!(unknown_agent, ApplyError::UnknownAgent(AgentId::new("ghost")));
    assert_eq!(unknown_agent.kind(), ErrorKind::NotFound);
    let empty = refused(&mut sim, Some("e2"), Command::OpenConversation(OpenConversation::new("", "k", Channel::Sms)));
    assert!(matches!(empty, ApplyError::Invalid { field: "conversation.id", .. }), "{empty}");
    let mut bad_team = TeamSpec::new("x", Strategy::RoundRobin, &["a"]);
    bad_team.timezone = "Europe/Atlantis".into();
    let error = refused(&mut sim, Some("e3"), Command::UpsertTeam(bad_team));
    assert_eq!(error.to_string(), "invalid timezone: unknown IANA timezone \"Europe/Atlantis\"");
    let error = refused(&mut sim, None, Command::UpsertTeam(TeamSpec::new("x", Strategy::RoundRobin, &["a", "a"])));
    assert!(matches!(error, ApplyError::Invalid { field: "team.members", .. }));
    let mut skill = AgentSpec::new("z", "Z");
    skill.skills.insert(Skill::new("refunds"), 9);
    assert!(matches!(
        refused(&mut sim, None, Command::UpsertAgent(skill)),
        ApplyError::Invalid { field: "agent.skills", .. }
    ));
    let rule = |id: &str| RoutingRule {
        id: RuleId::new(id),
        conditions: RuleConditions::default(),
        target: RuleTarget::Team {
            team: TeamId::new("nowhere"),
            required_skills: BTreeMap::new(),
            required_language: None,
        },
    };
    assert_eq!(
        refused(&mut sim, None, Command::SetRoutingRules(vec![rule("r")])),
        ApplyError::UnknownTeam(TeamId::new("nowhere"))
    );
    let error = refused(&mut sim, None, Command::CloseConversation { conversation: ConversationId::new("nope") });
    assert_eq!(error.to_string(), "unknown conversation nope");
    assert_eq!(
        refused(&mut sim, None, Command::RemoveTeam { team: TeamId::new("support") }).kind(),
        ErrorKind::FailedPrecondition
    );
    let again =
        refused(&mut sim, Some("e4"), Command::OpenConversation(OpenConversation::new("c1", "k1", Channel::Sms)));
    assert_eq!(again, ApplyError::AlreadyOpen(ConversationId::new("c1")));
    // Oversized input is refused by name, whatever the command.
    let mut open = OpenConversation::new("c2", "k2", Channel::Sms);
    open.topic = Some("x".repeat(limits::TOPIC_BYTES_MAX + 1));
    let error = refused(&mut sim, Some("e5"), Command::OpenConversation(open));
    assert!(matches!(error, ApplyError::Invalid { field: "conversation.topic", .. }), "{error}");

    // Another workspace: unknown, and creating one with a default team it cannot have yet.
    let before = sim.state.state_digest();
    let other = |command| {
        Input::Event(Event { workspace: WorkspaceId::new("other"), event_id: Some(EventId::new("o1")), command })
    };
    let message = other(Command::CustomerMessage { conversation: ConversationId::new("x") });
    assert_eq!(
        sim.state.apply(sim.now_ms, &message).result,
        Err(ApplyError::UnknownWorkspace(WorkspaceId::new("other")))
    );
    let settings = WorkspaceSettings { default_team: Some(TeamId::new("t")), ..WorkspaceSettings::default() };
    assert_eq!(
        sim.state.apply(sim.now_ms, &other(Command::ConfigureWorkspace(settings))).result,
        Err(ApplyError::UnknownTeam(TeamId::new("t")))
    );
    let long_id = Input::Event(Event {
        workspace: WorkspaceId::new("other"),
        event_id: Some(EventId::new("e".repeat(limits::EVENT_ID_BYTES_MAX + 1))),
        command: Command::ConfigureWorkspace(WorkspaceSettings::default()),
    });
    assert!(matches!(sim.state.apply(sim.now_ms, &long_id).result, Err(ApplyError::Invalid { field: "event_id", .. })));
    assert!(!sim.state.has_workspace(&WorkspaceId::new("other")));
    assert_eq!(sim.state.state_digest(), before);

    // A refused event's id is not remembered: the same id applies once the input is good.
    let effects = sim.run_with_id(Some("e4"), Command::CloseConversation { conversation: ConversationId::new("c1") });
    assert_eq!(effects.result, Ok(()));
}

// A conversation whose team was removed ------------------------------------------------------------------------

/// Issue 10's reproduction: teams `support` (default) and `tee`, a rule sending topic `x` to
/// `tee`; c1 is assigned in `tee` and closed; `tee` and its rule are removed; the customer
/// writes again. Every replica used to panic here, at every restart.
fn removed_team_sim() -> Sim {
    let mut sim = Sim::new();
    for (id, name) in [("amy", "Amy"), ("bob", "Bob")] {
        sim.agent(id, name);
    }
    sim.team(TeamSpec::new("support", Strategy::RoundRobin, &["amy"]));
    sim.team(TeamSpec::new("tee", Strategy::RoundRobin, &["bob"]));
    sim.default_team("support");
    let to_tee = RoutingRule {
        id: RuleId::new("x-to-tee"),
        conditions: RuleConditions { topics: vec!["x".into()], ..RuleConditions::default() },
        target: RuleTarget::Team {
            team: TeamId::new("tee"),
            required_skills: [(Skill::new("s"), 1)].into(),
            required_language: None,
        },
    };
    sim.ok(Command::SetRoutingRules(vec![to_tee]));
    sim.online(&["amy", "bob"]);
    let mut open = OpenConversation::new("c1", "k1", Channel::WhatsApp);
    open.topic = Some("x".into());
    sim.open_with(open);
    assert_eq!(sim.conversation("c1").team.as_str(), "tee");
    sim.close("c1");
    sim.ok(Command::SetRoutingRules(vec![]));
    sim.ok(Command::RemoveTeam { team: TeamId::new("tee") });
    sim
}

#[test]
fn a_customer_writing_again_after_their_team_was_removed_is_routed_to_the_default_team() {
    let mut sim = removed_team_sim();
    let effects = sim.ok(Command::CustomerMessage { conversation: ConversationId::new("c1") });
    assert_eq!(
        effects,
        vec![
            Effect::Reopened {
                workspace: WorkspaceId::new(WS),
                conversation: ConversationId::new("c1"),
                team: TeamId::new("support"),
            },
            assigned("c1", "k1", "support", "amy", "Amy", 120_000, AssignReason::Strategy(Strategy::RoundRobin)),
        ]
    );
    // Replicas agree, also one rebuilt from a snapshot taken before the message.
    let mut replica = removed_team_sim();
    let restored = State::restore(&replica.state.snapshot()).expect("restores");
    replica.state = restored;
    replica.ok(Command::CustomerMessage { conversation: ConversationId::new("c1") });
    assert_eq!(replica.state.state_digest(), sim.state.state_digest());
}

#[test]
fn a_customer_writing_again_after_their_team_was_removed_follows_the_rules_of_today() {
    let mut sim = removed_team_sim();
    sim.agent("cy", "Cy");
    sim.team(TeamSpec::new("whatsapp", Strategy::RoundRobin, &["cy"]));
    sim.online(&["cy"]);
    sim.ok(Command::SetRoutingRules(vec![RoutingRule {
        id: RuleId::new("wa"),
        conditions: RuleConditions { channels: vec![Channel::WhatsApp], ..RuleConditions::default() },
        target: RuleTarget::Team {
            team: TeamId::new("whatsapp"),
            required_skills: BTreeMap::new(),
            required_language: None,
        },
    }]));
    // A gateway that opens the closed conversation again means the same thing.
    let effects = sim.open_with(OpenConversation::new("c1", "k1", Channel::WhatsApp));
    assert_eq!(assigned_agents(&effects), ["cy"]);
    assert_eq!(sim.conversation("c1").team.as_str(), "whatsapp");
}

#[test]
fn a_team_removed_and_created_again_takes_its_reopened_conversations_in_its_first_pool() {
    let mut sim = removed_team_sim();
    // The same id again, now without the skill pool the conversation was queued for.
    sim.team(TeamSpec::new("tee", Strategy::RoundRobin, &["bob"]));
    let effects = sim.ok(Command::CustomerMessage { conversation: ConversationId::new("c1") });
    assert_eq!(assigned_agents(&effects), ["bob"]);
    assert_eq!(sim.conversation("c1").team.as_str(), "tee");
}

#[test]
fn a_conversation_of_a_removed_team_with_no_route_left_is_refused_and_nothing_changes() {
    let mut sim = removed_team_sim();
    // No default team and no rule: there is nowhere to send it, which the caller is told.
    let settings = WorkspaceSettings { default_team: None, ..WorkspaceSettings::default() };
    sim.ok(Command::ConfigureWorkspace(settings));
    let error = refused(&mut sim, Some("m1"), Command::CustomerMessage { conversation: ConversationId::new("c1") });
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    assert!(error.to_string().contains("team tee, which was removed"), "{error}");
}

// Time and timers --------------------------------------------------------------------------------------------------

#[test]
fn a_clock_jump_moves_time_at_most_an_hour_per_entry() {
    let mut sim = team_of(Strategy::RoundRobin, &["a"]);
    let now = sim.now_ms;
    sim.state.apply(now + 30 * 86_400_000, &Input::Tick);
    assert_eq!(sim.state.now_ms(), now + limits::CLOCK_STEP_MS_MAX);
    sim.state.apply(i64::MAX, &Input::Tick);
    assert_eq!(sim.state.now_ms(), now + 2 * limits::CLOCK_STEP_MS_MAX);
}

#[test]
fn a_backlog_of_timers_fires_in_slices_of_timers_per_apply_max() {
    let mut sim = team_of(Strategy::RoundRobin, &["a"]);
    let mut team = TeamSpec::new("support", Strategy::RoundRobin, &["a"]);
    team.options.assign_delay_s = 1;
    sim.team(team);
    sim.check_invariants = false;
    let count = limits::TIMERS_PER_APPLY_MAX + 5;
    for i in 0..count {
        sim.open(&format!("c{i}"), "k");
    }
    let timers = sim.state.pending_timers();
    sim.now_ms += 2_000;
    sim.state.apply(sim.now_ms, &Input::Tick);
    // Every delay fell due at once; one apply fired only its share.
    assert_eq!(sim.state.pending_timers(), timers - limits::TIMERS_PER_APPLY_MAX);
    sim.state.apply(sim.now_ms, &Input::Tick);
    assert_eq!(sim.state.pending_timers(), timers - count);
}

#[test]
fn removing_an_agent_routes_their_conversations_again() {
    let mut sim = team_of(Strategy::RoundRobin, &["a", "b"]);
    sim.open("c1", "k1");
    let effects = sim.ok(Command::RemoveAgent { agent: AgentId::new("a") });
    assert_eq!(assigned_agents(&effects), ["b"]);
    assert_eq!(sim.state.agent(&WorkspaceId::new(WS), &AgentId::new("a")), None);
}

#[test]
fn time_from_entries_never_goes_backwards() {
    let mut sim = team_of(Strategy::RoundRobin, &["a"]);
    let now = sim.now_ms;
    sim.state.apply(now - 60_000, &Input::Tick);
    assert_eq!(sim.state.now_ms(), now);
}

#[test]
fn snapshots_round_trip_and_keep_deciding_the_same_way() {
    let mut sim = team_of(Strategy::Weighted, &["a", "b", "c"]);
    for i in 0..20 {
        sim.open(&format!("c{i}"), &format!("k{}", i % 7));
    }
    let bytes = sim.state.snapshot();
    let mut restored = State::restore(&bytes).expect("restores");
    assert_eq!(restored.state_digest(), sim.state.state_digest());
    restored.check_invariants().expect("restored state is consistent");
    for i in 20..40 {
        let input = Input::Event(Event {
            workspace: WorkspaceId::new(WS),
            event_id: None,
            command: Command::OpenConversation(OpenConversation::new(format!("c{i}"), "k", Channel::Line)),
        });
        assert_eq!(sim.state.apply(sim.now_ms, &input), restored.apply(sim.now_ms, &input));
    }
    assert_eq!(restored.state_digest(), sim.state.state_digest());
    assert!(matches!(State::restore(b"nope"), Err(SnapshotError::BadMagic)));
    let mut future = bytes.clone();
    future[4] = 99;
    let error = State::restore(&future).expect_err("a newer format is refused");
    assert!(matches!(error, SnapshotError::UnsupportedVersion { found: 99 }));
    assert!(error.to_string().contains("newer Switchboard"), "{error}");
    let mut older = bytes.clone();
    older[4] = 1;
    let error = State::restore(&older).expect_err("an older format is refused");
    assert!(error.to_string().contains("older Switchboard"), "{error}");
    assert!(matches!(State::restore(&bytes[..bytes.len() / 2]), Err(SnapshotError::Decode(_))));
}

#[test]
fn a_conversation_an_agent_cannot_take_does_not_block_the_ones_waiting_behind_it() {
    // Amy is the VIP's dedicated agent; the VIP waits for her. One chat waits in team `night`,
    // which serves only BUSY agents; the next in `day`. When Amy has room, the `day` chat is
    // hers at once, though the `night` one ahead of it still cannot be.
    let mut sim = Sim::new();
    let mut amy = AgentSpec::new("amy", "Amy");
    amy.max_open = 1;
    sim.agent_spec(amy);
    sim.team(TeamSpec::new("day", Strategy::RoundRobin, &["amy"]));
    let mut night = TeamSpec::new("night", Strategy::RoundRobin, &["amy"]);
    night.options.allowed_statuses = StatusSet::of(&[AgentStatus::Busy]);
    sim.team(night);
    sim.ok(Command::ConfigureWorkspace(WorkspaceSettings {
        default_team: Some(TeamId::new("day")),
        vip_waits_for_dedicated_agent: true,
        ..WorkspaceSettings::default()
    }));
    sim.ok(Command::SetRoutingRules(vec![RoutingRule {
        id: RuleId::new("night"),
        conditions: RuleConditions { topics: vec!["night".into()], ..RuleConditions::default() },
        target: RuleTarget::Team {
            team: TeamId::new("night"),
            required_skills: BTreeMap::new(),
            required_language: None,
        },
    }]));
    sim.ok(Command::UpsertContact(ContactSpec {
        id: ContactId::new("vip"),
        tier: None,
        dedicated_agent: Some(AgentId::new("amy")),
    }));
    sim.online(&["amy"]);
    sim.open("x1", "someone");
    let mut at_night = OpenConversation::new("n1", "vip", Channel::WhatsApp);
    at_night.topic = Some("night".into());
    sim.open_with(at_night);
    sim.open("d1", "vip");
    assert_eq!(sim.conversation("n1").queue.and_then(|q| q.waiting_for).map(|a| a.to_string()).as_deref(), Some("amy"));
    let effects = sim.close("x1");
    assert_eq!(assigned_agents(&effects), ["amy"]);
    assert_eq!(sim.assignee("d1").as_deref(), Some("amy"));
    assert_eq!(sim.assignee("n1"), None);
}

#[test]
fn a_returning_customer_routed_to_another_team_does_not_go_to_an_agent_outside_it() {
    // Issue 11, case 1: amy (en) in `t`, sofia (es) in `soporte`; both teams keep returning
    // customers. +X talked to amy; now writes in Spanish and a rule sends it to `soporte`,
    // requiring Spanish: it goes to sofia, not back to amy.
    let mut sim = Sim::new();
    let mut amy = AgentSpec::new("amy", "Amy");
    amy.languages = vec![Language::new("en")];
    let mut sofia = AgentSpec::new("sofia", "Sofia");
    sofia.languages = vec![Language::new("es")];
    sim.agent_spec(amy);
    sim.agent_spec(sofia);
    for (team, member) in [("t", "amy"), ("soporte", "sofia")] {
        let mut spec = TeamSpec::new(team, Strategy::RoundRobin, &[member]);
        spec.options.keep_returning_customers = true;
        sim.team(spec);
    }
    sim.default_team("t");
    sim.online(&["amy", "sofia"]);
    sim.open("x1", "+X");
    sim.close("x1");
    sim.ok(Command::SetRoutingRules(vec![RoutingRule {
        id: RuleId::new("es"),
        conditions: RuleConditions { languages: vec![Language::new("es")], ..RuleConditions::default() },
        target: RuleTarget::Team {
            team: TeamId::new("soporte"),
            required_skills: BTreeMap::new(),
            required_language: Some(Language::new("es")),
        },
    }]));
    let mut spanish = OpenConversation::new("x2", "+X", Channel::WhatsApp);
    spanish.language = Some(Language::new("es"));
    let effects = sim.open_with(spanish);
    assert_eq!(
        effects,
        vec![assigned("x2", "+X", "soporte", "sofia", "Sofia", 120_000, AssignReason::Strategy(Strategy::RoundRobin))]
    );
}

#[test]
fn a_reopened_chat_does_not_go_back_to_an_agent_who_left_the_team() {
    // Issue 11, case 2: "chat" went to john and was closed; john is online again but has left
    // `support`; the customer writes again.
    for reassign in [true, false] {
        let mut sim = callbell(reassign);
        sim.status("john", AgentStatus::Online);
        let mut spec = TeamSpec::new("support", Strategy::RoundRobin, &["william", "mary"]);
        spec.options.reassign_reopened_if_unavailable = reassign;
        sim.team(spec);
        sim.team(TeamSpec::new("elsewhere", Strategy::RoundRobin, &["john"]));
        let effects = sim.ok(Command::CustomerMessage { conversation: ConversationId::new("chat") });
        let agents = assigned_agents(&effects);
        // Without reassignment it does not wait for john either: he will never take it.
        assert!(agents == ["william"] || agents == ["mary"], "reassign {reassign}: {effects:?}");
    }
}

#[test]
fn only_members_pick_a_teams_conversations_and_supervisors_assign() {
    // Issue 11, case 6.
    let mut sim = team_of(Strategy::Manual, &["a", "b"]);
    sim.agent("outsider", "Outsider");
    sim.team(TeamSpec::new("sales", Strategy::RoundRobin, &["outsider"]));
    sim.online(&["outsider"]);
    sim.open("c1", "k1");
    let before = sim.state.state_digest();
    let error = sim.err(Command::Claim { conversation: ConversationId::new("c1"), agent: AgentId::new("outsider") });
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    assert!(error.to_string().contains("not a member of team support"), "{error}");
    assert_eq!(sim.state.state_digest(), before);
    sim.ok(Command::Assign { conversation: ConversationId::new("c1"), agent: AgentId::new("outsider") });
    assert_eq!(sim.assignee("c1").as_deref(), Some("outsider"));
}

#[test]
fn an_agent_in_several_teams_serves_the_longest_waiting_first_and_no_team_starves() {
    // Issue 11, case 3: amy (max_open 1) is in teams `a` and `b` and busy. "old" waits in `b`
    // (priority 5), then "new" in `a`: when amy's chat closes, "old" is hers.
    let mut sim = Sim::new();
    let mut amy = AgentSpec::new("amy", "Amy");
    amy.max_open = 1;
    sim.agent_spec(amy);
    for team in ["a", "b", "c"] {
        sim.team(TeamSpec::new(team, Strategy::RoundRobin, &["amy"]));
    }
    sim.default_team("a");
    let to = |team: &str| RoutingRule {
        id: RuleId::new(team),
        conditions: RuleConditions { topics: vec![team.into()], ..RuleConditions::default() },
        target: RuleTarget::Team { team: TeamId::new(team), required_skills: BTreeMap::new(), required_language: None },
    };
    sim.ok(Command::SetRoutingRules(vec![to("b"), to("c")]));
    sim.online(&["amy"]);
    let open = |sim: &mut Sim, id: &str, team: &str, priority: u8| {
        let mut open = OpenConversation::new(id, format!("k-{id}"), Channel::WhatsApp);
        open.topic = Some(team.into());
        open.priority = priority;
        sim.open_with(open)
    };
    open(&mut sim, "busy", "a", 0);
    open(&mut sim, "old", "b", 5);
    open(&mut sim, "new", "a", 0);
    assert_eq!(assigned_agents(&sim.close("busy")), ["amy"]);
    assert_eq!(sim.assignee("old").as_deref(), Some("amy"));
    // Equal priorities: arrival order across the three teams, whatever their ids.
    for (i, team) in ["c", "a", "b", "c", "b", "a"].iter().enumerate() {
        open(&mut sim, &format!("q{i}"), team, 0);
    }
    let mut served = Vec::new();
    let mut current = "old".to_owned();
    for _ in 0..7 {
        let effects = sim.close(&current);
        let Some(Effect::Assigned { conversation, .. }) = effects.iter().find(|e| matches!(e, Effect::Assigned { .. }))
        else {
            break;
        };
        current = conversation.to_string();
        served.push(current.clone());
    }
    assert_eq!(served, ["new", "q0", "q1", "q2", "q3", "q4", "q5"]);
}

#[test]
fn a_workspace_id_that_cannot_name_a_nats_subject_is_refused_at_creation() {
    let mut state = State::new();
    for bad in ["acme.eu", "acme*", "acme>", "acme eu"] {
        let event = Event {
            workspace: WorkspaceId::new(bad),
            event_id: None,
            command: Command::ConfigureWorkspace(WorkspaceSettings::default()),
        };
        let outcome = state.apply(MONDAY_10_UTC, &Input::Event(event));
        match outcome.result {
            Err(ApplyError::Invalid { field: "workspace", reason }) => {
                assert!(reason.contains("NATS subject token"), "{bad:?}: {reason}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(!state.has_workspace(&WorkspaceId::new(bad)), "{bad:?} was created");
    }
    let good = Event {
        workspace: WorkspaceId::new("acme-eu_1"),
        event_id: None,
        command: Command::ConfigureWorkspace(WorkspaceSettings::default()),
    };
    assert_eq!(state.apply(MONDAY_10_UTC, &Input::Event(good)).result, Ok(()));
}
