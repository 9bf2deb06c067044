//! The core's decisions, without a file system: one test per decision, then a
//! randomized property test driving whole message lives against a model spool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use sloop_common::spool::Recipient;

const NOW: u64 = 1_800_000_000;

fn policy() -> Policy {
    Policy {
        retry_min: Duration::from_secs(60),
        retry_max: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(5 * 86400),
        delay_warning: None,
        local_domains: vec!["local.test".into()],
        hostname: "mx.test".into(),
    }
}

fn envelope(sender: &str, rcpts: &[&str], arrival: u64) -> Envelope {
    let mut env = Envelope::new(sender, rcpts.iter().map(|r| Recipient::new(*r)).collect());
    env.arrival = arrival;
    env.size = 100;
    env
}

fn fresh(n: usize) -> MessageStatus {
    MessageStatus {
        recipients: vec![None; n],
        ..Default::default()
    }
}

/// Loads a message; returns its ID and its jobs.
fn load(core: &mut Core, env: Envelope, status: MessageStatus) -> (QueueId, Vec<JobSpec>) {
    let id = QueueId::new();
    let jobs = core
        .handle(Event::Loaded { id, env, status })
        .into_iter()
        .filter_map(|e| match e {
            Effect::Schedule(j) => Some(j),
            _ => None,
        })
        .collect();
    (id, jobs)
}

fn result(id: QueueId, index: usize, outcome: Outcome, dsn: &str) -> Event {
    Event::Result {
        id,
        index,
        outcome,
        dsn: dsn.into(),
        relay: "mx[192.0.2.1]:25".into(),
        text: format!("{dsn} text"),
        now: NOW,
    }
}

fn over(id: QueueId, unanswered: Vec<usize>) -> Event {
    Event::JobOver {
        id,
        unanswered,
        dsn: "4.3.0".into(),
        why: "delivery worker died".into(),
        now: NOW,
    }
}

/// Ends the turn with every status log written; returns the plan decided for `id`.
fn settle(core: &mut Core) -> Vec<Effect> {
    for (id, _) in core.take_status_lines() {
        core.handle(Event::Written { id, ok: true });
    }
    core.handle(Event::Settle { now: NOW })
}

/// The plan in `effects` as (step name, must succeed) pairs, and its fallback's names.
fn plan_of(effects: &[Effect]) -> (Vec<(String, bool)>, String) {
    let plan = effects
        .iter()
        .find_map(|e| match e {
            Effect::Plan(p) => Some(p),
            _ => None,
        })
        .expect("a plan");
    let steps = plan.steps.iter().map(|(e, m)| (name(e), *m)).collect();
    let fallback: Vec<String> = plan.fallback.iter().map(name).collect();
    (steps, fallback.join(", "))
}

fn name(e: &SpoolEffect) -> String {
    match e {
        SpoolEffect::Record { lines, .. } => format!("record {}", lines.len()),
        SpoolEffect::Defer { delay, .. } => format!("defer {}", delay.as_secs()),
        SpoolEffect::Hold { .. } => "hold".into(),
        SpoolEffect::Retire { .. } => "retire".into(),
        SpoolEffect::Forget { .. } => "forget".into(),
        SpoolEffect::Notice { notice, .. } => format!("notice {}", notice.describe()),
    }
}

/// Whether the plan in `effects` removes a status log along with the queue file.
fn retire_has_log(effects: &[Effect]) -> bool {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Plan(p) => p.steps.iter().find_map(|(s, _)| match s {
                SpoolEffect::Retire { has_log, .. } => Some(*has_log),
                _ => None,
            }),
            _ => None,
        })
        .expect("a retire step")
}

fn step(s: &str) -> (String, bool) {
    (s.to_string(), true)
}

#[test]
fn a_deferred_recipient_is_retried_with_a_backoff_that_doubles() {
    let mut core = Core::new(policy());
    let (id, jobs) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW),
        fresh(1),
    );
    assert_eq!(jobs.len(), 1);
    core.handle(result(id, 0, Outcome::Defer, "4.4.1"));
    core.handle(over(id, vec![]));
    let lines = core.take_status_lines();
    assert_eq!(lines.len(), 1, "a deferral is recorded");
    let effects = core.handle(Event::Settle { now: NOW });
    assert_eq!(
        plan_of(&effects),
        (vec![step("defer 60")], "defer 60".into())
    );
    assert_eq!(core.len(), 0, "the message left the active set");

    // Third attempt: 60 s * 2^2.
    let mut st = fresh(1);
    st.recipients[0] = Some(RcptStatus {
        time: NOW,
        outcome: Outcome::Defer,
        dsn: "4.4.1".into(),
        text: "x".into(),
        attempts: 2,
    });
    let (id, _) = load(&mut core, envelope("a@x.test", &["b@remote.test"], NOW), st);
    core.handle(result(id, 0, Outcome::Defer, "4.4.1"));
    core.handle(over(id, vec![]));
    assert_eq!(plan_of(&settle(&mut core)).0, vec![step("defer 240")]);
}

#[test]
fn an_expired_message_records_its_failures_then_bounces_then_goes() {
    let mut core = Core::new(policy());
    let old = NOW - 6 * 86400;
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test", "c@remote.test"], old),
        fresh(2),
    );
    core.handle(result(id, 0, Outcome::Ok, "2.0.0"));
    core.handle(result(id, 1, Outcome::Defer, "4.4.1"));
    core.handle(over(id, vec![]));
    let effects = settle(&mut core);
    let (steps, fallback) = plan_of(&effects);
    assert_eq!(
        steps,
        vec![
            step("record 1"),
            step("notice sender non-delivery notification"),
            step("retire")
        ]
    );
    assert_eq!(fallback, "defer 60");
    assert!(
        retire_has_log(&effects),
        "the expiry was recorded: its log goes too"
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Info(l) if l.contains("dsn=4.4.7, status=expired"))));
}

#[test]
fn a_failure_is_bounced_before_the_message_is_removed() {
    let mut core = Core::new(policy());
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW),
        fresh(1),
    );
    core.handle(result(id, 0, Outcome::Fail, "5.1.1"));
    core.handle(over(id, vec![]));
    let effects = settle(&mut core);
    let plan = effects
        .iter()
        .find_map(|e| match e {
            Effect::Plan(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let SpoolEffect::Notice { notice, .. } = &plan.steps[0].0 else {
        panic!("{plan:?}");
    };
    let text = format!("{notice:?}");
    assert!(text.contains("Failure") && text.contains("5.1.1"), "{text}");
    assert!(matches!(plan.steps[1].0, SpoolEffect::Retire { .. }));

    // NOTIFY=NEVER: nobody to tell, straight to removal.
    let mut env = envelope("a@x.test", &["b@remote.test"], NOW);
    env.recipients[0].notify = Some("NEVER".into());
    let (id, _) = load(&mut core, env, fresh(1));
    core.handle(result(id, 0, Outcome::Fail, "5.1.1"));
    core.handle(over(id, vec![]));
    assert_eq!(plan_of(&settle(&mut core)).0, vec![step("retire")]);
}

#[test]
fn a_bounce_is_never_bounced() {
    let mut core = Core::new(policy());
    // A failed message from <> goes once, whole, to the postmaster...
    let (id, _) = load(&mut core, envelope("", &["b@remote.test"], NOW), fresh(1));
    core.handle(result(id, 0, Outcome::Fail, "5.1.1"));
    core.handle(over(id, vec![]));
    assert_eq!(
        plan_of(&settle(&mut core)).0,
        vec![
            step("notice undeliverable message from <> sent to <postmaster@local.test>"),
            step("retire")
        ]
    );
    // ...and when that copy fails too, it is dropped.
    let (id, _) = load(
        &mut core,
        envelope("", &["postmaster@local.test"], NOW),
        fresh(1),
    );
    core.handle(result(id, 0, Outcome::Fail, "5.2.2"));
    core.handle(over(id, vec![]));
    let effects = settle(&mut core);
    assert_eq!(plan_of(&effects).0, vec![step("retire")]);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Info(l) if l.contains("never bounce a bounce"))));
    // A bounce already committed (recorded in the status log) is not sent again.
    let mut st = fresh(1);
    st.bounce_id = Some("X".into());
    st.recipients[0] = Some(RcptStatus {
        time: NOW,
        outcome: Outcome::Fail,
        dsn: "5.1.1".into(),
        text: "x".into(),
        attempts: 1,
    });
    let (_, jobs) = load(&mut core, envelope("a@x.test", &["b@remote.test"], NOW), st);
    assert!(jobs.is_empty());
    assert_eq!(plan_of(&settle(&mut core)).0, vec![step("retire")]);
}

#[test]
fn an_unreadable_file_is_held_once_or_deferred_if_it_may_pass() {
    let mut core = Core::new(policy());
    let id = QueueId::new();
    let held = core.handle(Event::Unreadable {
        id,
        problem: LoadError::Permanent("bad trailer".into()),
    });
    assert!(
        matches!(&held[..], [Effect::Spool(SpoolEffect::Hold { why, .. })] if why == "bad trailer")
    );
    let deferred = core.handle(Event::Unreadable {
        id,
        problem: LoadError::Transient("EIO".into()),
    });
    assert!(deferred.iter().any(|e| matches!(
        e,
        Effect::Spool(SpoolEffect::Defer { delay, .. }) if delay.as_secs() == 60
    )));
    assert_eq!(core.len(), 0);
}

#[test]
fn a_message_an_operator_took_away_is_dropped_and_a_deleted_ones_log_forgotten() {
    let mut core = Core::new(policy());
    let (held, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW),
        fresh(1),
    );
    let (deleted, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW),
        fresh(1),
    );
    for id in [held, deleted] {
        core.handle(result(id, 0, Outcome::Ok, "2.0.0"));
        core.handle(over(id, vec![]));
    }
    let e = core.handle(Event::Vanished {
        id: held,
        deleted: false,
    });
    assert!(!e
        .iter()
        .any(|e| matches!(e, Effect::Spool(SpoolEffect::Forget { .. }))));
    let e = core.handle(Event::Vanished {
        id: deleted,
        deleted: true,
    });
    assert!(e
        .iter()
        .any(|e| matches!(e, Effect::Spool(SpoolEffect::Forget { .. }))));
    assert!(settle(&mut core).is_empty(), "nothing left to decide");
    // A result arriving after the operator took it is ignored.
    assert!(core
        .handle(result(held, 0, Outcome::Ok, "2.0.0"))
        .is_empty());
}

#[test]
fn a_partial_delivery_records_the_successes_and_retries_only_the_rest() {
    let mut core = Core::new(policy());
    let env = envelope("a@x.test", &["u@local.test", "b@remote.test"], NOW);
    let (id, jobs) = load(&mut core, env.clone(), fresh(2));
    assert_eq!(jobs.len(), 2, "one local job, one remote");
    core.handle(result(id, 0, Outcome::Ok, "2.0.0"));
    core.handle(over(id, vec![]));
    core.handle(result(id, 1, Outcome::Defer, "4.4.1"));
    core.handle(over(id, vec![]));
    let lines = core.take_status_lines();
    assert_eq!(
        lines.len(),
        2,
        "the success is recorded too: the message stays"
    );
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    let effects = core.handle(Event::Settle { now: NOW });
    assert_eq!(plan_of(&effects).0, vec![step("defer 60")]);
    // Next attempt: only the deferred recipient gets a job.
    let (_, jobs) = load(&mut core, env, status::parse(&text, 2));
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].rcpts, vec![1]);
}

#[test]
fn a_worker_crash_defers_the_recipients_without_a_result() {
    let mut core = Core::new(policy());
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test", "c@remote.test"], NOW),
        fresh(2),
    );
    core.handle(result(id, 0, Outcome::Ok, "2.0.0"));
    let e = core.handle(over(id, vec![1]));
    assert!(e.iter().any(
        |e| matches!(e, Effect::Info(l) if l.contains("c@remote.test") && l.contains("status=deferred (delivery worker died)"))
    ));
    assert_eq!(plan_of(&settle(&mut core)).0, vec![step("defer 60")]);
}

#[test]
fn a_message_delivered_whole_in_one_turn_writes_no_status_and_goes() {
    let mut core = Core::new(policy());
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW),
        fresh(1),
    );
    core.handle(result(id, 0, Outcome::Ok, "2.0.0"));
    core.handle(over(id, vec![]));
    assert!(
        core.take_status_lines().is_empty(),
        "the removal is the record"
    );
    let effects = core.handle(Event::Settle { now: NOW });
    assert_eq!(plan_of(&effects).0, vec![step("retire")]);
}

#[test]
fn results_that_cannot_be_written_defer_the_message_instead_of_removing_it() {
    let mut core = Core::new(policy());
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test", "c@remote.test"], NOW),
        fresh(2),
    );
    core.handle(result(id, 0, Outcome::Ok, "2.0.0"));
    core.handle(result(id, 1, Outcome::Fail, "5.1.1"));
    core.handle(over(id, vec![]));
    for (id, _) in core.take_status_lines() {
        core.handle(Event::Written { id, ok: false });
    }
    let effects = core.handle(Event::Settle { now: NOW });
    assert!(matches!(
        &effects[..],
        [Effect::Spool(SpoolEffect::Defer { delay, .. })] if delay.as_secs() == 60
    ));
}

#[test]
fn a_delay_warning_goes_once_and_never_stops_the_deferral() {
    let mut p = policy();
    p.delay_warning = Some(Duration::from_secs(3600));
    let mut core = Core::new(p);
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW - 7200),
        fresh(1),
    );
    core.handle(result(id, 0, Outcome::Defer, "4.4.1"));
    core.handle(over(id, vec![]));
    let (steps, _) = plan_of(&settle(&mut core));
    assert_eq!(
        steps,
        vec![
            ("notice sender delay notification".to_string(), false),
            step("defer 60")
        ]
    );
    let mut st = fresh(1);
    st.warned = true;
    let (id, _) = load(
        &mut core,
        envelope("a@x.test", &["b@remote.test"], NOW - 7200),
        st,
    );
    core.handle(result(id, 0, Outcome::Defer, "4.4.1"));
    core.handle(over(id, vec![]));
    assert_eq!(plan_of(&settle(&mut core)).0, vec![step("defer 60")]);
}

/// A small deterministic generator (xorshift64*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A message as the model spool sees it.
struct Model {
    env: Envelope,
    /// The status log's text.
    log: String,
    /// Where its file is: true in active/ or deferred/, false once retired.
    queued: bool,
    /// Each recipient's true final outcome, as the delivery agents reported it.
    truth: Vec<Option<Outcome>>,
}

/// Carries out effects on the model; checks every removal. Returns messages deferred.
fn execute(
    effects: Vec<Effect>,
    models: &mut HashMap<QueueId, Model>,
    jobs: &mut Vec<JobSpec>,
    rng: &mut Rng,
    seed: u64,
) {
    for e in effects {
        match e {
            Effect::Schedule(j) => jobs.push(j),
            Effect::Info(_) | Effect::Warn(_) => {}
            Effect::Spool(s) => apply(s, models, seed),
            Effect::Plan(plan) => {
                let mut failed = false;
                for (step, must) in plan.steps {
                    // Any step may fail (a full disk); only required ones matter.
                    if rng.chance(10) {
                        if must {
                            failed = true;
                            break;
                        }
                        continue;
                    }
                    apply(step, models, seed);
                }
                if failed {
                    for f in plan.fallback {
                        apply(f, models, seed);
                    }
                }
            }
        }
    }
}

fn apply(e: SpoolEffect, models: &mut HashMap<QueueId, Model>, seed: u64) {
    match e {
        SpoolEffect::Record { id, lines } => {
            let m = models.get_mut(&id).unwrap();
            for l in lines {
                m.log.push_str(&l);
                m.log.push('\n');
            }
        }
        SpoolEffect::Notice { id, notice } => {
            let line = notice.record_line(&QueueId::new());
            let m = models.get_mut(&id).unwrap();
            m.log.push_str(&line);
            m.log.push('\n');
        }
        SpoolEffect::Retire { id, .. } => {
            let m = models.get_mut(&id).unwrap();
            let n = m.env.recipients.len();
            let st = status::parse(&m.log, n);
            for i in 0..n {
                // Final in truth (the agents said so), or recorded as final (expired).
                assert!(
                    m.truth[i].is_some() || st.is_final(i),
                    "seed {seed}: {id} removed with recipient {i} neither delivered nor failed"
                );
            }
            m.queued = false;
        }
        SpoolEffect::Defer { .. } | SpoolEffect::Hold { .. } | SpoolEffect::Forget { .. } => {}
    }
}

#[test]
fn no_sequence_of_events_loses_a_recipient() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut p = policy();
        if rng.chance(30) {
            p.delay_warning = Some(Duration::from_secs(60));
        }
        let mut core = Core::new(p);
        let mut models: HashMap<QueueId, Model> = HashMap::new();
        let mut jobs: Vec<JobSpec> = Vec::new();
        let domains = ["local.test", "a.test", "b.test"];
        for _ in 0..(1 + rng.below(6)) {
            let n = 1 + rng.below(4);
            let rcpts: Vec<String> = (0..n)
                .map(|k| format!("u{k}@{}", domains[rng.below(3)]))
                .collect();
            let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            let sender = if rng.chance(20) { "" } else { "s@x.test" };
            // Some are old enough to expire.
            let arrival = if rng.chance(15) {
                NOW - 6 * 86400
            } else {
                NOW - 600
            };
            let env = envelope(sender, &refs, arrival);
            let id = QueueId::new();
            models.insert(
                id,
                Model {
                    env: env.clone(),
                    log: String::new(),
                    queued: true,
                    truth: vec![None; n],
                },
            );
            let effects = core.handle(Event::Loaded {
                id,
                env,
                status: fresh(n),
            });
            execute(effects, &mut models, &mut jobs, &mut rng, seed);
        }
        for _round in 0..40 {
            // Run some of the jobs: each recipient answered, or not (a crash).
            let mut k = 0;
            while k < jobs.len() {
                if rng.chance(40) {
                    k += 1;
                    continue;
                }
                let job = jobs.swap_remove(k);
                let mut unanswered = Vec::new();
                for &i in &job.rcpts {
                    if rng.chance(15) {
                        unanswered.push(i);
                        continue;
                    }
                    let outcome = match rng.below(3) {
                        0 => Outcome::Ok,
                        1 => Outcome::Fail,
                        _ => Outcome::Defer,
                    };
                    if outcome.is_final() {
                        let t = &mut models.get_mut(&job.msg).unwrap().truth[i];
                        t.get_or_insert(outcome);
                    }
                    let e = core.handle(result(job.msg, i, outcome, "x.y.z"));
                    execute(e, &mut models, &mut jobs, &mut rng, seed);
                }
                let e = core.handle(over(job.msg, unanswered));
                execute(e, &mut models, &mut jobs, &mut rng, seed);
            }
            // End of the turn: some logs cannot be written.
            let lines = core.take_status_lines();
            let mut failed: HashSet<QueueId> = HashSet::new();
            for (id, _) in &lines {
                if rng.chance(10) {
                    failed.insert(*id);
                }
            }
            for (id, line) in lines {
                if !failed.contains(&id) {
                    let m = models.get_mut(&id).unwrap();
                    m.log.push_str(&line);
                    m.log.push('\n');
                }
            }
            for id in models.keys().copied().collect::<Vec<_>>() {
                let ok = !failed.contains(&id);
                core.handle(Event::Written { id, ok });
            }
            let e = core.handle(Event::Settle { now: NOW });
            execute(e, &mut models, &mut jobs, &mut rng, seed);
            // Deferred messages come back with what their log says.
            for (id, m) in models.iter() {
                if m.queued && !core.contains(id) && rng.chance(60) {
                    let status = status::parse(&m.log, m.env.recipients.len());
                    let e = core.handle(Event::Loaded {
                        id: *id,
                        env: m.env.clone(),
                        status,
                    });
                    for eff in e {
                        if let Effect::Schedule(j) = eff {
                            jobs.push(j);
                        }
                    }
                }
            }
            // Every message is in the active set with work to do, or out of it.
            for id in core.active.keys() {
                let queued_jobs = jobs.iter().any(|j| j.msg == *id);
                assert!(
                    queued_jobs || core.finished.contains(id),
                    "seed {seed}: {id} is stuck in the active set"
                );
            }
        }
    }
}
