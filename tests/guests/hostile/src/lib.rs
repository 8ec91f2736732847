//! Hostile guest.
