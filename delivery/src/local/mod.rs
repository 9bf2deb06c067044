//! `sloop-deliver local`: delivery into this node's mailboxes.
//!
//! For each recipient of a job: refuse a `Delivered-To:` loop (5.4.6), expand aliases
//! and `.forward` files (expand.rs), then deliver to each target: a virtual Maildir
//! (maildir.rs) or mbox file (mbox.rs) per `local.mailbox_format`, a local account's
//! mailbox (account.rs), a `|command` (pipe.rs), a `/path/file` (mbox-style), or a
//! forward (forward.rs). Each copy gets `Return-Path:` and `Delivered-To:`
//! (headers.rs).
//!
//! Each target is written as the user privs.rs names for it: the account, the owner of
//! the file a command or file member came from (`nobody` for root's), or
//! `server.user` for virtual mailboxes and forwards. That needs root (the agent then
//! forks a child per target that drops to the user); an agent that is not root
//! delivers everything as itself, confines `/path/file` members under
//! `local.mailbox_root`, and defers deliveries that would need another user.
//!
//! One recipient may expand to many targets; its one result is: `defer` if any target
//! deferred (the whole recipient is retried, so earlier targets may get a duplicate,
//! never a loss), else `fail` if any failed (the bounce names the failing member),
//! else `ok`. The aliases file is re-read when its mtime changes; while it cannot be
//! read or parsed, every recipient is deferred rather than bounced.

pub mod account;
pub mod expand;
pub mod forward;
pub mod maildir;
pub mod mbox;
pub mod pipe;
pub mod privs;
pub mod refusal;
pub mod spawner;

use crate::headers::{has_delivered_to, trace_headers};
use crate::message::QueuedMessage;
use crate::result::RcptResult;
use crate::worker::Agent;
use expand::{Expander, OwnerTrust, Target};
use maildir::{safe_component, MaildirWriter};
use privs::{can_switch, run_as, Identity};
use sloop_common::aliases::Aliases;
use sloop_common::config::MailboxFormat;
use sloop_common::delivery_proto::{Job, Transport};
use sloop_common::local_recipient::safe_local_part;
use sloop_common::spool::status::Outcome;
use sloop_common::spool::Spool;
use sloop_common::Config;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The local delivery agent.
#[derive(Debug)]
pub struct LocalAgent {
    cfg: Config,
    aliases: Aliases,
    aliases_mtime: Option<SystemTime>,
    aliases_error: Option<String>,
    trust: OwnerTrust,
    maildir: MaildirWriter,
    spool: Spool,
    /// [`LocalAgent::spool_owner`]'s last answer and when it was looked up: the
    /// account database is read once a minute, not for every message.
    owner: Option<(Identity, Instant)>,
}

/// How long the spool owner's account entry is trusted before it is read again.
const OWNER_TTL: Duration = Duration::from_secs(60);

/// What every target of one recipient needs to know.
struct Ctx<'a> {
    msg: &'a QueuedMessage,
    header: &'a [u8],
    crlf: bool,
    rcpt: &'a str,
    /// `<queue id>R<envelope index>`: names this recipient's Maildir copy, so an
    /// attempt repeated after a crash finds it (maildir.rs).
    key: Option<String>,
}

impl LocalAgent {
    pub fn new(cfg: Config) -> LocalAgent {
        let mut maildir = MaildirWriter::new(&cfg.local.mailbox_root, &cfg.server.hostname);
        if !can_switch() {
            // As root each delivery runs in a child of its own, which syncs before it
            // reports: there is no batch to sync later.
            maildir.defer_syncs();
        }
        let spool = Spool::new(cfg.server.spool_dir.clone());
        let trust = OwnerTrust::from_config(&cfg);
        let mut agent = LocalAgent {
            cfg,
            aliases: Aliases::empty(),
            aliases_mtime: None,
            aliases_error: None,
            trust,
            maildir,
            spool,
            owner: None,
        };
        agent.refresh_aliases();
        agent
    }

    /// Re-reads the aliases file when its mtime changed.
    fn refresh_aliases(&mut self) {
        let Some(path) = self.cfg.local.aliases.clone() else {
            return;
        };
        let mtime = match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) => {
                self.aliases_error = Some(format!("cannot read {}: {e}", path.display()));
                self.aliases_mtime = None;
                return;
            }
        };
        if self.aliases_mtime == Some(mtime) {
            return;
        }
        self.aliases_mtime = Some(mtime);
        match Aliases::load(&path) {
            Ok(a) => {
                log::info!("loaded {} aliases from {}", a.len(), path.display());
                self.aliases = a;
                self.aliases_error = None;
            }
            Err(e) => {
                log::error!("{e}");
                self.aliases_error = Some(e.to_string());
            }
        }
    }

    fn deliver_rcpt(&mut self, c: &Ctx<'_>) -> RcptResult {
        if let Some(e) = &self.aliases_error {
            return RcptResult::defer("4.3.5", format!("aliases file unusable: {e}"));
        }
        let domain = c.rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !self.cfg.is_local_domain(domain) {
            return RcptResult::defer(
                "4.3.5",
                format!("{domain} is not a local domain here (configuration changed?)"),
            );
        }
        if has_delivered_to(c.header, c.rcpt) {
            return RcptResult::fail("5.4.6", format!("mail forwarding loop for {}", c.rcpt));
        }
        let expansion = Expander {
            cfg: &self.cfg,
            aliases: &self.aliases,
            trust: &self.trust,
        }
        .expand(c.rcpt);
        let mut results = expansion.problems;
        let mut forwards = Vec::new();
        for t in expansion.targets {
            match t {
                Target::Forward(a) => forwards.push(a),
                t => results.push(self.deliver_target(c, &t)),
            }
        }
        if !forwards.is_empty() {
            let r = match self.spool_owner() {
                Ok(who) => run_as(&who, || {
                    forward::forward(&self.spool, c.msg, c.rcpt, &forwards, c.crlf)
                }),
                Err(r) => r,
            };
            results.push(r);
        }
        combine(results).via("local")
    }

    fn deliver_target(&mut self, c: &Ctx<'_>, t: &Target) -> RcptResult {
        let sender = c.msg.envelope.sender.as_str();
        let prefix = |to: &str| trace_headers(sender, to, c.crlf);
        match t {
            Target::Account { user, address } => {
                if address != c.rcpt && has_delivered_to(c.header, address) {
                    return RcptResult::fail(
                        "5.4.6",
                        format!("mail forwarding loop for {address}"),
                    );
                }
                account::deliver(
                    &self.cfg.local,
                    user,
                    sender,
                    &prefix(address),
                    &mut c.msg.reader(),
                    &self.cfg.server.hostname,
                )
            }
            Target::Command { command, uid } => {
                let who = match member_identity(*uid) {
                    Ok(w) => w,
                    Err(r) => return r,
                };
                let env = pipe::PipeEnv {
                    sender: sender.to_string(),
                    recipient: c.rcpt.to_string(),
                    original: c.rcpt.to_string(),
                    user: who.name.clone(),
                    home: who.home.clone(),
                    shell: who.shell.clone(),
                    extension: extension(c.rcpt, self.cfg.local.recipient_delimiter),
                };
                let timeout = self.cfg.queue.delivery_timeout / 2;
                let head = prefix(c.rcpt);
                run_as(&who, || {
                    pipe::run(command, &env, &head, &mut c.msg.reader(), timeout)
                })
            }
            Target::File { path, uid } => {
                let who = match member_identity(*uid) {
                    Ok(w) => w,
                    Err(r) => return r,
                };
                let p = match self.file_target(path) {
                    Ok(p) => p,
                    Err(r) => return r,
                };
                let head = prefix(c.rcpt);
                run_as(&who, || {
                    mbox::append(&p, sender, &head, &mut c.msg.reader())
                        .map(|()| {
                            RcptResult::ok("2.0.0", format!("delivered to file: {}", p.display()))
                        })
                        .unwrap_or_else(|r| r)
                })
            }
            Target::Mailbox {
                domain,
                user,
                address,
            } => {
                if address != c.rcpt && has_delivered_to(c.header, address) {
                    return RcptResult::fail(
                        "5.4.6",
                        format!("mail forwarding loop for {address}"),
                    );
                }
                let who = match self.spool_owner() {
                    Ok(w) => w,
                    Err(r) => return r,
                };
                let head = prefix(address);
                run_as(&who, || self.deliver_mailbox(c, domain, user, &head))
            }
            Target::Forward(a) => match self.spool_owner() {
                Ok(who) => run_as(&who, || {
                    forward::forward(&self.spool, c.msg, c.rcpt, std::slice::from_ref(a), c.crlf)
                }),
                Err(r) => r,
            },
        }
    }

    /// Who writes virtual mailboxes and forwards: `server.user` when we are root and
    /// one is set, else ourselves. Looked up at most once per [`OWNER_TTL`] (a failed
    /// lookup is not kept).
    fn spool_owner(&mut self) -> Result<Identity, RcptResult> {
        if let Some((who, at)) = &self.owner {
            if at.elapsed() < OWNER_TTL {
                return Ok(who.clone());
            }
        }
        let who = if can_switch() && !self.cfg.server.user.is_empty() {
            Identity::of_name(&self.cfg.server.user)
        } else {
            Identity::current()
        }?;
        self.owner = Some((who.clone(), Instant::now()));
        Ok(who)
    }

    /// A `/path/file` member: a plain absolute path; when we cannot switch users (the
    /// write would be ours), also under the mailbox root.
    fn file_target(&self, path: &Path) -> Result<PathBuf, RcptResult> {
        if can_switch() {
            plain_absolute(path)?;
            Ok(path.to_path_buf())
        } else {
            self.confined_file(path)
        }
    }

    fn deliver_mailbox(
        &mut self,
        c: &Ctx<'_>,
        domain: &str,
        user: &str,
        prefix: &[u8],
    ) -> RcptResult {
        let sender = c.msg.envelope.sender.as_str();
        match self.cfg.local.mailbox_format {
            MailboxFormat::Maildir => {
                let key = c.key.as_deref().map(|k| (c.msg.envelope.arrival, k));
                match self
                    .maildir
                    .deliver_once(domain, user, prefix, &mut c.msg.reader(), key)
                {
                    Ok(p) => {
                        RcptResult::ok("2.0.0", format!("delivered to maildir {}", p.display()))
                    }
                    Err(r) => r,
                }
            }
            MailboxFormat::Mbox => match self.mbox_path(domain, user) {
                Ok(p) => mbox::append(&p, sender, prefix, &mut c.msg.reader())
                    .map(|()| {
                        RcptResult::ok("2.0.0", format!("delivered to mailbox {}", p.display()))
                    })
                    .unwrap_or_else(|r| r),
                Err(r) => r,
            },
        }
    }

    /// `<root>/<domain>/<user>.mbox`, its directory created, checked to be under the root.
    fn mbox_path(&self, domain: &str, user: &str) -> Result<PathBuf, RcptResult> {
        let user = safe_local_part(user)
            .map_err(|e| RcptResult::fail("5.1.3", format!("bad local-part {user:?}: {e}")))?;
        let domain = safe_component(domain)
            .map_err(|e| RcptResult::fail("5.1.2", format!("bad domain {domain:?}: {e}")))?;
        let root = &self.cfg.local.mailbox_root;
        let dir = root.join(&domain);
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error_result(&e, &format!("cannot create {}", dir.display())))?;
        let path = self.confined(&dir.join(format!("{user}.mbox")))?;
        Ok(path)
    }

    /// An alias `/path/file` target, accepted only under the mailbox root.
    fn confined_file(&self, path: &Path) -> Result<PathBuf, RcptResult> {
        plain_absolute(path)?;
        self.confined(path)
    }

    /// `path` with its directory canonicalised, if that lies under the mailbox root.
    fn confined(&self, path: &Path) -> Result<PathBuf, RcptResult> {
        let refuse = || {
            RcptResult::fail(
                "5.7.1",
                format!(
                    "file {} is outside the mailbox root; refused",
                    path.display()
                ),
            )
        };
        let root = self
            .cfg
            .local
            .mailbox_root
            .canonicalize()
            .map_err(|_| refuse())?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(refuse());
        };
        let dir = dir.canonicalize().map_err(|_| refuse())?;
        if !dir.starts_with(&root) {
            return Err(refuse());
        }
        Ok(dir.join(name))
    }
}

impl Agent for LocalAgent {
    fn transport(&self) -> Transport {
        Transport::Local
    }

    fn sync(&mut self) -> io::Result<()> {
        self.maildir.sync()
    }

    fn deliver(&mut self, job: &Job, msg: &QueuedMessage) -> Vec<RcptResult> {
        self.refresh_aliases();
        let header = match msg.header_bytes() {
            Ok(h) => h,
            Err(e) => {
                let r = RcptResult::defer("4.3.0", format!("cannot read queue file: {e}"));
                return vec![r; job.recipients.len()];
            }
        };
        let crlf = msg.uses_crlf_given(&header);
        job.recipients
            .iter()
            .enumerate()
            .map(|(k, rcpt)| {
                let key = job.indices.get(k).map(|i| format!("{}R{i}", job.queue_id));
                let c = Ctx {
                    msg,
                    header: &header,
                    crlf,
                    rcpt,
                    key,
                };
                self.deliver_rcpt(&c)
            })
            .collect()
    }
}

/// Who a command or file member to run as `uid` runs as: that user (root: `nobody`)
/// when we can switch users; otherwise that user too, which [`run_as`] allows only
/// when it is ourselves (expand.rs gives our own uid for the trusted sources), so a
/// `.forward` command of another account is deferred, never run as us.
fn member_identity(uid: u32) -> Result<Identity, RcptResult> {
    if can_switch() {
        Identity::for_owner(uid)
    } else {
        Identity::of_uid(uid)
    }
}

/// Refuses a file member that is not a plain absolute path (no `..`, no `.`).
fn plain_absolute(path: &Path) -> Result<(), RcptResult> {
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(RcptResult::fail(
            "5.7.1",
            format!(
                "file target {} is not a plain absolute path",
                path.display()
            ),
        ))
    }
}

/// The address extension of `rcpt` (`tag` of `user+tag@domain`), or empty.
pub fn extension(rcpt: &str, delimiter: Option<char>) -> String {
    let local = rcpt.rsplit_once('@').map(|(l, _)| l).unwrap_or(rcpt);
    match delimiter.and_then(|d| local.find(d).map(|i| (i, d))) {
        Some((i, d)) if i > 0 => local[i + d.len_utf8()..].to_string(),
        _ => String::new(),
    }
}

/// One result from the results of a recipient's targets (see the module doc).
pub fn combine(results: Vec<RcptResult>) -> RcptResult {
    let first = |o: Outcome| results.iter().find(|r| r.outcome == o).cloned();
    if let Some(d) = first(Outcome::Defer) {
        return d;
    }
    let oks = results.iter().filter(|r| r.outcome == Outcome::Ok).count();
    if let Some(mut f) = first(Outcome::Fail) {
        if oks > 0 {
            f.text = format!("{} (other members delivered)", f.text);
        }
        return f;
    }
    match results.len() {
        0 => RcptResult::fail("5.1.1", "alias has no deliverable member"),
        1 => results
            .into_iter()
            .next()
            .unwrap_or_else(|| RcptResult::ok("2.0.0", "delivered")),
        n => RcptResult::ok("2.0.0", format!("delivered to {n} destinations")),
    }
}

/// A temporary result for an I/O error, with the usual enhanced codes.
pub fn io_error_result(e: &io::Error, what: &str) -> RcptResult {
    let dsn = match e.raw_os_error() {
        Some(libc::ENOSPC) => "4.3.1",
        Some(libc::EDQUOT) => "4.2.2",
        _ if e.kind() == io::ErrorKind::WouldBlock => "4.2.0",
        _ => "4.3.0",
    };
    RcptResult::defer(dsn, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_prefers_defer_then_fail() {
        let ok = RcptResult::ok("2.0.0", "a");
        let fail = RcptResult::fail("5.1.1", "b");
        let defer = RcptResult::defer("4.3.0", "c");
        assert_eq!(combine(vec![ok.clone()]), ok);
        assert_eq!(
            combine(vec![ok.clone(), fail.clone(), defer.clone()]),
            defer
        );
        let f = combine(vec![ok.clone(), fail]);
        assert_eq!(f.outcome, Outcome::Fail);
        assert!(f.text.contains("other members delivered"));
        assert_eq!(combine(vec![]).dsn, "5.1.1");
        assert_eq!(combine(vec![ok.clone(), ok]).outcome, Outcome::Ok);
    }
}
