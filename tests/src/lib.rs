//! Shared helpers for the target programs.
