//! The `delouse` command (skeleton).
#![forbid(unsafe_code)]
fn main() {}
