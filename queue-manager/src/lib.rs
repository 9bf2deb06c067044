//! The queue side of Sloop: the queue manager (`qmgr`, binary `sloop-qmgr`), the
//! pickup of local submissions (`pickup`, binary `sloop-pickup`) and the operator and
//! injection tools (`cli`: `sloop`, `sloop-sendmail`, `sloop-queue`, `sloop-drop`).

pub mod cli;
pub mod pickup;
pub mod qmgr;
