//! The host's crates tested through their public APIs against real parts (the built-in
//! and hostile components, redis-server, maildev, ffmpeg), as one test binary.

#[path = "host/auth.rs"]
mod auth;
#[path = "host/cli.rs"]
mod cli;
#[path = "host/events.rs"]
mod events;
#[path = "host/fairness.rs"]
mod fairness;
#[path = "host/lua.rs"]
mod lua;
#[path = "host/media.rs"]
mod media;
#[path = "host/notify.rs"]
mod notify;
#[path = "host/runtime.rs"]
mod runtime;
