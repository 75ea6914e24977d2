//! What a replay measured, gathered from the effects the core produced.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use switchboard_core::{AgentId, ConversationId, Effect, TeamId};

/// Wait-time summary, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Waits {
    /// How many waits (one per assignment).
    pub count: u64,
    /// Median.
    pub p50_ms: i64,
    /// 90th percentile.
    pub p90_ms: i64,
    /// 99th percentile.
    pub p99_ms: i64,
    /// Longest.
    pub max_ms: i64,
}

impl Waits {
    /// The summary of `samples` (sorted in place). Percentiles are nearest-rank.
    pub fn of(samples: &mut [i64]) -> Self {
        samples.sort_unstable();
        let rank = |p: u64| -> i64 {
            let n = u64::try_from(samples.len()).unwrap_or(u64::MAX);
            if n == 0 {
                return 0;
            }
            // Nearest rank: ceil(p/100 * n), one-based.
            let rank = n.saturating_mul(p).div_ceil(100).max(1);
            usize::try_from(rank - 1).ok().and_then(|i| samples.get(i)).copied().unwrap_or(0)
        };
        Self {
            count: u64::try_from(samples.len()).unwrap_or(u64::MAX),
            p50_ms: rank(50),
            p90_ms: rank(90),
            p99_ms: rank(99),
            max_ms: samples.last().copied().unwrap_or(0),
        }
    }
}

/// One team's figures (or every team's, under the name `all`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TeamReport {
    /// The team, or `all`.
    pub team: String,
    /// Conversations opened into it.
    pub conversations: u64,
    /// Of those, how many had an agent at least once.
    pub assigned: u64,
    /// `assigned / conversations` (1.0 when there were none).
    pub assignment_rate: f64,
    /// Conversations that had to wait at least once (queued or outside hours).
    pub queued: u64,
    /// Customers who closed while waiting: the abandonment proxy.
    pub abandoned: u64,
    /// Time from opening (or being requeued) to the agent, for every assignment.
    pub wait: Waits,
    /// Assignments to the team's agents.
    pub assignments: u64,
    /// Spread of load within the team: the coefficient of variation of assignments over its
    /// members (0 = perfectly even; `all` is the mean over teams with members).
    pub load_cv: f64,
    /// Most assignments any one member received.
    pub load_max: u64,
    /// Fewest assignments any one member received.
    pub load_min: u64,
    /// The team's deepest queue at any moment of the replay.
    pub max_queue_depth: u64,
}

/// One agent's load in one team.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentReport {
    /// The team.
    pub team: String,
    /// The agent.
    pub agent: String,
    /// Conversations assigned to the agent in this team.
    pub received: u64,
    /// Most conversations the agent held at once (across teams).
    pub max_concurrent: u64,
    /// The agent's share of the team's assignments (0..=1).
    pub share: f64,
}

/// Queue depth of one team over time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DepthSeries {
    /// The team.
    pub team: String,
    /// The deepest queue seen in each bucket of [`Report::bucket_ms`], from [`Report::from_ms`].
    pub max_depth: Vec<u64>,
}

/// One assignment, in the order the core made them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// Simulated time (UTC milliseconds).
    pub at_ms: i64,
    /// The conversation.
    pub conversation: String,
    /// The agent.
    pub agent: String,
}

/// Everything one replay measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// The configuration's label (its file name).
    pub label: String,
    /// The workspace replayed.
    pub workspace: String,
    /// Events read for the workspace.
    pub events: u64,
    /// Events the core refused (unknown conversation, invalid field, ...), by error kind.
    pub refused: BTreeMap<String, u64>,
    /// Simulated time of the first event (UTC milliseconds).
    pub from_ms: i64,
    /// Simulated time of the last event.
    pub to_ms: i64,
    /// Width of one queue-depth bucket.
    pub bucket_ms: i64,
    /// Every team, in id order, then `all`.
    pub teams: Vec<TeamReport>,
    /// Every member of every team, by team then agent.
    pub agents: Vec<AgentReport>,
    /// Queue depth over time, per team.
    pub depth: Vec<DepthSeries>,
    /// Distribution of waits: how many assignments waited up to each bound of
    /// [`WAIT_BUCKETS_MS`] (the last counts everything longer).
    pub wait_histogram: Vec<u64>,
    /// Every assignment in order.
    pub assignments: Vec<Assignment>,
}

/// Upper bounds of the wait histogram's buckets, in milliseconds; a last bucket holds longer
/// waits.
pub const WAIT_BUCKETS_MS: [i64; 10] =
    [0, 5_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000];

#[derive(Default)]
struct Track {
    team: Option<TeamId>,
    counted: bool,
    waiting_since: Option<i64>,
    agent: Option<AgentId>,
    assigned_once: bool,
    waited: bool,
}

#[derive(Default)]
struct TeamCounts {
    conversations: u64,
    assigned: u64,
    queued: u64,
    abandoned: u64,
    waits: Vec<i64>,
    received: BTreeMap<AgentId, u64>,
    max_depth: u64,
    depth: Vec<u64>,
}

/// Gathers the figures while the replay runs.
pub(crate) struct Collector {
    conversations: HashMap<ConversationId, Track>,
    teams: BTreeMap<TeamId, TeamCounts>,
    load: HashMap<AgentId, u64>,
    max_load: HashMap<AgentId, u64>,
    assignments: Vec<Assignment>,
}

impl Collector {
    /// A collector for `teams` and their members.
    pub(crate) fn new(teams: &[(TeamId, Vec<AgentId>)]) -> Self {
        let teams = teams
            .iter()
            .map(|(team, members)| {
                let received = members.iter().map(|agent| (agent.clone(), 0)).collect();
                (team.clone(), TeamCounts { received, ..TeamCounts::default() })
            })
            .collect();
        Self {
            conversations: HashMap::new(),
            teams,
            load: HashMap::new(),
            max_load: HashMap::new(),
            assignments: Vec::new(),
        }
    }

    /// A conversation was opened at `at_ms` (its effects follow).
    pub(crate) fn opened(&mut self, conversation: &ConversationId, at_ms: i64) {
        let track = Track { counted: true, waiting_since: Some(at_ms), ..Track::default() };
        self.conversations.insert(conversation.clone(), track);
    }

    fn team(&mut self, team: &TeamId) -> &mut TeamCounts {
        self.teams.entry(team.clone()).or_default()
    }

    fn join(&mut self, conversation: &ConversationId, team: &TeamId, at_ms: i64) -> &mut Track {
        let track = self
            .conversations
            .entry(conversation.clone())
            .or_insert_with(|| Track { waiting_since: Some(at_ms), ..Track::default() });
        if track.team.is_none() && track.counted {
            self.teams.entry(team.clone()).or_default().conversations += 1;
        }
        track.team = Some(team.clone());
        track
    }

    fn release(&mut self, agent: &AgentId) {
        if let Some(load) = self.load.get_mut(agent) {
            *load = load.saturating_sub(1);
        }
    }

    /// One effect at simulated time `at_ms`.
    pub(crate) fn effect(&mut self, at_ms: i64, effect: &Effect) {
        match effect {
            Effect::Assigned { conversation, team, agent, .. } => {
                let track = self.join(conversation, team, at_ms);
                let wait = at_ms.saturating_sub(track.waiting_since.take().unwrap_or(at_ms)).max(0);
                let first = !track.assigned_once;
                track.assigned_once = true;
                track.agent = Some(agent.clone());
                let counted = track.counted;
                let counts = self.team(team);
                if first && counted {
                    counts.assigned += 1;
                }
                counts.waits.push(wait);
                *counts.received.entry(agent.clone()).or_default() += 1;
                let load = self.load.entry(agent.clone()).or_default();
                *load += 1;
                let load = *load;
                let max = self.max_load.entry(agent.clone()).or_default();
                *max = (*max).max(load);
                self.assignments.push(Assignment {
                    at_ms,
                    conversation: conversation.as_str().to_owned(),
                    agent: agent.as_str().to_owned(),
                });
            }
            Effect::Unassigned { conversation, team, agent, .. } => {
                let track = self.join(conversation, team, at_ms);
                track.agent = None;
                track.waiting_since = Some(at_ms);
                self.release(agent);
            }
            Effect::Queued { conversation, team, .. } | Effect::OutsideHours { conversation, team, .. } => {
                let track = self.join(conversation, team, at_ms);
                track.waiting_since.get_or_insert(at_ms);
                let first = !track.waited;
                track.waited = true;
                let counted = track.counted;
                if first && counted {
                    self.team(team).queued += 1;
                }
            }
            Effect::Reopened { conversation, team, .. } => {
                let track = self.join(conversation, team, at_ms);
                track.waiting_since = Some(at_ms);
            }
            Effect::Closed { conversation, team, agent, .. } => {
                if let Some(agent) = agent {
                    let holding = self.conversations.get(conversation).and_then(|t| t.agent.as_ref()) == Some(agent);
                    if holding {
                        self.release(agent);
                    }
                }
                let abandoned = self
                    .conversations
                    .remove(conversation)
                    .is_some_and(|track| track.agent.is_none() && track.waited && track.counted);
                if abandoned {
                    self.team(team).abandoned += 1;
                }
            }
            Effect::Welcome { conversation, team, .. } => {
                self.join(conversation, team, at_ms);
            }
            Effect::QueuePosition { .. } | Effect::AgentStatusChanged { .. } => {}
        }
    }

    /// Records `depth` as the queue depth of `team` in bucket `bucket`.
    pub(crate) fn depth(&mut self, team: &TeamId, bucket: usize, depth: u64) {
        let counts = self.team(team);
        counts.max_depth = counts.max_depth.max(depth);
        if counts.depth.len() <= bucket {
            counts.depth.resize(bucket.saturating_add(1), 0);
        }
        if let Some(slot) = counts.depth.get_mut(bucket) {
            *slot = (*slot).max(depth);
        }
    }

    /// The report, with `buckets` queue-depth buckets per team.
    pub(crate) fn finish(self, mut report: Report, buckets: usize) -> Report {
        let mut all_waits = Vec::new();
        let mut all = TeamReport { team: "all".to_owned(), ..TeamReport::default() };
        let mut cvs = Vec::new();
        for (team, mut counts) in self.teams {
            let wait = Waits::of(&mut counts.waits);
            all_waits.extend_from_slice(&counts.waits);
            let assignments: u64 = counts.received.values().sum();
            let members = counts.received.len();
            let (load_cv, load_max, load_min) = spread(&counts.received);
            if members > 0 {
                cvs.push(load_cv);
            }
            for (agent, received) in &counts.received {
                report.agents.push(AgentReport {
                    team: team.as_str().to_owned(),
                    agent: agent.as_str().to_owned(),
                    received: *received,
                    max_concurrent: self.max_load.get(agent).copied().unwrap_or(0),
                    share: ratio(*received, assignments, 0.0),
                });
            }
            all.conversations += counts.conversations;
            all.assigned += counts.assigned;
            all.queued += counts.queued;
            all.abandoned += counts.abandoned;
            all.assignments += assignments;
            all.max_queue_depth = all.max_queue_depth.max(counts.max_depth);
            all.load_max = all.load_max.max(load_max);
            all.load_min = if report.teams.is_empty() { load_min } else { all.load_min.min(load_min) };
            let mut depth = counts.depth;
            depth.resize(buckets.max(depth.len()), 0);
            report.depth.push(DepthSeries { team: team.as_str().to_owned(), max_depth: depth });
            report.teams.push(TeamReport {
                team: team.as_str().to_owned(),
                conversations: counts.conversations,
                assigned: counts.assigned,
                assignment_rate: ratio(counts.assigned, counts.conversations, 1.0),
                queued: counts.queued,
                abandoned: counts.abandoned,
                wait,
                assignments,
                load_cv,
                load_max,
                load_min,
                max_queue_depth: counts.max_depth,
            });
        }
        all.assignment_rate = ratio(all.assigned, all.conversations, 1.0);
        all.load_cv = if cvs.is_empty() { 0.0 } else { cvs.iter().sum::<f64>() / cvs.len() as f64 };
        all.wait = Waits::of(&mut all_waits);
        report.wait_histogram = histogram(&all_waits);
        report.teams.push(all);
        report.assignments = self.assignments;
        report
    }
}

fn ratio(part: u64, whole: u64, empty: f64) -> f64 {
    if whole == 0 { empty } else { part as f64 / whole as f64 }
}

/// Coefficient of variation, max and min of the members' assignments.
fn spread(received: &BTreeMap<AgentId, u64>) -> (f64, u64, u64) {
    if received.is_empty() {
        return (0.0, 0, 0);
    }
    let n = received.len() as f64;
    let mean = received.values().map(|&r| r as f64).sum::<f64>() / n;
    let variance = received.values().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / n;
    let cv = if mean > 0.0 { variance.sqrt() / mean } else { 0.0 };
    let max = received.values().copied().max().unwrap_or(0);
    let min = received.values().copied().min().unwrap_or(0);
    (cv, max, min)
}

fn histogram(sorted_waits: &[i64]) -> Vec<u64> {
    let mut counts = vec![0u64; WAIT_BUCKETS_MS.len() + 1];
    for wait in sorted_waits {
        let slot = WAIT_BUCKETS_MS.iter().position(|bound| wait <= bound).unwrap_or(WAIT_BUCKETS_MS.len());
        if let Some(count) = counts.get_mut(slot) {
            *count += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<i64> = (1..=100).rev().collect();
        let waits = Waits::of(&mut samples);
        assert_eq!((waits.count, waits.p50_ms, waits.p90_ms, waits.p99_ms, waits.max_ms), (100, 50, 90, 99, 100));
        assert_eq!(Waits::of(&mut []), Waits::default());
        let mut one = [7];
        assert_eq!(Waits::of(&mut one).p50_ms, 7);
    }

    #[test]
    fn spread_is_zero_when_even_and_grows_with_imbalance() {
        let even: BTreeMap<AgentId, u64> = [("a", 5), ("b", 5)].map(|(a, n)| (AgentId::new(a), n)).into();
        assert_eq!(spread(&even), (0.0, 5, 5));
        let skewed: BTreeMap<AgentId, u64> = [("a", 9), ("b", 1)].map(|(a, n)| (AgentId::new(a), n)).into();
        let (cv, max, min) = spread(&skewed);
        assert!((cv - 0.8).abs() < 1e-9, "{cv}");
        assert_eq!((max, min), (9, 1));
    }

    #[test]
    fn the_histogram_puts_each_wait_under_its_bound() {
        assert_eq!(histogram(&[0, 1, 5_000, 7_200_000]), vec![1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
