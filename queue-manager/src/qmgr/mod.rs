//! The queue manager: schedules, retries and bounces (see sloop-qmgr).
