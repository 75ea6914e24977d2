//! Conversation histories and routing explanations (`Assignments.Explain`) into protobuf, and
//! back for clients that print them (`switchboard ctl explain`).

use super::effects::{EffectOrigin, effect_to_pb};
use super::model::{channel_from_pb, channel_to_pb, required_status, status_to_pb, strategy_from_pb, strategy_to_pb};
use super::{ConvertError, invalid};
use switchboard_core::{Candidate, Explanation, Routed, Verdict};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::routing_explanation::Routed as PbRouted;
use switchboard_raft::History;

/// A node's history of one conversation as the `Explain` answer.
pub fn history_to_pb(history: &History) -> pb::ExplainResponse {
    let decisions = history
        .decisions
        .iter()
        .map(|decision| {
            let origin = EffectOrigin { log_index: decision.index, at_ms: decision.at_ms };
            pb::ExplainedDecision {
                log_index: decision.index,
                at_ms: decision.at_ms,
                cause: decision.cause.clone(),
                event_id: super::effects::public_event_id(decision.event_id.as_ref()),
                explanation: decision.explanation.as_ref().map(explanation_to_pb),
                effects: decision
                    .effects
                    .iter()
                    .map(|(sequence, effect)| effect_to_pb(effect, origin, *sequence, decision.event_id.as_ref()))
                    .collect(),
            }
        })
        .collect();
    pb::ExplainResponse {
        decisions,
        oldest_index: history.oldest_index,
        applied_index: history.applied_index,
        earlier_out_of_range: history.earlier_out_of_range,
        omitted: history.omitted,
    }
}

/// A routing explanation as protobuf.
pub fn explanation_to_pb(why: &Explanation) -> pb::RoutingExplanation {
    let (routed, matched_on, reassign) = match &why.routed {
        Routed::Rule { rule, matched_on } => (PbRouted::Rule(rule.to_string()), matched_on.clone(), false),
        Routed::DefaultTeam => (PbRouted::DefaultTeam(true), Vec::new(), false),
        Routed::Reopened { reassign_if_unavailable } => {
            (PbRouted::Reopened(true), Vec::new(), *reassign_if_unavailable)
        }
    };
    pb::RoutingExplanation {
        routed: Some(routed),
        matched_on,
        team: why.team.to_string(),
        strategy: strategy_to_pb(why.strategy).into(),
        outside_hours: why.outside_hours,
        assign_delay_s: why.assign_delay_s,
        reassign_if_unavailable: reassign,
        dedicated: why.dedicated.as_ref().map(candidate_to_pb),
        returning: why.returning.as_ref().map(candidate_to_pb),
        rule_agent: why.rule_agent.as_ref().map(candidate_to_pb),
        candidates: why.candidates.iter().map(candidate_to_pb).collect(),
    }
}

fn candidate_to_pb(candidate: &Candidate) -> pb::Candidate {
    let mut out = pb::Candidate {
        agent: candidate.agent.to_string(),
        reason: candidate.verdict.to_string(),
        open: candidate.open,
        weight: candidate.weight,
        ..Default::default()
    };
    let verdict = match &candidate.verdict {
        Verdict::Eligible => pb::Verdict::Eligible,
        Verdict::NotMember => pb::Verdict::NotMember,
        Verdict::MissingSkill { skill, level } => {
            out.skill = skill.to_string();
            out.level = u32::from(*level);
            pb::Verdict::MissingSkill
        }
        Verdict::MissingLanguage(language) => {
            out.language = language.to_string();
            pb::Verdict::MissingLanguage
        }
        Verdict::Excluded => pb::Verdict::Excluded,
        Verdict::Status(status) => {
            out.set_status(status_to_pb(*status));
            pb::Verdict::Status
        }
        Verdict::AtMaxOpen { open, max_open } => {
            (out.count, out.limit) = (*open, *max_open);
            pb::Verdict::AtMaxOpen
        }
        Verdict::DailyLimit { received, daily_limit } => {
            (out.count, out.limit) = (*received, *daily_limit);
            pb::Verdict::DailyLimit
        }
        Verdict::ZeroWeight => pb::Verdict::ZeroWeight,
        Verdict::ChannelFull { channel, limit } => {
            out.set_channel(channel_to_pb(*channel));
            out.limit = *limit;
            pb::Verdict::ChannelFull
        }
    };
    out.set_verdict(verdict);
    out
}

/// A routing explanation read back from protobuf (what a server sent), refusing what no server
/// sends.
pub fn explanation_from_pb(why: pb::RoutingExplanation) -> Result<Explanation, ConvertError> {
    let routed = match why.routed {
        Some(PbRouted::Rule(rule)) => Routed::Rule { rule: rule.into(), matched_on: why.matched_on },
        Some(PbRouted::DefaultTeam(_)) => Routed::DefaultTeam,
        Some(PbRouted::Reopened(_)) => Routed::Reopened { reassign_if_unavailable: why.reassign_if_unavailable },
        None => return Err(invalid("explanation.routed", "is missing")),
    };
    let candidate = |c: Option<pb::Candidate>, field: &str| c.map(|c| candidate_from_pb(c, field)).transpose();
    Ok(Explanation {
        routed,
        team: why.team.into(),
        strategy: strategy_from_pb(why.strategy, "explanation.strategy")?,
        outside_hours: why.outside_hours,
        assign_delay_s: why.assign_delay_s,
        dedicated: candidate(why.dedicated, "explanation.dedicated")?,
        returning: candidate(why.returning, "explanation.returning")?,
        rule_agent: candidate(why.rule_agent, "explanation.rule_agent")?,
        candidates: why
            .candidates
            .into_iter()
            .map(|c| candidate_from_pb(c, "explanation.candidates"))
            .collect::<Result<_, _>>()?,
    })
}

fn candidate_from_pb(c: pb::Candidate, field: &str) -> Result<Candidate, ConvertError> {
    let verdict = match pb::Verdict::try_from(c.verdict) {
        Ok(pb::Verdict::Eligible) => Verdict::Eligible,
        Ok(pb::Verdict::NotMember) => Verdict::NotMember,
        Ok(pb::Verdict::MissingSkill) => Verdict::MissingSkill {
            skill: c.skill.into(),
            level: u8::try_from(c.level).map_err(|_| invalid(field, format!("skill level {} over 255", c.level)))?,
        },
        Ok(pb::Verdict::MissingLanguage) => Verdict::MissingLanguage(c.language.into()),
        Ok(pb::Verdict::Excluded) => Verdict::Excluded,
        Ok(pb::Verdict::Status) => Verdict::Status(required_status(c.status, field)?),
        Ok(pb::Verdict::AtMaxOpen) => Verdict::AtMaxOpen { open: c.count, max_open: c.limit },
        Ok(pb::Verdict::DailyLimit) => Verdict::DailyLimit { received: c.count, daily_limit: c.limit },
        Ok(pb::Verdict::ZeroWeight) => Verdict::ZeroWeight,
        Ok(pb::Verdict::ChannelFull) => {
            Verdict::ChannelFull { channel: channel_from_pb(c.channel, field)?, limit: c.limit }
        }
        Ok(pb::Verdict::Unspecified) | Err(_) => {
            return Err(invalid(field, format!("verdict {} is unknown", c.verdict)));
        }
    };
    Ok(Candidate { agent: c.agent.into(), verdict, open: c.open, weight: c.weight })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{AgentStatus, Channel, Strategy};

    #[test]
    fn explanations_survive_the_wire() {
        let candidate = |agent: &str, verdict| Candidate { agent: agent.into(), verdict, open: 2, weight: 7 };
        let why = Explanation {
            routed: Routed::Rule { rule: "vip".into(), matched_on: vec!["tier".into(), "language".into()] },
            team: "support".into(),
            strategy: Strategy::LeastOpen,
            outside_hours: false,
            assign_delay_s: 30,
            dedicated: Some(candidate("ann", Verdict::Status(AgentStatus::Away))),
            returning: None,
            rule_agent: Some(candidate("bob", Verdict::ChannelFull { channel: Channel::Email, limit: 1 })),
            candidates: vec![
                candidate("cy", Verdict::Eligible),
                candidate("di", Verdict::MissingSkill { skill: "billing".into(), level: 3 }),
                candidate("ed", Verdict::MissingLanguage("es".into())),
                candidate("fa", Verdict::AtMaxOpen { open: 4, max_open: 3 }),
                candidate("gu", Verdict::DailyLimit { received: 41, daily_limit: 40 }),
                candidate("ha", Verdict::ZeroWeight),
                candidate("io", Verdict::NotMember),
                candidate("ju", Verdict::Excluded),
            ],
        };
        let wire = explanation_to_pb(&why);
        assert_eq!(wire.candidates[3].reason, "at max_open (4 of 3)");
        assert_eq!(explanation_from_pb(wire).expect("reads back"), why);
        let reopened =
            Explanation { routed: Routed::Reopened { reassign_if_unavailable: true }, candidates: Vec::new(), ..why };
        assert_eq!(explanation_from_pb(explanation_to_pb(&reopened)).expect("reads back"), reopened);
        let mut unknown = explanation_to_pb(&reopened);
        unknown.routed = None;
        assert!(explanation_from_pb(unknown).expect_err("refused").to_string().contains("explanation.routed"));
    }
}
