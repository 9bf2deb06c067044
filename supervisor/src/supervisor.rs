//! The supervisor's state and what it does about each event the loop (event_loop.rs)
//! hands it: start children the pool or the queue manager lacks, account status
//! records, reap exits and schedule restarts with backoff, reload, stop.
//!
//! It talks to children only through signals, their exit status and the status pipe,
//! never through client data. Nothing a child does can make it exit: a crash is logged
//! with its status or signal and the restart delay; a program that cannot be started
//! is retried with backoff. A reload that fails validation changes nothing.

use crate::acceptor::Acceptor;
use crate::backoff::{Backoff, ExitClass, Policy};
use crate::children::{self, ChildKind, Exit, Running, SpawnError, SpawnSpec};
use crate::listeners::{self, Listeners};
use crate::overload::Tracker;
use crate::pool::Pool;
use crate::setup;
use crate::status_pipe::{Record, StatusPipe};
use crate::tls_keys::TlsHandoff;
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Pid, Uid};
use sloop_common::config::values::format_duration;
use sloop_common::config::ConfigError;
use sloop_common::Config;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod balance;

/// How long SIGKILLed children get to disappear before `sloopd` exits anyway.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long more than `min_idle` workers must have been idle before the surplus is
/// retired (Postfix lets idle children go after `max_idle`, 100s).
const IDLE_SURPLUS_GRACE: Duration = Duration::from_secs(60);
/// Longest the loop sleeps without an event.
const MAX_TICK: Duration = Duration::from_secs(1);

/// Everything `sloopd` holds while it runs.
pub struct Supervisor {
    cfg: Config,
    creds: Option<(Uid, Gid)>,
    listeners: Listeners,
    status: StatusPipe,
    tls: TlsHandoff,
    pool: Pool,
    running: BTreeMap<Pid, Running>,
    smtpd_backoff: Backoff,
    qmgr_backoff: Backoff,
    pickup_backoff: Backoff,
    spawner_backoff: Backoff,
    policy: Policy,
    /// Set once SIGTERM/SIGINT arrived: the deadline for children to exit.
    stopping: Option<Instant>,
    /// The busy acceptor (acceptor.rs) and the overload state (overload.rs, balance.rs).
    pub(crate) acceptor: Acceptor,
    pub(crate) overload: Tracker,
    /// Addresses over their share of the pool, as last written to the overload file.
    pub(crate) over_share: Vec<std::net::IpAddr>,
    /// The status file's last text and when it was written.
    pub(crate) status_written: Option<(Instant, String)>,
    /// When connections passed down were last taken back, and when the addresses over
    /// their share were last logged.
    pub(crate) reclaimed: Option<Instant>,
    pub(crate) share_logged: Option<Instant>,
    /// Since when more than `min_idle` workers have been idle.
    surplus_since: Option<Instant>,
    /// The periodic sweep of `tmp/` files whose writer died.
    tmp_sweeper: crate::tmp_sweep::Sweeper,
}

impl Supervisor {
    /// A supervisor on a validated config, with its listeners already bound.
    pub fn new(
        cfg: Config,
        creds: Option<(Uid, Gid)>,
        listeners: Listeners,
        status: StatusPipe,
        acceptor: Acceptor,
        tls: TlsHandoff,
    ) -> Supervisor {
        Supervisor {
            policy: Policy::from_config(&cfg.supervisor),
            cfg,
            creds,
            listeners,
            status,
            tls,
            pool: Pool::default(),
            running: BTreeMap::new(),
            smtpd_backoff: Backoff::default(),
            qmgr_backoff: Backoff::default(),
            pickup_backoff: Backoff::default(),
            spawner_backoff: Backoff::default(),
            stopping: None,
            acceptor,
            overload: Tracker::default(),
            over_share: Vec::new(),
            status_written: None,
            reclaimed: None,
            share_logged: None,
            surplus_since: None,
            tmp_sweeper: Default::default(),
        }
    }

    /// The status pipe's read end, for the poller.
    pub fn status_fd(&self) -> std::os::fd::RawFd {
        self.status.read_fd()
    }

    /// Starts whatever is missing: the queue manager, the pickup, and smtpd workers up to
    /// `min_idle` idle ones (growing up to `max_processes` when all are busy).
    pub fn start_children(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        if self.tls.rotate_if_due(now) {
            self.retire_workers();
        }
        // The root local spawner: only with local.system_users, and only when the
        // other children drop to server.user (else they are root already).
        let spawner_wanted = self.cfg.local.system_users && self.creds.is_some();
        let spawner_running = self
            .running
            .values()
            .any(|r| r.kind == ChildKind::LocalSpawner);
        if spawner_wanted && !spawner_running && self.spawner_backoff.ready(now) {
            self.spawn_one(ChildKind::LocalSpawner, now);
        }
        for kind in [ChildKind::Qmgr, ChildKind::Pickup] {
            let running = self.running.values().any(|r| r.kind == kind);
            if !running && self.backoff_mut(kind).ready(now) {
                self.spawn_one(kind, now);
            }
        }
        let (min_idle, max) = (self.cfg.smtpd.min_idle, self.cfg.smtpd.max_processes);
        // Connections the busy acceptor holds are demand already known: the pool
        // grows by as many at once (a burst is not served min_idle at a time).
        let ready = min_idle.max(self.acceptor.waiting());
        let wanted = self.pool.to_spawn(ready, max);
        for _ in 0..wanted {
            if !self.smtpd_backoff.ready(now) || !self.spawn_one(ChildKind::Smtpd, now) {
                break;
            }
        }
        self.trim_idle(now);
        let spool = sloop_common::spool::Spool::new(&self.cfg.server.spool_dir);
        self.tmp_sweeper.tick(&spool, now);
    }

    /// Retires idle workers beyond `min_idle` once the surplus has lasted
    /// [`IDLE_SURPLUS_GRACE`] (SIGHUP: an idle worker exits at once, pool_proto.rs).
    fn trim_idle(&mut self, now: Instant) {
        let surplus = self.pool.surplus_idle(self.cfg.smtpd.min_idle);
        if surplus.is_empty() {
            self.surplus_since = None;
            return;
        }
        let since = *self.surplus_since.get_or_insert(now);
        if now.duration_since(since) < IDLE_SURPLUS_GRACE {
            return;
        }
        self.surplus_since = None;
        for pid in &surplus {
            self.pool.retire(*pid);
            let pid = Pid::from_raw(*pid as i32);
            if let Some(run) = self.running.get_mut(&pid) {
                run.asked = Some(Signal::SIGHUP);
            }
            children::signal(pid, Signal::SIGHUP);
        }
        log::info!(
            "retiring {} surplus idle sloop-smtpd worker(s) (more than smtpd.min_idle={} \
             idle for {})",
            surplus.len(),
            self.cfg.smtpd.min_idle,
            format_duration(IDLE_SURPLUS_GRACE)
        );
    }

    /// Spawns one child; on failure logs it and backs off. Returns whether it started.
    fn spawn_one(&mut self, kind: ChildKind, now: Instant) -> bool {
        let bin_dir = self.cfg.bin_dir();
        let pool_fds =
            (kind == ChildKind::Smtpd).then(|| (self.listeners.fd_list(), self.status.write_fd()));
        // The pickup reads the maildrop files by their group (docs/security.md).
        let creds = match kind {
            ChildKind::Pickup => self
                .creds
                .map(|(uid, gid)| (uid, setup::drop_gid(&self.cfg).unwrap_or(gid))),
            _ => self.creds,
        };
        let spec = SpawnSpec {
            bin_dir: &bin_dir,
            config: &self.cfg,
            pool_fds,
            handoff_fd: (kind == ChildKind::Smtpd).then(|| self.acceptor.recv_fd()),
            tls_fd: self.tls.fd().filter(|_| kind == ChildKind::Smtpd),
            creds,
        };
        let result = if kind == ChildKind::Smtpd {
            self.spawn_inheriting(&spec)
        } else {
            children::spawn(kind, &spec)
        };
        match result {
            Ok(pid) => {
                self.record_spawn(kind, pid, now);
                true
            }
            Err(e) => {
                let policy = self.policy;
                let delay = self.backoff_mut(kind).on_spawn_failure(&policy, now);
                log::error!("{e}; retrying in {}", format_duration(delay));
                false
            }
        }
    }

    fn record_spawn(&mut self, kind: ChildKind, pid: Pid, now: Instant) {
        log::info!("started {kind} pid={pid}");
        let spawn_streak = self.backoff_mut(kind).streak();
        let run = Running {
            kind,
            started: now,
            spawn_streak,
            asked: None,
        };
        self.running.insert(pid, run);
        if kind == ChildKind::Smtpd {
            self.pool.add(pid.as_raw() as u32);
        }
    }

    /// Spawns an smtpd worker with the listeners and the status pipe inheritable for
    /// just that spawn.
    fn spawn_inheriting(&self, spec: &SpawnSpec<'_>) -> Result<Pid, SpawnError> {
        let status_fd = self.status.write_fd();
        let handoff_fd = self.acceptor.recv_fd();
        let tls_fd = self.tls.fd();
        let open = self
            .listeners
            .inheritable(true)
            .and_then(|()| listeners::set_inheritable(status_fd, true))
            .and_then(|()| listeners::set_inheritable(handoff_fd, true))
            .and_then(|()| tls_fd.map_or(Ok(()), |fd| listeners::set_inheritable(fd, true)));
        let result = match open {
            Ok(()) => children::spawn(ChildKind::Smtpd, spec),
            Err(errno) => Err(SpawnError::PassFds {
                kind: ChildKind::Smtpd,
                errno,
            }),
        };
        let close = self
            .listeners
            .inheritable(false)
            .and_then(|()| listeners::set_inheritable(status_fd, false))
            .and_then(|()| listeners::set_inheritable(handoff_fd, false))
            .and_then(|()| tls_fd.map_or(Ok(()), |fd| listeners::set_inheritable(fd, false)));
        if let Err(e) = close {
            log::error!("cannot mark descriptors close-on-exec: {}", e.desc());
        }
        result
    }

    fn backoff_mut(&mut self, kind: ChildKind) -> &mut Backoff {
        match kind {
            ChildKind::Smtpd => &mut self.smtpd_backoff,
            ChildKind::Qmgr => &mut self.qmgr_backoff,
            ChildKind::Pickup => &mut self.pickup_backoff,
            ChildKind::LocalSpawner => &mut self.spawner_backoff,
        }
    }

    /// Reads the status pipe and updates the pool.
    pub fn read_status(&mut self) {
        let records = match self.status.drain() {
            Ok(r) => r,
            Err(e) => {
                log::error!("cannot read the status pipe: {e}");
                return;
            }
        };
        for rec in records {
            match rec {
                Record::Status(pid, a) => {
                    if !self.pool.report(pid, a) {
                        log::debug!("status record from pid={pid}, not a current worker");
                    }
                }
                Record::Client(pid, ip) => {
                    self.pool.report_client(pid, ip);
                }
                Record::Garbage(g) => log::warn!("garbage on the status pipe ignored: {g}"),
            }
        }
    }

    /// Reaps every ended child, logs its exit and schedules its replacement.
    pub fn handle_exits(&mut self, now: Instant) {
        for (pid, exit) in children::reap() {
            let Some(run) = self.running.remove(&pid) else {
                log::debug!("reaped pid={pid} ({exit}), not a child we track");
                continue;
            };
            let uptime = now.saturating_duration_since(run.started);
            let reported = match run.kind.startup_window() {
                Some(window) => uptime >= window,
                None => self
                    .pool
                    .remove(pid.as_raw() as u32)
                    .is_some_and(|w| w.reported),
            };
            self.account_exit(pid, &run, exit, reported, uptime, now);
            if run.kind == ChildKind::Smtpd && !exit.is_clean() {
                self.remove_tmp_files_of(pid);
            }
        }
    }

    /// A worker that died may have left a half-written queue file in `tmp/`.
    fn remove_tmp_files_of(&self, pid: Pid) {
        let spool = sloop_common::spool::Spool::new(&self.cfg.server.spool_dir);
        let pid = pid.as_raw().unsigned_abs();
        let n = crate::tmp_sweep::remove_files_of(&spool, pid, std::time::SystemTime::now());
        if n > 0 {
            log::info!("removed {n} tmp/ file(s) of dead sloop-smtpd pid={pid}");
        }
    }

    /// Classifies an exit, updates the backoff of its kind and logs it.
    fn account_exit(
        &mut self,
        pid: Pid,
        run: &Running,
        exit: Exit,
        reported: bool,
        uptime: Duration,
        now: Instant,
    ) {
        let kind = run.kind;
        let class = crate::children::classify(kind, exit, run.asked, reported);
        let policy = self.policy;
        let delay = self
            .backoff_mut(kind)
            .on_exit(&policy, class, run.spawn_streak, uptime, now);
        let ran = format_duration(uptime);
        if self.stopping.is_some() {
            log::info!("child {kind} pid={pid} {exit} (stopping, ran {ran})");
        } else if class == ExitClass::Expected {
            log::info!("child {kind} pid={pid} {exit} (ran {ran}); replacing it");
        } else if class == ExitClass::Watchdog {
            log::warn!(
                "child {kind} pid={pid} {exit} (watchdog: a session overran its deadline; \
                 ran {ran}); replacing it, not counted as a crash"
            );
        } else {
            let early = if reported { "" } else { " before it served" };
            log::warn!(
                "child {kind} pid={pid} {exit}{early} (ran {ran}); restart in {} \
                 (crash {} in a row)",
                format_duration(delay),
                self.backoff_mut(kind).streak()
            );
        }
    }

    /// SIGHUP: loads the config file again; applies it only if it is valid.
    pub fn reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let path = self.cfg.file.clone();
        log::info!("reload requested: reading {}", path.display());
        let new = match Config::load(&path).and_then(|c| c.check_tables().map(|()| c)) {
            Ok(c) => c,
            Err(e) => return log_rejected(&e),
        };
        let creds = match setup::credentials(&new) {
            Ok(c) => c,
            Err(e) => return log_rejected_because(&e.to_string()),
        };
        if let Some(note) = setup::user_note(&new, creds) {
            log::warn!("{note}");
        }
        if let Some(note) = setup::drop_group_note(&new, creds) {
            log::warn!("{note}");
        }
        if let Err(e) = setup::prepare_dirs(&new, creds) {
            return log_rejected_because(&e.to_string());
        }
        if let Err(e) = self.tls.reload(&new, Instant::now()) {
            return log_rejected_because(&e.to_string());
        }
        if new.log_level != self.cfg.log_level {
            log::warn!("log.level changed: sloopd's own level changes when it restarts");
        }
        if new.server.run_dir != self.cfg.server.run_dir {
            log::warn!("server.run_dir changed: the pid file moves only when sloopd restarts");
        }
        let addrs: Vec<_> = new.all_listen().into_iter().map(|(a, _)| a).collect();
        for e in self.listeners.reconcile(&addrs) {
            log::error!("reload: {e}; that address is not served until sloopd restarts");
        }
        self.policy = Policy::from_config(&new.supervisor);
        // An operator's reload is the fix for a crash loop more often than not: the
        // next start is not held back by the old streak.
        self.smtpd_backoff = Backoff::default();
        self.qmgr_backoff = Backoff::default();
        self.pickup_backoff = Backoff::default();
        self.creds = creds;
        self.cfg = new;
        self.retire_all();
    }

    /// Asks every smtpd worker to finish and exit (after a ticket key rotation).
    fn retire_workers(&mut self) {
        for pid in self.pool.retire_all() {
            let pid = Pid::from_raw(pid as i32);
            if let Some(run) = self.running.get_mut(&pid) {
                run.asked = Some(Signal::SIGHUP);
            }
            children::signal(pid, Signal::SIGHUP);
        }
    }

    /// Asks every child to finish and exit (SIGHUP, pool_proto.rs); replacements start
    /// on the current config.
    fn retire_all(&mut self) {
        let workers = self.pool.retire_all();
        for (pid, run) in self.running.iter_mut() {
            run.asked = Some(Signal::SIGHUP);
            children::signal(*pid, Signal::SIGHUP);
        }
        log::info!(
            "configuration reloaded from {}: greeting \"{}\", listening on {:?}; \
             rolling {} smtpd worker(s); the queue manager was sent SIGHUP",
            self.cfg.file.display(),
            self.cfg.smtpd.greeting,
            self.listeners.addrs(),
            workers.len()
        );
    }

    /// SIGTERM/SIGINT: stop accepting, ask every child to stop, set the deadline.
    pub fn begin_stop(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let timeout = self.cfg.supervisor.stop_timeout;
        self.stopping = Some(now + timeout);
        self.listeners.close_all();
        self.refuse_all_waiting();
        for (pid, run) in self.running.iter_mut() {
            run.asked = Some(Signal::SIGTERM);
            children::signal(*pid, Signal::SIGTERM);
        }
        log::info!(
            "stopping: SIGTERM sent to {} child(ren); they have {} to exit",
            self.running.len(),
            format_duration(timeout)
        );
    }

    /// While stopping: true once every child is gone. At the deadline, SIGKILLs the
    /// rest and waits (briefly) for them.
    pub fn stop_finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.stopping else {
            return false;
        };
        if self.running.is_empty() {
            return true;
        }
        if now < deadline {
            return false;
        }
        for (pid, run) in &self.running {
            log::warn!(
                "child {} pid={pid} still running at the stop deadline: SIGKILL",
                run.kind
            );
            children::signal(*pid, Signal::SIGKILL);
        }
        let gone = crate::event_loop::wait_for(KILL_GRACE, || {
            self.handle_exits(Instant::now());
            self.running.is_empty()
        });
        if !gone {
            log::error!("{} child(ren) survived SIGKILL", self.running.len());
        }
        true
    }

    /// How long the loop may sleep before a timer is due.
    pub fn next_timeout(&self, now: Instant) -> Duration {
        let mut due = vec![now + MAX_TICK];
        due.extend(self.stopping);
        due.extend(self.surplus_since.map(|t| t + IDLE_SURPLUS_GRACE));
        due.extend(self.smtpd_backoff.not_before());
        due.extend(self.qmgr_backoff.not_before());
        due.extend(self.pickup_backoff.not_before());
        due.extend(self.balance_due());
        due.extend(self.tls.next_rotation());
        due.into_iter()
            .filter(|t| *t > now)
            .min()
            .map_or(Duration::ZERO, |t| t - now)
    }

    /// SIGUSR1: one line of status.
    pub fn log_status(&self) {
        let c = self.pool.counts();
        log::info!(
            "status: smtpd workers={} idle={} busy={} starting={} retiring={} \
             (min_idle={} max_processes={}); qmgr pid={}; pickup pid={}; listening on {:?}{}",
            c.total,
            c.idle,
            c.busy,
            c.starting,
            c.retiring,
            self.cfg.smtpd.min_idle,
            self.cfg.smtpd.max_processes,
            self.pids_of(ChildKind::Qmgr),
            self.pids_of(ChildKind::Pickup),
            self.listeners.addrs(),
            if self.stopping.is_some() {
                "; stopping"
            } else {
                ""
            }
        );
    }

    /// The pids of the running children of `kind`, comma-separated, or `none`.
    fn pids_of(&self, kind: ChildKind) -> String {
        let pids: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.kind == kind)
            .map(|(p, _)| p.to_string())
            .collect();
        if pids.is_empty() {
            "none".to_string()
        } else {
            pids.join(",")
        }
    }
}

fn log_rejected(e: &ConfigError) {
    match e {
        ConfigError::Invalid(issues) => {
            for i in issues {
                log_rejected_because(&i.to_string());
            }
        }
        ConfigError::Read { .. } => log_rejected_because(&e.to_string()),
    }
}

fn log_rejected_because(why: &str) {
    // One line per error, even when the value found holds CR/LF.
    let why = why.replace('\r', "\\r").replace('\n', "\\n");
    log::error!("reload rejected, keeping the running configuration: {why}");
}
