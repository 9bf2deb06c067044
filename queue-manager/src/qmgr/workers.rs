//! The delivery worker pools: long-lived `sloop-deliver local` and `sloop-deliver
//! remote` processes, one job at a time each (docs/architecture.md §4, delivery_proto.rs).
//!
//! Remote workers take one job at a time. A local worker may be given up to
//! [`LOCAL_DEPTH`] jobs when every local worker is busy and the pool is full: it runs
//! them in order and answers a batch after one sync (delivery/src/worker.rs), so under
//! load each Maildir's `new/` is fsync'd once per batch instead of once per message.
//! Replies always come in the order the jobs were sent.
//!
//! A worker is spawned lazily when a job needs one and the pool of its transport is
//! below its size (`queue.local_concurrency` / `queue.remote_concurrency`). Its stdin
//! takes job lines (a blocking write of one short line); its stdout is a non-blocking
//! pipe registered with the mio loop (events.rs) under the worker's token, and is read
//! into a line buffer. Its stderr is inherited, so its log lines go where ours go.
//!
//! What can go wrong, and what the caller (mod.rs) does: a spawn failure (missing
//! binary) defers the job and pauses spawning briefly; EOF, a malformed or over-long
//! line, a write error (EPIPE) or a job past its deadline make the worker "broken": it
//! is killed (SIGKILL) and reaped, the recipients without a result are deferred, and a
//! fresh worker is spawned for the next job.

use super::scheduler::JobSpec;
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};
use sloop_common::delivery_proto::{Job, Reply, Transport};
use sloop_common::Config;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Tokens of worker stdout pipes start here; see events.rs for the others.
pub const WORKER_TOKEN_BASE: usize = 16;
/// Longest line a worker may write.
const MAX_LINE: usize = 64 * 1024;
/// How long spawning stays paused after a failed spawn.
const SPAWN_PAUSE: Duration = Duration::from_secs(1);
/// Most jobs given at once to one local worker.
pub const LOCAL_DEPTH: usize = 4;

/// The job a worker is running.
#[derive(Debug)]
pub struct Running {
    pub job_id: u64,
    pub spec: JobSpec,
    /// Which recipients of the job (by job index) have a result.
    pub answered: Vec<bool>,
    pub deadline: Instant,
    /// Last deferral text seen in this job, and whether any recipient got a final result.
    pub last_defer: Option<String>,
    pub any_final: bool,
}

/// What reading a worker's stdout produced.
#[derive(Debug)]
pub enum Output {
    Reply(Reply),
    /// A line that does not parse: the worker is broken.
    Garbage(String),
    /// The worker closed its stdout: it is gone.
    Eof,
}

/// One worker process.
#[derive(Debug)]
pub struct Worker {
    pub transport: Transport,
    /// Jobs sent and not yet done, oldest (the one being answered) first.
    pub jobs: VecDeque<Running>,
    /// Set after a config reload: close once the current job is done.
    pub retire: bool,
    /// Jobs this worker finished (a worker that dies before its first pauses spawning).
    pub jobs_done: u64,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver,
    buf: Vec<u8>,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one job line. An error means the worker is gone.
    pub fn send(&mut self, job: &Job) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        stdin.write_all(job.to_line().as_bytes())?;
        stdin.flush()
    }

    /// Reads everything available on stdout, as parsed lines; stops at EOF.
    pub fn read(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match self.stdout.read(&mut chunk) {
                Ok(0) => {
                    self.split_lines(&mut out);
                    out.push(Output::Eof);
                    return out;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    out.push(Output::Eof);
                    return out;
                }
            }
        }
        self.split_lines(&mut out);
        if self.buf.len() > MAX_LINE {
            out.push(Output::Garbage(format!(
                "line longer than {MAX_LINE} octets"
            )));
        }
        out
    }

    fn split_lines(&mut self, out: &mut Vec<Output>) {
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..nl]).into_owned();
            match Reply::parse(&text) {
                Some(r) => out.push(Output::Reply(r)),
                None => out.push(Output::Garbage(text)),
            }
        }
    }

    /// Kills (SIGKILL) and reaps the worker.
    fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workers of both transports, indexed by slot (token = base + slot).
#[derive(Debug)]
pub struct Pools {
    slots: Vec<Option<Worker>>,
    local_max: usize,
    remote_max: usize,
    spawn_paused_until: Option<Instant>,
}

impl Pools {
    pub fn new(local_max: usize, remote_max: usize) -> Pools {
        Pools {
            slots: Vec::new(),
            local_max,
            remote_max,
            spawn_paused_until: None,
        }
    }

    pub fn set_limits(&mut self, local_max: usize, remote_max: usize) {
        self.local_max = local_max;
        self.remote_max = remote_max;
    }

    fn count(&self, t: Transport) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|w| w.transport == t)
            .count()
    }

    fn idle_slot(&self, t: Transport) -> Option<usize> {
        self.slots.iter().position(|w| {
            w.as_ref()
                .map(|w| w.transport == t && w.jobs.is_empty() && !w.retire)
                .unwrap_or(false)
        })
    }

    /// The local worker with the fewest jobs below [`LOCAL_DEPTH`], once the pool is
    /// full (a new worker, or an idle one, is always preferred).
    fn queue_slot(&self, t: Transport) -> Option<usize> {
        if t != Transport::Local || self.count(t) < self.local_max {
            return None;
        }
        (0..self.slots.len())
            .filter_map(|i| match &self.slots[i] {
                Some(w) if w.transport == t && !w.retire && w.jobs.len() < LOCAL_DEPTH => {
                    Some((w.jobs.len(), i))
                }
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }

    fn can_spawn(&self, t: Transport, now: Instant) -> bool {
        let max = match t {
            Transport::Local => self.local_max,
            Transport::Remote => self.remote_max,
        };
        let paused = self.spawn_paused_until.map(|u| u > now).unwrap_or(false);
        !paused && self.count(t) < max
    }

    /// True when a job of transport `t` can start now.
    pub fn available(&self, t: Transport, now: Instant) -> bool {
        self.idle_slot(t).is_some() || self.can_spawn(t, now) || self.queue_slot(t).is_some()
    }

    /// When spawning resumes after a failure, if paused.
    pub fn spawn_pause(&self) -> Option<Instant> {
        self.spawn_paused_until
    }

    /// An idle worker of transport `t`, spawning (and registering) one if needed.
    pub fn acquire(
        &mut self,
        t: Transport,
        program: &Path,
        config: &Config,
        registry: &Registry,
    ) -> io::Result<usize> {
        if let Some(slot) = self.idle_slot(t) {
            return Ok(slot);
        }
        if !self.can_spawn(t, Instant::now()) {
            if let Some(slot) = self.queue_slot(t) {
                return Ok(slot);
            }
        }
        let spawned = spawn(t, program, config).and_then(|mut w| {
            let slot = self.free_slot();
            registry.register(
                &mut w.stdout,
                Token(WORKER_TOKEN_BASE + slot),
                Interest::READABLE,
            )?;
            Ok((slot, w))
        });
        match spawned {
            Ok((slot, w)) => {
                log::debug!("started {} delivery worker pid {}", t.word(), w.pid());
                self.slots[slot] = Some(w);
                Ok(slot)
            }
            Err(e) => {
                self.spawn_paused_until = Some(Instant::now() + SPAWN_PAUSE);
                Err(e)
            }
        }
    }

    fn free_slot(&mut self) -> usize {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        }
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Worker> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Removes a worker for good: deregisters, kills and reaps it. Returns its jobs.
    pub fn discard(&mut self, slot: usize, registry: &Registry) -> VecDeque<Running> {
        let Some(mut w) = self.slots.get_mut(slot).and_then(Option::take) else {
            return VecDeque::new();
        };
        let _ = registry.deregister(&mut w.stdout);
        w.kill();
        if w.jobs_done == 0 && !w.retire {
            // Died before finishing one job: throttle restarts (Postfix master_spawn.c).
            self.spawn_paused_until = Some(Instant::now() + SPAWN_PAUSE);
        }
        std::mem::take(&mut w.jobs)
    }

    /// Stops every worker: closes their stdins so they exit on their own, waits up to
    /// `grace`, then kills those still running. Running jobs are abandoned (their
    /// messages stay in active/ and are retried at the next start).
    pub fn shutdown(&mut self, registry: &Registry, grace: Duration) {
        let mut all: Vec<Worker> = self.slots.iter_mut().filter_map(Option::take).collect();
        for w in &mut all {
            let _ = registry.deregister(&mut w.stdout);
            w.stdin = None;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            all.retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_))));
            if all.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for w in &mut all {
            w.kill();
        }
    }

    /// Slots of workers with no job.
    pub fn idle_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| matches!(&self.slots[i], Some(w) if w.jobs.is_empty()))
            .collect()
    }

    /// Slots of workers running a job.
    pub fn busy_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| matches!(&self.slots[i], Some(w) if !w.jobs.is_empty()))
            .collect()
    }

    /// Marks every worker to be replaced after its current job (config reload).
    pub fn retire_all(&mut self) {
        for w in self.slots.iter_mut().flatten() {
            w.retire = true;
        }
    }

    /// The earliest job deadline, and the slots past theirs at `now`. The deadline
    /// that counts is the oldest job's (the one the worker is answering); the next
    /// job's deadline starts when it becomes the oldest (dispatch.rs).
    pub fn deadlines(&self, now: Instant) -> (Option<Instant>, Vec<usize>) {
        let mut earliest: Option<Instant> = None;
        let mut late = Vec::new();
        for (i, w) in self.slots.iter().enumerate() {
            let Some(job) = w.as_ref().and_then(|w| w.jobs.front()) else {
                continue;
            };
            if job.deadline <= now {
                late.push(i);
            } else {
                earliest = Some(earliest.map_or(job.deadline, |e| e.min(job.deadline)));
            }
        }
        (earliest, late)
    }

    /// Reaps workers that exited (SIGCHLD); their stdout EOF does the rest.
    pub fn reap(&mut self) {
        for w in self.slots.iter_mut().flatten() {
            if let Ok(Some(status)) = w.child.try_wait() {
                if !w.jobs.is_empty() || !status.success() {
                    log::warn!(
                        "{} delivery worker pid {} exited: {status}",
                        w.transport.word(),
                        w.child.id()
                    );
                }
            }
        }
    }
}

fn spawn(t: Transport, program: &Path, config: &Config) -> io::Result<Worker> {
    let mut cmd = Command::new(program);
    config.pass_to(&mut cmd);
    let mut child = cmd
        .arg(t.word())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", program.display())))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("worker pipes missing"));
    };
    let stdout = Receiver::from(stdout);
    stdout.set_nonblocking(true)?;
    Ok(Worker {
        transport: t,
        jobs: VecDeque::new(),
        retire: false,
        jobs_done: 0,
        child,
        stdin: Some(stdin),
        stdout,
        buf: Vec::new(),
    })
}
