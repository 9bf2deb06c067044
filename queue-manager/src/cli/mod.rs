//! Operator and injection tools: sloop, sloop-sendmail, sloop-queue.
