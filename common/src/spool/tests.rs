use super::*;
use std::io::Read;

fn temp_spool(name: &str) -> Spool {
    let dir = std::env::temp_dir().join(format!("sloop-spool-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let spool = Spool::new(dir);
    spool.ensure_layout().expect("layout");
    spool
}

#[test]
fn commit_then_read_back() {
    let spool = temp_spool("commit");
    let msg = b"Subject: hi\r\n\r\nbody\r\n".to_vec();
    let env = Envelope::new("a@b.test", vec![Recipient::new("c@d.test")]);
    let id = commit(&spool, &mut msg.as_slice(), env, 0).expect("commit");
    let (state, path) = spool.find(&id).expect("found");
    assert_eq!(state, QueueState::Incoming);
    let (env, mut body) = open_message(&path).expect("open");
    assert_eq!(env.id, id);
    assert_eq!(env.sender, "a@b.test");
    let mut content = Vec::new();
    body.read_to_end(&mut content).expect("read");
    assert_eq!(content, msg);
    assert!(
        fs::read_dir(spool.tmp_dir()).expect("tmp").next().is_none(),
        "tmp is empty after commit"
    );
    spool
        .move_to(&id, QueueState::Incoming, QueueState::Hold)
        .expect("move");
    assert_eq!(
        spool.list(QueueState::Hold).expect("list"),
        vec![id.clone()]
    );
    spool.remove(QueueState::Hold, &id).expect("remove");
    assert!(spool.find(&id).is_none());
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn oversize_and_bad_envelope_leave_nothing() {
    let spool = temp_spool("refuse");
    let big = vec![b'x'; 5000];
    let env = Envelope::new("a@b", vec![Recipient::new("c@d")]);
    let err = commit(&spool, &mut big.as_slice(), env, 4096).expect_err("too large");
    assert!(err.is_permanent());
    let env = Envelope::new("a@b\r\n", vec![Recipient::new("c@d")]);
    let err = commit(&spool, &mut b"x".as_slice(), env, 0).expect_err("bad envelope");
    assert!(err.is_permanent());
    for s in QueueState::ALL {
        assert!(spool.list(s).expect("list").is_empty());
    }
    assert!(fs::read_dir(spool.tmp_dir()).expect("tmp").next().is_none());
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn clean_tmp_removes_files_of_dead_writers_only() {
    let spool = temp_spool("clean");
    let mine = spool.tmp_dir().join(queue_id::new_id());
    fs::write(&mine, b"partial").expect("write");
    // pid 0x3FFFFF is above the default pid_max of most systems: a dead writer.
    let dead = spool
        .tmp_dir()
        .join("0000000000001".to_string() + "3FFFFF" + "000");
    fs::write(&dead, b"partial").expect("write");
    let n = spool
        .clean_tmp(std::time::Duration::from_secs(3600))
        .expect("clean");
    assert_eq!(n, 1);
    assert!(mine.exists() && !dead.exists());
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn find_rejects_path_tricks() {
    let spool = temp_spool("find");
    assert!(spool.find("../../../../etc/passwd").is_none());
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn streaming_commit_uses_preset_id_and_cleans_up_on_envelope_error() {
    let spool = temp_spool("streaming");
    // A preset made by another process (the pid field is not ours).
    let own = queue_id::new_id();
    let preset = format!("{}FFFFFE{}", &own[..13], &own[19..]);
    let msg = b"Subject: s\r\n\r\nbody\r\n".to_vec();
    let env = || Ok(Envelope::new("a@b", vec![Recipient::new("c@d")]));
    let id = inject::commit_streaming(&spool, &mut msg.as_slice(), env, 0, Some(&preset))
        .expect("commit");
    assert_eq!(id, preset);
    // The same preset again is taken already: a fresh ID, never a replaced file.
    let env = || Ok(Envelope::new("a@b", vec![Recipient::new("c@d")]));
    let id2 = inject::commit_streaming(&spool, &mut msg.as_slice(), env, 0, Some(&preset))
        .expect("commit");
    assert_ne!(id2, preset);
    let bad = || Err(EnvelopeError::Format("test".into()));
    let err = inject::commit_streaming(&spool, &mut msg.as_slice(), bad, 0, None)
        .expect_err("bad envelope");
    assert!(err.is_permanent());
    assert_eq!(spool.list(QueueState::Incoming).expect("list").len(), 2);
    assert!(fs::read_dir(spool.tmp_dir()).expect("tmp").next().is_none());
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn an_own_preset_id_is_trusted_but_never_replaces_a_queue_file() {
    let spool = temp_spool("own-preset");
    let preset = queue_id::new_id();
    let msg = b"Subject: s\r\n\r\nbody\r\n".to_vec();
    let env = || Envelope::new("a@b", vec![Recipient::new("c@d")]);
    let id = inject::commit_bytes(&spool, &msg, env(), 0, Some(&preset)).expect("commit");
    assert_eq!(id, preset);
    // The same ID twice from this process is a caller's bug: refused, nothing replaced.
    let other = b"Subject: other\r\n\r\n".to_vec();
    assert!(inject::commit_bytes(&spool, &other, env(), 0, Some(&preset)).is_err());
    let (_, mut body) = open_message(&spool.path(QueueState::Incoming, &id)).expect("open");
    let mut got = Vec::new();
    body.read_to_end(&mut got).expect("read");
    assert_eq!(got, msg);
    assert!(fs::read_dir(spool.tmp_dir()).expect("tmp").next().is_none());
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn a_recycled_file_holds_exactly_the_new_message() {
    use crate::spool::pool::Recycler;
    use std::os::unix::fs::MetadataExt;
    let spool = temp_spool("recycled");
    let long = vec![b'x'; 20_000];
    let env = || Envelope::new("a@b", vec![Recipient::new("c@d")]);
    let id = inject::commit_bytes(&spool, &long, env(), 0, None).expect("commit");
    spool
        .move_to(&id, QueueState::Incoming, QueueState::Active)
        .expect("move");
    let path = spool.path(QueueState::Active, &id);
    let ino = fs::metadata(&path).expect("stat").ino();
    Recycler::new()
        .retire(&spool, &path, &id, 20_000)
        .expect("retire");
    // The first commit found the pool empty and paused claiming: forget that.
    crate::spool::pool::forget_listing();
    // Short messages over the long one, streamed and from memory: no old octet shows.
    let short = b"Subject: short\r\n\r\nhi\r\n".to_vec();
    let id2 = inject::commit_bytes(&spool, &short, env(), 0, None).expect("commit");
    let (env2, mut body) = open_message(&spool.path(QueueState::Incoming, &id2)).expect("open");
    let mut got = Vec::new();
    body.read_to_end(&mut got).expect("read");
    assert_eq!(got, short);
    assert_eq!(env2.id, id2);
    let file_len = fs::metadata(spool.path(QueueState::Incoming, &id2))
        .expect("stat")
        .len();
    assert!(file_len < 200, "old content cut off: {file_len} octets");
    let recycled = fs::metadata(spool.path(QueueState::Incoming, &id2)).expect("stat");
    assert_eq!(recycled.ino(), ino, "the pooled file was reused");
    let _ = fs::remove_dir_all(spool.root());
}

#[test]
fn a_held_message_is_committed_into_hold() {
    let spool = temp_spool("held");
    let msg = b"Subject: hi\r\n\r\nbody\r\n";
    for bytes in [true, false] {
        let mut env = Envelope::new("a@b.test", vec![Recipient::new("c@d.test")]);
        env.hold = Some("<a@b.test>: Sender address triggers HOLD action".into());
        let id = if bytes {
            inject::commit_bytes(&spool, msg, env, 0, None).expect("commit")
        } else {
            commit(&spool, &mut msg.as_slice(), env, 0).expect("commit")
        };
        let (state, path) = spool.find(&id).expect("found");
        assert_eq!(state, QueueState::Hold);
        let (env, _) = open_message(&path).expect("open");
        assert_eq!(
            env.hold.as_deref(),
            Some("<a@b.test>: Sender address triggers HOLD action")
        );
    }
    assert!(spool.list(QueueState::Incoming).expect("list").is_empty());
    let _ = fs::remove_dir_all(spool.root());
}
