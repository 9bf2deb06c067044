//! The end of a message's attempt: what the core decides when its jobs are all over
//! (see the rules in core.rs).

use super::{Core, Effect, Message};
use crate::qmgr::bounce::{self, DsnRecipient, Kind, NoticeKind};
use crate::qmgr::scheduler::retry_delay;
use sloop_common::spool::status::{self, Outcome, RcptStatus};
use sloop_common::spool::writer::{Effect as SpoolEffect, Plan};
use sloop_common::spool::QueueId;
use std::time::Duration;

impl Core {
    /// Decides the fate of a message whose jobs are all over.
    pub(super) fn decide(&mut self, id: QueueId, now: u64, out: &mut Vec<Effect>) {
        let Some(mut msg) = self.active.remove(&id) else {
            return;
        };
        let retry_soon = SpoolEffect::Defer {
            id,
            delay: self.policy.retry_min,
        };
        if msg.io_error {
            out.push(Effect::Spool(retry_soon));
            return;
        }
        // If the removal fails, what it would have recorded is recorded first.
        let mut fallback = Vec::new();
        if !msg.unrecorded.is_empty() {
            fallback.push(SpoolEffect::Record {
                id,
                lines: std::mem::take(&mut msg.unrecorded),
            });
        }
        fallback.push(retry_soon);
        let n = msg.env.recipients.len();
        let pending: Vec<usize> = (0..n).filter(|&i| !msg.status.is_final(i)).collect();
        let age = now.saturating_sub(msg.env.arrival);
        let mut steps = Vec::new();
        if !pending.is_empty() {
            if Duration::from_secs(age) <= self.policy.max_lifetime {
                self.defer(id, &msg, &pending, now, out);
                return;
            }
            steps.push((
                SpoolEffect::Record {
                    id,
                    lines: self.expire(id, &mut msg, &pending, now, out),
                },
                true,
            ));
        }
        let failed: Vec<usize> = (0..n)
            .filter(|&i| {
                msg.status.recipients[i].as_ref().map(|s| s.outcome) == Some(Outcome::Fail)
            })
            .collect();
        if !failed.is_empty() && msg.status.bounce_id.is_none() {
            if let Some(notice) = self.failure_notice(id, &msg, &failed, now, out) {
                steps.push((notice, true));
            }
        }
        // An expiry record or a notice record creates the log if it was not there.
        let has_log = msg.has_log || !steps.is_empty();
        steps.push((
            SpoolEffect::Retire {
                id,
                size: msg.env.size,
                has_log,
            },
            true,
        ));
        out.push(Effect::Plan(Plan {
            id,
            steps,
            fallback,
        }));
    }

    /// Pending recipients of a young message: defer it (with a delay warning if due).
    fn defer(
        &self,
        id: QueueId,
        msg: &Message,
        pending: &[usize],
        now: u64,
        out: &mut Vec<Effect>,
    ) {
        let age = now.saturating_sub(msg.env.arrival);
        let attempts = pending
            .iter()
            .filter_map(|&i| msg.status.recipients[i].as_ref().map(|s| s.attempts))
            .max()
            .unwrap_or(1);
        let delay = retry_delay(attempts, self.policy.retry_min, self.policy.retry_max);
        let mut steps = Vec::new();
        if let Some(after) = self.policy.delay_warning {
            let due = Duration::from_secs(age) >= after;
            if due && !msg.status.warned && !msg.env.sender.is_empty() {
                let tried: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|&i| msg.status.recipients[i].is_some())
                    .collect();
                let recipients = dsn_recipients(msg, &tried, Kind::Delay);
                if !recipients.is_empty() {
                    // A warning that cannot be sent is logged; the deferral goes on.
                    steps.push((
                        self.policy.notice(id, NoticeKind::Delay, recipients, now),
                        false,
                    ));
                }
            }
        }
        steps.push((SpoolEffect::Defer { id, delay }, true));
        out.push(Effect::Plan(Plan {
            id,
            steps,
            fallback: vec![SpoolEffect::Defer {
                id,
                delay: self.policy.retry_min,
            }],
        }));
    }

    /// Turns the pending recipients of an expired message into failures; returns the
    /// status lines recording it.
    fn expire(
        &self,
        id: QueueId,
        msg: &mut Message,
        pending: &[usize],
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Vec<String> {
        let days = self.policy.max_lifetime.as_secs_f64() / 86400.0;
        let mut lines = Vec::new();
        for &i in pending {
            let last = msg.status.recipients[i]
                .as_ref()
                .map(|s| s.text.clone())
                .unwrap_or_default();
            let text = format!("message expired after {days:.1} days in queue; last error: {last}");
            lines.push(status::result_line(i, Outcome::Fail, "4.4.7", &text));
            out.push(Effect::Info(format!(
                "{id}: to=<{}>, delay={}, dsn=4.4.7, status=expired, returned to sender ({text})",
                msg.env.recipients[i].address,
                now.saturating_sub(msg.env.arrival)
            )));
            msg.status.recipients[i] = Some(RcptStatus {
                time: now,
                outcome: Outcome::Fail,
                dsn: "4.4.7".into(),
                text,
                attempts: 0,
            });
        }
        lines
    }

    /// The notice for failed recipients: a bounce to the sender, or for a message
    /// from `<>` one copy to the postmaster; `None` when nobody is to be told.
    fn failure_notice(
        &self,
        id: QueueId,
        msg: &Message,
        failed: &[usize],
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Option<SpoolEffect> {
        if msg.env.sender.is_empty() {
            let to_postmaster = msg.env.recipients.iter().all(|r| {
                let local = r
                    .address
                    .rsplit_once('@')
                    .map_or(r.address.as_str(), |(l, _)| l);
                local.eq_ignore_ascii_case("postmaster")
            });
            if to_postmaster {
                out.push(Effect::Info(format!(
                    "{id}: undeliverable message from <> dropped (never bounce a bounce)"
                )));
                return None;
            }
            return Some(
                self.policy
                    .notice(id, NoticeKind::PostmasterCopy, Vec::new(), now),
            );
        }
        let recipients = dsn_recipients(msg, failed, Kind::Failure);
        if recipients.is_empty() {
            out.push(Effect::Info(format!(
                "{id}: no notification requested (NOTIFY)"
            )));
            return None;
        }
        Some(self.policy.notice(id, NoticeKind::Failure, recipients, now))
    }
}

/// The recipients `which` of `msg` that asked for a notice of `kind`, with their results.
fn dsn_recipients(msg: &Message, which: &[usize], kind: Kind) -> Vec<DsnRecipient> {
    which
        .iter()
        .filter_map(|&i| {
            Some((
                msg.env.recipients.get(i)?,
                msg.status.recipients.get(i)?.as_ref()?,
            ))
        })
        .filter(|(r, _)| bounce::wants_notice(r, kind))
        .map(|(r, s)| DsnRecipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            status: s.dsn.clone(),
            diagnostic: s.text.clone(),
        })
        .collect()
}
