//! The queue side of Sloop: the queue manager (`qmgr`, binary `sloop-qmgr`) and the
//! operator and injection tools (`cli`: `sloop`, `sloop-sendmail`, `sloop-queue`).

pub mod cli;
pub mod qmgr;
