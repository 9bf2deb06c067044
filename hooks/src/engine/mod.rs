//! Runs the hooks of each SMTP stage in order and turns their answers into one
//! decision for the session (docs/filters.md, "Policy services", "Milters",
//! "Failure policy").

pub mod decide;
