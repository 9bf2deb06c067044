//! The parameter table: every configuration key Sloop knows, declared once.
//!
//! Each entry names the dotted key, its kind (which fixes how a value is parsed and
//! what bounds apply), its default (written in TOML syntax, parsed by the same code as
//! an operator's value, and checked by a unit test), a one-line description, and the
//! field of [`Config`] the value fills (`fill`). The loader walks this table: for each
//! key it calls the entry's fill, which reads the key with the reader method of its
//! kind and stores the typed value, so adding a key is adding one entry here (and the
//! field it fills). The packaged `etc/sloop.toml`, `docs/configuration.md` and the
//! sloop.toml(5) page are rendered from this table (`sloop config sample|docs|man`),
//! and a test checks the committed files are fresh.
//!
//! A `Kind::Choice` key names the enum its words belong to (`Kind::Choice(
//! BareNewline::WORDS)`, see `choice.rs`): the words are declared once, with the enum.

use super::choice::Choice;
use super::hooks::{AccessList, HookStage, MilterHook, OnError, PolicyHook};
use super::reader::Reader;
use super::reader_hooks::Entry;
use super::render::ToToml;
use super::sections::{AuthBackend, BareNewline, Facility, LogTarget, MailboxFormat, TlsLevel};
use super::Config;

/// How a parameter's value is parsed and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A DNS host name (letters, digits, `-`, `.`).
    Hostname,
    /// Free text on one line (no CR, LF or NUL), at most `max` octets.
    Text {
        max: usize,
    },
    /// A filesystem path; relative paths are taken relative to the config file.
    /// `must_exist` paths are checked at load when non-empty.
    Path {
        must_exist: bool,
    },
    /// A user or group name (empty allowed).
    User,
    Bool,
    /// An integer in `[min, max]`.
    Int {
        min: u64,
        max: u64,
    },
    /// A size in bytes with an optional unit (`K`, `M`, `G`), in `[min, max]`.
    Size {
        min: u64,
        max: u64,
    },
    /// A duration with a unit (`ms`, `s`, `m`, `h`, `d`), in `[min, max]` milliseconds.
    Duration {
        min: u64,
        max: u64,
    },
    /// One of a fixed list of words.
    Choice(&'static [&'static str]),
    /// A list of `addr:port` socket addresses.
    ListenList,
    /// A list of CIDR networks (`10.0.0.0/8`, `::1/128`, or a bare address).
    CidrList,
    /// A list of domain names.
    DomainList,
    /// A list of addresses (`user@domain`) or `@domain` wildcards.
    MailboxList,
    /// A list of client access rules, each `"CIDR action"` with action
    /// `allow`, `reject` or `tempfail`.
    AccessList,
    /// `host:port` or empty.
    HostPort,
    /// A table of domain -> `host:port`.
    RouteTable,
    /// A log level: error, warn, info, debug, trace.
    LogLevel,
    /// A table of user -> list of addresses (`user@domain`) or `@domain` wildcards.
    SendersTable,
    /// A table of domain -> outbound TLS level (`none`, `may`, `encrypt`, `verify`).
    TlsPolicyTable,
    /// The name of a `[[policy]]` or `[[milter]]` table: letters, digits, `_`, `.`, `-`.
    HookName,
    /// A program name for log lines (`log.syslog_name`): letters, digits, `_`, `.`, `-`.
    LogName,
    /// Where a hook service listens: `unix:/path` or `inet:host:port`.
    HookSocket,
    /// A list of listeners a hook sees: `smtpd`, `submission`, `submissions`, and
    /// `local` (mail injected with `sendmail`) when `local` is true.
    HookListeners {
        local: bool,
    },
    /// A list of in-process access rules, each `"PATTERN ACTION [TEXT]"`.
    AccessRules,
}

/// The default of a key that has none: the table is refused without it.
pub const REQUIRED: &str = "";

/// The default of `policy.on_error`: it follows the stage (`OnError::default_for`;
/// `policy.stage` is declared, so read, before it).
pub const DEFAULT_BY_STAGE: &str = "@stage";

/// Sections written as arrays of tables (`[[policy]]`), one table per hook, in the
/// order the hooks run. Their keys are declared below like any other, as
/// `policy.name` for the `name` key of each `[[policy]]` table.
pub const ARRAY_SECTIONS: &[&str] = &["policy", "milter"];

/// True when `section` is written as an array of tables (`[[policy]]`).
pub fn is_array_section(section: &str) -> bool {
    ARRAY_SECTIONS.contains(&section)
}

/// True when `key` (`section.name`) lives in an array-of-tables section.
pub fn is_array_key(key: &str) -> bool {
    key.split_once('.')
        .is_some_and(|(section, _)| is_array_section(section))
}

/// One declared parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub key: &'static str,
    pub kind: Kind,
    /// Default value in TOML syntax. `@hostname` stands for the machine's name.
    pub default: &'static str,
    pub doc: &'static str,
    /// How the loader stores the key's value in the [`Config`].
    pub(super) fill: Fill,
}

/// Reads one key (with the reader method of its kind) into its field of the config.
pub(super) type FillFn = fn(&mut Reader<'_>, &'static Param, &mut Config);

/// Reads one key of a `[[policy]]` table into the hook made of that table.
pub(super) type PolicyFn = fn(&mut Reader<'_>, &Entry, &'static Param, &mut PolicyHook);

/// Reads one key of a `[[milter]]` table into the hook made of that table.
pub(super) type MilterFn = fn(&mut Reader<'_>, &Entry, &'static Param, &mut MilterHook);

/// Where a key's value goes.
#[derive(Clone, Copy)]
pub(super) enum Fill {
    /// A key of a `[section]`: read once per load into a field of the config.
    Field(FillFn),
    /// A key of the `[[policy]]` tables: read once per table into its hook, and
    /// shown from it in the effective config.
    Policy {
        read: PolicyFn,
        show: fn(&PolicyHook) -> String,
    },
    /// A key of the `[[milter]]` tables, as `Policy`.
    Milter {
        read: MilterFn,
        show: fn(&MilterHook) -> String,
    },
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fill::Field(_) => "Field",
            Fill::Policy { .. } => "Policy",
            Fill::Milter { .. } => "Milter",
        })
    }
}

/// `set!(method => path.to.field)`: the key is read with the reader method `method`
/// (the one of its kind; a mismatch is an internal error the unit tests catch) and
/// the typed value is stored in `config.path.to.field` (a type mismatch does not
/// compile).
macro_rules! set {
    ($read:ident => $($field:ident).+) => {
        Fill::Field(|r, p, c| c.$($field).+ = r.$read(p))
    };
}

/// `policy!(method => field)`: as `set!`, for a key of each `[[policy]]` table, stored
/// in the field of its `PolicyHook` (and shown from it by `render.rs`).
macro_rules! policy {
    ($read:ident => $field:ident) => {
        Fill::Policy {
            read: |r, e, p, h| h.$field = r.$read(e, p),
            show: |h| ToToml::to_toml(&h.$field),
        }
    };
}

/// `milter!(method => field)`: as `policy!`, for a key of each `[[milter]]` table.
macro_rules! milter {
    ($read:ident => $field:ident) => {
        Fill::Milter {
            read: |r, e, p, h| h.$field = r.$read(e, p),
            show: |h| ToToml::to_toml(&h.$field),
        }
    };
}

const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The sections, in the order they are documented.
pub const SECTIONS: &[(&str, &str)] = &[
    ("server", "Identity and directories of this Sloop node."),
    (
        "smtpd",
        "The SMTP receiver (sloop-smtpd) and its prefork pool.",
    ),
    ("domains", "Which domains this node delivers locally."),
    (
        "local",
        "Local delivery: virtual Maildirs, mailboxes and aliases.",
    ),
    ("relay", "Who may relay through this node."),
    (
        "submission",
        "Message submission on port 587 (RFC 6409): STARTTLS, then AUTH before MAIL.",
    ),
    (
        "submissions",
        "Message submission over implicit TLS on port 465 (RFC 8314): AUTH before MAIL.",
    ),
    (
        "tls",
        "TLS for the SMTP receiver: certificates, handshake deadline, session tickets.",
    ),
    (
        "auth",
        "SMTP AUTH (RFC 4954): PLAIN and LOGIN over TLS, backends, sender ownership.",
    ),
    (
        "access",
        "In-process access rules on the client, HELO name, sender and recipient: no daemon, bounded time, checked before any policy service or milter of the same stage. Each entry is \"PATTERN ACTION [TEXT]\", the first match wins; docs/filters.md has the syntax.",
    ),
    (
        "policy",
        "Postfix policy delegation services (check_policy_service), one [[policy]] table each, asked in table order at their stage. Not set by default.",
    ),
    (
        "milter",
        "Milter (protocol 6) filters such as OpenDKIM, rspamd or clamav-milter, one [[milter]] table each, asked in table order. Not set by default.",
    ),
    ("remote", "Remote delivery over SMTP."),
    (
        "queue",
        "The queue manager (sloop-qmgr): retries, lifetimes, concurrency.",
    ),
    (
        "supervisor",
        "The supervisor (sloopd): restarts and shutdown.",
    ),
    ("log", "Logging."),
];

/// Every parameter, grouped by section in `SECTIONS` order.
pub const PARAMS: &[Param] = &[
    // server
    Param { key: "server.hostname", kind: Kind::Hostname, default: "\"@hostname\"",
        doc: "Fully qualified name of this host, used in the greeting, Received headers and bounces. Default: the machine's name.",
        fill: set!(hostname => server.hostname) },
    Param { key: "server.spool_dir", kind: Kind::Path { must_exist: false }, default: "\"/var/spool/sloop\"",
        doc: "The queue: one directory tree owned by Sloop (created at start if missing).",
        fill: set!(path => server.spool_dir) },
    Param { key: "server.run_dir", kind: Kind::Path { must_exist: false }, default: "\"/run/sloop\"",
        doc: "Where sloopd writes its pid file (sloopd.pid).",
        fill: set!(path => server.run_dir) },
    Param { key: "server.user", kind: Kind::User, default: "\"\"",
        doc: "Unprivileged user the daemons run as after binding ports. Empty: do not drop privileges.",
        fill: set!(user => server.user) },
    Param { key: "server.drop_group", kind: Kind::User, default: "\"sloopdrop\"",
        doc: "Group of the set-group-ID sloop-drop program, the only group that may add to the spool's maildrop/ (local submission by sendmail). Used when sloopd runs as root with server.user set.",
        fill: set!(user => server.drop_group) },
    Param { key: "server.bin_dir", kind: Kind::Path { must_exist: false }, default: "\"\"",
        doc: "Directory holding the sloop-* programs. Empty: the directory of the running program.",
        fill: set!(opt_path => server.bin_dir) },
    // smtpd
    Param { key: "smtpd.listen", kind: Kind::ListenList, default: "[\"0.0.0.0:25\"]",
        doc: "Addresses the SMTP receiver listens on (addr:port).",
        fill: set!(listen => smtpd.listen) },
    Param { key: "smtpd.greeting", kind: Kind::Text { max: 400 }, default: "\"{hostname} ESMTP Sloop\"",
        doc: "Text of the 220 banner; {hostname} is replaced by server.hostname. One line, no CR/LF.",
        fill: set!(text => smtpd.greeting) },
    Param { key: "smtpd.max_message_size", kind: Kind::Size { min: 1024, max: 4 * GIB }, default: "\"25M\"",
        doc: "Largest message accepted (SIZE), in bytes; units K, M, G.",
        fill: set!(size => smtpd.max_message_size) },
    Param { key: "smtpd.max_recipients", kind: Kind::Int { min: 1, max: 100_000 }, default: "1000",
        doc: "Most recipients in one transaction; more get 452 4.5.3.",
        fill: set!(int => smtpd.max_recipients) },
    Param { key: "smtpd.max_line_length", kind: Kind::Int { min: 1000, max: 1_000_000 }, default: "1000",
        doc: "Longest text line in DATA, in octets including CRLF (RFC 5321: 1000).",
        fill: set!(int => smtpd.max_line_length) },
    Param { key: "smtpd.max_errors", kind: Kind::Int { min: 1, max: 1000 }, default: "10",
        doc: "Client errors after which the session is ended with 421.",
        fill: set!(int => smtpd.max_errors) },
    Param { key: "smtpd.junk_command_limit", kind: Kind::Int { min: 1, max: 100_000 }, default: "100",
        doc: "NOOP, RSET and VRFY commands a session may send before each further one counts as an error; reset when a message is accepted (Postfix's smtpd_junk_command_limit).",
        fill: set!(int => smtpd.junk_command_limit) },
    Param { key: "smtpd.max_received_headers", kind: Kind::Int { min: 10, max: 1000 }, default: "100",
        doc: "Received headers beyond which a message is a mail loop (554 5.4.6).",
        fill: set!(int => smtpd.max_received_headers) },
    Param { key: "smtpd.bare_newline", kind: Kind::Choice(BareNewline::WORDS), default: "\"reject\"",
        doc: "Bare CR or LF inside DATA: reject (554 5.6.x) or normalize to CRLF.",
        fill: set!(choice => smtpd.bare_newline) },
    Param { key: "smtpd.min_idle", kind: Kind::Int { min: 1, max: 1000 }, default: "4",
        doc: "SMTP worker processes kept idle and ready.",
        fill: set!(int => smtpd.min_idle) },
    Param { key: "smtpd.max_processes", kind: Kind::Int { min: 1, max: 10_000 }, default: "100",
        doc: "Most SMTP worker processes (one session each).",
        fill: set!(int => smtpd.max_processes) },
    Param { key: "smtpd.max_use", kind: Kind::Int { min: 1, max: 1_000_000 }, default: "100",
        doc: "Sessions a worker serves before it is replaced.",
        fill: set!(int => smtpd.max_use) },
    Param { key: "smtpd.max_per_client", kind: Kind::Int { min: 1, max: 10_000 }, default: "50",
        doc: "Concurrent sessions one client address may hold; more get 421 4.7.0. Clients in relay.networks are exempt. At or above smtpd.max_processes: no limit.",
        fill: set!(int => smtpd.max_per_client) },
    Param { key: "smtpd.connect_timeout", kind: Kind::Duration { min: 100, max: 10 * MIN }, default: "\"10s\"",
        doc: "Budget from accept to greeting (reverse DNS, connect checks, banner).",
        fill: set!(duration => smtpd.connect_timeout) },
    Param { key: "smtpd.reverse_dns", kind: Kind::Bool, default: "false",
        doc: "Look up the client's name (PTR, forward-confirmed) before the greeting.",
        fill: set!(boolean => smtpd.reverse_dns) },
    Param { key: "smtpd.dns_timeout", kind: Kind::Duration { min: 100, max: MIN }, default: "\"5s\"",
        doc: "Budget of the reverse DNS lookup inside connect_timeout.",
        fill: set!(duration => smtpd.dns_timeout) },
    Param { key: "smtpd.command_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"30s\"",
        doc: "Budget of one command's checks.",
        fill: set!(duration => smtpd.command_timeout) },
    Param { key: "smtpd.idle_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"300s\"",
        doc: "Client silence after which the session ends with 421 4.4.2.",
        fill: set!(duration => smtpd.idle_timeout) },
    Param { key: "smtpd.data_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"300s\"",
        doc: "Budget of end-of-data checks and queueing.",
        fill: set!(duration => smtpd.data_timeout) },
    Param { key: "smtpd.session_timeout", kind: Kind::Duration { min: SEC, max: DAY }, default: "\"1h\"",
        doc: "Longest a whole session may last.",
        fill: set!(duration => smtpd.session_timeout) },
    Param { key: "smtpd.watchdog_grace", kind: Kind::Duration { min: 100, max: MIN }, default: "\"5s\"",
        doc: "Grace past a deadline after which the watchdog writes 421 4.4.2 and exits.",
        fill: set!(duration => smtpd.watchdog_grace) },
    Param { key: "smtpd.access", kind: Kind::AccessList, default: "[]",
        doc: "Client access rules checked at connect, first match wins: \"CIDR allow|reject|tempfail\".",
        fill: set!(access => smtpd.access) },
    Param { key: "smtpd.queue_program", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "qmail-queue compatible program run per message (message on fd 0, envelope on fd 1). Empty: the smtpd commits into the spool itself, with the same fsyncs as sloop-queue.",
        fill: set!(opt_path => smtpd.queue_program) },
    Param { key: "smtpd.queue_timeout", kind: Kind::Duration { min: SEC, max: HOUR }, default: "\"120s\"",
        doc: "The queue program is killed (451 4.3.0) if it runs longer than this.",
        fill: set!(duration => smtpd.queue_timeout) },
    Param { key: "smtpd.overload_idle_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"10s\"",
        doc: "Client silence after which a session ends with 421 4.4.2 while the pool is overloaded (every worker busy at smtpd.max_processes); applies to running sessions too. Sessions in DATA keep data_timeout.",
        fill: set!(duration => smtpd.overload_idle_timeout) },
    Param { key: "smtpd.proxy_listen", kind: Kind::ListenList, default: "[]",
        doc: "Addresses of the SMTP service (port 25 role) behind a load balancer: each connection starts with a PROXY protocol v1 or v2 header naming the real client.",
        fill: set!(listen => proxy.listen) },
    Param { key: "smtpd.proxy_trusted", kind: Kind::CidrList, default: "[\"127.0.0.0/8\", \"::1/128\"]",
        doc: "Load balancers allowed to connect to smtpd.proxy_listen and send PROXY headers; connections from elsewhere are closed.",
        fill: set!(cidrs => proxy.trusted) },
    Param { key: "smtpd.proxy_timeout", kind: Kind::Duration { min: 100, max: MIN }, default: "\"5s\"",
        doc: "Budget for the PROXY header; a connection without a valid one by then is closed.",
        fill: set!(duration => proxy.timeout) },
    // domains
    Param { key: "domains.local", kind: Kind::DomainList, default: "[]",
        doc: "Domains whose mail is delivered on this node (to local.mailboxes, local.aliases and, with local.system_users, local accounts). The entry \"@hostname\" stands for server.hostname.",
        fill: set!(domains => local_domains) },
    // local
    Param { key: "local.mailbox_root", kind: Kind::Path { must_exist: false }, default: "\"/var/mail/sloop\"",
        doc: "Virtual Maildirs live at <mailbox_root>/<domain>/<local-part>/Maildir.",
        fill: set!(path => local.mailbox_root) },
    Param { key: "local.mailboxes", kind: Kind::MailboxList, default: "[]",
        doc: "Accepted local addresses; \"@domain\" accepts every local-part of that domain.",
        fill: set!(mailboxes => local.mailboxes) },
    Param { key: "local.aliases", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "Aliases file in the classic /etc/aliases syntax. Empty: no aliases.",
        fill: set!(opt_path => local.aliases) },
    Param { key: "local.recipient_delimiter", kind: Kind::Text { max: 1 }, default: "\"+\"",
        doc: "Separates a local-part from its extension (user+tag delivers to user). Empty: none.",
        fill: Fill::Field(|r, p, c| c.local.recipient_delimiter = r.text(p).chars().next()) },
    Param { key: "local.mailbox_format", kind: Kind::Choice(MailboxFormat::WORDS), default: "\"maildir\"",
        doc: "maildir: <root>/<domain>/<user>/Maildir/; mbox: <root>/<domain>/<user>.mbox with fcntl and dot-lock locking.",
        fill: set!(choice => local.mailbox_format) },
    Param { key: "local.system_users", kind: Kind::Bool, default: "false",
        doc: "Deliver mail for local accounts (getpwnam) of the local domains as that user, to local.mail_spool_dir or ~/Maildir/, honouring ~/.forward. Needs sloopd to run as root.",
        fill: set!(boolean => local.system_users) },
    Param { key: "local.system_mailbox", kind: Kind::Choice(MailboxFormat::WORDS), default: "\"mbox\"",
        doc: "Mailbox of a local account: mbox: <mail_spool_dir>/<user> (owner the user, group mail, 0660); maildir: ~<user>/Maildir/.",
        fill: set!(choice => local.system_mailbox) },
    Param { key: "local.mail_spool_dir", kind: Kind::Path { must_exist: false }, default: "\"/var/mail\"",
        doc: "Directory of the local accounts' mbox files (local.system_mailbox = \"mbox\").",
        fill: set!(path => local.mail_spool_dir) },
    // relay
    Param { key: "relay.networks", kind: Kind::CidrList, default: "[\"127.0.0.0/8\", \"::1/128\"]",
        doc: "Clients allowed to relay to non-local domains.",
        fill: set!(cidrs => relay_networks) },
    // submission, submissions, tls, auth
    Param { key: "submission.listen", kind: Kind::ListenList, default: "[]",
        doc: "Addresses of the submission service (port 587): STARTTLS offered, AUTH required before MAIL. Needs tls.cert_file and auth.backend.",
        fill: set!(listen => submission_listen) },
    Param { key: "submissions.listen", kind: Kind::ListenList, default: "[]",
        doc: "Addresses of the submissions service (port 465): TLS from the first octet, AUTH required before MAIL. Needs tls.cert_file and auth.backend.",
        fill: set!(listen => submissions_listen) },
    Param { key: "tls.cert_file", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "PEM certificate chain (server certificate first) of the RSA (or only) key pair. Empty: no TLS, STARTTLS not offered.",
        fill: set!(opt_path => tls.cert_file) },
    Param { key: "tls.key_file", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "PEM private key of tls.cert_file; read by sloopd as root (keep it mode 0600 root), never by the workers from disk.",
        fill: set!(opt_path => tls.key_file) },
    Param { key: "tls.ecdsa_cert_file", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "Optional second PEM chain with an ECDSA (or Ed25519) key, preferred for clients that support it.",
        fill: set!(opt_path => tls.ecdsa_cert_file) },
    Param { key: "tls.ecdsa_key_file", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "PEM private key of tls.ecdsa_cert_file.",
        fill: set!(opt_path => tls.ecdsa_key_file) },
    Param { key: "tls.handshake_timeout", kind: Kind::Duration { min: 100, max: 5 * MIN }, default: "\"10s\"",
        doc: "Budget of one TLS handshake (STARTTLS or port 465); a stalled or garbage handshake is closed after it.",
        fill: set!(duration => tls.handshake_timeout) },
    Param { key: "tls.session_tickets", kind: Kind::Bool, default: "true",
        doc: "Offer session resumption with tickets whose keys sloopd generates and shares with every worker.",
        fill: set!(boolean => tls.session_tickets) },
    Param { key: "tls.ticket_rotation", kind: Kind::Duration { min: MIN, max: 7 * DAY }, default: "\"12h\"",
        doc: "How often sloopd makes a new ticket key (the previous one is still accepted for one more period).",
        fill: set!(duration => tls.ticket_rotation) },
    Param { key: "auth.backend", kind: Kind::Choice(AuthBackend::WORDS), default: "\"none\"",
        doc: "Where AUTH checks passwords: none (AUTH not offered), file (auth.password_file), dovecot (Dovecot's auth server on auth.dovecot_socket).",
        fill: set!(choice => auth.backend) },
    Param { key: "auth.dovecot_socket", kind: Kind::Path { must_exist: false }, default: "\"\"",
        doc: "Dovecot's auth-client socket (a unix_listener of service auth that server.user may connect to), for auth.backend = \"dovecot\".",
        fill: set!(opt_path => auth.dovecot_socket) },
    Param { key: "auth.password_file", kind: Kind::Path { must_exist: false }, default: "\"\"",
        doc: "user:hash lines (argon2id; bcrypt and SHA-512-crypt accepted for migration), managed with `sloop passwd`. Readable by server.user (mode 0640 root:<group of server.user>).",
        fill: set!(opt_path => auth.password_file) },
    Param { key: "auth.offer_on_smtpd", kind: Kind::Bool, default: "false",
        doc: "Also offer AUTH (after STARTTLS) on smtpd.listen; submission ports always offer it.",
        fill: set!(boolean => auth.offer_on_smtpd) },
    Param { key: "auth.senders", kind: Kind::SendersTable, default: "{}",
        doc: "Addresses each user may send from, user = [\"addr@domain\", \"@domain\"]; a user not listed may use only the address equal to the user name. Others get 553 5.7.1.",
        fill: set!(senders => auth.senders) },
    Param { key: "auth.max_failures", kind: Kind::Int { min: 1, max: 1000 }, default: "5",
        doc: "Failed AUTH attempts from one client address (across all workers, within auth.failure_window) after which its sessions are closed with 421 4.7.0.",
        fill: set!(int => auth.max_failures) },
    Param { key: "auth.failure_window", kind: Kind::Duration { min: SEC, max: DAY }, default: "\"15m\"",
        doc: "How long a failed AUTH counts against its client address.",
        fill: set!(duration => auth.failure_window) },
    Param { key: "auth.failure_delay", kind: Kind::Duration { min: 0, max: MIN }, default: "\"1s\"",
        doc: "535 replies are delayed by this times the client's recent failures (at most 5 times).",
        fill: set!(duration => auth.failure_delay) },
    // access, policy, milter (docs/filters.md)
    Param { key: "access.client", kind: Kind::AccessRules, default: "[]",
        doc: "Rules on the connecting client, checked at connect: PATTERN is an address or CIDR network, a name (the client's verified name), .domain (that name and below) or /regex/.",
        fill: Fill::Field(|r, p, c| c.hooks.access.client = r.access_rules(p, AccessList::Client)) },
    Param { key: "access.helo", kind: Kind::AccessRules, default: "[]",
        doc: "Rules on the HELO/EHLO name: PATTERN is a name, .domain or /regex/.",
        fill: Fill::Field(|r, p, c| c.hooks.access.helo = r.access_rules(p, AccessList::Helo)) },
    Param { key: "access.sender", kind: Kind::AccessRules, default: "[]",
        doc: "Rules on the MAIL FROM address: PATTERN is user@domain, domain (that domain exactly), .domain (that domain and below) or /regex/ (the whole address; the null sender is empty).",
        fill: Fill::Field(|r, p, c| c.hooks.access.sender = r.access_rules(p, AccessList::Sender)) },
    Param { key: "access.recipient", kind: Kind::AccessRules, default: "[]",
        doc: "Rules on each RCPT TO address, as access.sender.",
        fill: Fill::Field(|r, p, c| c.hooks.access.recipient = r.access_rules(p, AccessList::Recipient)) },
    Param { key: "policy.name", kind: Kind::HookName, default: REQUIRED,
        doc: "Names the service in logs; unique among the [[policy]] tables.",
        fill: policy!(hook_name => name) },
    Param { key: "policy.socket", kind: Kind::HookSocket, default: REQUIRED,
        doc: "Where the service listens: \"unix:/path\", \"inet:127.0.0.1:10023\" or \"inet:[::1]:10023\".",
        fill: policy!(hook_socket => socket) },
    Param { key: "policy.stage", kind: Kind::Choice(HookStage::WORDS), default: "\"rcpt\"",
        doc: "The SMTP stage the service is asked at (eom: end of message, before the commit).",
        fill: policy!(entry_choice => stage) },
    Param { key: "policy.timeout", kind: Kind::Duration { min: 100, max: 10 * MIN }, default: "\"5s\"",
        doc: "Budget of one try (connect, request, reply); clipped by the stage's own deadline.",
        fill: policy!(entry_duration => timeout) },
    Param { key: "policy.tries", kind: Kind::Int { min: 1, max: 10 }, default: "2",
        doc: "Tries per request; a try fails on a connect error, a timeout or an early EOF.",
        fill: policy!(entry_int => tries) },
    Param { key: "policy.on_error", kind: Kind::Choice(OnError::WORDS), default: DEFAULT_BY_STAGE,
        doc: "What a failed service makes of the stage: accept (go on), tempfail (451 4.3.5; at connect and helo 421 4.3.5 and close), reject (550 5.3.5; at connect 554 5.3.5) or shutdown (421 4.3.5 and close).",
        fill: Fill::Policy {
            read: |r, e, p, h| h.on_error = r.policy_on_error(e, p, h.stage),
            show: |h| h.on_error.to_toml(),
        } },
    Param { key: "policy.listeners", kind: Kind::HookListeners { local: false }, default: "[\"smtpd\"]",
        doc: "Whose sessions are checked: any of smtpd, submission, submissions.",
        fill: policy!(listeners => listeners) },
    Param { key: "milter.name", kind: Kind::HookName, default: REQUIRED,
        doc: "Names the filter in logs; unique among the [[milter]] tables.",
        fill: milter!(hook_name => name) },
    Param { key: "milter.socket", kind: Kind::HookSocket, default: REQUIRED,
        doc: "Where the filter listens: \"unix:/path\", \"inet:127.0.0.1:8891\" or \"inet:[::1]:8891\" (Postfix's syntax; the milter's own inet:PORT@HOST is written inet:HOST:PORT here).",
        fill: milter!(hook_socket => socket) },
    Param { key: "milter.on_error", kind: Kind::Choice(OnError::WORDS), default: "\"tempfail\"",
        doc: "What a failed filter makes of each later stage of the session: accept (go on without it), tempfail (451 4.3.5; at connect and helo 421 4.3.5 and close), reject (550 5.3.5; at connect 554 5.3.5) or shutdown (421 4.3.5 and close).",
        fill: milter!(entry_choice => on_error) },
    Param { key: "milter.connect_timeout", kind: Kind::Duration { min: 100, max: 10 * MIN }, default: "\"5s\"",
        doc: "Budget of connecting and negotiating; clipped by smtpd.connect_timeout.",
        fill: milter!(entry_duration => connect_timeout) },
    Param { key: "milter.command_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"30s\"",
        doc: "Budget of each event but the message content.",
        fill: milter!(entry_duration => command_timeout) },
    Param { key: "milter.content_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"300s\"",
        doc: "Budget of each message content event (headers, body chunks, end of message).",
        fill: milter!(entry_duration => content_timeout) },
    Param { key: "milter.listeners", kind: Kind::HookListeners { local: true }, default: "[\"smtpd\", \"submission\", \"submissions\"]",
        doc: "Which mail the filter sees: any of smtpd, submission, submissions, and local (mail injected with sendmail, committed by sloop-pickup).",
        fill: milter!(listeners => listeners) },
    Param { key: "milter.reuse", kind: Kind::Bool, default: "true",
        doc: "Keep the connection open for the process's next SMTP session (SMFIC_QUIT_NC, protocol 6), at most 100 sessions and 60s idle, instead of connecting and negotiating again. A filter that fails it once is not offered it again by that process; false for a filter that mishandles it (docs/milter.md).",
        fill: milter!(entry_bool => reuse) },
    // remote
    Param { key: "remote.smarthost", kind: Kind::HostPort, default: "\"\"",
        doc: "Send all non-local mail through this host:port. Empty: look up MX records.",
        fill: set!(hostport => remote.smarthost) },
    Param { key: "remote.routes", kind: Kind::RouteTable, default: "{}",
        doc: "Per-domain next hops, domain = \"host:port\"; checked before smarthost and MX.",
        fill: set!(routes => remote.routes) },
    Param { key: "remote.connect_timeout", kind: Kind::Duration { min: 100, max: 10 * MIN }, default: "\"30s\"",
        doc: "Budget of the TCP connect and the server greeting.",
        fill: set!(duration => remote.connect_timeout) },
    Param { key: "remote.command_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"5m\"",
        doc: "Budget of one SMTP command to a remote server (RFC 5321 4.5.3.2).",
        fill: set!(duration => remote.command_timeout) },
    Param { key: "remote.data_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"10m\"",
        doc: "Budget of the final reply after the message body.",
        fill: set!(duration => remote.data_timeout) },
    Param { key: "remote.tls", kind: Kind::Choice(TlsLevel::WORDS), default: "\"may\"",
        doc: "Outbound TLS: none (never STARTTLS), may (when offered, unverified; a failed handshake retries in plaintext), encrypt (required, unverified), verify (required, certificate checked against the system roots and remote.ca_file, name against the route's host or the MX name).",
        fill: set!(choice => remote_tls.level) },
    Param { key: "remote.tls_policy", kind: Kind::TlsPolicyTable, default: "{}",
        doc: "Per destination domain TLS level, domain = \"none|may|encrypt|verify\"; overrides remote.tls.",
        fill: set!(tls_policy => remote_tls.policy) },
    Param { key: "remote.ca_file", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "PEM certificates trusted for remote.tls = \"verify\" besides the system roots (/etc/ssl/certs/ca-certificates.crt).",
        fill: set!(opt_path => remote_tls.ca_file) },
    Param { key: "remote.credentials_file", kind: Kind::Path { must_exist: true }, default: "\"\"",
        doc: "Logins for smarthosts and routes, `host user password` lines; AUTH PLAIN is sent only over TLS. Read by the delivery agents (server.user): mode 0640 root:<group of server.user>.",
        fill: set!(opt_path => remote_tls.credentials_file) },
    // queue
    Param { key: "queue.retry_min", kind: Kind::Duration { min: 100, max: DAY }, default: "\"5m\"",
        doc: "First retry delay after a temporary failure; doubles each attempt.",
        fill: set!(duration => queue.retry_min) },
    Param { key: "queue.retry_max", kind: Kind::Duration { min: 100, max: 7 * DAY }, default: "\"4h\"",
        doc: "Longest delay between two attempts.",
        fill: set!(duration => queue.retry_max) },
    Param { key: "queue.max_lifetime", kind: Kind::Duration { min: SEC, max: 60 * DAY }, default: "\"5d\"",
        doc: "After this long in the queue, remaining recipients bounce.",
        fill: set!(duration => queue.max_lifetime) },
    Param { key: "queue.delay_warning", kind: Kind::Duration { min: 0, max: 60 * DAY }, default: "\"0s\"",
        doc: "Send the sender a delay warning after this long; 0s: never.",
        fill: Fill::Field(|r, p, c| c.queue.delay_warning = Some(r.duration(p)).filter(|d| !d.is_zero())) },
    Param { key: "queue.scan_interval", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"60s\"",
        doc: "How often the queue manager rescans the spool besides its trigger.",
        fill: set!(duration => queue.scan_interval) },
    Param { key: "queue.max_active", kind: Kind::Int { min: 1, max: 1_000_000 }, default: "5000",
        doc: "Most messages the queue manager holds in memory at once.",
        fill: set!(int => queue.max_active) },
    Param { key: "queue.local_concurrency", kind: Kind::Int { min: 1, max: 1000 }, default: "8",
        doc: "Local delivery worker processes.",
        fill: set!(int => queue.local_concurrency) },
    Param { key: "queue.remote_concurrency", kind: Kind::Int { min: 1, max: 1000 }, default: "20",
        doc: "Remote delivery worker processes.",
        fill: set!(int => queue.remote_concurrency) },
    Param { key: "queue.destination_concurrency", kind: Kind::Int { min: 1, max: 1000 }, default: "10",
        doc: "Most parallel deliveries to one destination domain.",
        fill: set!(int => queue.destination_concurrency) },
    Param { key: "queue.delivery_timeout", kind: Kind::Duration { min: SEC, max: DAY }, default: "\"15m\"",
        doc: "A delivery worker that takes longer on one job is killed and its recipients deferred.",
        fill: set!(duration => queue.delivery_timeout) },
    Param { key: "queue.nice", kind: Kind::Int { min: 0, max: 19 }, default: "5",
        doc: "How much lower than the smtpd's the CPU priority of the queue manager and its delivery workers is (added to the nice value sloopd runs at), so that under load accepting mail comes before delivering it. 0: the same priority.",
        fill: set!(int => queue.nice) },
    Param { key: "queue.min_free", kind: Kind::Size { min: 0, max: 1024 * GIB }, default: "0",
        doc: "Free space the spool's file system must keep: below it MAIL FROM gets 452 4.3.1 and sloop-sendmail fails temporarily. 0: 1.5 times smtpd.max_message_size. A value below smtpd.max_message_size is refused.",
        fill: set!(size => queue.min_free) },
    // supervisor
    Param { key: "supervisor.stop_timeout", kind: Kind::Duration { min: 100, max: HOUR }, default: "\"30s\"",
        doc: "On SIGTERM, how long sessions may finish before children are killed.",
        fill: set!(duration => supervisor.stop_timeout) },
    Param { key: "supervisor.restart_min", kind: Kind::Duration { min: 10, max: HOUR }, default: "\"100ms\"",
        doc: "First delay before restarting a crashed child; doubles on each crash in a row.",
        fill: set!(duration => supervisor.restart_min) },
    Param { key: "supervisor.restart_max", kind: Kind::Duration { min: 10, max: DAY }, default: "\"60s\"",
        doc: "Longest delay before restarting a crashed child.",
        fill: set!(duration => supervisor.restart_max) },
    Param { key: "supervisor.startup_crash_pause", kind: Kind::Duration { min: 10, max: DAY }, default: "\"5s\"",
        doc: "Least delay before restarting a child that died before it served once.",
        fill: set!(duration => supervisor.startup_crash_pause) },
    // log
    Param { key: "log.level", kind: Kind::LogLevel, default: "\"info\"",
        doc: "Least severity logged: error, warn, info, debug, trace.",
        fill: Fill::Field(|r, p, c| {
            c.log.level = r.level(p);
            c.log_level = c.log.level;
        }) },
    Param { key: "log.target", kind: Kind::Choice(LogTarget::WORDS), default: "\"stderr\"",
        doc: "stderr: one line per event on standard error (the journal under systemd); syslog: to log.syslog_socket as <log.syslog_name>/<program>[pid] with facility log.facility.",
        fill: set!(choice => log.target) },
    Param { key: "log.facility", kind: Kind::Choice(Facility::WORDS), default: "\"mail\"",
        doc: "Syslog facility (log.target = \"syslog\"); mail lands in /var/log/mail.log on Debian.",
        fill: set!(choice => log.facility) },
    Param { key: "log.syslog_socket", kind: Kind::Path { must_exist: false }, default: "\"/dev/log\"",
        doc: "The syslog daemon's datagram socket (log.target = \"syslog\").",
        fill: set!(path => log.syslog_socket) },
    Param { key: "log.syslog_name", kind: Kind::LogName, default: "\"sloop\"",
        doc: "First part of each program's syslog name, <name>/smtpd, as Postfix's syslog_name (log.target = \"syslog\"); \"postfix\" lets log tools that look for postfix/... read Sloop's lines unchanged.",
        fill: set!(log_name => log.syslog_name) },
];

/// The declaration of `key`, if there is one.
pub fn find(key: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.key == key)
}
