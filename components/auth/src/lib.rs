//! The auth stage (a WASI component); its world is defined with its issue.
